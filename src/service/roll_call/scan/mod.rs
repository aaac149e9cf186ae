//! Device scans: one statement on the success path, a diagnosis only when it fails. The
//! rule itself is in [`rule`]; live scans on PostgreSQL go through the group commit of
//! [`batcher`], buffered (offline) scans through [`buffered`].

pub(crate) mod batcher;
pub mod buffered;

use crate::service::attendance::rule;
pub use crate::service::attendance::rule::StudentRef;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, Value};

use self::batcher::{Found, Job};
use crate::auth::Principal;
use crate::entities::{attendance_record, device};
use crate::error::{AppError, AppResult, Reason};
use crate::events::{EventKind, SessionEvent};
use crate::service::sql::statement;
use crate::service::{Service, now};

/// What a device sends: a recognized student and the local date and time of the scan.
#[derive(Clone, Debug)]
pub struct ScanRequest {
    /// The student.
    pub student: StudentRef,
    /// The local date on the device.
    pub date: NaiveDate,
    /// The local time on the device.
    pub time: NaiveTime,
}

/// The group-commit statement live scans use on PostgreSQL ($1..$6 are arrays of device
/// ids, student ids, scan instants, key hashes, dates and now).
pub fn batch_scan_sql() -> String {
    batcher::batch_sql()
}

/// Which session a scan statement targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The device's active session, open now, of the scan's date (live scans).
    /// Parameters: $1 device id, $5 date, $6 now.
    Active,
    /// One given session (buffered scans matched by time). Parameter: $1 session id.
    Session,
}

/// The whole success path of a scan in one statement: the `present` record is inserted only
/// where the scan counts by the [`rule`]. A duplicate inserts nothing. $1 is the device (for
/// `Target::Active`) or the session, $2 the student, $3 the scan instant, $4 the key hash,
/// and for `Target::Active` $5 the date and $6 now.
pub fn scan_sql(backend: DbBackend, student: &StudentRef, target: Target) -> &'static str {
    // Built once per backend, kind of student reference and target: a live scan on SQLite
    // runs this statement every time, and assembling it from the rule's fragments allocates.
    static STATEMENTS: LazyLock<[[[String; 2]; 2]; 2]> = LazyLock::new(|| {
        [DbBackend::Sqlite, DbBackend::Postgres].map(|backend| {
            variants()
                .map(|student| targets().map(|target| build_scan_sql(backend, &student, target)))
        })
    });
    let backend = usize::from(backend != DbBackend::Sqlite);
    &STATEMENTS[backend][variant(student)][target_index(target)]
}

/// One student reference of each kind, in [`variant`] order.
fn variants() -> [StudentRef; 2] {
    [StudentRef::Id(0), StudentRef::Code(String::new())]
}

fn variant(student: &StudentRef) -> usize {
    match student {
        StudentRef::Id(_) => 0,
        StudentRef::Code(_) => 1,
    }
}

/// Each target, in [`target_index`] order.
fn targets() -> [Target; 2] {
    [Target::Active, Target::Session]
}

fn target_index(target: Target) -> usize {
    match target {
        Target::Active => 0,
        Target::Session => 1,
    }
}

fn build_scan_sql(backend: DbBackend, student: &StudentRef, target: Target) -> String {
    let session = match target {
        Target::Active => rule::live_session("$1", "$5", "$6"),
        Target::Session => "s.id = $1".to_owned(),
    };
    format!(
        "INSERT INTO attendance_record ({columns}) \
         SELECT {values} FROM attendance_session s {counted} WHERE {session} \
         ON CONFLICT (session_id, student_id) DO NOTHING \
         RETURNING {fields}",
        columns = rule::RECORD_COLUMNS,
        values = rule::present_values(backend, "$3"),
        counted = rule::counted("$4", &rule::student_named(student, "$2")),
        fields = rule::RECORD_FIELDS,
    )
}

/// Everything needed to explain a rejected scan, in one statement: each condition of the
/// [`rule`] on its own. $1 device id, $2 student, $3 key hash, $4 the scan's date, and for
/// `Target::Session` $5 the session id.
pub(crate) fn diagnosis_sql(student: &StudentRef, target: Target) -> &'static str {
    static STATEMENTS: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
        variants().map(|student| targets().map(|target| build_diagnosis_sql(&student, target)))
    });
    &STATEMENTS[variant(student)][target_index(target)]
}

