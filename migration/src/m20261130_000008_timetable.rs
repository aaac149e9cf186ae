//! Terms, holidays, the weekly timetable, cancelled classes, and the link from a session to
//! the class it was opened for: unique per (slot, date), so however many server processes
//! open classes, each class gets one session.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000001_directory::Course;
use crate::m20261126_000002_auth::{AppUser, Device};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Term::Table)
                    .col(pk_auto(Term::Id))
                    .col(string_uniq(Term::Name))
                    .col(date(Term::StartsOn))
                    .col(date(Term::EndsOn))
                    .col(timestamp_with_time_zone(Term::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Holiday::Table)
                    .col(pk_auto(Holiday::Id))
                    .col(integer(Holiday::TermId))
                    .col(string(Holiday::Name))
                    .col(date(Holiday::StartsOn))
                    .col(date(Holiday::EndsOn))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_holiday_term")
                            .from(Holiday::Table, Holiday::TermId)
                            .to(Term::Table, Term::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_holiday_term")
                    .table(Holiday::Table)
                    .col(Holiday::TermId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScheduleSlot::Table)
                    .col(pk_auto(ScheduleSlot::Id))
                    .col(integer(ScheduleSlot::CourseId))
                    .col(integer(ScheduleSlot::TermId))
                    .col(integer(ScheduleSlot::DeviceId))
                    // ISO weekday: 1 is Monday, 7 Sunday.
                    .col(small_integer(ScheduleSlot::Weekday))
                    .col(time(ScheduleSlot::StartTime))
                    .col(time(ScheduleSlot::EndTime))
                    .col(timestamp_with_time_zone(ScheduleSlot::CreatedAt))
                    // Deleted slots stay for the classes already held; none after this.
                    .col(timestamp_with_time_zone_null(ScheduleSlot::DeletedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_slot_course")
                            .from(ScheduleSlot::Table, ScheduleSlot::CourseId)
                            .to(Course::Table, Course::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_slot_term")
                            .from(ScheduleSlot::Table, ScheduleSlot::TermId)
                            .to(Term::Table, Term::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_slot_device")
                            .from(ScheduleSlot::Table, ScheduleSlot::DeviceId)
                            .to(Device::Table, Device::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("ix_slot_term", ScheduleSlot::TermId),
            ("ix_slot_course", ScheduleSlot::CourseId),
            ("ix_slot_device", ScheduleSlot::DeviceId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(ScheduleSlot::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ClassCancellation::Table)
                    .col(pk_auto(ClassCancellation::Id))
                    .col(integer(ClassCancellation::SlotId))
                    .col(date(ClassCancellation::Date))
                    .col(string_null(ClassCancellation::Reason))
                    .col(integer_null(ClassCancellation::CreatedBy))
                    .col(timestamp_with_time_zone(ClassCancellation::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_cancellation_slot")
                            .from(ClassCancellation::Table, ClassCancellation::SlotId)
                            .to(ScheduleSlot::Table, ScheduleSlot::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_cancellation_user")
                            .from(ClassCancellation::Table, ClassCancellation::CreatedBy)
                            .to(AppUser::Table, AppUser::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_cancellation_class")
                    .table(ClassCancellation::Table)
                    .col(ClassCancellation::SlotId)
                    .col(ClassCancellation::Date)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A class that could not open (its device was busy), noted once across processes.
        manager
            .create_table(
                Table::create()
                    .table(ClassNotOpened::Table)
                    .col(pk_auto(ClassNotOpened::Id))
                    .col(integer(ClassNotOpened::SlotId))
                    .col(date(ClassNotOpened::Date))
                    .col(string(ClassNotOpened::Reason))
                    .col(timestamp_with_time_zone(ClassNotOpened::At))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_not_opened_slot")
                            .from(ClassNotOpened::Table, ClassNotOpened::SlotId)
                            .to(ScheduleSlot::Table, ScheduleSlot::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_not_opened_class")
                    .table(ClassNotOpened::Table)
                    .col(ClassNotOpened::SlotId)
                    .col(ClassNotOpened::Date)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The same statement on both databases: SQLite adds a column with a reference only
        // through its own ALTER TABLE syntax, which PostgreSQL shares.
        let db = manager.get_connection();
        db.execute_unprepared(
            "ALTER TABLE attendance_session ADD COLUMN slot_id integer \
             REFERENCES schedule_slot (id) ON DELETE RESTRICT",
        )
        .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_session_class ON attendance_session (slot_id, date)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ux_session_class").await?;
        db.execute_unprepared("ALTER TABLE attendance_session DROP COLUMN slot_id")
            .await?;
        for table in [
            ClassNotOpened::Table.into_iden(),
            ClassCancellation::Table.into_iden(),
            ScheduleSlot::Table.into_iden(),
            Holiday::Table.into_iden(),
            Term::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Term {
    Table,
    Id,
    Name,
    StartsOn,
    EndsOn,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Holiday {
    Table,
    Id,
    TermId,
    Name,
    StartsOn,
    EndsOn,
}

#[derive(DeriveIden)]
enum ScheduleSlot {
    Table,
    Id,
    CourseId,
    TermId,
    DeviceId,
    Weekday,
    StartTime,
    EndTime,
    CreatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum ClassCancellation {
    Table,
    Id,
    SlotId,
    Date,
    Reason,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ClassNotOpened {
    Table,
    Id,
    SlotId,
    Date,
    Reason,
    At,
}
