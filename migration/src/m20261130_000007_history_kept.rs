//! History outlives the directory: attendance data refers to students, sessions, devices
//! and accounts with `RESTRICT` instead of `CASCADE`, audit entries no longer depend on the
//! record they describe (they carry its session and student, and a deletion is one more
//! entry), and students gain an active flag for those who leave.
//!
//! PostgreSQL alters the constraints in place. SQLite cannot alter a constraint, so the
//! three tables are rebuilt in one transaction, in an order in which no dropped table is
//! still referenced by another: a drop's implicit delete would otherwise run the old
//! `CASCADE` one last time.

use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // All or nothing on SQLite too: a half-rebuilt table would lose rows.
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Student::Table)
                    .add_column(boolean(Student::IsActive).default(true))
                    .to_owned(),
            )
            .await?;
        match manager.get_database_backend() {
            DbBackend::Sqlite => rebuild_sqlite(manager).await?,
            _ => alter_postgres(manager).await?,
        }
        create_indexes(manager).await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Going back would restore the cascades that erase history; refuse rather than
        // pretend.
        Err(DbErr::Migration(
            "m20261130_000007_history_kept cannot be reverted: it protects attendance history"
                .into(),
        ))
    }
}

async fn alter_postgres(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in [
        "ALTER TABLE attendance_record \
         DROP CONSTRAINT fk_record_session, DROP CONSTRAINT fk_record_student, \
         ADD CONSTRAINT fk_record_session FOREIGN KEY (session_id) \
           REFERENCES attendance_session (id) ON DELETE RESTRICT, \
         ADD CONSTRAINT fk_record_student FOREIGN KEY (student_id) \
           REFERENCES student (id) ON DELETE RESTRICT",
        "ALTER TABLE record_change \
         DROP CONSTRAINT fk_change_record, DROP CONSTRAINT fk_change_user, \
         ADD COLUMN session_id integer, ADD COLUMN student_id integer, \
         ADD COLUMN kind varchar NOT NULL DEFAULT 'edit', \
         ALTER COLUMN new_status DROP NOT NULL",
        "UPDATE record_change c SET session_id = r.session_id, student_id = r.student_id \
         FROM attendance_record r WHERE r.id = c.record_id",
        "ALTER TABLE record_change \
         ALTER COLUMN session_id SET NOT NULL, ALTER COLUMN student_id SET NOT NULL, \
         ADD CONSTRAINT fk_change_session FOREIGN KEY (session_id) \
           REFERENCES attendance_session (id) ON DELETE RESTRICT, \
         ADD CONSTRAINT fk_change_student FOREIGN KEY (student_id) \
           REFERENCES student (id) ON DELETE RESTRICT, \
         ADD CONSTRAINT fk_change_user FOREIGN KEY (changed_by) \
           REFERENCES app_user (id) ON DELETE RESTRICT",
        "ALTER TABLE terminal_punch DROP CONSTRAINT fk_terminal_punch_device, \
         ADD CONSTRAINT fk_terminal_punch_device FOREIGN KEY (device_id) \
           REFERENCES device (id) ON DELETE RESTRICT",
    ] {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

async fn rebuild_sqlite(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let sequences = id_sequences(manager).await?;

    manager
        .create_table(record_table("attendance_record_new"))
        .await?;
    db.execute_unprepared(
        "INSERT INTO attendance_record_new \
         (id, session_id, student_id, status, timestamp, scanned_at, late_minutes, source) \
         SELECT id, session_id, student_id, status, timestamp, scanned_at, late_minutes, source \
         FROM attendance_record",
    )
    .await?;
    manager
        .create_table(change_table("record_change_new"))
        .await?;
    db.execute_unprepared(
        "INSERT INTO record_change_new \
         (id, record_id, session_id, student_id, kind, old_status, new_status, changed_by, \
          changed_at, reason) \
         SELECT c.id, c.record_id, r.session_id, r.student_id, 'edit', c.old_status, \
          c.new_status, c.changed_by, c.changed_at, c.reason \
         FROM record_change c JOIN attendance_record r ON r.id = c.record_id",
    )
    .await?;
    // Its record reference names the new table; the rename below carries it over.
    manager
        .create_table(punch_table("terminal_punch_new", "attendance_record_new"))
        .await?;
    db.execute_unprepared(
        "INSERT INTO terminal_punch_new \
         (id, device_id, pin, punch_time, line, outcome, reason, message, record_id, received_at) \
         SELECT id, device_id, pin, punch_time, line, outcome, reason, message, record_id, \
          received_at FROM terminal_punch",
    )
    .await?;

    // Children first: once they are gone nothing refers to the old record table, so
    // dropping it runs no foreign-key action.
    for table in ["terminal_punch", "record_change", "attendance_record"] {
        db.execute_unprepared(&format!("DROP TABLE {table}"))
            .await?;
    }
    for table in ["attendance_record", "record_change", "terminal_punch"] {
        db.execute_unprepared(&format!("ALTER TABLE {table}_new RENAME TO {table}"))
            .await?;
    }
    // Ids of deleted records are never handed out again: the audit trail still names them.
    for (table, seq) in sequences {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?",
            [seq.into(), table.into()],
        ))
        .await?;
    }
    for sql in [
        "CREATE UNIQUE INDEX ux_record_session_student \
         ON attendance_record (session_id, student_id)",
        "CREATE INDEX ix_record_student ON attendance_record (student_id)",
        "CREATE UNIQUE INDEX ux_terminal_punch_line ON terminal_punch (device_id, punch_time, pin)",
        "CREATE INDEX ix_terminal_punch_record ON terminal_punch (record_id)",
        "CREATE INDEX ix_terminal_punch_outcome ON terminal_punch (outcome, id)",
    ] {
        db.execute_unprepared(sql).await?;
    }
    let violations = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA foreign_key_check",
        ))
        .await?;
    if !violations.is_empty() {
        return Err(DbErr::Migration(format!(
            "rebuilt tables break {} foreign keys",
            violations.len()
        )));
    }
    Ok(())
}

