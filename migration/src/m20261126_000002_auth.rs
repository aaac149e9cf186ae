//! Accounts, refresh tokens and device terminals.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000001_directory::Teacher;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AppUser::Table)
                    .col(pk_auto(AppUser::Id))
                    .col(string_uniq(AppUser::Username))
                    .col(string(AppUser::PasswordHash))
                    .col(string(AppUser::Role))
                    .col(integer_null(AppUser::TeacherId).unique_key())
                    .col(boolean(AppUser::IsActive))
                    .col(timestamp_with_time_zone(AppUser::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_app_user_teacher")
                            .from(AppUser::Table, AppUser::TeacherId)
                            .to(Teacher::Table, Teacher::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshToken::Table)
                    .col(pk_auto(RefreshToken::Id))
                    .col(integer(RefreshToken::UserId))
                    .col(string_uniq(RefreshToken::TokenHash))
                    .col(string(RefreshToken::Family))
                    .col(timestamp_with_time_zone(RefreshToken::ExpiresAt))
                    .col(timestamp_with_time_zone_null(RefreshToken::UsedAt))
                    .col(timestamp_with_time_zone_null(RefreshToken::RevokedAt))
                    .col(timestamp_with_time_zone(RefreshToken::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refresh_token_user")
                            .from(RefreshToken::Table, RefreshToken::UserId)
                            .to(AppUser::Table, AppUser::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_refresh_token_family")
                    .table(RefreshToken::Table)
                    .col(RefreshToken::Family)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Device::Table)
                    .col(pk_auto(Device::Id))
                    .col(string_uniq(Device::DeviceId))
                    .col(string(Device::Name))
                    .col(boolean(Device::IsActive))
                    .col(string_uniq(Device::KeyHash))
                    .col(timestamp_with_time_zone_null(Device::LastSeenAt))
                    .col(timestamp_with_time_zone(Device::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Device::Table.into_iden(),
            RefreshToken::Table.into_iden(),
            AppUser::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// `user` is reserved in PostgreSQL, hence `app_user`.
#[derive(DeriveIden)]
pub(crate) enum AppUser {
    Table,
    Id,
    Username,
    PasswordHash,
    Role,
    TeacherId,
    IsActive,
    CreatedAt,
}

#[derive(DeriveIden)]
pub(crate) enum RefreshToken {
    Table,
    Id,
    UserId,
    TokenHash,
    Family,
    ExpiresAt,
    UsedAt,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
pub(crate) enum Device {
    Table,
    Id,
    DeviceId,
    Name,
    IsActive,
    KeyHash,
    LastSeenAt,
    CreatedAt,
}
