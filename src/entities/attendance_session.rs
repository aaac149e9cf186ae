//! The `attendance_session` table.

use sea_orm::entity::prelude::*;

/// A course's roll call on one date, bound to one device while active.
#[derive(Clone, Debug, PartialEq, Eq, Hash, DeriveEntityModel)]
#[sea_orm(table_name = "attendance_session")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub course_id: i32,
    pub date: Date,
    pub created_by: i32,
    pub created_at: DateTimeUtc,
    pub device_id: i32,
    pub is_active: bool,
    pub starts_at: DateTimeUtc,
    pub grace_minutes: i32,
    pub closes_at: DateTimeUtc,
    pub closed_at: Option<DateTimeUtc>,
    /// The timetable slot whose class this session is; `None` for a session opened by hand.
    pub slot_id: Option<i32>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
