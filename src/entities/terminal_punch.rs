//! The `terminal_punch` table.

use sea_orm::entity::prelude::*;

use super::PunchOutcome;

/// One attendance line a terminal uploaded, as sent, with what became of it. Unique per
/// terminal, PIN and time, so a resent line is recognised and ignored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "terminal_punch")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub device_id: i32,
    pub pin: String,
    pub punch_time: String,
    #[sea_orm(column_type = "Text")]
    pub line: String,
    pub outcome: PunchOutcome,
    pub reason: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub message: Option<String>,
    pub record_id: Option<i32>,
    pub received_at: DateTimeUtc,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