/// The AUTOINCREMENT high-water marks of the rebuilt tables.
async fn id_sequences(manager: &SchemaManager<'_>) -> Result<Vec<(String, i64)>, DbErr> {
    let rows = manager
        .get_connection()
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT name, seq FROM sqlite_sequence \
             WHERE name IN ('attendance_record', 'record_change', 'terminal_punch')",
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect()
}

/// `attendance_record` as it is from now on (SQLite's rebuild).
fn record_table(name: &str) -> TableCreateStatement {
    let table = Alias::new(name);
    Table::create()
        .table(table.clone())
        .col(pk_auto(Record::Id))
        .col(integer(Record::SessionId))
        .col(integer(Record::StudentId))
        .col(string(Record::Status))
        .col(timestamp_with_time_zone(Record::Timestamp))
        .col(timestamp_with_time_zone_null(Record::ScannedAt))
        .col(integer_null(Record::LateMinutes))
        .col(string(Record::Source))
        .foreign_key(&mut restrict(
            "fk_record_session",
            (table.clone(), Record::SessionId),
            "attendance_session",
        ))
        .foreign_key(&mut restrict(
            "fk_record_student",
            (table, Record::StudentId),
            "student",
        ))
        .to_owned()
}

/// `record_change` as it is from now on (SQLite's rebuild): no reference to the record.
fn change_table(name: &str) -> TableCreateStatement {
    let table = Alias::new(name);
    Table::create()
        .table(table.clone())
        .col(pk_auto(Change::Id))
        .col(integer(Change::RecordId))
        .col(integer(Change::SessionId))
        .col(integer(Change::StudentId))
        .col(string(Change::Kind).default("edit"))
        .col(string(Change::OldStatus))
        .col(string_null(Change::NewStatus))
        .col(integer_null(Change::ChangedBy))
        .col(timestamp_with_time_zone(Change::ChangedAt))
        .col(string_null(Change::Reason))
        .foreign_key(&mut restrict(
            "fk_change_session",
            (table.clone(), Change::SessionId),
            "attendance_session",
        ))
        .foreign_key(&mut restrict(
            "fk_change_student",
            (table.clone(), Change::StudentId),
            "student",
        ))
        .foreign_key(&mut restrict(
            "fk_change_user",
            (table, Change::ChangedBy),
            "app_user",
        ))
        .to_owned()
}

/// `terminal_punch` as it is from now on (SQLite's rebuild), its record in `record_table`.
fn punch_table(name: &str, record_table: &str) -> TableCreateStatement {
    let table = Alias::new(name);
    Table::create()
        .table(table.clone())
        .col(pk_auto(Punch::Id))
        .col(integer(Punch::DeviceId))
        .col(string(Punch::Pin))
        .col(string(Punch::PunchTime))
        .col(text(Punch::Line))
        .col(string(Punch::Outcome))
        .col(string_null(Punch::Reason))
        .col(text_null(Punch::Message))
        .col(integer_null(Punch::RecordId))
        .col(timestamp_with_time_zone(Punch::ReceivedAt))
        .foreign_key(&mut restrict(
            "fk_terminal_punch_device",
            (table.clone(), Punch::DeviceId),
            "device",
        ))
        .foreign_key(
            &mut ForeignKey::create()
                .name("fk_terminal_punch_record")
                .from(table, Punch::RecordId)
                .to(Alias::new(record_table), Alias::new("id"))
                .on_delete(ForeignKeyAction::SetNull)
                .to_owned(),
        )
        .to_owned()
}

/// A reference to `parent.id` that refuses to delete a parent still referred to.
fn restrict(
    name: &str,
    (table, column): (Alias, impl IntoIden),
    parent: &str,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, column)
        .to(Alias::new(parent), Alias::new("id"))
        .on_delete(ForeignKeyAction::Restrict)
        .to_owned()
}

/// The audit trail is read by session, by student and newest first.
async fn create_indexes(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    for (name, column) in [
        ("ix_change_session", Change::SessionId),
        ("ix_change_student", Change::StudentId),
    ] {
        manager
            .create_index(
                Index::create()
                    .name(name)
                    .table(Change::Table)
                    .col(column)
                    .col(Change::Id)
                    .to_owned(),
            )
            .await?;
    }
    if manager.get_database_backend() == DbBackend::Sqlite {
        // The rebuild dropped it with the old table.
        manager
            .create_index(
                Index::create()
                    .name("ix_change_record")
                    .table(Change::Table)
                    .col(Change::RecordId)
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum Student {
    Table,
    IsActive,
}

#[derive(DeriveIden)]
enum Record {
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
enum Change {
    #[sea_orm(iden = "record_change")]
    Table,
    Id,
    RecordId,
    SessionId,
    StudentId,
    Kind,
    OldStatus,
    NewStatus,
    ChangedBy,
    ChangedAt,
    Reason,
}

#[derive(DeriveIden)]
enum Punch {
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
