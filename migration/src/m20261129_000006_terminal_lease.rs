//! A lease on a terminal's attendance lines, so one server process at a time judges them.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000002_auth::Device;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Epoch milliseconds, like the login throttle: NULL or past means nobody holds it.
        manager
            .alter_table(
                Table::alter()
                    .table(Device::Table)
                    .add_column(big_integer_null(TerminalLease::DrainLeaseUntil))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Device::Table)
                    .drop_column(TerminalLease::DrainLeaseUntil)
                    .to_owned(),
            )
            .await
    }
}

/// The column the lease adds to `device`.
#[derive(DeriveIden)]
enum TerminalLease {
    DrainLeaseUntil,
}
