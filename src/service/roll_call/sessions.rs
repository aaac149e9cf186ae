//! Opening and closing attendance sessions, including the automatic close.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use futures_util::StreamExt;
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QuerySelect, QueryTrait,
    Statement, TransactionTrait,
};

use crate::auth::Principal;
use crate::entities::{attendance_session, device, teacher};
use crate::error::{AppError, AppResult, Reason, is_transient_conflict};
use crate::events::{EventKind, SessionEvent};
use crate::service::access::{self, Scope};
use crate::service::attendance::rule;
use crate::service::attendance::session::{self, Opening};
pub use crate::service::attendance::session::{Closed, SessionCounts, status_counts};
use crate::service::integrations::consequences::{Change, Followed, follow};
use crate::service::sql::{on_unique_violation, paginate, write_transaction};
use crate::service::{Page, PageRequest, Service, retry_lock_conflicts};

/// What a client asks for when opening a session.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The course.
    pub course_id: i32,
    /// The device's code (e.g. `DEV-01`).
    pub device_code: String,
    /// The session's date; today in `TIME_ZONE` when absent.
    pub date: Option<NaiveDate>,
    /// How long the session stays open; the configured default when absent.
    pub duration_minutes: Option<i32>,
    /// The teacher running it (admins only; defaults to the course's teacher).
    pub teacher_id: Option<i32>,
    /// When the class starts, for lateness; the opening time when absent.
    pub start_time: Option<NaiveTime>,
    /// Minutes after the start before a scan counts as late; the configured default when absent.
    pub grace_minutes: Option<i32>,
}

/// Session list filters.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    /// Only this course's sessions.
    pub course_id: Option<i32>,
    /// Only active (or only closed) sessions.
    pub active: Option<bool>,
    /// Sessions on or after this date.
    pub from: Option<NaiveDate>,
    /// Sessions on or before this date.
    pub to: Option<NaiveDate>,
}

impl Service {
    /// Opens a session binding a course, a teacher and a device.
    pub async fn create_session(
        &self,
        actor: &Principal,
        input: NewSession,
    ) -> AppResult<attendance_session::Model> {
        let course = self
            .course_row(input.course_id)
            .await?
            .ok_or(AppError::NotFound("course"))?;
        let created_by = match access::scope(actor)? {
            Scope::Teacher(teacher_id) => {
                access::require_course(actor, &course)?;
                if input.teacher_id.is_some_and(|id| id != teacher_id) {
                    return Err(AppError::Forbidden);
                }
                teacher_id
            }
            Scope::All => {
                let teacher_id = input.teacher_id.unwrap_or(course.teacher_id);
                if teacher::Entity::find_by_id(teacher_id)
                    .one(&self.db)
                    .await?
                    .is_none()
                {
                    return Err(AppError::invalid("teacherId", "no teacher has this id"));
                }
                teacher_id
            }
        };
        let device = device::Entity::find()
            .filter(device::Column::DeviceId.eq(input.device_code.trim()))
            .one(&self.db)
            .await?
            .filter(|d| d.is_active)
            .ok_or(AppError::NotFound("device"))?;
        let today = self.local_today();
        let date = input.date.unwrap_or(today);
        if date < today {
            return Err(AppError::invalid("date", format!("{date} is in the past")));
        }
        let duration = match input.duration_minutes {
            None => self.config.session_duration_minutes as i64,
            Some(n) if (1..=24 * 60).contains(&n) => n as i64,
            Some(_) => {
                return Err(AppError::invalid(
                    "durationMinutes",
                    "must be between 1 and 1440",
                ));
            }
        };
        let grace = match input.grace_minutes {
            None => self.config.late_grace_minutes as i32,
            Some(n) if (0..=24 * 60).contains(&n) => n,
            Some(_) => {
                return Err(AppError::invalid(
                    "graceMinutes",
                    "must be between 0 and 1440",
                ));
            }
        };
        let at = self.now();
        let starts_at = match input.start_time {
            Some(time) => self.local_to_utc(date, time)?,
            None => at,
        };
        let closes_at = starts_at.max(at) + Duration::minutes(duration);

        // A session left active past its end only waits for the auto-closer: close it now
        // rather than call the device busy.
        if let Some(stale) = attendance_session::Entity::find()
            .filter(attendance_session::Column::DeviceId.eq(device.id))
            .filter(attendance_session::Column::IsActive.eq(true))
            .one(&self.db)
            .await?
        {
            if stale.closes_at > at {
                return Err(device_busy());
            }
            self.close_session(&Principal::System, stale.id).await?;
        }

        session::open(
            &self.db,
            Opening {
                course_id: course.id,
                date,
                created_by,
                device_id: device.id,
                at,
                starts_at,
                grace_minutes: grace,
                closes_at,
                slot_id: None,
            },
        )
        .await
        .map_err(on_unique_violation(device_busy))
    }

    /// A session visible to `actor` (admins: any; teachers: their own), or `None`.
    pub async fn session_for(
        &self,
        actor: &Principal,
        id: i32,
    ) -> AppResult<Option<attendance_session::Model>> {
        let session = attendance_session::Entity::find_by_id(id)
            .one(&self.db)
            .await?;
        Ok(session.filter(|s| access::may_see_session(actor, s)))
    }

