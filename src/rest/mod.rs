//! The REST endpoints: the device scan shim and health checks.

pub mod export;
pub mod openapi;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::auth::extract::MaybeBearer;
use crate::entities::attendance_record;
use crate::error::{AppError, AppResult, ErrorCode, Reason};
use crate::service::scan::buffered::BufferedOutcome;
use crate::service::scan::{ScanRequest, StudentRef};
use crate::state::AppState;
use crate::time::{parse_date, parse_time};

/// The REST routes: device scans, CSV exports, the OpenAPI document and the probes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/attendance/scan", post(scan))
        .route("/api/attendance/scans/batch", post(scan_batch))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route(
            "/api/export/sessions/{id}/records.csv",
            get(export::session_csv),
        )
        .route(
            "/api/export/courses/{id}/attendance.csv",
            get(export::course_csv),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
}

/// A record as the REST shim returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordJson {
    /// Record id.
    pub id: i32,
    /// Session id.
    pub session_id: i32,
    /// Student id.
    pub student_id: i32,
    /// `present`, `absent` or `permission`.
    #[schema(value_type = String, example = "present")]
    pub status: &'static str,
    /// When the status was set (UTC).
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The device's scan time (UTC).
    pub scanned_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Minutes late, 0 when on time.
    pub late_minutes: Option<i32>,
}

impl From<attendance_record::Model> for RecordJson {
    fn from(r: attendance_record::Model) -> Self {
        Self {
            id: r.id,
            session_id: r.session_id,
            student_id: r.student_id,
            status: r.status.as_str(),
            timestamp: r.timestamp,
            scanned_at: r.scanned_at,
            late_minutes: r.late_minutes,
        }
    }
}

/// The caller authenticated by the request's `Authorization: Bearer` header.
pub async fn bearer_principal(state: &AppState, bearer: &MaybeBearer) -> AppResult<Principal> {
    state.service.authenticate(bearer.required()?).await
}

/// The device authenticated by the request's bearer key.
pub async fn device_principal(state: &AppState, bearer: &MaybeBearer) -> AppResult<Principal> {
    let principal = bearer_principal(state, bearer).await?;
    match principal {
        Principal::Device { .. } => Ok(principal),
        Principal::User { .. } => Err(AppError::Forbidden),
    }
}

/// `POST /api/attendance/scan`: records a scan for the device's active session.
pub async fn scan(
    State(state): State<AppState>,
    bearer: MaybeBearer,
    body: Bytes,
) -> AppResult<(StatusCode, Json<RecordJson>)> {
    // Once a scan has arrived it is processed to the end, even if the device hangs up
    // meanwhile: its next attempt then finds the record (409) instead of a half-done one.
    let record = detached(async move {
        let device = device_principal(&state, &bearer).await?;
        let request = parse_scan(&body)?;
        state.service.scan(&device, request).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(RecordJson::from(record))))
}

/// Runs `work` on its own task so that a dropped connection cannot cancel it halfway.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = AppResult<T>> + Send + 'static,
) -> AppResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| AppError::Internal(format!("request task failed: {e}")))?
}

/// Parses `{"student_id", "date", "time"}` strictly: bad JSON is 400, anything else wrong
/// (unknown, missing or ill-typed fields) is 422 naming the field.
pub fn parse_scan(body: &[u8]) -> AppResult<ScanRequest> {
    scan_from_value(&parse_json(body)?)
}

fn parse_json(body: &[u8]) -> AppResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        AppError::rejected(
            ErrorCode::BadUserInput,
            Reason::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// One scan object, checked strictly.
fn scan_from_value(value: &Value) -> AppResult<ScanRequest> {
    let Value::Object(fields) = value else {
        return Err(AppError::invalid("body", "must be a JSON object"));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "student_id" | "date" | "time"))
    {
        return Err(AppError::invalid(unknown.clone(), "is not a known field"));
    }
    let student_id = match fields.get("student_id") {
        None | Some(Value::Null) => return Err(AppError::invalid("student_id", "is required")),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    }
    .filter(|n| *n > 0 && *n <= i32::MAX as i64)
    .ok_or_else(|| AppError::invalid("student_id", "must be a positive integer"))?
        as i32;
    let text = |name: &'static str| -> AppResult<&str> {
        match fields.get(name) {
            None | Some(Value::Null) => Err(AppError::invalid(name, "is required")),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(AppError::invalid(name, "must be a string")),
        }
    };
    let date = parse_date(text("date")?)
        .ok_or_else(|| AppError::invalid("date", "must be a date as YYYY-MM-DD"))?;
    let time = parse_time(text("time")?)
        .ok_or_else(|| AppError::invalid("time", "must be a time as HH:MM:SS"))?;
    Ok(ScanRequest {
        student: StudentRef::Id(student_id),
        date,
        time,
    })
}

