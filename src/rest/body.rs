//! The bodies the REST endpoints read and write. The OpenAPI document is derived from these
//! same types, so it describes what the handlers really send.
//!
//! Requests are read by hand from a parsed JSON value rather than with serde: every mistake
//! must be a 422 naming its field (`student_id: is required`), which serde's messages are not.
//! Answers are serialized with their fields in alphabetical order where they used to be
//! written as JSON maps (which sort their keys), so the bytes on the wire stay the same.

use chrono::{NaiveDate, NaiveTime};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::entities::attendance_record;
use crate::error::{AppError, AppResult, ErrorDetail};
use crate::service::roll_call::scan::{ScanRequest, StudentRef};
use crate::time::{parse_date, parse_time};

/// The most scans one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// A scan as a device sends it. Unknown fields are rejected (422).
#[derive(Clone, Debug, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"student_id": 120, "date": "2025-11-25", "time": "08:43:21"}))]
pub struct ScanBody {
    /// The recognized student's id (a positive integer; a numeric string is accepted too).
    #[schema(value_type = i64, minimum = 1, maximum = 2147483647)]
    pub student_id: i32,
    /// The device's local date, `YYYY-MM-DD`, read in the server's TIME_ZONE.
    #[schema(value_type = String, format = Date, example = "2025-11-25")]
    pub date: NaiveDate,
    /// The device's local time, `HH:MM:SS`.
    #[schema(value_type = String, pattern = r"^\d{2}:\d{2}:\d{2}$", example = "08:43:21")]
    pub time: NaiveTime,
}

impl TryFrom<&Value> for ScanBody {
    type Error = AppError;

    /// One scan object, checked strictly.
    fn try_from(value: &Value) -> AppResult<Self> {
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
            None | Some(Value::Null) => {
                return Err(AppError::invalid("student_id", "is required"));
            }
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(_) => None,
        }
        .filter(|n| *n > 0)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| AppError::invalid("student_id", "must be a positive integer"))?;
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
        Ok(Self {
            student_id,
            date,
            time,
        })
    }
}

impl From<ScanBody> for ScanRequest {
    fn from(body: ScanBody) -> Self {
        Self {
            student: StudentRef::Id(body.student_id),
            date: body.date,
            time: body.time,
        }
    }
}

/// Up to 1,000 buffered scans (a bare JSON array of scans is accepted too).
#[derive(Debug, ToSchema)]
pub struct BatchBody {
    // Kept as JSON values: each is checked on its own, so one bad scan is rejected alone
    // instead of failing the batch.
    /// The scans, oldest first.
    #[schema(value_type = Vec<ScanBody>, max_items = 1000)]
    pub scans: Vec<Value>,
}

impl TryFrom<Value> for BatchBody {
    type Error = AppError;

    /// The batch's envelope: an array, or an object holding only `scans`.
    fn try_from(value: Value) -> AppResult<Self> {
        let scans = match value {
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
        if scans.len() > MAX_BATCH {
            return Err(AppError::invalid(
                "scans",
                format!("at most {MAX_BATCH} scans per batch"),
            ));
        }
        Ok(Self { scans })
    }
}

/// A record as the REST shim returns it.
#[derive(Debug, Serialize, ToSchema)]
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

/// What became of one scan of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Written (or an automatic absence corrected).
    Accepted,
    /// The student already had a record; nothing changed.
    Duplicate,
    /// Refused; `code` says why.
    Rejected,
}

// The fields that do not apply to an item's status are left out.
/// One scan's result in a batch answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// The rejection's code (rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub code: Option<&'static str>,
    /// True when the scan turned an automatic absence into present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrected_absence: Option<bool>,
    /// The field at fault (rejected for invalid input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The scan's position in the request.
    pub index: u32,
    /// The rejection's category (rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kind: Option<&'static str>,
    /// A human explanation (rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The specific reason, when there is one (rejected; equals `code`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
    /// The record written (accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordJson>,
    /// The existing record (duplicate, or a rejected duplicate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<i32>,
    /// Accepted, duplicate or rejected.
    pub status: ItemStatus,
}

impl BatchItem {
    fn new(index: u32, status: ItemStatus) -> Self {
        Self {
            code: None,
            corrected_absence: None,
            field: None,
            index,
            kind: None,
            message: None,
            reason: None,
            record: None,
            record_id: None,
            status,
        }
    }

    /// A scan that was written; `corrected_absence` when it replaced an automatic absence.
    pub fn accepted(index: u32, record: RecordJson, corrected_absence: bool) -> Self {
        Self {
            corrected_absence: corrected_absence.then_some(true),
            record: Some(record),
            ..Self::new(index, ItemStatus::Accepted)
        }
    }

    /// A scan whose student already had `record_id`.
    pub fn duplicate(index: u32, record_id: i32) -> Self {
        Self {
            record_id: Some(record_id),
            ..Self::new(index, ItemStatus::Duplicate)
        }
    }

    /// A scan refused for the reason `error` gives, with the same fields as an error body.
    pub fn rejected(index: u32, error: ErrorDetail) -> Self {
        Self {
            code: Some(error.code),
            field: error.field,
            kind: Some(error.kind),
            message: Some(error.message),
            reason: error.reason,
            record_id: error.record_id,
            ..Self::new(index, ItemStatus::Rejected)
        }
    }
}

/// The answer to a batch: always 200 with one result per scan.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct BatchAnswer {
    /// Scans written.
    pub accepted: u32,
    /// Scans already recorded.
    pub duplicates: u32,
    /// Scans refused.
    pub rejected: u32,
    /// One entry per scan, in request order.
    pub results: Vec<BatchItem>,
}

impl BatchAnswer {
    /// Adds `item` to the results and to its status's count.
    pub fn push(&mut self, item: BatchItem) {
        match item.status {
            ItemStatus::Accepted => self.accepted += 1,
            ItemStatus::Duplicate => self.duplicates += 1,
            ItemStatus::Rejected => self.rejected += 1,
        }
        self.results.push(item);
    }
}

// The fields other than `status` say what is wrong, when something is.
/// The health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `unreachable` when the database does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub database: Option<&'static str>,
    /// `not yet listening` while live events are starting.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub live_events: Option<&'static str>,
    /// How many migrations are still to be applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<usize>,
    /// `ok`, `ready`, or what is wrong.
    #[schema(value_type = String)]
    pub status: &'static str,
}

impl HealthBody {
    /// A body that only says `status`.
    pub fn status(status: &'static str) -> Self {
        Self {
            database: None,
            live_events: None,
            pending: None,
            status,
        }
    }
}
