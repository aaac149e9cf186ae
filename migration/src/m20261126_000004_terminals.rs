//! ZKTeco push (iclock) terminals: what a terminal says about itself on `device`, its
//! upload stamps, the commands queued for it, and every attendance line it uploaded.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000002_auth::{AppUser, Device};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE, and cannot add a UNIQUE column: the
        // serial number's uniqueness is an index of its own (NULLs never collide in it on
        // either database, so devices without a serial are unaffected).
        let columns = [
            string_null(Terminal::SerialNumber),
            string_null(Terminal::TimeZone),
            // Devices registered before terminals existed were all admitted by an admin.
            string(Terminal::Approval).default("approved").to_owned(),
            string_null(Terminal::FirmwareVersion),
            string_null(Terminal::PushVersion),
            big_integer(Terminal::RecordsAccepted).default(0).to_owned(),
            big_integer(Terminal::RecordsDuplicate)
                .default(0)
                .to_owned(),
            big_integer(Terminal::RecordsRejected).default(0).to_owned(),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Device::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ux_device_serial_number")
                    .table(Device::Table)
                    .col(Terminal::SerialNumber)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TerminalStamp::Table)
                    .col(pk_auto(TerminalStamp::Id))
                    .col(integer(TerminalStamp::DeviceId))
                    .col(string(TerminalStamp::TableName))
                    .col(big_integer(TerminalStamp::Stamp))
                    .col(timestamp_with_time_zone(TerminalStamp::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_terminal_stamp_device")
                            .from(TerminalStamp::Table, TerminalStamp::DeviceId)
                            .to(Device::Table, Device::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_terminal_stamp_device_table")
                    .table(TerminalStamp::Table)
                    .col(TerminalStamp::DeviceId)
                    .col(TerminalStamp::TableName)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TerminalCommand::Table)
                    .col(pk_auto(TerminalCommand::Id))
                    .col(integer(TerminalCommand::DeviceId))
                    .col(text(TerminalCommand::Command))
                    .col(integer_null(TerminalCommand::CreatedBy))
                    .col(timestamp_with_time_zone(TerminalCommand::CreatedAt))
                    .col(integer(TerminalCommand::Attempts).default(0))
                    .col(timestamp_with_time_zone_null(TerminalCommand::SentAt))
                    .col(timestamp_with_time_zone_null(TerminalCommand::ReturnedAt))
                    .col(integer_null(TerminalCommand::ReturnCode))
                    .col(string_null(TerminalCommand::Reply))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_terminal_command_device")
                            .from(TerminalCommand::Table, TerminalCommand::DeviceId)
                            .to(Device::Table, Device::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_terminal_command_user")
                            .from(TerminalCommand::Table, TerminalCommand::CreatedBy)
                            .to(AppUser::Table, AppUser::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_terminal_command_device")
                    .table(TerminalCommand::Table)
                    .col(TerminalCommand::DeviceId)
                    .col(TerminalCommand::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TerminalPunch::Table)
                    .col(pk_auto(TerminalPunch::Id))
                    .col(integer(TerminalPunch::DeviceId))
                    .col(string(TerminalPunch::Pin))
                    .col(string(TerminalPunch::PunchTime))
                    .col(text(TerminalPunch::Line))
                    .col(string(TerminalPunch::Outcome))
                    .col(string_null(TerminalPunch::Reason))
                    .col(text_null(TerminalPunch::Message))
                    .col(integer_null(TerminalPunch::RecordId))
                    .col(timestamp_with_time_zone(TerminalPunch::ReceivedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_terminal_punch_device")
                            .from(TerminalPunch::Table, TerminalPunch::DeviceId)
                            .to(Device::Table, Device::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_terminal_punch_record")
                            .from(TerminalPunch::Table, TerminalPunch::RecordId)
                            .to(AttendanceRecord::Table, AttendanceRecord::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        // A line is the same line when terminal, PIN and time match: resends are ignored.
        manager
            .create_index(
                Index::create()
                    .name("ux_terminal_punch_line")
                    .table(TerminalPunch::Table)
                    .col(TerminalPunch::DeviceId)
                    .col(TerminalPunch::PunchTime)
                    .col(TerminalPunch::Pin)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Deleting a record (or its student) sets its punches' record to NULL; without an
        // index every such delete would scan the whole log.
        manager
            .create_index(
                Index::create()
                    .name("ix_terminal_punch_record")
                    .table(TerminalPunch::Table)
                    .col(TerminalPunch::RecordId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_terminal_punch_outcome")
                    .table(TerminalPunch::Table)
                    .col(TerminalPunch::Outcome)
                    .col(TerminalPunch::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            TerminalPunch::Table.into_iden(),
            TerminalCommand::Table.into_iden(),
            TerminalStamp::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ux_device_serial_number")
                    .table(Device::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Terminal::SerialNumber,
            Terminal::TimeZone,
            Terminal::Approval,
            Terminal::FirmwareVersion,
            Terminal::PushVersion,
            Terminal::RecordsAccepted,
            Terminal::RecordsDuplicate,
            Terminal::RecordsRejected,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Device::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The columns a terminal adds to `device`.
#[derive(DeriveIden)]
enum Terminal {
    SerialNumber,
    TimeZone,
    Approval,
    FirmwareVersion,
    PushVersion,
    RecordsAccepted,
    RecordsDuplicate,
    RecordsRejected,
}

#[derive(DeriveIden)]
enum AttendanceRecord {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum TerminalStamp {
    Table,
    Id,
    DeviceId,
    TableName,
    Stamp,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TerminalCommand {
    Table,
    Id,
    DeviceId,
    Command,
    CreatedBy,
    CreatedAt,
    Attempts,
    SentAt,
    ReturnedAt,
    ReturnCode,
    Reply,
}

#[derive(DeriveIden)]
enum TerminalPunch {
    Table,
    Id,
    DeviceId,
    Pin,
    PunchTime,
    Line,
    Outcome,
    Reason,
    Message,
    RecordId,
    ReceivedAt,
}
