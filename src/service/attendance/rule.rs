//! The scan rule, written once as SQL: which session a scan lands in, which device may make
//! it, which student counts, and how a record is written. Every statement that judges a scan
//! (single, group-commit, offline, diagnosis) or marks absentees is assembled from these
//! fragments, so a change to the rule is one edit here.
//!
//! Aliases are fixed: `s` the session, `d` the device, `st` the student, `cs` the course's
//! section link. Parameters are passed in as SQL text (`$3`, `x.ts`), so one fragment serves
//! a statement with scalar parameters and one over unnested arrays.

use sea_orm::DbBackend;

use crate::entities::{AttendanceStatus, ChangeKind, RecordSource};

/// Which student a scan names: the id (REST, GraphQL) or the card code (terminals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StudentRef {
    /// `student.id`.
    Id(i32),
    /// `student.student_code`.
    Code(String),
}

impl StudentRef {
    /// The order in which scans write records: by student id, as the close and the live
    /// batch do. Codes (terminals send one scan per transaction) come after the ids.
    pub(crate) fn sort_key(&self) -> (bool, i32, &str) {
        match self {
            Self::Id(id) => (false, *id, ""),
            Self::Code(code) => (true, 0, code.as_str()),
        }
    }
}

/// The columns every statement writes a record with, in this order.
pub(crate) const RECORD_COLUMNS: &str =
    "session_id, student_id, status, timestamp, scanned_at, late_minutes, source";

/// The columns every statement reads a record back with (an `attendance_record::Model`).
pub(crate) const RECORD_FIELDS: &str =
    "id, session_id, student_id, status, timestamp, scanned_at, late_minutes, source";

/// The session bound to `device` right now (open, whatever its date).
pub(crate) fn bound_session(device: &str) -> String {
    format!("s.device_id = {device} AND s.is_active")
}

/// The session a live scan lands in: bound to `device`, of the scan's `day`, and not yet
/// past its closing time at `now`.
pub(crate) fn live_session(device: &str, day: &str, now: &str) -> String {
    format!(
        "{} AND s.date = {day} AND s.closes_at > {now}",
        bound_session(device)
    )
}

/// The session's device, active and still holding the key whose hash is `key`: a revoked or
/// rotated key fails here, in every process at once.
pub(crate) fn device_holds_key(key: &str) -> String {
    format!("d.id = s.device_id AND d.is_active AND d.key_hash = {key}")
}

/// The student a scan names, by id or by card code, as parameter `value`.
pub(crate) fn student_named(student: &StudentRef, value: &str) -> String {
    match student {
        StudentRef::Id(_) => format!("st.id = {value}"),
        StudentRef::Code(_) => format!("st.student_code = {value}"),
    }
}

/// The student is in one of the session's course's sections.
pub(crate) const IN_COURSE: &str = "cs.course_id = s.course_id AND cs.section_id = st.section_id";

/// The student has not left the school: only they scan, and only they are marked absent.
pub(crate) const STUDENT_ACTIVE: &str = "st.is_active";

/// The joins that make a (session `s`, student) pair one where a scan counts: the device
/// holds `key`, the student is `student` and still active, and the student is in the course.
pub(crate) fn counted(key: &str, student: &str) -> String {
    format!(
        "JOIN device d ON {} JOIN student st ON {student} AND {STUDENT_ACTIVE} \
         JOIN course_section cs ON {IN_COURSE}",
        device_holds_key(key)
    )
}

/// The values of a new `present` record from a scan at instant `ts` (for the columns of
/// [`RECORD_COLUMNS`]), late by the minutes past the session's start and grace.
pub(crate) fn present_values(backend: DbBackend, ts: &str) -> String {
    format!(
        "s.id, st.id, '{}', {ts}, {ts}, {}, '{}'",
        AttendanceStatus::Present.as_str(),
        late_minutes(backend, ts),
        RecordSource::Scan.as_str()
    )
}

