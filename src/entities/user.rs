//! The `app_user` table.

use sea_orm::entity::prelude::*;

use super::UserRole;

/// An account that logs in with a password: an admin or a teacher.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "app_user")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[sea_orm(unique)]
    pub username: String,
    pub password_hash: String,
    pub role: UserRole,
    pub teacher_id: Option<i32>,
    pub is_active: bool,
    pub created_at: DateTimeUtc,
    /// Raised by a password change, a reset or a deactivation; a token carrying an older
    /// version is refused, so those end every token issued before them at once.
    pub token_version: i32,
}

/// Relations are queried explicitly in `service`; none are declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
