//! Early warnings (SPEC 8.4): the rules, and their evaluation inside the transaction of every
//! change to attendance. Evaluation is set-based: for the students a change touched in one
//! course, one statement per rule kind clears the warnings of those who recovered and one
//! raises them for those who crossed the line, so a close of 500 students costs the same
//! statements as an edit of one. The open-warning unique index makes a crossing raise
//! exactly one warning, however many transactions race.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, Set, TransactionTrait, TryIntoModel,
};

use crate::auth::Principal;
use crate::entities::{AttendanceStatus, attendance_warning, warning_rule};
use crate::error::{AppError, AppResult};
use crate::service::access::{self, Scope};
use crate::service::sql::{paginate_newest_first, statement, write_transaction};
use crate::service::{Page, PageRequest, Service};

pub use crate::entities::WarningKind;

/// A rule as set by `setWarningRule`.
#[derive(Clone, Debug)]
pub struct NewRule {
    /// The course; `None` for the school-wide default.
    pub course_id: Option<i32>,
    /// Warn below this rate (0 to 1).
    pub min_rate: Option<f64>,
    /// Judge the rate only after this many sessions.
    pub after_sessions: i32,
    /// Warn at this many absences in a row.
    pub consecutive_absences: Option<i32>,
}

/// Which students of a course a change touched.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Touched {
    /// Everyone with a record in this session (a close).
    Session(i32),
    /// One student (an edit, a deletion, an excuse).
    Student(i32),
}

/// Filters of `attendanceWarnings`.
#[derive(Clone, Debug, Default)]
pub struct WarningFilter {
    /// Only this course's.
    pub course_id: Option<i32>,
    /// Only this student's.
    pub student_id: Option<i32>,
}

/// The per-student figures of one course ($1) for the touched students (`touched`), as a
/// derived table `t (student_id, sessions, present, streak)`. The rate is present over all
/// records, as `courseReport` computes it; the streak counts the absences after the
/// student's last session (by start) that was not an absence.
fn figures(touched: &str) -> String {
    let (present, absent) = (
        AttendanceStatus::Present.as_str(),
        AttendanceStatus::Absent.as_str(),
    );
    format!(
        "(SELECT r.student_id AS student_id, COUNT(*) AS sessions, \
           SUM(CASE WHEN r.status = '{present}' THEN 1 ELSE 0 END) AS present, \
           SUM(CASE WHEN r.status = '{absent}' AND (k.last_ok IS NULL OR s.starts_at > k.last_ok) \
             THEN 1 ELSE 0 END) AS streak \
         FROM attendance_record r JOIN attendance_session s ON s.id = r.session_id \
         LEFT JOIN (SELECT r2.student_id AS student_id, MAX(s2.starts_at) AS last_ok \
           FROM attendance_record r2 JOIN attendance_session s2 ON s2.id = r2.session_id \
           WHERE s2.course_id = $1 AND r2.status <> '{absent}' AND r2.student_id IN ({touched}) \
           GROUP BY r2.student_id) k ON k.student_id = r.student_id \
         WHERE s.course_id = $1 AND r.student_id IN ({touched}) \
         GROUP BY r.student_id) t"
    )
}

/// The rate of a row of [`figures`].
const RATE: &str = "CAST(t.present AS DOUBLE PRECISION) / t.sessions";

/// Whether a row of [`figures`] is over the line of `kind` ($4 the threshold, and for the
/// rate $5 the sessions after which it is judged).
fn over_the_line(kind: WarningKind) -> String {
    match kind {
        WarningKind::LowRate => format!("{RATE} < $4 AND t.sessions >= $5"),
        WarningKind::ConsecutiveAbsences => "t.streak >= $4".into(),
    }
}

/// The touched students as a subquery on $2.
fn touched_sql(touched: Touched) -> &'static str {
    match touched {
        Touched::Session(_) => {
            "SELECT ts.student_id FROM attendance_record ts WHERE ts.session_id = $2"
        }
        Touched::Student(_) => "$2",
    }
}

impl Touched {
    fn id(self) -> i32 {
        match self {
            Self::Session(id) | Self::Student(id) => id,
        }
    }
}