/// Minutes after the session's start for a scan at `ts`, 0 within the grace period.
pub(crate) fn late_minutes(backend: DbBackend, ts: &str) -> String {
    match backend {
        DbBackend::Sqlite => format!(
            "CASE WHEN unixepoch({ts}) > unixepoch(s.starts_at) + s.grace_minutes * 60 \
             THEN (unixepoch({ts}) - unixepoch(s.starts_at)) / 60 ELSE 0 END"
        ),
        _ => format!(
            "CASE WHEN {ts} > s.starts_at + make_interval(mins => s.grace_minutes) \
             THEN CAST(FLOOR(EXTRACT(EPOCH FROM ({ts} - s.starts_at)) / 60) AS INTEGER) ELSE 0 END"
        ),
    }
}

/// No person has edited the record (a late scan's correction is no person's edit: it
/// writes one, but leaves a scanned record that no fragment here matches again).
fn no_person_edited(record: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM record_change c WHERE c.record_id = {record}.id \
         AND c.kind = '{}')",
        ChangeKind::Edit.as_str()
    )
}

/// An excuse holds the record: it set the record's permission and may turn it back.
pub fn held_by_excuse(record: &str) -> String {
    format!("EXISTS (SELECT 1 FROM record_excuse l WHERE l.record_id = {record}.id)")
}

/// THE automatic absence: the close wrote it because nobody scanned, and no person has
/// edited it since. What an excuse may turn into permission.
pub fn automatic_absence(record: &str) -> String {
    format!(
        "{record}.status = '{}' AND {record}.source = '{}' AND {}",
        AttendanceStatus::Absent.as_str(),
        RecordSource::AutoAbsent.as_str(),
        no_person_edited(record)
    )
}

/// A record no person has set: an automatic absence, or the permission an excuse gave in
/// its place (at the close, or afterwards), with no person's edit since. The only kind a
/// late scan may correct: a scan is evidence of presence.
pub fn set_by_no_person(record: &str) -> String {
    format!(
        "(({record}.status = '{absent}' AND {record}.source = '{auto}') \
         OR ({record}.status = '{permission}' AND ({record}.source = '{excused}' OR {held}))) \
         AND {unedited}",
        absent = AttendanceStatus::Absent.as_str(),
        auto = RecordSource::AutoAbsent.as_str(),
        permission = AttendanceStatus::Permission.as_str(),
        excused = RecordSource::Excuse.as_str(),
        held = held_by_excuse(record),
        unedited = no_person_edited(record),
    )
}

/// The values of the record the close writes for a student nobody scanned ($1 session,
/// $2 now), in the columns of [`RECORD_COLUMNS`]: an automatic absence, or, when `excuse`
/// names an excuse id column (NULL when none covers the student), permission for those an
/// excuse covers.
pub(crate) fn absence_values(excuse: Option<&str>) -> String {
    let (absent, auto) = (
        AttendanceStatus::Absent.as_str(),
        RecordSource::AutoAbsent.as_str(),
    );
    match excuse {
        None => format!("$1, st.id, '{absent}', $2, NULL, NULL, '{auto}'"),
        Some(excuse) => format!(
            "$1, st.id, CASE WHEN {excuse} IS NULL THEN '{absent}' ELSE '{permission}' END, $2, \
             NULL, NULL, CASE WHEN {excuse} IS NULL THEN '{auto}' ELSE '{excused}' END",
            permission = AttendanceStatus::Permission.as_str(),
            excused = RecordSource::Excuse.as_str(),
        ),
    }
}

/// THE excuse rule: excuse `e` holds and covers date `day` for course `course` (its own
/// course, or every course).
pub(crate) fn excuse_covers(day: &str, course: &str) -> String {
    format!(
        "e.revoked_at IS NULL AND e.from_date <= {day} AND e.to_date >= {day} \
         AND (e.course_id IS NULL OR e.course_id = {course})"
    )
}

/// The excuses covering `day` for `course` as a derived table `x (student_id, excuse_id)`,
/// one per student (the oldest).
pub(crate) fn excuses_covering(day: &str, course: &str) -> String {
    format!(
        "(SELECT e.student_id AS student_id, MIN(e.id) AS excuse_id FROM excuse e \
          WHERE {} GROUP BY e.student_id) x",
        excuse_covers(day, course)
    )
}
