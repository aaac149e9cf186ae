//! The `warning_rule` table.

use sea_orm::entity::prelude::*;

/// When to warn about a student: a course's own rule, or the school-wide default.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "warning_rule")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    /// `None`: the school-wide rule, for courses without one of their own.
    pub course_id: Option<i32>,
    /// Warn below this attendance rate (0 to 1); `None`: no rate warning.
    pub min_rate: Option<f64>,
    /// The rate is judged once the student has at least this many sessions of the course.
    pub after_sessions: i32,
    /// Warn at this many absences in a row; `None`: no such warning.
    pub consecutive_absences: Option<i32>,
    pub updated_at: DateTimeUtc,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
