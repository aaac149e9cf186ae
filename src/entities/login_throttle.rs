//! The `login_throttle` table.

use sea_orm::entity::prelude::*;

/// Failed logins counted against one key (a username or a client address); instants are
/// epoch milliseconds. Written only by `service::limiter`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_throttle")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    pub failures: i32,
    pub window_started: i64,
    pub locked_until: Option<i64>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
