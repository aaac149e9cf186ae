//! The `excuse` table.

use sea_orm::entity::prelude::*;

/// An absence excused in advance: a student, a date range, one course or all of them.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "excuse")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub student_id: i32,
    /// `None`: every course of the student.
    pub course_id: Option<i32>,
    pub from_date: Date,
    pub to_date: Date,
    pub reason: String,
    pub created_by: i32,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoked_by: Option<i32>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