/// Clears the open warnings of `kind` of touched students who are no longer over the line
/// ($1 course, $2 touched, $3 now, then the parameters of [`over_the_line`]).
fn clear_sql(kind: WarningKind, touched: Touched) -> String {
    let touched = touched_sql(touched);
    format!(
        "UPDATE attendance_warning SET cleared_at = $3 \
         WHERE course_id = $1 AND kind = '{kind}' AND cleared_at IS NULL \
         AND student_id IN ({touched}) \
         AND student_id NOT IN (SELECT t.student_id FROM {figures} WHERE {over})",
        kind = kind.as_str(),
        figures = figures(touched),
        over = over_the_line(kind),
    )
}

/// Raises a warning of `kind` for each touched student over the line without an open one,
/// and returns them (same parameters as [`clear_sql`]).
fn raise_sql(kind: WarningKind, touched: Touched) -> String {
    format!(
        "INSERT INTO attendance_warning \
         (student_id, course_id, kind, rate, sessions, consecutive_absences, raised_at) \
         SELECT t.student_id, $1, '{kind}', {RATE}, t.sessions, t.streak, $3 FROM {figures} \
         WHERE {over} AND NOT EXISTS (SELECT 1 FROM attendance_warning w \
           WHERE w.student_id = t.student_id AND w.course_id = $1 AND w.kind = '{kind}' \
           AND w.cleared_at IS NULL) \
         ORDER BY t.student_id \
         ON CONFLICT DO NOTHING \
         RETURNING id, student_id, course_id, kind, rate, sessions, consecutive_absences, \
           raised_at, cleared_at",
        kind = kind.as_str(),
        figures = figures(touched_sql(touched)),
        over = over_the_line(kind),
    )
}

/// The rule that applies to a course: its own, else the school-wide one.
pub(crate) async fn rule_for(
    db: &impl ConnectionTrait,
    course_id: i32,
) -> Result<Option<warning_rule::Model>, DbErr> {
    let rules = warning_rule::Entity::find()
        .filter(
            sea_orm::Condition::any()
                .add(warning_rule::Column::CourseId.eq(course_id))
                .add(warning_rule::Column::CourseId.is_null()),
        )
        .all(db)
        .await?;
    let (own, school): (Vec<_>, Vec<_>) = rules.into_iter().partition(|r| r.course_id.is_some());
    Ok(own.into_iter().next().or(school.into_iter().next()))
}

/// Evaluates the course's rule for the students `touched` in `course_id`, inside the
/// change's transaction: clears the warnings of those who recovered and returns the ones
/// raised. Without a rule it costs one small read.
pub(crate) async fn evaluate(
    txn: &impl ConnectionTrait,
    course_id: i32,
    touched: Touched,
    at: DateTime<Utc>,
) -> Result<Vec<attendance_warning::Model>, DbErr> {
    let Some(rule) = rule_for(txn, course_id).await? else {
        return Ok(Vec::new());
    };
    let backend = txn.get_database_backend();
    let mut raised = Vec::new();
    let kinds = [
        (
            WarningKind::LowRate,
            rule.min_rate.map(sea_orm::Value::from),
        ),
        (
            WarningKind::ConsecutiveAbsences,
            rule.consecutive_absences.map(sea_orm::Value::from),
        ),
    ];
    for (kind, threshold) in kinds {
        let Some(threshold) = threshold else { continue };
        let values = || {
            let mut values = vec![
                course_id.into(),
                touched.id().into(),
                at.into(),
                threshold.clone(),
            ];
            if kind == WarningKind::LowRate {
                values.push(rule.after_sessions.into());
            }
            values
        };
        txn.execute_raw(statement(backend, &clear_sql(kind, touched), values()))
            .await?;
        for row in txn
            .query_all_raw(statement(backend, &raise_sql(kind, touched), values()))
            .await?
        {
            raised.push(attendance_warning::Model::from_query_result(&row, "")?);
        }
    }
    Ok(raised)
}

