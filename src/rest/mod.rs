//! The REST endpoints: the device scan shim, CSV exports, the OpenAPI document and the
//! probes. Each handler reads its request, calls `service`, and writes a body from [`body`].

pub mod body;
pub mod export;
pub mod openapi;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use self::body::{BatchAnswer, BatchBody, BatchItem, HealthBody, RecordJson, ScanBody};
use crate::auth::Principal;
use crate::auth::extract::MaybeBearer;
use crate::error::{AppError, AppResult, ErrorBody, Reason};
use crate::service::roll_call::scan::ScanRequest;
use crate::service::roll_call::scan::buffered::BufferedOutcome;
use crate::state::AppState;

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

/// The caller authenticated by the request's `Authorization: Bearer` header.
pub async fn bearer_principal(state: &AppState, bearer: &MaybeBearer) -> AppResult<Principal> {
    state.service.authenticate(bearer.required()?).await
}

/// The device authenticated by the request's bearer key.
pub async fn device_principal(state: &AppState, bearer: &MaybeBearer) -> AppResult<Principal> {
    let principal = bearer_principal(state, bearer).await?;
    match principal {
        Principal::Device { .. } => Ok(principal),
        Principal::User { .. } | Principal::System => Err(AppError::Forbidden),
    }
}

/// Records a live scan for the device's active session.
#[utoipa::path(
    post,
    path = "/api/attendance/scan",
    // The id the document has always published, so generated device clients keep it.
    operation_id = "scan_doc",
    tag = "devices",
    request_body = ScanBody,
    security(("device_key" = [])),
    responses(
        (status = 201, description = "The scan was recorded", body = RecordJson),
        (status = 400, description = "The body is not JSON (MALFORMED_JSON)", body = ErrorBody),
        (status = 401, description = "Missing, unknown, rotated or revoked key", body = ErrorBody),
        (status = 403, description = "A person's token, the student is not in the course (STUDENT_NOT_IN_COURSE), or has left (STUDENT_INACTIVE)", body = ErrorBody),
        (status = 404, description = "No student has that id (STUDENT_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "NO_ACTIVE_SESSION, SESSION_CLOSED or DUPLICATE_SCAN", body = ErrorBody),
        (status = 413, description = "The body is over MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "Unknown, missing or invalid fields (BAD_USER_INPUT), or DATE_MISMATCH", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
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
    ScanBody::try_from(&parse_json(body)?).map(ScanRequest::from)
}

fn parse_json(body: &[u8]) -> AppResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        AppError::rejected(
            Reason::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Records scans a device buffered while offline, each against the session bound to the
/// device at its own date and time. Replaying a batch changes nothing.
#[utoipa::path(
    post,
    path = "/api/attendance/scans/batch",
    operation_id = "batch_doc",
    tag = "devices",
    request_body = BatchBody,
    security(("device_key" = [])),
    responses(
        (status = 200, description = "One result per scan", body = BatchAnswer),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing, unknown, rotated or revoked key", body = ErrorBody),
        (status = 403, description = "A person's token", body = ErrorBody),
        (status = 413, description = "The body is over MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "Not an array of scans, or more than 1,000", body = ErrorBody),
        (status = 503, description = "The database is unavailable; resend the batch", body = ErrorBody),
    )
)]
pub async fn scan_batch(
    State(state): State<AppState>,
    bearer: MaybeBearer,
    body: Bytes,
) -> AppResult<Json<BatchAnswer>> {
    // Always 200 with one result per item (unless the whole request is unusable), so a
    // device never resends a batch because of one bad item.
    let answer = detached(async move {
        let device = device_principal(&state, &bearer).await?;
        let batch = BatchBody::try_from(parse_json(&body)?)?;
        let parsed: Vec<AppResult<ScanRequest>> = batch
            .scans
            .iter()
            .map(|scan| ScanBody::try_from(scan).map(ScanRequest::from))
            .collect();
        let valid: Vec<ScanRequest> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let mut outcomes = state
            .service
            .scan_buffered_batch(&device, &valid, None)
            .await?
            .into_iter();
        let mut answer = BatchAnswer::default();
        for (index, item) in (0u32..).zip(parsed) {
            let outcome = match item {
                Ok(_) => outcomes
                    .next()
                    .unwrap_or_else(|| Err(AppError::Internal("missing batch result".into()))),
                Err(err) => Err(err),
            };
            answer.push(match outcome {
                Ok(BufferedOutcome::Accepted(record)) => {
                    BatchItem::accepted(index, record.into(), false)
                }
                Ok(BufferedOutcome::CorrectedAbsence(record)) => {
                    BatchItem::accepted(index, record.into(), true)
                }
                Ok(BufferedOutcome::Duplicate(record_id)) => BatchItem::duplicate(index, record_id),
                Err(AppError::Unauthenticated) => return Err(AppError::Unauthenticated),
                Err(err) => BatchItem::rejected(index, err.rest_body().error),
            });
        }
        Ok(answer)
    })
    .await?;
    Ok(Json(answer))
}

/// Liveness: 200 when the database answers.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health_doc",
    tag = "operations",
    responses(
        (status = 200, description = "Alive", body = HealthBody),
        (status = 503, description = "The database does not answer", body = HealthBody),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthBody>) {
    match state.service.db.ping().await {
        Ok(()) => (StatusCode::OK, Json(HealthBody::status("ok"))),
        Err(_) => database_unreachable(),
    }
}

/// What `/health` and `/ready` answer when the database cannot be reached.
fn database_unreachable() -> (StatusCode, Json<HealthBody>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(HealthBody {
            database: Some("unreachable"),
            ..HealthBody::status("unavailable")
        }),
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
        webhook_oldest_pending_seconds: service.oldest_pending_delivery_age().await.unwrap_or(-1.0),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        service.metrics.render(gauges),
    )
}

/// Readiness: 200 when the database answers, migrations are applied and live events flow.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready_doc",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "Not ready yet", body = HealthBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<HealthBody>) {
    use migration::MigratorTrait;
    if !state.service.events.is_listening() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthBody {
                live_events: Some("not yet listening"),
                ..HealthBody::status("starting")
            }),
        );
    }
    match migration::Migrator::get_pending_migrations(&state.service.db).await {
        Ok(pending) if pending.is_empty() => (StatusCode::OK, Json(HealthBody::status("ready"))),
        Ok(pending) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthBody {
                pending: Some(pending.len()),
                ..HealthBody::status("migrations pending")
            }),
        ),
        Err(_) => database_unreachable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::roll_call::scan::StudentRef;

    fn reason(body: &str) -> (u16, String) {
        let err = parse_scan(body.as_bytes()).unwrap_err();
        (err.status().as_u16(), err.rest_body().error.code.to_owned())
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
