//! What a record's history is: every change to a record's status, by a person, an excuse
//! or a late scan, leaves one audit entry that is never updated or deleted and outlives
//! the record.

use chrono::{DateTime, Utc};
use sea_orm::Set;

use crate::entities::{AttendanceStatus, ChangeKind, attendance_record, record_change};

/// The audit trail's columns, in the order the set-based statements (excuses, the close)
/// write them.
pub const AUDIT_COLUMNS: &str = "record_id, session_id, student_id, kind, old_status, \
     new_status, changed_by, changed_at, reason, excuse_id";

/// The audit entry for changing `record` to `new_status`, or for deleting it (`None`), by
/// account `by` (`None`: the server itself). Every entry is written through here and never
/// updated afterwards.
pub fn audit_entry(
    record: &attendance_record::Model,
    new_status: Option<AttendanceStatus>,
    by: Option<i32>,
    at: DateTime<Utc>,
    reason: Option<String>,
) -> record_change::ActiveModel {
    record_change::ActiveModel {
        record_id: Set(record.id),
        session_id: Set(record.session_id),
        student_id: Set(record.student_id),
        kind: Set(if new_status.is_some() {
            ChangeKind::Edit
        } else {
            ChangeKind::Delete
        }),
        old_status: Set(record.status),
        new_status: Set(new_status),
        changed_by: Set(by),
        changed_at: Set(at),
        reason: Set(reason),
        ..Default::default()
    }
}
