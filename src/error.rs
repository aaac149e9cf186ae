//! The one error type of the service layer, and its mapping to GraphQL and REST.
//!
//! Every failure a client can see carries one of SPEC's codes (`ErrorCode`), and where it
//! helps a more specific, stable `reason`. Internal failures are logged here and shown
//! only as `INTERNAL`, so no SQL, driver or constraint text reaches a client.

use async_graphql::ErrorExtensions as _;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Result alias used throughout the service layer.
pub type AppResult<T> = Result<T, AppError>;

/// The machine-readable error categories of the contract (`extensions.code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials, but the role may not do this.
    Forbidden,
    /// The object does not exist (or is not visible to the caller).
    NotFound,
    /// The input is invalid; nothing changed.
    BadUserInput,
    /// The request conflicts with the current state (duplicates, busy devices).
    Conflict,
    /// Something failed on the server; details are only in the logs.
    Internal,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Conflict => "CONFLICT",
            Self::Internal => "INTERNAL",
        }
    }
}

/// Specific, stable reasons that refine an `ErrorCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The device has no active session.
    NoActiveSession,
    /// The device's session has already closed.
    SessionClosed,
    /// No student has that id.
    StudentNotFound,
    /// The student is in none of the course's sections.
    StudentNotInCourse,
    /// The scan's date is not the session's date.
    DateMismatch,
    /// The student already has a record in this session.
    DuplicateScan,
    /// The device is bound to another active session.
    DeviceBusy,
    /// A teacher tried to act on a course they do not teach.
    NotYourCourse,
    /// The record changed between reading and writing it.
    ConcurrentEdit,
    /// A buffered scan is older than the offline horizon.
    ScanTooOld,
    /// The request's content type is not accepted here.
    UnsupportedMediaType,
    /// A unique value is already taken.
    DuplicateValue,
    /// Too many failed attempts; try again later.
    RateLimited,
    /// The username or password is wrong.
    InvalidCredentials,
    /// The database cannot be reached right now.
    Unavailable,
    /// The request body is not valid JSON.
    MalformedJson,
    /// The request body exceeds the configured limit.
    PayloadTooLarge,
    /// A terminal that no admin has approved yet.
    TerminalNotApproved,
    /// A line of a terminal's upload that cannot be read.
    MalformedLine,
    /// A GraphQL document exceeds a limit checked before execution.
    QueryLimit,
    /// A directory row that attendance history depends on; deleting it would lose history.
    InUse,
    /// The student has left (is inactive); their scans are refused.
    StudentInactive,
    /// The change would leave the school without an active admin.
    LastAdmin,
    /// A timetable slot overlaps another of the same device or teacher.
    SlotOverlap,
    /// The class has already opened its session.
    ClassHeld,
}

impl Reason {
    /// The one contract code every rejection for this reason carries.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::NoActiveSession
            | Self::SessionClosed
            | Self::DuplicateScan
            | Self::DeviceBusy
            | Self::ConcurrentEdit
            | Self::DuplicateValue
            | Self::InUse
            | Self::LastAdmin
            | Self::SlotOverlap
            | Self::ClassHeld => ErrorCode::Conflict,
            Self::StudentNotFound => ErrorCode::NotFound,
            Self::StudentNotInCourse
            | Self::StudentInactive
            | Self::NotYourCourse
            | Self::RateLimited
            | Self::TerminalNotApproved => ErrorCode::Forbidden,
            Self::InvalidCredentials => ErrorCode::Unauthenticated,
            Self::DateMismatch
            | Self::ScanTooOld
            | Self::UnsupportedMediaType
            | Self::MalformedJson
            | Self::PayloadTooLarge
            | Self::MalformedLine
            | Self::QueryLimit => ErrorCode::BadUserInput,
            Self::Unavailable => ErrorCode::Internal,
        }
    }

    /// The wire name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoActiveSession => "NO_ACTIVE_SESSION",
            Self::SessionClosed => "SESSION_CLOSED",
            Self::StudentNotFound => "STUDENT_NOT_FOUND",
            Self::StudentNotInCourse => "STUDENT_NOT_IN_COURSE",
            Self::DateMismatch => "DATE_MISMATCH",
            Self::DuplicateScan => "DUPLICATE_SCAN",
            Self::DeviceBusy => "DEVICE_BUSY",
            Self::NotYourCourse => "NOT_YOUR_COURSE",
            Self::ConcurrentEdit => "CONCURRENT_EDIT",
            Self::ScanTooOld => "SCAN_TOO_OLD",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::DuplicateValue => "DUPLICATE_VALUE",
            Self::RateLimited => "RATE_LIMITED",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::Unavailable => "UNAVAILABLE",
            Self::MalformedJson => "MALFORMED_JSON",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::TerminalNotApproved => "TERMINAL_NOT_APPROVED",
            Self::MalformedLine => "MALFORMED_LINE",
            Self::QueryLimit => "QUERY_LIMIT",
            Self::InUse => "IN_USE",
            Self::StudentInactive => "STUDENT_INACTIVE",
            Self::LastAdmin => "LAST_ADMIN",
            Self::SlotOverlap => "SLOT_OVERLAP",
            Self::ClassHeld => "CLASS_HELD",
        }
    }
}

