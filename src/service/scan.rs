//! Device scans: one statement on the success path, a diagnosis only when it fails.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::sessions::statement;
use super::{Service, now};
use crate::auth::Principal;
use crate::entities::{attendance_record, attendance_session, course_section, device, student};
use crate::error::{AppError, AppResult, ErrorCode, Reason};

/// What a device sends: a recognized student and the local date and time of the scan.
#[derive(Clone, Copy, Debug)]
pub struct ScanRequest {
    /// The student's id.
    pub student_id: i32,
    /// The local date on the device.
    pub date: NaiveDate,
    /// The local time on the device.
    pub time: NaiveTime,
}

/// Inserts the `present` record only if the session is active, the device still holds that
/// key, and the student is in one of the course's sections; a duplicate inserts nothing.
const SCAN_SQL: &str = "\
INSERT INTO attendance_record (session_id, student_id, status, timestamp, scanned_at, late_minutes, source) \
SELECT s.id, st.id, 'present', $3, $3, $4, 'scan' \
FROM attendance_session s \
JOIN device d ON d.id = s.device_id \
JOIN course_section cs ON cs.course_id = s.course_id \
JOIN student st ON st.section_id = cs.section_id \
WHERE s.id = $1 AND s.is_active AND d.is_active AND d.key_hash = $5 AND st.id = $2 \
ON CONFLICT (session_id, student_id) DO NOTHING \
RETURNING id, session_id, student_id, status, timestamp, scanned_at, late_minutes, source";

/// Devices' last contact, written to the database in batches rather than on every scan.
#[derive(Default)]
pub struct LastSeen(Mutex<HashMap<i32, DateTime<Utc>>>);

impl LastSeen {
    fn touch(&self, device_id: i32, at: DateTime<Utc>) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(device_id, at);
        }
    }

    fn take(&self) -> HashMap<i32, DateTime<Utc>> {
        self.0
            .lock()
            .map(|mut map| std::mem::take(&mut *map))
            .unwrap_or_default()
    }
}

impl Service {
    /// Records a scan from `device` for its active session.
    pub async fn scan(
        &self,
        device: &Principal,
        request: ScanRequest,
    ) -> AppResult<attendance_record::Model> {
        let Principal::Device {
            id: device_id,
            key_hash,
        } = device
        else {
            return Err(AppError::Forbidden);
        };
        let scanned_at = self.local_to_utc(request.date, request.time)?;
        let at = now();
        self.last_seen.touch(*device_id, at);

        let session = attendance_session::Entity::find()
            .filter(attendance_session::Column::DeviceId.eq(*device_id))
            .filter(attendance_session::Column::IsActive.eq(true))
            .one(&self.db)
            .await?;
        let Some(session) = session else {
            return Err(self.diagnose_no_session(*device_id, request.date).await?);
        };
        if session.closes_at <= at {
            return Err(session_closed());
        }
        if session.date != request.date {
            return Err(AppError::rejected(
                ErrorCode::BadUserInput,
                Reason::DateMismatch,
                format!(
                    "the scan's date {} is not the session's date {}",
                    request.date, session.date
                ),
            ));
        }
        let late_minutes = late_minutes(&session, scanned_at);
        let inserted = attendance_record::Entity::find()
            .from_raw_sql(statement(
                self.db.get_database_backend(),
                SCAN_SQL,
                vec![
                    session.id.into(),
                    request.student_id.into(),
                    scanned_at.into(),
                    late_minutes.into(),
                    key_hash.clone().into(),
                ],
            ))
            .one(&self.db)
            .await?;
        match inserted {
            Some(record) => Ok(record),
            None => Err(self
                .diagnose_rejected(&session, key_hash, request.student_id)
                .await?),
        }
    }

    /// Why no session took the scan: a session of that date already closed, or none at all.
    async fn diagnose_no_session(&self, device_id: i32, date: NaiveDate) -> AppResult<AppError> {
        let latest = attendance_session::Entity::find()
            .filter(attendance_session::Column::DeviceId.eq(device_id))
            .order_by_desc(attendance_session::Column::Id)
            .one(&self.db)
            .await?;
        Ok(match latest {
            Some(s) if !s.is_active && s.date == date => session_closed(),
            _ => AppError::rejected(
                ErrorCode::Conflict,
                Reason::NoActiveSession,
                "this device has no active session",
            ),
        })
    }

    /// Why the insert wrote nothing, checked in the order that keeps races honest: a
    /// session closed meanwhile wins over the absence its close wrote.
    async fn diagnose_rejected(
        &self,
        session: &attendance_session::Model,
        key_hash: &str,
        student_id: i32,
    ) -> AppResult<AppError> {
        let current = attendance_session::Entity::find_by_id(session.id)
            .one(&self.db)
            .await?;
        if !current.is_some_and(|s| s.is_active) {
            return Ok(session_closed());
        }
        let device_ok = device::Entity::find_by_id(session.device_id)
            .one(&self.db)
            .await?
            .is_some_and(|d| d.is_active && d.key_hash == key_hash);
        if !device_ok {
            self.forget_device_keys();
            return Ok(AppError::Unauthenticated);
        }
        let Some(student) = student::Entity::find_by_id(student_id)
            .one(&self.db)
            .await?
        else {
            return Ok(AppError::rejected(
                ErrorCode::NotFound,
                Reason::StudentNotFound,
                format!("no student has id {student_id}"),
            ));
        };
        let enrolled = course_section::Entity::find()
            .filter(course_section::Column::CourseId.eq(session.course_id))
            .filter(course_section::Column::SectionId.eq(student.section_id))
            .one(&self.db)
            .await?
            .is_some();
        if !enrolled {
            return Ok(AppError::rejected(
                ErrorCode::Forbidden,
                Reason::StudentNotInCourse,
                "the student is not in any section of this session's course",
            ));
        }
        let existing = attendance_record::Entity::find()
            .filter(attendance_record::Column::SessionId.eq(session.id))
            .filter(attendance_record::Column::StudentId.eq(student_id))
            .one(&self.db)
            .await?;
        match existing {
            Some(record) => Ok(AppError::Rejected {
                code: ErrorCode::Conflict,
                reason: Reason::DuplicateScan,
                message: format!(
                    "the student is already recorded in this session (record {})",
                    record.id
                ),
                record_id: Some(record.id),
            }),
            None => Ok(AppError::Internal(format!(
                "scan of student {student_id} in session {} wrote nothing without a cause",
                session.id
            ))),
        }
    }

    /// Writes the buffered last-contact times of devices; returns how many were updated.
    pub async fn flush_last_seen(&self) -> AppResult<usize> {
        let pending = self.last_seen.take();
        for (device_id, at) in &pending {
            device::Entity::update_many()
                .col_expr(device::Column::LastSeenAt, Expr::value(*at))
                .filter(device::Column::Id.eq(*device_id))
                .exec(&self.db)
                .await?;
        }
        Ok(pending.len())
    }
}

/// Whole minutes after the session's start, or 0 within the grace period.
pub fn late_minutes(session: &attendance_session::Model, scanned_at: DateTime<Utc>) -> i32 {
    let grace_end = session.starts_at + chrono::Duration::minutes(session.grace_minutes as i64);
    if scanned_at <= grace_end {
        0
    } else {
        (scanned_at - session.starts_at).num_minutes().max(0) as i32
    }
}

fn session_closed() -> AppError {
    AppError::rejected(
        ErrorCode::Conflict,
        Reason::SessionClosed,
        "the session bound to this device has closed",
    )
}
