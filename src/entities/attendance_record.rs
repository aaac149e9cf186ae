//! The `attendance_record` table.

use sea_orm::entity::prelude::*;

use super::{AttendanceStatus, RecordSource};

/// One student's status in one session.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attendance_record")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub session_id: i32,
    pub student_id: i32,
    pub status: AttendanceStatus,
    pub timestamp: DateTimeUtc,
    pub scanned_at: Option<DateTimeUtc>,
    pub late_minutes: Option<i32>,
    pub source: RecordSource,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
