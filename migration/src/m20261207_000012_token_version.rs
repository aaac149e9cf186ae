//! A version of each account's credentials, carried in its tokens: a password change, a
//! reset or a deactivation raises it, so every token issued before fails at once.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000002_auth::AppUser;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Existing accounts start at 0, the version tokens issued before this column read
        // as, so deploying it logs nobody out.
        manager
            .alter_table(
                Table::alter()
                    .table(AppUser::Table)
                    .add_column(integer(TokenVersion::TokenVersion).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AppUser::Table)
                    .drop_column(TokenVersion::TokenVersion)
                    .to_owned(),
            )
            .await
    }
}

/// The column this migration adds to `app_user`.
#[derive(DeriveIden)]
enum TokenVersion {
    TokenVersion,
}
