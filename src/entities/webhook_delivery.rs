//! The `webhook_delivery` table: the outbox.

use sea_orm::entity::prelude::*;

/// One event for one webhook, written in the transaction of the change that caused it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_delivery")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub webhook_id: i32,
    /// The `webhook-id` header: the same for every attempt and every webhook of the event.
    pub event_id: String,
    pub event_type: String,
    /// The JSON body, exactly as signed and sent.
    pub payload: String,
    pub status: super::DeliveryStatus,
    pub attempts: i32,
    pub created_at: DateTimeUtc,
    /// When the next attempt is due (`None` once settled).
    pub next_attempt_at: Option<DateTimeUtc>,
    /// A process owns the delivery until then.
    pub locked_until: Option<DateTimeUtc>,
    /// The owning process's claim, so only it records the attempt.
    pub claim: Option<i64>,
    /// The wait before the current retry, the base of the next one.
    pub last_wait_ms: Option<i64>,
    pub last_status_code: Option<i32>,
    pub last_duration_ms: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTimeUtc>,
    /// The delivery this one sends again (`redeliver`).
    pub redelivery_of: Option<i32>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
