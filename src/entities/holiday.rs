//! The `holiday` table.

use sea_orm::entity::prelude::*;

/// Days of a term on which no class takes place (both ends included).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "holiday")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub term_id: i32,
    pub name: String,
    pub starts_on: Date,
    pub ends_on: Date,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
