//! The `webhook` table.

use sea_orm::entity::prelude::*;

/// A receiver of signed event notifications.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub url: String,
    /// The Standard Webhooks signing secret (`whsec_` and base64), shown once at creation.
    pub secret: String,
    /// The events it subscribes to, comma-surrounded: `,SESSION_CLOSED,WARNING_RAISED,`.
    pub events: String,
    pub created_at: DateTimeUtc,
    /// Deleted webhooks receive nothing more; their deliveries stay as the log.
    pub deleted_at: Option<DateTimeUtc>,
    /// None of its deliveries is claimed before then: the receiver kept timing out.
    pub held_until: Option<DateTimeUtc>,
    /// The last hold's length, the base of the next; while set, the receiver is probed one
    /// delivery at a time, and its first answer clears both.
    pub last_hold_ms: Option<i64>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