/// An error of the service layer, as shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Missing, malformed, expired or revoked credentials.
    #[error("authentication required: missing or invalid credentials")]
    Unauthenticated,
    /// The caller's role may not perform this operation.
    #[error("not allowed for this account")]
    Forbidden,
    /// The named object does not exist or is not visible to the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A field of the input is invalid.
    #[error("{field}: {message}")]
    InvalidInput {
        /// The input field at fault, as the client spelled it.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A domain rule refused the request; `reason` says which.
    #[error("{message}")]
    Rejected {
        /// The specific rule.
        reason: Reason,
        /// A human explanation.
        message: String,
        /// The existing record a duplicate collided with.
        record_id: Option<i32>,
    },
    /// A unique value (a code, a username) is already taken.
    #[error("{field} {value:?} is already taken")]
    Duplicate {
        /// The input field at fault.
        field: String,
        /// The value that collided.
        value: String,
    },
    /// The database is unreachable; the request changed nothing and may be retried.
    #[error("the database is unavailable; retry shortly")]
    Unavailable,
    /// An unexpected failure; the source is logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// An invalid-input error naming the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A rejection by a domain rule.
    pub fn rejected(reason: Reason, message: impl Into<String>) -> Self {
        Self::Rejected {
            reason,
            message: message.into(),
            record_id: None,
        }
    }

    /// The contract code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::InvalidInput { .. } => ErrorCode::BadUserInput,
            Self::Rejected { reason, .. } => reason.code(),
            Self::Duplicate { .. } => ErrorCode::Conflict,
            Self::Unavailable | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The specific reason, where there is one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Rejected { reason, .. } => Some(*reason),
            Self::Duplicate { .. } => Some(Reason::DuplicateValue),
            Self::Unavailable => Some(Reason::Unavailable),
            _ => None,
        }
    }

    /// The HTTP status of this error on the REST endpoints.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::InvalidInput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Rejected {
                reason: Reason::MalformedJson,
                ..
            } => StatusCode::BAD_REQUEST,
            Self::Rejected {
                reason: Reason::PayloadTooLarge,
                ..
            } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Rejected {
                reason: Reason::RateLimited,
                ..
            } => StatusCode::TOO_MANY_REQUESTS,
            Self::Rejected {
                reason: Reason::UnsupportedMediaType,
                ..
            } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Rejected { reason, .. } => match reason.code() {
                ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::BadUserInput => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::Conflict => StatusCode::CONFLICT,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Duplicate { .. } => StatusCode::CONFLICT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to clients (never the internal detail).
    pub fn public_message(&self) -> String {
        self.to_string()
    }

    fn log(&self) {
        if let Self::Internal(detail) = self {
            tracing::error!(error = %detail, "internal error");
        }
    }

    /// The input field at fault and the existing record a duplicate collided with, where
    /// the error names them.
    fn field_and_record(&self) -> (Option<String>, Option<i32>) {
        match self {
            Self::InvalidInput { field, .. } | Self::Duplicate { field, .. } => {
                (Some(field.clone()), None)
            }
            Self::Rejected { record_id, .. } => (None, *record_id),
            _ => (None, None),
        }
    }

    /// The GraphQL form: message plus `extensions.code`, `reason`, `field`, `recordId`.
    pub fn into_graphql(self) -> async_graphql::Error {
        self.log();
        let mut err = async_graphql::Error::new(self.public_message());
        let code = self.code().as_str();
        let reason = self.reason().map(Reason::as_str);
        let (field, record_id) = self.field_and_record();
        err = err.extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(reason) = reason {
                ext.set("reason", reason);
            }
            if let Some(field) = &field {
                ext.set("field", field.as_str());
            }
            if let Some(id) = record_id {
                ext.set("recordId", id.to_string());
            }
        });
        err
    }

    /// The REST body: `{"error": {"code", "message", ...}}`, where `code` is the specific
    /// reason when there is one (so each rejection has its own code) and `kind` the category.
    pub fn rest_body(&self) -> ErrorBody {
        let (field, record_id) = self.field_and_record();
        ErrorBody {
            error: ErrorDetail {
                code: self
                    .reason()
                    .map(Reason::as_str)
                    .unwrap_or(self.code().as_str()),
                field,
                kind: self.code().as_str(),
                message: self.public_message(),
                reason: self.reason().map(Reason::as_str),
                record_id,
            },
        }
    }
}

