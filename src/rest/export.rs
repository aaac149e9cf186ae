//! Authenticated CSV downloads of attendance.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, header};
use serde::Deserialize;

use crate::auth::Principal;
use crate::auth::extract::MaybeBearer;
use crate::error::{AppError, AppResult};
use crate::service::parse_id;
use crate::service::reports::ExportScope;
use crate::state::AppState;
use crate::time::parse_date;

/// The date range of a course export.
#[derive(Debug, Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

async fn person(state: &AppState, bearer: &MaybeBearer) -> AppResult<Principal> {
    let principal = super::bearer_principal(state, bearer).await?;
    if principal.role().is_person() {
        Ok(principal)
    } else {
        Err(AppError::Forbidden)
    }
}

/// A CSV download: its headers and its text.
type Csv = ([(HeaderName, String); 2], String);

fn csv(filename: &str, body: String) -> Csv {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
}

/// `GET /api/export/sessions/{id}/records.csv`: one session's records.
pub async fn session_csv(
    State(state): State<AppState>,
    bearer: MaybeBearer,
    Path(id): Path<String>,
) -> AppResult<Csv> {
    let actor = person(&state, &bearer).await?;
    let id = parse_id("id", &id)?;
    let body = state
        .service
        .export_csv(&actor, ExportScope::Session(id))
        .await?;
    Ok(csv(&format!("session-{id}.csv"), body))
}

/// `GET /api/export/courses/{id}/attendance.csv?from=YYYY-MM-DD&to=YYYY-MM-DD`.
pub async fn course_csv(
    State(state): State<AppState>,
    bearer: MaybeBearer,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> AppResult<Csv> {
    let actor = person(&state, &bearer).await?;
    let id = parse_id("id", &id)?;
    let date = |field: &'static str, value: Option<String>| {
        value
            .map(|v| parse_date(&v).ok_or_else(|| AppError::invalid(field, "must be YYYY-MM-DD")))
            .transpose()
    };
    let from = date("from", range.from)?;
    let to = date("to", range.to)?;
    let body = state
        .service
        .export_csv(&actor, ExportScope::Course { id, from, to })
        .await?;
    Ok(csv(&format!("course-{id}-attendance.csv"), body))
}
