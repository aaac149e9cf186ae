//! The `attendance_warning` table.

use sea_orm::entity::prelude::*;

/// A student who crossed a warning rule's line in a course; open until they recover.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attendance_warning")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub student_id: i32,
    pub course_id: i32,
    pub kind: super::WarningKind,
    /// The student's rate in the course when it was raised (`None` without records).
    pub rate: Option<f64>,
    /// The sessions of the course the student had a record in.
    pub sessions: i32,
    /// Absences in a row when it was raised.
    pub consecutive_absences: i32,
    pub raised_at: DateTimeUtc,
    /// When the student was back on the right side of the line.
    pub cleared_at: Option<DateTimeUtc>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