/// Every error answer: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

// The fields are in alphabetical order, the order these bodies have always been written
// in (as JSON maps, which sort their keys); absent ones are left out.
/// An error's details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The specific code: NO_ACTIVE_SESSION, SESSION_CLOSED, DUPLICATE_SCAN,
    /// STUDENT_NOT_FOUND, STUDENT_NOT_IN_COURSE, STUDENT_INACTIVE, DATE_MISMATCH, MALFORMED_JSON,
    /// PAYLOAD_TOO_LARGE, SCAN_TOO_OLD, UNAUTHENTICATED, FORBIDDEN, BAD_USER_INPUT, UNAVAILABLE...
    #[schema(value_type = String)]
    pub code: &'static str,
    /// The field at fault, for invalid input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The category: UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, BAD_USER_INPUT, CONFLICT or INTERNAL.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// A human explanation.
    pub message: String,
    /// The specific reason, when there is one (equals `code`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
    /// The existing record, for DUPLICATE_SCAN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<i32>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.status(), axum::Json(self.rest_body())).into_response();
        if matches!(self, Self::Unauthenticated) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        if is_connection_error(&err) {
            tracing::warn!(error = %err, "database unavailable");
            return Self::Unavailable;
        }
        if is_transient_conflict(&err) {
            // The database rolled the work back, so the client may simply send it again.
            tracing::warn!(error = %err, "statement aborted by a lock conflict");
            return Self::Unavailable;
        }
        Self::Internal(err.to_string())
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

/// True when the database could not be reached (as opposed to a failing statement).
fn is_connection_error(err: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error;
    if matches!(
        err,
        sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)
    ) {
        return true;
    }
    driver_error(err).is_some_and(|e| match e {
        Error::Io(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed
        | Error::Protocol(_) => true,
        // Connection exceptions (08) and operator intervention such as a shutdown
        // terminating the connection (57): the database, not the request, is at fault.
        _ => sqlstate_is(e, |code| code.starts_with("08") || code.starts_with("57")),
    })
}

/// True when the database aborted the work to break a deadlock or a serialization
/// conflict: nothing was changed, and running it again may well succeed.
pub fn is_transient_conflict(err: &sea_orm::DbErr) -> bool {
    driver_error(err).is_some_and(is_transient_sqlx)
}

/// [`is_transient_conflict`] for a raw driver error (deadlock `40P01`, serialization `40001`).
pub(crate) fn is_transient_sqlx(err: &sea_orm::sqlx::Error) -> bool {
    sqlstate_is(err, |code| code == "40P01" || code == "40001")
}

/// The driver's error inside a failed statement, if that is what `err` is.
fn driver_error(err: &sea_orm::DbErr) -> Option<&sea_orm::sqlx::Error> {
    use sea_orm::{DbErr, RuntimeErr};
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            Some(e.as_ref())
        }
        _ => None,
    }
}

/// True when the database answered with an SQLSTATE that `test` accepts.
fn sqlstate_is(err: &sea_orm::sqlx::Error, test: impl Fn(&str) -> bool) -> bool {
    match err {
        sea_orm::sqlx::Error::Database(db) => db.code().is_some_and(|code| test(&code)),
        _ => false,
    }
}

/// True when `err` is a unique-constraint violation, on either database.
pub fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Extension to turn service results into GraphQL results without losing the codes.
pub trait GqlResultExt<T> {
    /// Maps the error through [`AppError::into_graphql`].
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResultExt<T> for AppResult<T> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(AppError::into_graphql)
    }
}
