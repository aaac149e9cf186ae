//! The `dep_batch` table.

use sea_orm::entity::prelude::*;

/// A department's intake, e.g. ("Software Eng.", "2024").
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dep_batch")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub dep: String,
    pub batch: String,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
