//! What a change to attendance sets off, inside the change's own transaction: the warning
//! rules are evaluated for the students it touched, and its events (with the warnings it
//! raised) are written to the webhooks' outbox. Every transaction that changes attendance
//! (close, edit, deletion, excuse, revocation) ends with one call to [`follow`], so a
//! committed change always has its warnings and events and a rolled-back one has neither.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::json;

use crate::entities::{
    AttendanceStatus, ChangeKind, attendance_record, attendance_session, attendance_warning, excuse,
};
use crate::service::Service;
use crate::service::attendance::session::status_counts;
use crate::service::integrations::warnings::{self, Touched};
use crate::service::integrations::webhooks::{self, Event, WebhookEvent};

/// A change to attendance, as its transaction saw it.
pub(crate) enum Change<'a> {
    /// A session closed and marked `marked_absent` students absent.
    Closed {
        session: &'a attendance_session::Model,
        closed_at: DateTime<Utc>,
        marked_absent: u64,
    },
    /// A person edited (`new_status` set) or deleted a record.
    Record {
        record: &'a attendance_record::Model,
        course_id: i32,
        kind: ChangeKind,
        new_status: Option<AttendanceStatus>,
        reason: Option<&'a str>,
        changed_by: Option<i32>,
    },
    /// An excuse was created (or revoked) and changed `records` records in `courses`.
    Excuse {
        excuse: &'a excuse::Model,
        courses: &'a [i32],
        records: u64,
        revoked: bool,
    },
}

/// What [`follow`] wrote.
#[derive(Clone, Copy, Debug, Default)]
#[must_use = "hand it to Service::followed after the commit"]
pub(crate) struct Followed {
    deliveries: u64,
}

/// Evaluates the warnings and writes the events of `change`, inside its transaction.
pub(crate) async fn follow(
    txn: &impl ConnectionTrait,
    at: DateTime<Utc>,
    change: Change<'_>,
) -> Result<Followed, DbErr> {
    let mut raised: Vec<attendance_warning::Model> = Vec::new();
    match &change {
        Change::Closed { session, .. } => {
            raised = warnings::evaluate(txn, session.course_id, Touched::Session(session.id), at)
                .await?;
        }
        Change::Record {
            record, course_id, ..
        } => {
            raised = warnings::evaluate(txn, *course_id, Touched::Student(record.student_id), at)
                .await?;
        }
        Change::Excuse {
            excuse, courses, ..
        } => {
            for course_id in courses.iter() {
                raised.extend(
                    warnings::evaluate(txn, *course_id, Touched::Student(excuse.student_id), at)
                        .await?,
                );
            }
        }
    }
    let subscribed = webhooks::subscribed(txn).await?;
    let mut events = Vec::new();
    match change {
        Change::Closed {
            session,
            closed_at,
            marked_absent,
        } if subscribed.wants(WebhookEvent::SessionClosed) => {
            let counts = status_counts(txn, &[session.id])
                .await?
                .remove(&session.id)
                .unwrap_or_default();
            events.push(Event {
                kind: WebhookEvent::SessionClosed,
                data: json!({
                    "sessionId": session.id.to_string(),
                    "courseId": session.course_id.to_string(),
                    "deviceId": session.device_id.to_string(),
                    "date": session.date.to_string(),
                    "closedAt": closed_at,
                    "markedAbsent": marked_absent,
                    "present": counts.present,
                    "absent": counts.absent,
                    "permission": counts.permission,
                }),
            });
        }
        Change::Record {
            record,
            course_id,
            kind,
            new_status,
            reason,
            changed_by,
        } if subscribed.wants(WebhookEvent::RecordChanged) => {
            events.push(Event {
                kind: WebhookEvent::RecordChanged,
                data: json!({
                    "recordId": record.id.to_string(),
                    "sessionId": record.session_id.to_string(),
                    "studentId": record.student_id.to_string(),
                    "courseId": course_id.to_string(),
                    "change": kind.as_str().to_uppercase(),
                    "oldStatus": record.status.as_str().to_uppercase(),
                    "newStatus": new_status.map(|s| s.as_str().to_uppercase()),
                    "reason": reason,
                    "changedBy": changed_by.map(|id| id.to_string()),
                    "changedAt": at,
                }),
            });
        }
        Change::Excuse {
            excuse,
            records,
            revoked: false,
            ..
        } if subscribed.wants(WebhookEvent::ExcuseCreated) => {
            events.push(Event {
                kind: WebhookEvent::ExcuseCreated,
                data: json!({
                    "excuseId": excuse.id.to_string(),
                    "studentId": excuse.student_id.to_string(),
                    "courseId": excuse.course_id.map(|id| id.to_string()),
                    "from": excuse.from_date.to_string(),
                    "to": excuse.to_date.to_string(),
                    "reason": excuse.reason,
                    "recordsChanged": records,
                }),
            });
        }
        _ => {}
    }
    if subscribed.wants(WebhookEvent::WarningRaised) {
        events.extend(raised.iter().map(|w| Event {
            kind: WebhookEvent::WarningRaised,
            data: json!({
                "warningId": w.id.to_string(),
                "studentId": w.student_id.to_string(),
                "courseId": w.course_id.to_string(),
                "kind": w.kind.as_str(),
                "rate": w.rate,
                "sessions": w.sessions,
                "consecutiveAbsences": w.consecutive_absences,
                "raisedAt": w.raised_at,
            }),
        }));
    }
    if !raised.is_empty() {
        tracing::info!(warnings = raised.len(), "attendance warnings raised");
    }
    let deliveries = if events.is_empty() {
        0
    } else {
        webhooks::write_events(txn, at, &events).await?
    };
    Ok(Followed { deliveries })
}

impl Service {
    /// After the commit of a change that [`follow`]ed: wakes this process's webhook worker
    /// when deliveries were written (other processes find them when they next look).
    pub(crate) fn followed(&self, followed: Followed) {
        if followed.deliveries > 0 {
            self.webhook_wake.notify_one();
        }
    }
}
