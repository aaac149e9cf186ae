//! The `record_change` table.

use sea_orm::entity::prelude::*;

use super::{AttendanceStatus, ChangeKind};

/// One change a person made to a record (an edit or its deletion), kept forever as the
/// audit trail; it names the record's session and student so it outlives the record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "record_change")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub record_id: i32,
    pub session_id: i32,
    pub student_id: i32,
    pub kind: ChangeKind,
    pub old_status: AttendanceStatus,
    /// `None` when the record was deleted.
    pub new_status: Option<AttendanceStatus>,
    pub changed_by: Option<i32>,
    pub changed_at: DateTimeUtc,
    pub reason: Option<String>,
    /// The excuse that made (or, revoked, unmade) the change.
    pub excuse_id: Option<i32>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
