//! The `terminal_stamp` table.

use sea_orm::entity::prelude::*;

/// The last upload stamp a terminal sent for one of its tables (`ATTLOG`, `OPERLOG`); the
/// handshake hands it back so the terminal sends only newer rows.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "terminal_stamp")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub device_id: i32,
    pub table_name: String,
    pub stamp: i64,
    pub updated_at: DateTimeUtc,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
