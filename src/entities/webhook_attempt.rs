//! The `webhook_attempt` table.

use sea_orm::entity::prelude::*;

/// One try at a delivery: what the receiver answered, how long it took, when the next is.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_attempt")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub delivery_id: i32,
    pub attempted_at: DateTimeUtc,
    /// The HTTP status; `None` when no answer came (refused, timeout, blocked address).
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// When it will be tried again; `None` when delivered or given up.
    pub next_retry_at: Option<DateTimeUtc>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
