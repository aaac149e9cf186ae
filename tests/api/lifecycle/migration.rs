//! A database from before history was protected migrates without losing a row: records,
//! audit entries and terminal lines all stay, audit entries learn their session and
//! student, the cascades become refusals, and deleted records' ids are never reused.

use attendance::config::Config;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::both_databases;
use crate::common::*;

both_databases!(an_existing_database_migrates_without_losing_a_row);

/// The schema version before `m20261130_000007_history_kept`.
const BEFORE: u32 = 6;

const AT: &str = "'2026-09-01T08:00:00+00:00'";

async fn run(db: &DatabaseConnection, sql: &str) -> Result<u64, sea_orm::DbErr> {
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .map(|r| r.rows_affected())
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("integer")
}

async fn an_existing_database_migrates_without_losing_a_row(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let env = test_env(&test_db.url);
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    let pools = attendance::db::connect(&config).await.expect("connect");
    let db = &pools.db;
    Migrator::up(db, Some(BEFORE)).await.expect("old schema");

    for sql in [
        "INSERT INTO dep_batch (id, dep, batch) VALUES (1, 'SE', '2024')".to_owned(),
        "INSERT INTO section (id, name, dep_batch_id) VALUES (1, 'A', 1)".to_owned(),
        format!(
            "INSERT INTO student (id, student_code, first_name, last_name, section_id, \
             created_at, enrolled_at) VALUES (1, 'S1', 'A', 'B', 1, {AT}, {AT}), \
             (2, 'S2', 'C', 'D', 1, {AT}, {AT}), (3, 'S3', 'E', 'F', 1, {AT}, {AT})"
        ),
        "INSERT INTO teacher (id, teacher_code, first_name, last_name) VALUES (1, 'T1', 'T', 'T')"
            .to_owned(),
        format!(
            "INSERT INTO app_user (id, username, password_hash, role, teacher_id, is_active, \
             created_at) VALUES (1, 't1', 'x', 'teacher', 1, true, {AT})"
        ),
        "INSERT INTO course (id, name, code, teacher_id) VALUES (1, 'Course', 'C1', 1)".to_owned(),
        "INSERT INTO course_section (course_id, section_id) VALUES (1, 1)".to_owned(),
        format!(
            "INSERT INTO device (id, device_id, name, is_active, key_hash, created_at) \
             VALUES (1, 'DEV-1', 'Room', true, 'hash', {AT})"
        ),
        format!(
            "INSERT INTO attendance_session (id, course_id, date, created_by, created_at, \
             device_id, is_active, starts_at, grace_minutes, closes_at, closed_at) \
             VALUES (1, 1, '2026-09-01', 1, {AT}, 1, false, {AT}, 10, {AT}, {AT})"
        ),
        format!(
            "INSERT INTO attendance_record (session_id, student_id, status, timestamp, \
             scanned_at, late_minutes, source) VALUES \
             (1, 1, 'present', {AT}, {AT}, 0, 'scan'), \
             (1, 2, 'permission', {AT}, NULL, NULL, 'auto_absent'), \
             (1, 3, 'absent', {AT}, NULL, NULL, 'auto_absent')"
        ),
        format!(
            "INSERT INTO record_change (record_id, old_status, new_status, changed_by, \
             changed_at, reason) VALUES (2, 'absent', 'permission', 1, {AT}, 'doctor')"
        ),
        format!(
            "INSERT INTO terminal_punch (device_id, pin, punch_time, line, outcome, record_id, \
             received_at) VALUES (1, 'S1', '2026-09-01 08:00:00', 'S1\t...', 'accepted', 1, {AT})"
        ),
        // Deleted before the migration: its id must never come back.
        "DELETE FROM attendance_record WHERE id = 3".to_owned(),
    ] {
        run(db, &sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    Migrator::up(db, None).await.expect("migrate");

    assert_eq!(count(db, "SELECT COUNT(*) FROM attendance_record").await, 2);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM terminal_punch WHERE record_id = 1"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM record_change WHERE record_id = 2 AND session_id = 1 \
             AND student_id = 2 AND kind = 'edit' AND new_status = 'permission' \
             AND changed_by = 1 AND reason = 'doctor'"
        )
        .await,
        1
    );
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM student WHERE is_active").await,
        3
    );

    // What cascaded before is refused now, by the database itself.
    for sql in [
        "DELETE FROM student WHERE id = 1",
        "DELETE FROM attendance_session WHERE id = 1",
        "DELETE FROM device WHERE id = 1",
        "DELETE FROM app_user WHERE id = 1",
    ] {
        assert!(run(db, sql).await.is_err(), "the database allowed {sql}");
    }
    // A deleted record's audit entry stays, and the terminal line loses only its link.
    assert_eq!(
        run(db, "DELETE FROM attendance_record WHERE id = 2")
            .await
            .ok(),
        Some(1)
    );
    assert_eq!(count(db, "SELECT COUNT(*) FROM record_change").await, 1);
    assert_eq!(
        run(db, "DELETE FROM attendance_record WHERE id = 1")
            .await
            .ok(),
        Some(1)
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM terminal_punch WHERE record_id IS NULL"
        )
        .await,
        1
    );
    // The unique pair still holds, and new ids continue past every id ever handed out.
    run(
        db,
        &format!(
            "INSERT INTO attendance_record (session_id, student_id, status, timestamp, source) \
             VALUES (1, 3, 'absent', {AT}, 'auto_absent')"
        ),
    )
    .await
    .expect("insert");
    assert_eq!(
        count(db, "SELECT CAST(MAX(id) AS BIGINT) FROM attendance_record").await,
        4
    );
    let twice = run(
        db,
        &format!(
            "INSERT INTO attendance_record (session_id, student_id, status, timestamp, source) \
             VALUES (1, 3, 'absent', {AT}, 'auto_absent')"
        ),
    )
    .await;
    assert!(twice.is_err(), "the (session, student) pair is unique");

    // Reverting it (after the timetable's migration) would bring the cascades back; it is
    // refused.
    let later = Migrator::migrations().len() as u32 - BEFORE - 1;
    assert!(Migrator::down(db, Some(later + 1)).await.is_err());
    assert_eq!(count(db, "SELECT COUNT(*) FROM record_change").await, 1);
}
