//! What a session is: how one opens (by a teacher or by the timetable), what closing it
//! writes (an absence, or an excuse's permission, for every expected student nobody
//! scanned), and how its records are counted.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, DbErr, FromQueryResult, Set, Statement,
};

use super::rule;
use crate::entities::attendance_session;
use crate::service::sql::statement;

/// How many sessions open or close at once: a few on PostgreSQL, so the end of a period
/// (hundreds of classes ending at one minute) is not done one by one; one on SQLite, whose
/// single writer would only queue them.
pub fn parallel_writes(backend: DbBackend) -> usize {
    if backend == DbBackend::Postgres { 4 } else { 1 }
}

/// A session about to open: the one way a session row is written, by `createSession` and
/// by the timetable alike.
#[derive(Clone, Debug)]
pub struct Opening {
    /// The course.
    pub course_id: i32,
    /// The date of the class.
    pub date: NaiveDate,
    /// The teacher running it.
    pub created_by: i32,
    /// The device it is bound to.
    pub device_id: i32,
    /// When it opens.
    pub at: DateTime<Utc>,
    /// When the class starts, for lateness.
    pub starts_at: DateTime<Utc>,
    /// Minutes after the start before a scan is late.
    pub grace_minutes: i32,
    /// When it closes by itself.
    pub closes_at: DateTime<Utc>,
    /// The timetable slot it is a class of, if any.
    pub slot_id: Option<i32>,
}

/// Writes the session, active and bound to its device. A unique violation means the
/// device is bound to another active session, or (with a slot) that the class is open
/// already; the caller tells which.
pub async fn open(
    db: &impl ConnectionTrait,
    opening: Opening,
) -> Result<attendance_session::Model, DbErr> {
    attendance_session::ActiveModel {
        course_id: Set(opening.course_id),
        date: Set(opening.date),
        created_by: Set(opening.created_by),
        created_at: Set(opening.at),
        device_id: Set(opening.device_id),
        is_active: Set(true),
        starts_at: Set(opening.starts_at),
        grace_minutes: Set(opening.grace_minutes),
        closes_at: Set(opening.closes_at),
        closed_at: Set(None),
        slot_id: Set(opening.slot_id),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// The outcome of closing a session.
#[derive(Clone, Debug)]
pub struct Closed {
    /// The session, now inactive.
    pub session: attendance_session::Model,
    /// How many students this close marked absent (0 when it was already closed).
    pub marked_absent: u64,
    /// False when the session had already been closed by someone else.
    pub newly_closed: bool,
}

/// Marks absent every enrolled, active student of the course with no record, in one
/// statement ($1 session, $2 now, $3 course, $4 the enrolment cut-off, and with excuses $5
/// the session's date). `with_excuses` (when an excuse covers the session's date and course) joins the
/// excuses, and a student one covers gets permission instead. Student order matches the
/// scan batch's, so racing inserts cannot deadlock.
fn mark_absent_sql(with_excuses: bool) -> String {
    let (join, values) = if with_excuses {
        (
            format!(
                "LEFT JOIN {} ON x.student_id = st.id",
                rule::excuses_covering("$5", "$3")
            ),
            rule::absence_values(Some("x.excuse_id")),
        )
    } else {
        // The usual case needs no join: the statement is the one before excuses existed.
        (String::new(), rule::absence_values(None))
    };
    format!(
        "INSERT INTO attendance_record ({columns}) \
         SELECT {values} \
         FROM course_section cs \
         JOIN student st ON st.section_id = cs.section_id AND {active} \
         {join} \
         WHERE cs.course_id = $3 AND st.enrolled_at <= $4 \
         AND NOT EXISTS (SELECT 1 FROM attendance_record r WHERE r.session_id = $1 AND r.student_id = st.id) \
         ORDER BY st.id \
         ON CONFLICT (session_id, student_id) DO NOTHING",
        columns = rule::RECORD_COLUMNS,
        active = rule::STUDENT_ACTIVE,
    )
}

/// Whether any excuse covers a session's date ($1) and course ($2): one row, 0 or 1.
fn any_excuse_sql() -> String {
    format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM excuse e WHERE {} LIMIT 1) t",
        rule::excuse_covers("$1", "$2")
    )
}

/// After [`mark_absent_sql`], links the records an excuse made permission to that excuse
/// ($1 session, $2 date, $3 course): driven by the few excuses, not the roster.
fn link_excused_sql() -> String {
    format!(
        "INSERT INTO record_excuse (record_id, excuse_id) \
         SELECT r.id, x.excuse_id FROM {excuses} \
         JOIN attendance_record r ON r.session_id = $1 AND r.student_id = x.student_id \
         WHERE r.source = '{excused}' \
         ON CONFLICT (record_id) DO NOTHING",
        excuses = rule::excuses_covering("$2", "$3"),
        excused = crate::entities::RecordSource::Excuse.as_str(),
    )
}

