//! The `terminal_command` table.

use sea_orm::entity::prelude::*;

/// A command queued for a terminal, handed out on its next poll, and the result it reported.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "terminal_command")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub device_id: i32,
    #[sea_orm(column_type = "Text")]
    pub command: String,
    pub created_by: Option<i32>,
    pub created_at: DateTimeUtc,
    pub attempts: i32,
    pub sent_at: Option<DateTimeUtc>,
    pub returned_at: Option<DateTimeUtc>,
    pub return_code: Option<i32>,
    pub reply: Option<String>,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
