//! The subscription root: live roll call for one session.

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::guard::principal;
use super::objects::{AttendanceCounts, AttendanceRecord};
use crate::auth::Principal;
use crate::entities::{attendance_record, attendance_session};
use crate::error::{AppError, AppResult, GqlResultExt};
use crate::events::{EventKind, SessionEvent};
use crate::service::{Service, parse_id};

/// One change to a session, with the counts after it.
#[derive(SimpleObject)]
pub struct AttendanceUpdate {
    /// What happened; `RESYNC` means events may have been missed: reload the session.
    pub kind: EventKind,
    /// The session.
    pub session_id: ID,
    /// The record written or changed (absent for closes, deletes and resyncs).
    pub record: Option<AttendanceRecord>,
    /// Present, absent, permission and not-yet-scanned after the change.
    pub counts: AttendanceCounts,
}

/// Every live feed of the API.
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Scans, edits and the close of one session, as they happen in any server process.
    /// Only the session's teacher and admins may subscribe.
    async fn attendance_updates(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<AttendanceUpdate>> + use<>>
    {
        let service = ctx.data_unchecked::<Service>().clone();
        let viewer = principal(ctx).gql()?.clone();
        if !viewer.role().is_person() {
            return Err(AppError::Forbidden.into_graphql());
        }
        let id = parse_id("sessionId", &session_id).gql()?;
        let session = service
            .session_for(&viewer, id)
            .await
            .gql()?
            .ok_or(AppError::NotFound("session"))
            .gql()?;
        let receiver = service.events.subscribe();
        let snapshot = build_update(
            &service,
            &viewer,
            &session,
            SessionEvent {
                session_id: session.id,
                kind: EventKind::Snapshot,
                record_id: None,
            },
        )
        .await
        .map_err(AppError::into_graphql);
        let first = futures_util::stream::once(async move { snapshot });
        Ok(first.chain(futures_util::stream::unfold(
            (receiver, service, viewer, session),
            |(mut receiver, service, viewer, session)| async move {
                loop {
                    let event = match receiver.recv().await {
                        Ok(event) if event.session_id == session.id => event,
                        Ok(event) if event.kind == EventKind::Resync && event.session_id == 0 => {
                            SessionEvent {
                                session_id: session.id,
                                ..event
                            }
                        }
                        Ok(_) => continue,
                        // Fell behind: the buffer is bounded, so say so and carry on.
                        Err(RecvError::Lagged(_)) => SessionEvent {
                            session_id: session.id,
                            kind: EventKind::Resync,
                            record_id: None,
                        },
                        Err(RecvError::Closed) => return None,
                    };
                    let update = build_update(&service, &viewer, &session, event)
                        .await
                        .map_err(AppError::into_graphql);
                    return Some((update, (receiver, service, viewer, session)));
                }
            },
        )))
    }
}

async fn build_update(
    service: &Service,
    viewer: &Principal,
    session: &attendance_session::Model,
    event: SessionEvent,
) -> AppResult<AttendanceUpdate> {
    let current = service
        .session_for(viewer, session.id)
        .await?
        .unwrap_or_else(|| session.clone());
    let record = match event.record_id {
        Some(id) => {
            use sea_orm::EntityTrait;
            attendance_record::Entity::find_by_id(id)
                .one(&service.db)
                .await?
                .map(AttendanceRecord::new)
        }
        None => None,
    };
    let counts = service
        .session_counts(std::slice::from_ref(&current))
        .await?
        .remove(&current.id)
        .unwrap_or_default();
    Ok(AttendanceUpdate {
        kind: event.kind,
        session_id: current.id.into(),
        record,
        counts: counts.into(),
    })
}
