//! Opening and closing attendance sessions, including the automatic close.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use futures_util::StreamExt;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set, Statement, TransactionTrait,
};

use crate::auth::Principal;
use crate::entities::{attendance_record, attendance_session, course, device, teacher};
use crate::error::{AppError, AppResult, Reason, is_transient_conflict};
use crate::events::{EventKind, SessionEvent};
use crate::service::access::{self, Scope};
use crate::service::attendance::rule;
use crate::service::integrations::consequences::{Change, Followed, follow};
use crate::service::sql::{on_unique_violation, paginate, statement, write_transaction};
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

/// The outcome of closing a session.
#[derive(Clone, Debug)]
pub struct Closed {
    /// The session, now inactive.
    pub session: attendance_session::Model,
    /// How many students this close marked absent (0 when it was already closed).
    pub marked_absent: u64,
    /// False when the session had already been closed by someone else.
    pub newly_closed: bool,
}

/// Marks absent every enrolled, active student of the course with no record, in one
/// statement ($1 session, $2 now, $3 course, $4 the enrolment cut-off, and with excuses $5
/// the session's date). `with_excuses` (when an excuse covers the session's date and course) joins the
/// excuses, and a student one covers gets permission instead. Student order matches the
/// scan batch's, so racing inserts cannot deadlock.
fn mark_absent_sql(with_excuses: bool) -> String {
    let (join, values) = if with_excuses {
        (
            format!(
                "LEFT JOIN {} ON x.student_id = st.id",
                rule::excuses_covering("$5", "$3")
            ),
            rule::absence_values(Some("x.excuse_id")),
        )
    } else {
        // The usual case needs no join: the statement is the one before excuses existed.
        (String::new(), rule::absence_values(None))
    };
    format!(
        "INSERT INTO attendance_record ({columns}) \
         SELECT {values} \
         FROM course_section cs \
         JOIN student st ON st.section_id = cs.section_id AND {active} \
         {join} \
         WHERE cs.course_id = $3 AND st.enrolled_at <= $4 \
         AND NOT EXISTS (SELECT 1 FROM attendance_record r WHERE r.session_id = $1 AND r.student_id = st.id) \
         ORDER BY st.id \
         ON CONFLICT (session_id, student_id) DO NOTHING",
        columns = rule::RECORD_COLUMNS,
        active = rule::STUDENT_ACTIVE,
    )
}

/// Whether any excuse covers a session's date ($1) and course ($2): one row, 0 or 1.
fn any_excuse_sql() -> String {
    format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM excuse e WHERE {} LIMIT 1) t",
        rule::excuse_covers("$1", "$2")
    )
}

/// After [`mark_absent_sql`], links the records an excuse made permission to that excuse
/// ($1 session, $2 date, $3 course): driven by the few excuses, not the roster.
fn link_excused_sql() -> String {
    format!(
        "INSERT INTO record_excuse (record_id, excuse_id) \
         SELECT r.id, x.excuse_id FROM {excuses} \
         JOIN attendance_record r ON r.session_id = $1 AND r.student_id = x.student_id \
         WHERE r.source = '{excused}' \
         ON CONFLICT (record_id) DO NOTHING",
        excuses = rule::excuses_covering("$2", "$3"),
        excused = crate::entities::RecordSource::Excuse.as_str(),
    )
}

/// The audit entries of the statuses a close's excuses set ($1 session, $2 now), naming
/// each excuse.
fn audit_excused_sql() -> String {
    format!(
        "INSERT INTO record_change ({columns}) \
         SELECT r.id, r.session_id, r.student_id, '{kind}', '{absent}', r.status, NULL, $2, \
         NULL, l.excuse_id FROM record_excuse l \
         JOIN attendance_record r ON r.id = l.record_id \
         WHERE r.session_id = $1 AND r.source = '{excused}'",
        columns = crate::service::roll_call::records::AUDIT_COLUMNS,
        kind = crate::entities::ChangeKind::Excuse.as_str(),
        absent = crate::entities::AttendanceStatus::Absent.as_str(),
        excused = crate::entities::RecordSource::Excuse.as_str(),
    )
}

impl Service {
    /// Opens a session binding a course, a teacher and a device.
    pub async fn create_session(
        &self,
        actor: &Principal,
        input: NewSession,
    ) -> AppResult<attendance_session::Model> {
        let course = self
            .course(input.course_id)
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
            self.close_session_as_system(stale.id).await?;
        }

        attendance_session::ActiveModel {
            course_id: Set(course.id),
            date: Set(date),
            created_by: Set(created_by),
            created_at: Set(at),
            device_id: Set(device.id),
            is_active: Set(true),
            starts_at: Set(starts_at),
            grace_minutes: Set(grace),
            closes_at: Set(closes_at),
            closed_at: Set(None),
            ..Default::default()
        }
        .insert(&self.db)
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

