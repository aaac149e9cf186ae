//! The `record_change` table.

use sea_orm::entity::prelude::*;

use super::AttendanceStatus;

/// One manual status edit, kept forever as the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "record_change")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub record_id: i32,
    pub old_status: AttendanceStatus,
    pub new_status: AttendanceStatus,
    pub changed_by: Option<i32>,
    pub changed_at: DateTimeUtc,
    pub reason: Option<String>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