fn build_diagnosis_sql(student: &StudentRef, target: Target) -> String {
    let session = match target {
        Target::Active => rule::bound_session("d.id"),
        Target::Session => "s.id = $5".to_owned(),
    };
    format!(
        "SELECT CASE WHEN d.is_active AND d.key_hash = $3 THEN 1 ELSE 0 END AS device_ok, \
         s.id AS session_id, s.date AS session_date, s.closes_at AS closes_at, \
         st.id AS student_id, CASE WHEN {active} THEN 1 ELSE 0 END AS student_active, \
         CASE WHEN EXISTS (SELECT 1 FROM course_section cs WHERE {in_course}) THEN 1 ELSE 0 END AS enrolled, \
         (SELECT r.id FROM attendance_record r WHERE r.session_id = s.id AND r.student_id = st.id) AS record_id, \
         (SELECT CASE WHEN {automatic} THEN 1 ELSE 0 END FROM attendance_record r \
           WHERE r.session_id = s.id AND r.student_id = st.id) AS correctable, \
         (SELECT MAX(c.id) FROM attendance_session c \
           WHERE c.device_id = d.id AND c.date = $4 AND NOT c.is_active) AS closed_today \
         FROM device d \
         LEFT JOIN attendance_session s ON {session} \
         LEFT JOIN student st ON {student} \
         WHERE d.id = $1",
        in_course = rule::IN_COURSE,
        active = rule::STUDENT_ACTIVE,
        automatic = rule::set_by_no_person("r"),
        student = rule::student_named(student, "$2"),
    )
}

/// The facts behind a rejected scan.
#[derive(Debug, FromQueryResult)]
pub(crate) struct Diagnosis {
    /// 1 when the device is active and still holds the key.
    pub device_ok: i32,
    pub session_id: Option<i32>,
    pub session_date: Option<NaiveDate>,
    pub closes_at: Option<DateTime<Utc>>,
    pub student_id: Option<i32>,
    /// 1 when the student is active (0 when they left, or were not found).
    pub student_active: i32,
    pub enrolled: i32,
    pub record_id: Option<i32>,
    /// 1 when no person set the existing record (an automatic absence, or an excuse's
    /// permission), the only kind a buffered scan tries to correct.
    pub correctable: Option<i32>,
    pub closed_today: Option<i32>,
}

/// Devices' last contact, written to the database in batches rather than on every scan.
#[derive(Default)]
pub struct LastSeen(Mutex<HashMap<i32, DateTime<Utc>>>);

impl LastSeen {
    pub(crate) fn touch(&self, device_id: i32, at: DateTime<Utc>) {
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
        let result = self.scan_live(device, request).await;
        self.count_scan(result.as_ref().map(|_| "accepted"));
        result
    }

    /// Counts a scan's outcome in the metrics.
    pub(crate) fn count_scan(&self, outcome: Result<&'static str, &AppError>) {
        match outcome {
            Ok(outcome) => self.metrics.scan(outcome, ""),
            Err(err) => {
                let reason = err.reason().map_or(err.code().as_str(), |r| r.as_str());
                let outcome = if err.reason() == Some(Reason::DuplicateScan) {
                    "duplicate"
                } else {
                    "rejected"
                };
                self.metrics.scan(outcome, reason);
            }
        }
    }

    async fn scan_live(
        &self,
        device: &Principal,
        request: ScanRequest,
    ) -> AppResult<attendance_record::Model> {
        let (device_id, key_hash) = device.device().ok_or(AppError::Forbidden)?;
        let scanned_at = self.local_to_utc(request.date, request.time)?;
        self.last_seen.touch(device_id, now());
        // One retry covers a session replaced between the insert and its diagnosis.
        for _ in 0..2 {
            let at = self.now();
            let found = match (&self.batcher, &request.student) {
                (Some(batcher), StudentRef::Id(student_id)) => {
                    batcher
                        .submit(Job {
                            device_id,
                            student_id: *student_id,
                            scanned_at,
                            key_hash: key_hash.to_owned(),
                            date: request.date,
                            now: at,
                        })
                        .await?
                }
                _ => {
                    let backend = self.db.get_database_backend();
                    attendance_record::Entity::find()
                        .from_raw_sql(statement(
                            backend,
                            scan_sql(backend, &request.student, Target::Active),
                            vec![
                                device_id.into(),
                                student_value(&request.student),
                                scanned_at.into(),
                                key_hash.into(),
                                request.date.into(),
                                at.into(),
                            ],
                        ))
                        .one(&self.writer)
                        .await?
                        .map_or(Found::Nothing, Found::Inserted)
                }
            };
            if let Found::Existing(record_id) = found {
                return Err(duplicate_scan(record_id));
            }
            if let Found::Inserted(record) = found {
                self.events.publish(SessionEvent {
                    session_id: record.session_id,
                    kind: EventKind::Scan,
                    record_id: Some(record.id),
                });
                return Ok(record);
            }
            if let Some(rejection) = self.diagnose(device_id, key_hash, &request, at).await? {
                return Err(rejection);
            }
        }
        Err(AppError::Internal(format!(
            "scan by device {device_id} wrote nothing and no rule explains why"
        )))
    }

