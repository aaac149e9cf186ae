//! Group commit for live scans on PostgreSQL: scans arriving together are inserted by one
//! statement, so the database pays one round trip and one commit for many of them. Nothing
//! waits for a batch to fill: a worker takes whatever is queued when it is free, so an idle
//! server adds no latency and a busy one makes bigger batches.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::ActiveEnum;
use sea_orm::sqlx::{self, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::StatementCounter;
use crate::entities::{AttendanceStatus, RecordSource, attendance_record};
use crate::error::{AppError, AppResult, is_transient_sqlx};
use crate::metrics::Metrics;
use crate::service::attendance::rule;
use crate::service::retry_lock_conflicts;

/// The most scans one statement carries.
const MAX_BATCH: usize = 256;
/// Batches in flight at once (each holds one pooled connection while it runs).
const WORKERS: usize = 4;

/// One live scan waiting for its batch.
#[derive(Debug)]
pub(crate) struct Job {
    pub device_id: i32,
    pub student_id: i32,
    pub scanned_at: DateTime<Utc>,
    pub key_hash: String,
    pub date: NaiveDate,
    pub now: DateTime<Utc>,
}

/// What the batch statement found for one scan.
#[derive(Debug)]
pub(crate) enum Found {
    /// The new `present` record.
    Inserted(attendance_record::Model),
    /// The record the student already had in the device's session (a duplicate).
    Existing(i32),
    /// Neither: the caller works out why.
    Nothing,
}

type Reply = oneshot::Sender<AppResult<Found>>;

/// Queues live scans for the batch workers.
pub(crate) struct ScanBatcher {
    queue: mpsc::UnboundedSender<(Job, Reply)>,
}

impl ScanBatcher {
    /// Starts the workers on `pool`.
    pub fn start(pool: sqlx::PgPool, metrics: Arc<Metrics>, statements: StatementCounter) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WORKERS {
            tokio::spawn(worker(
                pool.clone(),
                receiver.clone(),
                metrics.clone(),
                statements.clone(),
            ));
        }
        Self { queue }
    }

    /// Runs one scan through the next batch.
    pub async fn submit(&self, job: Job) -> AppResult<Found> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((job, reply))
            .map_err(|_| AppError::Internal("scan batch workers stopped".into()))?;
        answer
            .await
            .map_err(|_| AppError::Internal("scan batch dropped".into()))?
    }
}

async fn worker(
    pool: sqlx::PgPool,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<(Job, Reply)>>>,
    metrics: Arc<Metrics>,
    statements: StatementCounter,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        metrics.scan_batch(batch.len());
        statements.add_one();
        run(&pool, &metrics, batch).await;
    }
}

async fn run(pool: &sqlx::PgPool, metrics: &Metrics, batch: Vec<(Job, Reply)>) {
    let column = |f: fn(&Job) -> _| -> Vec<i32> { batch.iter().map(|(j, _)| f(j)).collect() };
    let devices = column(|j| j.device_id);
    let students = column(|j| j.student_id);
    let instants: Vec<DateTime<Utc>> = batch.iter().map(|(j, _)| j.scanned_at).collect();
    let keys: Vec<String> = batch.iter().map(|(j, _)| j.key_hash.clone()).collect();
    let dates: Vec<NaiveDate> = batch.iter().map(|(j, _)| j.date).collect();
    let nows: Vec<DateTime<Utc>> = batch.iter().map(|(j, _)| j.now).collect();
    let rows = retry_lock_conflicts(metrics, "scan_batch", is_transient_sqlx, || {
        sqlx::query(BATCH_SQL.as_str())
            .bind(&devices)
            .bind(&students)
            .bind(&instants)
            .bind(&keys)
            .bind(&dates)
            .bind(&nows)
            .fetch_all(pool)
    })
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            let err = AppError::from(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(
                Arc::new(e),
            )));
            let detail = match &err {
                AppError::Internal(detail) => detail.clone(),
                other => other.to_string(),
            };
            for (_, reply) in batch {
                // Each scan's handler logs its own failure, with this detail.
                let _ = reply.send(Err(match err {
                    AppError::Unavailable => AppError::Unavailable,
                    _ => AppError::Internal(format!("scan batch statement failed: {detail}")),
                }));
            }
            return;
        }
    };
    let mut found: HashMap<(i32, i32), Vec<Found>> = HashMap::new();
    for row in rows {
        match decode(&row) {
            Ok((key, item)) => found.entry(key).or_default().push(item),
            Err(e) => {
                // A row this code cannot read (a status or source it does not know) leaves
                // the batch's outcomes unknown: every scan in it fails loudly, and a resend
                // is answered from what was stored.
                for (_, reply) in batch {
                    let _ = reply.send(Err(AppError::Internal(format!(
                        "undecodable scan batch row: {e}"
                    ))));
                }
                return;
            }
        }
    }
    for (job, reply) in batch {
        let item = found
            .get_mut(&(job.device_id, job.student_id))
            .and_then(|items| {
                // A new record answers one scan; a duplicate answers every copy.
                match items.iter().position(|i| matches!(i, Found::Inserted(_))) {
                    Some(at) => Some(items.remove(at)),
                    None => items.first().map(|i| match i {
                        Found::Existing(id) => Found::Existing(*id),
                        _ => Found::Nothing,
                    }),
                }
            })
            .unwrap_or(Found::Nothing);
        let _ = reply.send(Ok(item));
    }
}

