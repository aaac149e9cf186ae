//! Scans a terminal buffered while offline and sends later: matched to the session bound to
//! the device at the scan's own date and time, and allowed to correct an automatic absence.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    FromQueryResult, QueryFilter, TransactionTrait,
};

use crate::auth::Principal;
use crate::entities::{AttendanceStatus, RecordSource, attendance_record, attendance_session};
use crate::error::{AppError, AppResult, Reason};
use crate::events::{EventKind, SessionEvent};
use crate::service::attendance::record::audit_entry;
use crate::service::attendance::rule;
use crate::service::roll_call::scan::{
    Diagnosis, ScanRequest, Target, diagnosis_sql, scan_sql, student_rejection, student_value,
};
use crate::service::sql::{statement, write_transaction};
use crate::service::{Service, local_to_utc_in};

/// The device's sessions per date, read once per batch.
type SessionsByDate = std::collections::HashMap<NaiveDate, Vec<attendance_session::Model>>;

/// What became of one buffered scan that was not rejected.
#[derive(Clone, Debug)]
pub enum BufferedOutcome {
    /// A new `present` record.
    Accepted(attendance_record::Model),
    /// An automatic absence, untouched by any teacher, turned into `present`.
    CorrectedAbsence(attendance_record::Model),
    /// The student already had a record in that session; nothing changed.
    Duplicate(i32),
}

impl Service {
    /// Records a scan made at its own local date and time (read in `zone`, or `TIME_ZONE`),
    /// against the session that was bound to the device then, active or closed since.
    pub async fn scan_buffered(
        &self,
        device: &Principal,
        request: &ScanRequest,
        zone: Option<Tz>,
    ) -> AppResult<BufferedOutcome> {
        let mut results = self
            .scan_buffered_batch(device, std::slice::from_ref(request), zone)
            .await?;
        results
            .pop()
            .unwrap_or_else(|| Err(AppError::Internal("empty batch result".into())))
    }

