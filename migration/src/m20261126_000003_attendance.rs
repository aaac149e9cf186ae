//! Attendance sessions, their records and the audit trail of manual edits.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000001_directory::{Course, Student, Teacher};
use crate::m20261126_000002_auth::{AppUser, Device};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AttendanceSession::Table)
                    .col(pk_auto(AttendanceSession::Id))
                    .col(integer(AttendanceSession::CourseId))
                    .col(date(AttendanceSession::Date))
                    .col(integer(AttendanceSession::CreatedBy))
                    .col(timestamp_with_time_zone(AttendanceSession::CreatedAt))
                    .col(integer(AttendanceSession::DeviceId))
                    .col(boolean(AttendanceSession::IsActive))
                    .col(timestamp_with_time_zone(AttendanceSession::StartsAt))
                    .col(integer(AttendanceSession::GraceMinutes))
                    .col(timestamp_with_time_zone(AttendanceSession::ClosesAt))
                    .col(timestamp_with_time_zone_null(AttendanceSession::ClosedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_session_course")
                            .from(AttendanceSession::Table, AttendanceSession::CourseId)
                            .to(Course::Table, Course::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_session_teacher")
                            .from(AttendanceSession::Table, AttendanceSession::CreatedBy)
                            .to(Teacher::Table, Teacher::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_session_device")
                            .from(AttendanceSession::Table, AttendanceSession::DeviceId)
                            .to(Device::Table, Device::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_session_device")
                    .table(AttendanceSession::Table)
                    .col(AttendanceSession::DeviceId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_session_course")
                    .table(AttendanceSession::Table)
                    .col(AttendanceSession::CourseId)
                    .to_owned(),
            )
            .await?;
        // The same partial-index syntax is valid on SQLite and PostgreSQL; sea-query has no
        // portable builder for the WHERE clause.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_session_active_device \
                 ON attendance_session (device_id) WHERE is_active",
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_session_due ON attendance_session (closes_at) WHERE is_active",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AttendanceRecord::Table)
                    .col(pk_auto(AttendanceRecord::Id))
                    .col(integer(AttendanceRecord::SessionId))
                    .col(integer(AttendanceRecord::StudentId))
                    .col(string(AttendanceRecord::Status))
                    .col(timestamp_with_time_zone(AttendanceRecord::Timestamp))
                    .col(timestamp_with_time_zone_null(AttendanceRecord::ScannedAt))
                    .col(integer_null(AttendanceRecord::LateMinutes))
                    .col(string(AttendanceRecord::Source))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_record_session")
                            .from(AttendanceRecord::Table, AttendanceRecord::SessionId)
                            .to(AttendanceSession::Table, AttendanceSession::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_record_student")
                            .from(AttendanceRecord::Table, AttendanceRecord::StudentId)
                            .to(Student::Table, Student::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_record_session_student")
                    .table(AttendanceRecord::Table)
                    .col(AttendanceRecord::SessionId)
                    .col(AttendanceRecord::StudentId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_record_student")
                    .table(AttendanceRecord::Table)
                    .col(AttendanceRecord::StudentId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RecordChange::Table)
                    .col(pk_auto(RecordChange::Id))
                    .col(integer(RecordChange::RecordId))
                    .col(string(RecordChange::OldStatus))
                    .col(string(RecordChange::NewStatus))
                    .col(integer_null(RecordChange::ChangedBy))
                    .col(timestamp_with_time_zone(RecordChange::ChangedAt))
                    .col(string_null(RecordChange::Reason))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_change_record")
                            .from(RecordChange::Table, RecordChange::RecordId)
                            .to(AttendanceRecord::Table, AttendanceRecord::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_change_user")
                            .from(RecordChange::Table, RecordChange::ChangedBy)
                            .to(AppUser::Table, AppUser::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_change_record")
                    .table(RecordChange::Table)
                    .col(RecordChange::RecordId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RecordChange::Table.into_iden(),
            AttendanceRecord::Table.into_iden(),
            AttendanceSession::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AttendanceSession {
    Table,
    Id,
    CourseId,
    Date,
    CreatedBy,
    CreatedAt,
    DeviceId,
    IsActive,
    StartsAt,
    GraceMinutes,
    ClosesAt,
    ClosedAt,
}

#[derive(DeriveIden)]
enum AttendanceRecord {
    Table,
    Id,
    SessionId,
    StudentId,
    Status,
    Timestamp,
    ScannedAt,
    LateMinutes,
    Source,
}

#[derive(DeriveIden)]
enum RecordChange {
    Table,
    Id,
    RecordId,
    OldStatus,
    NewStatus,
    ChangedBy,
    ChangedAt,
    Reason,
}