impl Service {
    /// Sets the warning rule of a course (teachers: a course they teach) or the school-wide
    /// default (admins), replacing the one it had.
    pub async fn set_warning_rule(
        &self,
        actor: &Principal,
        input: NewRule,
    ) -> AppResult<warning_rule::Model> {
        match input.course_id {
            Some(course_id) => {
                self.visible_course(actor, course_id)
                    .await
                    .map_err(|e| match e {
                        AppError::NotFound(_) => {
                            AppError::invalid("courseId", "no course has this id")
                        }
                        other => other,
                    })?;
            }
            None => access::require_admin(actor)?,
        }
        if let Some(rate) = input.min_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(AppError::invalid("minRate", "must be between 0 and 1"));
        }
        if input.after_sessions < 0 {
            return Err(AppError::invalid("afterSessions", "must not be negative"));
        }
        if input.consecutive_absences.is_some_and(|n| n < 1) {
            return Err(AppError::invalid(
                "consecutiveAbsences",
                "must be at least 1",
            ));
        }
        if input.min_rate.is_none() && input.consecutive_absences.is_none() {
            return Err(AppError::invalid(
                "minRate",
                "give minRate, consecutiveAbsences or both (deleteWarningRule removes a rule)",
            ));
        }
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let existing = warning_rule::Entity::find()
            .filter(match input.course_id {
                Some(id) => warning_rule::Column::CourseId.eq(id),
                None => warning_rule::Column::CourseId.is_null(),
            })
            .one(&txn)
            .await?;
        let mut rule: warning_rule::ActiveModel = match existing {
            Some(existing) => existing.into(),
            None => warning_rule::ActiveModel {
                course_id: Set(input.course_id),
                ..Default::default()
            },
        };
        rule.min_rate = Set(input.min_rate);
        rule.after_sessions = Set(input.after_sessions);
        rule.consecutive_absences = Set(input.consecutive_absences);
        rule.updated_at = Set(self.now());
        // Two first settings racing: the unique index refuses the second insert.
        let saved = rule
            .save(&txn)
            .await
            .map_err(crate::service::sql::on_unique_violation(|| {
                AppError::rejected(
                    crate::error::Reason::ConcurrentEdit,
                    "the rule changed meanwhile; retry",
                )
            }))?;
        let saved = saved.try_into_model()?;
        txn.commit().await?;
        Ok(saved)
    }

    /// Removes a rule; warnings already raised stay.
    pub async fn delete_warning_rule(
        &self,
        actor: &Principal,
        id: i32,
    ) -> AppResult<warning_rule::Model> {
        let rule = warning_rule::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("warning rule"))?;
        self.require_rule_owner(actor, &rule).await?;
        warning_rule::Entity::delete_by_id(id)
            .exec(&self.writer)
            .await?;
        Ok(rule)
    }

    /// The rules: admins all, teachers the school-wide one and their courses'.
    pub async fn warning_rules(&self, actor: &Principal) -> AppResult<Vec<warning_rule::Model>> {
        let mut query = warning_rule::Entity::find().order_by_asc(warning_rule::Column::Id);
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query = query.filter(
                sea_orm::Condition::any()
                    .add(warning_rule::Column::CourseId.is_null())
                    .add(
                        warning_rule::Column::CourseId
                            .in_subquery(access::courses_taught_by(teacher_id)),
                    ),
            );
        }
        Ok(query.all(&self.db).await?)
    }

    /// One page of warnings, newest first: admins all, teachers their courses'.
    pub async fn attendance_warnings(
        &self,
        actor: &Principal,
        filter: &WarningFilter,
        page: PageRequest,
    ) -> AppResult<Page<attendance_warning::Model>> {
        use attendance_warning::Column;
        let mut query = attendance_warning::Entity::find();
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query =
                query.filter(Column::CourseId.in_subquery(access::courses_taught_by(teacher_id)));
        }
        if let Some(course_id) = filter.course_id {
            query = query.filter(Column::CourseId.eq(course_id));
        }
        if let Some(student_id) = filter.student_id {
            query = query.filter(Column::StudentId.eq(student_id));
        }
        paginate_newest_first(&self.db, query, Column::Id, page).await
    }

    async fn require_rule_owner(
        &self,
        actor: &Principal,
        rule: &warning_rule::Model,
    ) -> AppResult<()> {
        match rule.course_id {
            Some(course_id) => self.visible_course(actor, course_id).await.map(drop),
            None => access::require_admin(actor),
        }
    }
}