    /// One page of the sessions visible to `actor`, oldest first (in id order).
    pub async fn sessions(
        &self,
        actor: &Principal,
        filter: &SessionFilter,
        page: PageRequest,
    ) -> AppResult<Page<attendance_session::Model>> {
        use attendance_session::Column;
        let mut query = attendance_session::Entity::find();
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query = query.filter(Column::CreatedBy.eq(teacher_id));
        }
        query = query
            .apply_if(filter.course_id, |q, id| q.filter(Column::CourseId.eq(id)))
            .apply_if(filter.active, |q, active| {
                q.filter(Column::IsActive.eq(active))
            })
            .apply_if(filter.from, |q, from| q.filter(Column::Date.gte(from)))
            .apply_if(filter.to, |q, to| q.filter(Column::Date.lte(to)));
        paginate(&self.db, query, Column::Id, page).await
    }

    /// Closes a session on behalf of its teacher, an admin, or the system (sessions past
    /// their end, and a stale session in the way of a new one).
    pub async fn close_session(&self, actor: &Principal, id: i32) -> AppResult<Closed> {
        let session = self
            .session_for(actor, id)
            .await?
            .ok_or(AppError::NotFound("session"))?;
        self.close(session).await
    }

    /// Deactivates the session and marks the missing students absent, in one transaction
    /// and a constant number of statements. The conditional update makes it happen once,
    /// however many closers race (handlers, auto-closers in several processes).
    async fn close(&self, session: attendance_session::Model) -> AppResult<Closed> {
        let at = self.now();
        let marked = retry_lock_conflicts(
            &self.metrics,
            "session_close",
            is_transient_conflict,
            || self.close_once(&session, at),
        )
        .await?;
        let Some((marked_absent, followed)) = marked else {
            let session = attendance_session::Entity::find_by_id(session.id)
                .one(&self.db)
                .await?
                .ok_or(AppError::NotFound("session"))?;
            return Ok(Closed {
                session,
                marked_absent: 0,
                newly_closed: false,
            });
        };
        self.followed(followed);
        self.events.publish(SessionEvent {
            session_id: session.id,
            kind: EventKind::Close,
            record_id: None,
        });
        tracing::info!(session_id = session.id, marked_absent, "session closed");
        Ok(Closed {
            session: attendance_session::Model {
                is_active: false,
                closed_at: Some(at),
                ..session
            },
            marked_absent,
            newly_closed: true,
        })
    }

    /// One try at closing: how many students it marked absent (and what the close set
    /// off), or `None` when another closer got there first.
    async fn close_once(
        &self,
        session: &attendance_session::Model,
        at: DateTime<Utc>,
    ) -> Result<Option<(u64, Followed)>, DbErr> {
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let Some(marked_absent) = session::close_in(&txn, session, at).await? else {
            txn.commit().await?;
            return Ok(None);
        };
        let followed = follow(
            &txn,
            at,
            Change::Closed {
                session,
                closed_at: at,
                marked_absent,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(Some((marked_absent, followed)))
    }

    /// How many sessions are active now.
    pub async fn open_session_count(&self) -> AppResult<i64> {
        use sea_orm::PaginatorTrait;
        Ok(attendance_session::Entity::find()
            .filter(attendance_session::Column::IsActive.eq(true))
            .count(&self.db)
            .await? as i64)
    }

    /// Closes every session whose end has passed; returns how many this call closed.
    pub async fn close_due_sessions(&self) -> AppResult<usize> {
        let due: Vec<i32> = attendance_session::Entity::find()
            .select_only()
            .column(attendance_session::Column::Id)
            .filter(attendance_session::Column::IsActive.eq(true))
            .filter(attendance_session::Column::ClosesAt.lte(self.now()))
            .into_tuple()
            .all(&self.db)
            .await?;
        // Each close is its own transaction.
        let parallel = session::parallel_writes(self.writer.get_database_backend());
        let closes = due.into_iter().map(|id| {
            let service = self.clone();
            async move { service.close_session(&Principal::System, id).await }
        });
        let results: Vec<AppResult<Closed>> = futures_util::stream::iter(closes)
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut closed = 0;
        for result in results {
            if result?.newly_closed {
                closed += 1;
            }
        }
        Ok(closed)
    }
}

#[derive(FromQueryResult)]
struct Enrolled {
    course_id: i32,
    n: i64,
}

impl Service {
    /// Counts for many sessions in two statements, whatever their number.
    pub async fn session_counts(
        &self,
        sessions: &[attendance_session::Model],
    ) -> AppResult<HashMap<i32, SessionCounts>> {
        if sessions.is_empty() {
            return Ok(HashMap::new());
        }
        let backend = self.db.get_database_backend();
        let ids: Vec<i32> = sessions.iter().map(|s| s.id).collect();
        let courses: BTreeSet<i32> = sessions.iter().map(|s| s.course_id).collect();
        let courses: Vec<String> = courses.iter().map(i32::to_string).collect();
        let mut counts = status_counts(&self.db, &ids).await?;
        // Ids are integers from the database, so inlining them is safe and keeps one statement.
        let enrolled = Enrolled::find_by_statement(Statement::from_string(
            backend,
            format!(
                "SELECT cs.course_id AS course_id, COUNT(*) AS n FROM course_section cs \
                 JOIN student st ON st.section_id = cs.section_id AND {active} \
                 WHERE cs.course_id IN ({ids}) GROUP BY cs.course_id",
                active = rule::STUDENT_ACTIVE,
                ids = courses.join(",")
            ),
        ))
        .all(&self.db)
        .await?;
        let enrolled: HashMap<i32, i64> =
            enrolled.into_iter().map(|e| (e.course_id, e.n)).collect();
        for session in sessions {
            if let Some(c) = counts.get_mut(&session.id) {
                let recorded = c.present + c.absent + c.permission;
                c.not_yet_scanned = if session.is_active {
                    (enrolled.get(&session.course_id).copied().unwrap_or(0) - recorded).max(0)
                } else {
                    0
                };
            }
        }
        Ok(counts)
    }
}

fn device_busy() -> AppError {
    AppError::rejected(
        Reason::DeviceBusy,
        "the device is already bound to another active session",
    )
}
