//! The `schedule_slot` table.

use sea_orm::entity::prelude::*;

/// A weekly class: a course on a device, on one weekday of a term, from a start to an end
/// time in the school's zone.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "schedule_slot")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub course_id: i32,
    pub term_id: i32,
    pub device_id: i32,
    /// ISO weekday: 1 is Monday, 7 Sunday.
    pub weekday: i16,
    pub start_time: Time,
    pub end_time: Time,
    pub created_at: DateTimeUtc,
    /// When it was deleted: no class of it takes place after this.
    pub deleted_at: Option<DateTimeUtc>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