    /// Records many buffered scans in one transaction (one commit for the whole batch) and
    /// returns one result per scan. A database failure fails the whole batch, which the
    /// device may then resend: replays change nothing.
    pub async fn scan_buffered_batch(
        &self,
        device: &Principal,
        requests: &[ScanRequest],
        zone: Option<Tz>,
    ) -> AppResult<Vec<AppResult<BufferedOutcome>>> {
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let mut sessions = SessionsByDate::new();
        let mut prepared = Vec::with_capacity(requests.len());
        for request in requests {
            let session = self
                .buffered_session(&txn, &mut sessions, device, request, zone)
                .await;
            if let Err(err @ (AppError::Unavailable | AppError::Internal(_))) = session {
                return Err(err);
            }
            prepared.push(session);
        }
        // Records are written in (session, student) order, the order of the close's absence
        // insert and of the live scan batch, so that racing transactions queue for a record
        // instead of deadlocking. The sort is stable: one student's scans keep their order.
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&index| match &prepared[index] {
            Ok((session, _)) => (Some(session.id), requests[index].student.sort_key()),
            Err(_) => (None, requests[index].student.sort_key()),
        });
        let mut outcomes: Vec<Option<AppResult<BufferedOutcome>>> =
            (0..requests.len()).map(|_| None).collect();
        for index in order {
            let result = match &prepared[index] {
                Ok((session, scanned_at)) => {
                    self.record_buffered(&txn, device, &requests[index], session, *scanned_at)
                        .await
                }
                Err(_) => continue,
            };
            if let Err(err @ (AppError::Unavailable | AppError::Internal(_))) = result {
                return Err(err);
            }
            outcomes[index] = Some(result);
        }
        let mut results = Vec::with_capacity(requests.len());
        for (outcome, prepared) in outcomes.into_iter().zip(prepared) {
            let result = match (outcome, prepared) {
                (Some(result), _) => result,
                (None, Err(err)) => Err(err),
                (None, Ok(_)) => Err(AppError::Internal("buffered scan left unjudged".into())),
            };
            self.count_scan(result.as_ref().map(|outcome| match outcome {
                BufferedOutcome::Accepted(_) | BufferedOutcome::CorrectedAbsence(_) => "accepted",
                BufferedOutcome::Duplicate(_) => "duplicate",
            }));
            results.push(result);
        }
        txn.commit().await?;
        // Subscribers load what they are told about, so they hear only after the commit.
        for result in &results {
            if let Ok(
                BufferedOutcome::Accepted(record) | BufferedOutcome::CorrectedAbsence(record),
            ) = result
            {
                self.events.publish(SessionEvent {
                    session_id: record.session_id,
                    kind: EventKind::Scan,
                    record_id: Some(record.id),
                });
            }
        }
        Ok(results)
    }

    /// The session a buffered scan belongs to, and its instant: checks the scan's time
    /// against the offline horizon and finds the session bound to the device then.
    async fn buffered_session(
        &self,
        conn: &DatabaseTransaction,
        sessions: &mut SessionsByDate,
        device: &Principal,
        request: &ScanRequest,
        zone: Option<Tz>,
    ) -> AppResult<(attendance_session::Model, DateTime<Utc>)> {
        let (device_id, _) = device.device().ok_or(AppError::Forbidden)?;
        let zone = zone.unwrap_or(self.config.time_zone);
        let scanned_at = local_to_utc_in(zone, request.date, request.time)?;
        let at = self.now();
        self.last_seen.touch(device_id, at);
        let horizon = Duration::hours(self.config.offline_horizon_hours as i64);
        if at - scanned_at > horizon {
            return Err(AppError::rejected(
                Reason::ScanTooOld,
                format!(
                    "scans older than {} hours are not accepted",
                    self.config.offline_horizon_hours
                ),
            ));
        }
        let Some(session) = self
            .session_at(conn, sessions, device_id, request.date, scanned_at)
            .await?
        else {
            return Err(AppError::rejected(
                Reason::NoActiveSession,
                format!(
                    "no session was bound to this device on {} at {}",
                    request.date, request.time
                ),
            ));
        };

        Ok((session, scanned_at))
    }

    /// Writes one buffered scan into `session`: a new record, a corrected automatic
    /// absence, or a duplicate; any other outcome is the rule's rejection.
    async fn record_buffered(
        &self,
        conn: &DatabaseTransaction,
        device: &Principal,
        request: &ScanRequest,
        session: &attendance_session::Model,
        scanned_at: DateTime<Utc>,
    ) -> AppResult<BufferedOutcome> {
        let (device_id, key_hash) = device.device().ok_or(AppError::Forbidden)?;
        let backend = self.db.get_database_backend();
        let inserted = attendance_record::Entity::find()
            .from_raw_sql(statement(
                backend,
                scan_sql(backend, &request.student, Target::Session),
                vec![
                    session.id.into(),
                    student_value(&request.student),
                    scanned_at.into(),
                    key_hash.into(),
                ],
            ))
            .one(conn)
            .await?;
        if let Some(record) = inserted {
            return Ok(BufferedOutcome::Accepted(record));
        }

        let facts = Diagnosis::find_by_statement(statement(
            backend,
            diagnosis_sql(&request.student, Target::Session),
            vec![
                device_id.into(),
                student_value(&request.student),
                key_hash.into(),
                request.date.into(),
                session.id.into(),
            ],
        ))
        .one(conn)
        .await?;
        let Some(facts) = facts.filter(|f| f.device_ok == 1) else {
            self.forget_device_keys();
            return Err(AppError::Unauthenticated);
        };
        match student_rejection(&facts, &request.student) {
            // Only an automatic absence can be corrected, so any other existing record is a
            // plain duplicate without the correction's transaction (`correct_absence`
            // re-checks the record itself, so a race here only costs that transaction).
            Some(AppError::Rejected {
                reason: Reason::DuplicateScan,
                record_id: Some(record_id),
                ..
            }) if facts.correctable != Some(1) => Ok(BufferedOutcome::Duplicate(record_id)),
            Some(AppError::Rejected {
                reason: Reason::DuplicateScan,
                record_id: Some(record_id),
                ..
            }) => {
                let student_id = facts.student_id.unwrap_or_default();
                match self
                    .correct_absence(conn, session, student_id, scanned_at, device_id)
                    .await?
                {
                    Some(record) => Ok(BufferedOutcome::CorrectedAbsence(record)),
                    None => Ok(BufferedOutcome::Duplicate(record_id)),
                }
            }
            Some(rejection) => Err(rejection),
            None => Err(AppError::Internal(format!(
                "buffered scan in session {} wrote nothing and no rule explains why",
                session.id
            ))),
        }
    }

    /// The session bound to the device at `instant` on `date`: opened (or starting) by
    /// then, and not yet closed. A batch reads each date's sessions once.
    async fn session_at(
        &self,
        conn: &DatabaseTransaction,
        sessions: &mut SessionsByDate,
        device_id: i32,
        date: NaiveDate,
        instant: DateTime<Utc>,
    ) -> AppResult<Option<attendance_session::Model>> {
        use attendance_session::Column;
        let known = match sessions.entry(date) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                attendance_session::Entity::find()
                    .filter(Column::DeviceId.eq(device_id))
                    .filter(Column::Date.eq(date))
                    .all(conn)
                    .await?,
            ),
        };
        Ok(known
            .iter()
            .filter(|s| s.created_at <= instant || s.starts_at <= instant)
            .filter(|s| {
                if s.is_active {
                    s.closes_at >= instant
                } else {
                    s.closed_at.is_some_and(|closed| closed >= instant)
                }
            })
            .max_by_key(|s| s.id)
            .cloned())
    }

    /// Turns a record no person set (an automatic absence, or an excuse's permission) into
    /// `present` with an audit row saying why and what it was; a teacher's edit stands.
    async fn correct_absence(
        &self,
        conn: &DatabaseTransaction,
        session: &attendance_session::Model,
        student_id: i32,
        scanned_at: DateTime<Utc>,
        device_id: i32,
    ) -> AppResult<Option<attendance_record::Model>> {
        let backend = self.db.get_database_backend();
        let at = self.now();
        let correctable = rule::set_by_no_person("attendance_record");
        // A savepoint inside the batch's transaction.
        let txn = conn.begin().await?;
        let Some(before) = attendance_record::Entity::find()
            .filter(attendance_record::Column::SessionId.eq(session.id))
            .filter(attendance_record::Column::StudentId.eq(student_id))
            .filter(Expr::cust(correctable.clone()))
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(None);
        };
        // The status read above is part of the condition, so the audit row's old status is
        // the one replaced even if an excuse or a person changed the record meanwhile.
        let corrected = attendance_record::Entity::find()
            .from_raw_sql(statement(
                backend,
                &format!(
                    "UPDATE attendance_record SET status = '{present}', scanned_at = $2, \
                     timestamp = $3, source = '{scan}', late_minutes = \
                     (SELECT {late} FROM attendance_session s WHERE s.id = attendance_record.session_id) \
                     WHERE id = $1 AND status = '{old}' AND {correctable} \
                     RETURNING {fields}",
                    present = AttendanceStatus::Present.as_str(),
                    scan = RecordSource::Scan.as_str(),
                    late = rule::late_minutes(backend, "$2"),
                    old = before.status.as_str(),
                    fields = rule::RECORD_FIELDS,
                ),
                vec![before.id.into(), scanned_at.into(), at.into()],
            ))
            .one(&txn)
            .await?;
        let Some(record) = corrected else {
            txn.rollback().await?;
            return Ok(None);
        };
        // The excuse no longer holds this record: revoking it must not turn it back.
        txn.execute_raw(statement(
            backend,
            "DELETE FROM record_excuse WHERE record_id = $1",
            vec![record.id.into()],
        ))
        .await?;
        let reason = format!(
            "buffered scan from device {device_id} at {} received after the session closed",
            scanned_at.to_rfc3339()
        );
        audit_entry(
            &before,
            Some(AttendanceStatus::Present),
            None,
            at,
            Some(reason),
        )
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(Some(record))
    }
}
