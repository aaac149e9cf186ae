//! The OpenAPI 3.1 description of the device endpoints, generated from the handlers' types
//! and served at `GET /api/openapi.json`.

use axum::Json;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::RecordJson;

/// A scan as a device sends it. Unknown fields are rejected (422).
#[derive(ToSchema)]
#[schema(example = json!({"student_id": 120, "date": "2025-11-25", "time": "08:43:21"}))]
#[allow(dead_code)]
pub struct ScanBody {
    /// The recognized student's id (a positive integer; a numeric string is accepted too).
    #[schema(minimum = 1, maximum = 2147483647)]
    student_id: i64,
    /// The device's local date, `YYYY-MM-DD`, read in the server's TIME_ZONE.
    #[schema(format = Date, example = "2025-11-25")]
    date: String,
    /// The device's local time, `HH:MM:SS`.
    #[schema(pattern = r"^\d{2}:\d{2}:\d{2}$", example = "08:43:21")]
    time: String,
}

/// Up to 1,000 buffered scans (a bare JSON array of scans is accepted too).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchBody {
    /// The scans, oldest first.
    #[schema(max_items = 1000)]
    scans: Vec<ScanBody>,
}

/// What became of one scan of a batch.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ItemStatus {
    /// Written (or an automatic absence corrected).
    Accepted,
    /// The student already had a record; nothing changed.
    Duplicate,
    /// Refused; `code` says why.
    Rejected,
}

/// One scan's result in a batch answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchItem {
    /// The scan's position in the request.
    index: u32,
    /// Accepted, duplicate or rejected.
    status: ItemStatus,
    /// The record written (accepted).
    record: Option<RecordJson>,
    /// True when the scan turned an automatic absence into present.
    corrected_absence: Option<bool>,
    /// The existing record (duplicate, or a rejected duplicate).
    record_id: Option<i32>,
    /// The rejection's code (rejected).
    code: Option<String>,
    /// The rejection's category (rejected).
    kind: Option<String>,
    /// The specific reason, when there is one (rejected; equals `code`).
    reason: Option<String>,
    /// A human explanation (rejected).
    message: Option<String>,
    /// The field at fault (rejected for invalid input).
    field: Option<String>,
}

/// The answer to a batch: always 200 with one result per scan.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchAnswer {
    /// Scans written.
    accepted: u32,
    /// Scans already recorded.
    duplicates: u32,
    /// Scans refused.
    rejected: u32,
    /// One entry per scan, in request order.
    results: Vec<BatchItem>,
}

/// An error's details.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// The specific code: NO_ACTIVE_SESSION, SESSION_CLOSED, DUPLICATE_SCAN,
    /// STUDENT_NOT_FOUND, STUDENT_NOT_IN_COURSE, DATE_MISMATCH, MALFORMED_JSON,
    /// PAYLOAD_TOO_LARGE, SCAN_TOO_OLD, UNAUTHENTICATED, FORBIDDEN, BAD_USER_INPUT, UNAVAILABLE...
    code: String,
    /// The category: UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, BAD_USER_INPUT, CONFLICT or INTERNAL.
    kind: String,
    /// A human explanation.
    message: String,
    /// The specific reason, when there is one (equals `code`).
    reason: Option<String>,
    /// The field at fault, for invalid input.
    field: Option<String>,
    /// The existing record, for DUPLICATE_SCAN.
    record_id: Option<i32>,
}

/// Every error answer: `{"error": {...}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// The health answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HealthBody {
    /// `ok`, `ready`, or what is wrong.
    status: String,
}

/// Records a live scan for the device's active session.
#[utoipa::path(
    post,
    path = "/api/attendance/scan",
    tag = "devices",
    request_body = ScanBody,
    security(("device_key" = [])),
    responses(
        (status = 201, description = "The scan was recorded", body = RecordJson),
        (status = 400, description = "The body is not JSON (MALFORMED_JSON)", body = ErrorBody),
        (status = 401, description = "Missing, unknown, rotated or revoked key", body = ErrorBody),
        (status = 403, description = "A person's token, or the student is not in the course (STUDENT_NOT_IN_COURSE)", body = ErrorBody),
        (status = 404, description = "No student has that id (STUDENT_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "NO_ACTIVE_SESSION, SESSION_CLOSED or DUPLICATE_SCAN", body = ErrorBody),
        (status = 413, description = "The body is over MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "Unknown, missing or invalid fields (BAD_USER_INPUT), or DATE_MISMATCH", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn scan_doc() {}

/// Records scans a device buffered while offline, each against the session bound to the
/// device at its own date and time. Replaying a batch changes nothing.
#[utoipa::path(
    post,
    path = "/api/attendance/scans/batch",
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
#[allow(dead_code)]
fn batch_doc() {}

/// Liveness: 200 when the database answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Alive", body = HealthBody),
        (status = 503, description = "The database does not answer", body = HealthBody),
    )
)]
#[allow(dead_code)]
fn health_doc() {}

/// Readiness: 200 when the database answers, migrations are applied and live events flow.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "Not ready yet", body = HealthBody),
    )
)]
#[allow(dead_code)]
fn ready_doc() {}

struct DeviceKey;

impl Modify for DeviceKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "device_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("attdev_<64 hex digits>")
                    .description(Some(
                        "The device's API key, issued once by registerDevice or rotateDeviceKey",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Attendance device API",
        description = "The REST endpoints face-recognition terminals use. People use GraphQL at /graphql."
    ),
    paths(scan_doc, batch_doc, health_doc, ready_doc),
    components(schemas(ScanBody, BatchBody, BatchAnswer, BatchItem, ItemStatus, RecordJson, ErrorBody, ErrorDetail, HealthBody)),
    modifiers(&DeviceKey),
    tags((name = "devices", description = "Scans from terminals"), (name = "operations", description = "Health checks"))
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`.
pub async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
