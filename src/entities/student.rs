//! The `student` table.

use sea_orm::entity::prelude::*;

/// A student, identified on devices by `id` and on paper by `student_code`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "student")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[sea_orm(unique)]
    pub student_code: String,
    pub first_name: String,
    pub last_name: String,
    pub section_id: i32,
    pub created_at: DateTimeUtc,
    pub enrolled_at: DateTimeUtc,
    /// False once the student has left: kept with their history, no longer expected.
    pub is_active: bool,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
