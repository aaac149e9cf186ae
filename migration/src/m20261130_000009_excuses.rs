//! Excused absences known in advance: the excuse, the link from a record to the excuse that
//! set its status (so a revocation turns back exactly that), and the excuse an audit entry
//! names.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000001_directory::{Course, Student};
use crate::m20261126_000002_auth::AppUser;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Excuse::Table)
                    .col(pk_auto(Excuse::Id))
                    .col(integer(Excuse::StudentId))
                    .col(integer_null(Excuse::CourseId))
                    .col(date(Excuse::FromDate))
                    .col(date(Excuse::ToDate))
                    .col(string(Excuse::Reason))
                    .col(integer(Excuse::CreatedBy))
                    .col(timestamp_with_time_zone(Excuse::CreatedAt))
                    .col(timestamp_with_time_zone_null(Excuse::RevokedAt))
                    .col(integer_null(Excuse::RevokedBy))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_excuse_student")
                            .from(Excuse::Table, Excuse::StudentId)
                            .to(Student::Table, Student::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_excuse_course")
                            .from(Excuse::Table, Excuse::CourseId)
                            .to(Course::Table, Course::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_excuse_creator")
                            .from(Excuse::Table, Excuse::CreatedBy)
                            .to(AppUser::Table, AppUser::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_excuse_revoker")
                            .from(Excuse::Table, Excuse::RevokedBy)
                            .to(AppUser::Table, AppUser::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_excuse_student")
                    .table(Excuse::Table)
                    .col(Excuse::StudentId)
                    .col(Excuse::FromDate)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // The record whose status an excuse set, while it still holds: a person's edit or
        // the revocation removes the link, never the record or its audit entries.
        db.execute_unprepared(
            "CREATE TABLE record_excuse (\
             record_id integer NOT NULL PRIMARY KEY \
               REFERENCES attendance_record (id) ON DELETE CASCADE, \
             excuse_id integer NOT NULL REFERENCES excuse (id) ON DELETE RESTRICT)",
        )
        .await?;
        db.execute_unprepared("CREATE INDEX ix_record_excuse_excuse ON record_excuse (excuse_id)")
            .await?;
        db.execute_unprepared(
            "ALTER TABLE record_change ADD COLUMN excuse_id integer \
             REFERENCES excuse (id) ON DELETE RESTRICT",
        )
        .await?;
        db.execute_unprepared("CREATE INDEX ix_change_excuse ON record_change (excuse_id)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ix_change_excuse").await?;
        db.execute_unprepared("ALTER TABLE record_change DROP COLUMN excuse_id")
            .await?;
        db.execute_unprepared("DROP TABLE record_excuse").await?;
        manager
            .drop_table(Table::drop().table(Excuse::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Excuse {
    Table,
    Id,
    StudentId,
    CourseId,
    FromDate,
    ToDate,
    Reason,
    CreatedBy,
    CreatedAt,
    RevokedAt,
    RevokedBy,
}