    /// Why the scan statement wrote nothing; `None` when nothing explains it (a race with a
    /// session being replaced), so the caller may retry. It reads through the general pool:
    /// the statement it explains has committed, and on SQLite readers then run beside the
    /// single writer instead of queueing behind it.
    async fn diagnose(
        &self,
        device_id: i32,
        key_hash: &str,
        request: &ScanRequest,
        at: DateTime<Utc>,
    ) -> AppResult<Option<AppError>> {
        let backend = self.db.get_database_backend();
        let facts = Diagnosis::find_by_statement(statement(
            backend,
            diagnosis_sql(&request.student, Target::Active),
            vec![
                device_id.into(),
                student_value(&request.student),
                key_hash.to_owned().into(),
                request.date.into(),
            ],
        ))
        .one(&self.db)
        .await?;
        let Some(facts) = facts.filter(|f| f.device_ok == 1) else {
            self.forget_device_keys();
            return Ok(Some(AppError::Unauthenticated));
        };
        let (Some(_), Some(session_date), Some(closes_at)) =
            (facts.session_id, facts.session_date, facts.closes_at)
        else {
            return Ok(Some(if facts.closed_today.is_some() {
                session_closed()
            } else {
                AppError::rejected(Reason::NoActiveSession, "this device has no active session")
            }));
        };
        if closes_at <= at {
            return Ok(Some(session_closed()));
        }
        if session_date != request.date {
            return Ok(Some(AppError::rejected(
                Reason::DateMismatch,
                format!(
                    "the scan's date {} is not the session's date {session_date}",
                    request.date
                ),
            )));
        }
        Ok(student_rejection(&facts, &request.student))
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

/// The rejection a scan's student earns in a session that otherwise takes it: unknown,
/// departed, not enrolled, or already recorded; `None` when none applies.
pub(crate) fn student_rejection(facts: &Diagnosis, student: &StudentRef) -> Option<AppError> {
    if facts.student_id.is_none() {
        return Some(AppError::rejected(
            Reason::StudentNotFound,
            match student {
                StudentRef::Id(id) => format!("no student has id {id}"),
                StudentRef::Code(code) => format!("no student has code {code:?}"),
            },
        ));
    }
    if facts.student_active == 0 {
        return Some(AppError::rejected(
            Reason::StudentInactive,
            "the student has left the school and is no longer admitted",
        ));
    }
    if facts.enrolled == 0 {
        return Some(AppError::rejected(
            Reason::StudentNotInCourse,
            "the student is not in any section of this session's course",
        ));
    }
    facts.record_id.map(duplicate_scan)
}

fn duplicate_scan(record_id: i32) -> AppError {
    AppError::Rejected {
        reason: Reason::DuplicateScan,
        message: format!("the student is already recorded in this session (record {record_id})"),
        record_id: Some(record_id),
    }
}

pub(crate) fn student_value(student: &StudentRef) -> Value {
    match student {
        StudentRef::Id(id) => (*id).into(),
        StudentRef::Code(code) => code.clone().into(),
    }
}

fn session_closed() -> AppError {
    AppError::rejected(
        Reason::SessionClosed,
        "the session bound to this device has closed",
    )
}

/// How often devices' last contact times are saved.
const LAST_SEEN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The job that saves devices' last contact times (kept in memory between saves, so scans
/// do not write the device row) until told to stop.
pub async fn save_last_seen(service: Service, stop: tokio::sync::watch::Receiver<bool>) {
    crate::service::every(LAST_SEEN_INTERVAL, stop, || async {
        if let Err(e) = service.flush_last_seen().await {
            tracing::warn!(error = %e, "saving devices' last contact failed");
        }
    })
    .await;
}