/// The most scans one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// `POST /api/attendance/scans/batch`: scans a device buffered while offline, each matched
/// to the session bound to the device at its own date and time. Always 200 with one result
/// per item (unless the whole request is unusable), so a device never resends a batch
/// because of one bad item; replaying a batch changes nothing.
pub async fn scan_batch(
    State(state): State<AppState>,
    bearer: MaybeBearer,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let answer = detached(async move {
        let device = device_principal(&state, &bearer).await?;
        let value = parse_json(&body)?;
        let items = match value {
            Value::Array(items) => items,
            Value::Object(mut fields) if fields.len() == 1 && fields.contains_key("scans") => {
                match fields.remove("scans") {
                    Some(Value::Array(items)) => items,
                    _ => return Err(AppError::invalid("scans", "must be an array of scans")),
                }
            }
            _ => {
                return Err(AppError::invalid(
                    "body",
                    "must be an array of scans or {\"scans\": [...]}",
                ));
            }
        };
        if items.len() > MAX_BATCH {
            return Err(AppError::invalid(
                "scans",
                format!("at most {MAX_BATCH} scans per batch"),
            ));
        }
        let parsed: Vec<AppResult<ScanRequest>> = items.iter().map(scan_from_value).collect();
        let valid: Vec<ScanRequest> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
        let mut outcomes = state
            .service
            .scan_buffered_batch(&device, &valid, None)
            .await?
            .into_iter();
        let mut results = Vec::with_capacity(items.len());
        let (mut accepted, mut duplicates, mut rejected) = (0, 0, 0);
        for (index, item) in parsed.into_iter().enumerate() {
            let outcome = match item {
                Ok(_) => outcomes
                    .next()
                    .unwrap_or_else(|| Err(AppError::Internal("missing batch result".into()))),
                Err(err) => Err(err),
            };
            let entry = match outcome {
                Ok(BufferedOutcome::Accepted(record)) => {
                    accepted += 1;
                    json!({"index": index, "status": "accepted", "record": RecordJson::from(record)})
                }
                Ok(BufferedOutcome::CorrectedAbsence(record)) => {
                    accepted += 1;
                    json!({"index": index, "status": "accepted", "corrected_absence": true,
                           "record": RecordJson::from(record)})
                }
                Ok(BufferedOutcome::Duplicate(record_id)) => {
                    duplicates += 1;
                    json!({"index": index, "status": "duplicate", "record_id": record_id})
                }
                Err(AppError::Unauthenticated) => return Err(AppError::Unauthenticated),
                Err(err) => {
                    rejected += 1;
                    let mut entry = err.rest_body()["error"].clone();
                    entry["index"] = json!(index);
                    entry["status"] = json!("rejected");
                    entry
                }
            };
            results.push(entry);
        }
        Ok(json!({
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "results": results,
        }))
    })
    .await?;
    Ok(Json(answer))
}

/// `GET /health`: 200 when the database answers, 503 when it does not.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.service.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(_) => database_unreachable(),
    }
}

/// What `/health` and `/ready` answer when the database cannot be reached.
fn database_unreachable() -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "unavailable", "database": "unreachable"})),
    )
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let service = &state.service;
    let sessions_open = service.open_session_count().await.unwrap_or(-1);
    let (pool_size, pool_idle) = match service.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let pool = service.db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle() as u32)
        }
        _ => {
            let pool = service.db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle() as u32)
        }
    };
    let gauges = crate::metrics::Gauges {
        sessions_open,
        pool_size,
        pool_idle,
        pool_max: service.config.database_max_connections,
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        service.metrics.render(gauges),
    )
}

/// `GET /ready`: 200 when the database answers and every migration is applied.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    use migration::MigratorTrait;
    if !state.service.events.is_listening() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "live_events": "not yet listening"})),
        );
    }
    match migration::Migrator::get_pending_migrations(&state.service.db).await {
        Ok(pending) if pending.is_empty() => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Ok(pending) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "migrations pending", "pending": pending.len()})),
        ),
        Err(_) => database_unreachable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> (u16, String) {
        let err = parse_scan(body.as_bytes()).unwrap_err();
        let json = err.rest_body();
        (
            err.status().as_u16(),
            json["error"]["code"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn a_valid_body_parses() {
        let r = parse_scan(br#"{"student_id": 120, "date": "2025-11-25", "time": "08:43:21"}"#)
            .unwrap();
        assert_eq!(r.student, StudentRef::Id(120));
        assert_eq!(r.date.to_string(), "2025-11-25");
        assert_eq!(r.time.to_string(), "08:43:21");
    }

    #[test]
    fn malformed_json_is_400_and_bad_fields_are_422() {
        assert_eq!(reason("{not json"), (400, "MALFORMED_JSON".into()));
        assert_eq!(
            reason(r#"{"student_id": 1, "date": "2025-11-25", "time": "08:00:00", "x": 1}"#),
            (422, "BAD_USER_INPUT".into())
        );
        assert_eq!(
            reason(r#"{"date": "2025-11-25", "time": "08:00:00"}"#).0,
            422
        );
        assert_eq!(
            reason(r#"{"student_id": 1, "date": "25-11-2025", "time": "08:00:00"}"#).0,
            422
        );
        assert_eq!(
            reason(r#"{"student_id": 1, "date": "2025-11-25", "time": "8:00"}"#).0,
            422
        );
        assert_eq!(reason(r#"[1, 2]"#).0, 422);
    }
}