/// The audit entries of the statuses a close's excuses set ($1 session, $2 now), naming
/// each excuse.
fn audit_excused_sql() -> String {
    format!(
        "INSERT INTO record_change ({columns}) \
         SELECT r.id, r.session_id, r.student_id, '{kind}', '{absent}', r.status, NULL, $2, \
         NULL, l.excuse_id FROM record_excuse l \
         JOIN attendance_record r ON r.id = l.record_id \
         WHERE r.session_id = $1 AND r.source = '{excused}'",
        columns = super::record::AUDIT_COLUMNS,
        kind = crate::entities::ChangeKind::Excuse.as_str(),
        absent = crate::entities::AttendanceStatus::Absent.as_str(),
        excused = crate::entities::RecordSource::Excuse.as_str(),
    )
}

/// Closes `session` inside `txn` at `at`: deactivates it (once, however many closers race)
/// and gives every expected student nobody scanned an absence, or the permission of an
/// excuse that covers them, with the excuse's audit entries. How many were marked absent,
/// or `None` when another closer got there first. A constant number of statements.
pub async fn close_in(
    txn: &impl ConnectionTrait,
    session: &attendance_session::Model,
    at: DateTime<Utc>,
) -> Result<Option<u64>, DbErr> {
    let backend = txn.get_database_backend();
    let deactivated = txn
        .execute_raw(statement(
            backend,
            "UPDATE attendance_session SET is_active = false, closed_at = $1 \
             WHERE id = $2 AND is_active",
            vec![at.into(), session.id.into()],
        ))
        .await?;
    if deactivated.rows_affected() == 0 {
        return Ok(None);
    }
    let excused: i64 = txn
        .query_one_raw(statement(
            backend,
            &any_excuse_sql(),
            vec![session.date.into(), session.course_id.into()],
        ))
        .await?
        .map(|row| row.try_get_by_index(0))
        .transpose()?
        .unwrap_or(0);
    let marked = txn
        .execute_raw(statement(
            backend,
            &mark_absent_sql(excused > 0),
            [
                session.id.into(),
                at.into(),
                session.course_id.into(),
                // Enrolled by the later of the class's start and the session's opening:
                // students who join after that are not marked absent.
                session.starts_at.max(session.created_at).into(),
            ]
            .into_iter()
            .chain((excused > 0).then(|| session.date.into()))
            .collect(),
        ))
        .await?;
    let mut linked = 0;
    if excused > 0 {
        linked = txn
            .execute_raw(statement(
                backend,
                &link_excused_sql(),
                vec![
                    session.id.into(),
                    session.date.into(),
                    session.course_id.into(),
                ],
            ))
            .await?
            .rows_affected();
        txn.execute_raw(statement(
            backend,
            &audit_excused_sql(),
            vec![session.id.into(), at.into()],
        ))
        .await?;
    }
    // Excused students were given permission, not marked absent.
    Ok(Some(marked.rows_affected().saturating_sub(linked)))
}

/// A session's roster by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Present records.
    pub present: i64,
    /// Absent records.
    pub absent: i64,
    /// Permission records.
    pub permission: i64,
    /// Enrolled students without a record while the session is active (0 once closed).
    pub not_yet_scanned: i64,
}

#[derive(FromQueryResult)]
struct StatusCount {
    session_id: i32,
    status: String,
    n: i64,
}

/// The present, absent and permission records of each session, in one statement (sessions
/// without records count zeros); `not_yet_scanned` is left at 0.
pub async fn status_counts(
    db: &impl ConnectionTrait,
    session_ids: &[i32],
) -> Result<HashMap<i32, SessionCounts>, DbErr> {
    let mut counts: HashMap<i32, SessionCounts> = session_ids
        .iter()
        .map(|id| (*id, SessionCounts::default()))
        .collect();
    if session_ids.is_empty() {
        return Ok(counts);
    }
    let ids: Vec<String> = session_ids.iter().map(i32::to_string).collect();
    // Ids are integers from the database, so inlining them is safe and keeps one statement.
    let by_status = StatusCount::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        format!(
            "SELECT session_id, status, COUNT(*) AS n FROM attendance_record \
             WHERE session_id IN ({}) GROUP BY session_id, status",
            ids.join(",")
        ),
    ))
    .all(db)
    .await?;
    for row in by_status {
        if let Some(c) = counts.get_mut(&row.session_id) {
            match row.status.as_str() {
                "present" => c.present = row.n,
                "absent" => c.absent = row.n,
                "permission" => c.permission = row.n,
                _ => {}
            }
        }
    }
    Ok(counts)
}