    /// Every record of a session, in id order.
    pub async fn session_records(
        &self,
        session_id: i32,
    ) -> AppResult<Vec<attendance_record::Model>> {
        Ok(attendance_record::Entity::find()
            .filter(attendance_record::Column::SessionId.eq(session_id))
            .order_by_asc(attendance_record::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Closes a session on behalf of its teacher or an admin.
    pub async fn close_session(&self, actor: &Principal, id: i32) -> AppResult<Closed> {
        let session = self
            .session_for(actor, id)
            .await?
            .ok_or(AppError::NotFound("session"))?;
        self.close(session).await
    }

    /// Closes a session for the server itself (the auto-closer).
    pub async fn close_session_as_system(&self, id: i32) -> AppResult<Closed> {
        let session = attendance_session::Entity::find_by_id(id)
            .one(&self.db)
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
        let backend = self.db.get_database_backend();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let deactivated = txn
            .execute_raw(statement(
                backend,
                "UPDATE attendance_session SET is_active = false, closed_at = $1 \
                 WHERE id = $2 AND is_active",
                vec![at.into(), session.id.into()],
            ))
            .await?;
        if deactivated.rows_affected() == 0 {
            txn.commit().await?;
            return Ok(None);
        }
        let excused: i64 = txn
            .query_one_raw(statement(
                backend,
                &any_excuse_sql(),
                vec![session.date.into(), session.course_id.into()],
            ))
            .await?
            .map(|row| row.try_get_by_index(0))
            .transpose()?
            .unwrap_or(0);
        let marked = txn
            .execute_raw(statement(
                backend,
                &mark_absent_sql(excused > 0),
                [
                    session.id.into(),
                    at.into(),
                    session.course_id.into(),
                    // Enrolled by the later of the class's start and the session's opening:
                    // students who join after that are not marked absent.
                    session.starts_at.max(session.created_at).into(),
                ]
                .into_iter()
                .chain((excused > 0).then(|| session.date.into()))
                .collect(),
            ))
            .await?;
        let mut linked = 0;
        if excused > 0 {
            linked = txn
                .execute_raw(statement(
                    backend,
                    &link_excused_sql(),
                    vec![
                        session.id.into(),
                        session.date.into(),
                        session.course_id.into(),
                    ],
                ))
                .await?
                .rows_affected();
            txn.execute_raw(statement(
                backend,
                &audit_excused_sql(),
                vec![session.id.into(), at.into()],
            ))
            .await?;
        }
        // Excused students were given permission, not marked absent.
        let marked_absent = marked.rows_affected().saturating_sub(linked);
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
        // Each close is its own transaction; on PostgreSQL a few run at once, so the end of
        // a period (hundreds of classes ending at one minute) is not closed one by one.
        let parallel = if self.writer.get_database_backend() == sea_orm::DbBackend::Postgres {
            4
        } else {
            1
        };
        let closes = due.into_iter().map(|id| {
            let service = self.clone();
            async move { service.close_session_as_system(id).await }
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

    /// The course of a session (for ownership checks and objects).
    pub async fn course_of(&self, session: &attendance_session::Model) -> AppResult<course::Model> {
        self.course(session.course_id)
            .await?
            .ok_or(AppError::NotFound("course"))
    }
}

/// A session's roster by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Present records.
    pub present: i64,
    /// Absent records.
    pub absent: i64,
    /// Permission records.
    pub permission: i64,
    /// Enrolled students without a record while the session is active (0 once closed).
    pub not_yet_scanned: i64,
}

#[derive(FromQueryResult)]
struct StatusCount {
    session_id: i32,
    status: String,
    n: i64,
}

#[derive(FromQueryResult)]
struct Enrolled {
    course_id: i32,
    n: i64,
}

/// The present, absent and permission records of each session, in one statement (sessions
/// without records count zeros); `not_yet_scanned` is left at 0.
pub(crate) async fn status_counts(
    db: &impl ConnectionTrait,
    session_ids: &[i32],
) -> Result<HashMap<i32, SessionCounts>, DbErr> {
    let mut counts: HashMap<i32, SessionCounts> = session_ids
        .iter()
        .map(|id| (*id, SessionCounts::default()))
        .collect();
    if session_ids.is_empty() {
        return Ok(counts);
    }
    let ids: Vec<String> = session_ids.iter().map(i32::to_string).collect();
    // Ids are integers from the database, so inlining them is safe and keeps one statement.
    let by_status = StatusCount::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        format!(
            "SELECT session_id, status, COUNT(*) AS n FROM attendance_record \
             WHERE session_id IN ({}) GROUP BY session_id, status",
            ids.join(",")
        ),
    ))
    .all(db)
    .await?;
    for row in by_status {
        if let Some(c) = counts.get_mut(&row.session_id) {
            match row.status.as_str() {
                "present" => c.present = row.n,
                "absent" => c.absent = row.n,
                "permission" => c.permission = row.n,
                _ => {}
            }
        }
    }
    Ok(counts)
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