/// A row keyed by (device, student), the identity of the scan it answers.
fn decode(row: &sqlx::postgres::PgRow) -> Result<((i32, i32), Found), sqlx::Error> {
    let device_id: i32 = row.try_get("device_id")?;
    let student_id: i32 = row.try_get("student_id")?;
    let id: i32 = row.try_get("id")?;
    let outcome: &str = row.try_get("outcome")?;
    if outcome == "dup" {
        return Ok(((device_id, student_id), Found::Existing(id)));
    }
    let status = stored::<AttendanceStatus>(row, "status")?;
    let source = stored::<RecordSource>(row, "source")?;
    Ok((
        (device_id, student_id),
        Found::Inserted(attendance_record::Model {
            id,
            session_id: row.try_get("session_id")?,
            student_id,
            status,
            timestamp: row.try_get("timestamp")?,
            scanned_at: row.try_get("scanned_at")?,
            late_minutes: row.try_get("late_minutes")?,
            source,
        }),
    ))
}

/// A column holding one of an entity enum's stored names; any other value is a decoding
/// error, never quietly some default.
fn stored<T: ActiveEnum<Value = String>>(
    row: &sqlx::postgres::PgRow,
    column: &str,
) -> Result<T, sqlx::Error> {
    let value: String = row.try_get(column)?;
    T::try_from_value(&value).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: e.to_string().into(),
    })
}

/// The live scan statement for many scans at once: the same conditions as the single-scan
/// statement, row by row, plus the existing record of every duplicate so that a duplicate
/// costs no second query. Rows found neither way are explained one by one by the caller.
///
/// Rows are inserted in (session, student) order, the order a close inserts its absences
/// in, so a batch and a close (or two batches) racing for the same records wait for each
/// other instead of deadlocking.
static BATCH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(batch_sql);

pub(crate) fn batch_sql() -> String {
    let session = rule::live_session("x.device_id", "x.day", "x.now");
    let device = rule::device_holds_key("x.key_hash");
    format!(
        "WITH x AS ( \
           SELECT * FROM unnest($1::int4[], $2::int4[], $3::timestamptz[], $4::text[], $5::date[], $6::timestamptz[]) \
           AS x(device_id, student_id, ts, key_hash, day, now) \
         ), ins AS ( \
           INSERT INTO attendance_record ({columns}) \
           SELECT {values} \
           FROM x JOIN attendance_session s ON {session} {counted} \
           ORDER BY s.id, st.id \
           ON CONFLICT (session_id, student_id) DO NOTHING \
           RETURNING {fields} \
         ) \
         SELECT 'new' AS outcome, s.device_id, ins.id, ins.session_id, ins.student_id, ins.status, \
           ins.timestamp, ins.scanned_at, ins.late_minutes, ins.source \
         FROM ins JOIN attendance_session s ON s.id = ins.session_id \
         UNION ALL \
         SELECT 'dup', x.device_id, r.id, r.session_id, r.student_id, r.status, \
           r.timestamp, r.scanned_at, r.late_minutes, r.source \
         FROM x JOIN attendance_session s ON {session} JOIN device d ON {device} \
         JOIN attendance_record r ON r.session_id = s.id AND r.student_id = x.student_id",
        columns = rule::RECORD_COLUMNS,
        values = rule::present_values(sea_orm::DbBackend::Postgres, "x.ts"),
        counted = rule::counted("x.key_hash", "st.id = x.student_id"),
        fields = rule::RECORD_FIELDS,
    )
}
