//! Excused absences known in advance (SPEC 8.3).
//!
//! An excuse covers a student from one date to another, in one course or all of theirs.
//! The close gives a covered student with no record `PERMISSION` instead of `ABSENT` (see
//! `sessions::mark_absent_sql`). Creating an excuse turns the automatic absences already in
//! its range into permission at once; revoking it turns back exactly what it set. Which
//! records an excuse set is kept in `record_excuse`, and a person's edit removes the link,
//! so their decision is never overwritten. Every change is an audit entry naming the
//! excuse, and each kind of change is one statement, whatever the number of records.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    FromQueryResult, QueryFilter, QueryTrait, Set, TransactionTrait,
};

use crate::auth::Principal;
use crate::entities::{AttendanceStatus, ChangeKind, RecordSource, excuse, student, term};
use crate::error::{AppError, AppResult};
use crate::events::{EventKind, SessionEvent};
use crate::service::access::{self, Scope};
use crate::service::attendance::record::AUDIT_COLUMNS;
use crate::service::attendance::rule;
use crate::service::integrations::consequences::{Change, follow};
use crate::service::sql::{paginate_newest_first, statement, write_transaction};
use crate::service::{Page, PageRequest, Service, required_text};

/// The longest excuse when no term is defined.
const MAX_DAYS_WITHOUT_TERM: i64 = 366;

/// A new excuse.
#[derive(Clone, Debug)]
pub struct NewExcuse {
    /// The student excused.
    pub student_id: i32,
    /// Only this course; every course of the student when `None` (admins only).
    pub course_id: Option<i32>,
    /// First day covered.
    pub from: NaiveDate,
    /// Last day covered.
    pub to: NaiveDate,
    /// Why, such as "doctor's note".
    pub reason: String,
}

/// Excuse list filters.
#[derive(Clone, Debug, Default)]
pub struct ExcuseFilter {
    /// Only this student's.
    pub student_id: Option<i32>,
    /// Only excuses covering a day on or after this one.
    pub from: Option<NaiveDate>,
    /// Only excuses covering a day on or before this one.
    pub to: Option<NaiveDate>,
}

#[derive(FromQueryResult)]
struct Touched {
    session_id: i32,
    course_id: i32,
}

impl Service {
    /// Creates an excuse and turns the automatic absences already in its range (and course)
    /// into permission, in one transaction. Admins for any course or all; teachers only for
    /// a course they teach (`courseId` required).
    pub async fn create_excuse(
        &self,
        actor: &Principal,
        input: NewExcuse,
    ) -> AppResult<excuse::Model> {
        let user_id = actor.user_id().ok_or(AppError::Forbidden)?;
        let course = match input.course_id {
            Some(course_id) => Some(
                self.course_row(course_id)
                    .await?
                    .ok_or_else(|| AppError::invalid("courseId", "no course has this id"))?,
            ),
            None => None,
        };
        // Teachers excuse in a course they teach; only admins for every course at once.
        if access::scope(actor)? != Scope::All
            && !course
                .as_ref()
                .is_some_and(|c| access::owns(actor, c.teacher_id))
        {
            return Err(AppError::Forbidden);
        }
        let reason = required_text("reason", &input.reason, 500)?;
        self.check_excuse_dates(input.from, input.to).await?;
        // A teacher excuses only students of the course, and learns nothing of any other:
        // a stranger is answered exactly as a student that does not exist.
        let teacher_course = match access::scope(actor)? {
            Scope::Teacher(_) => course.as_ref(),
            Scope::All => None,
        };
        let unknown = || {
            let message = if teacher_course.is_some() {
                "no student of this course has this id"
            } else {
                "no student has this id"
            };
            AppError::invalid("studentId", message)
        };
        let student = student::Entity::find_by_id(input.student_id)
            .one(&self.db)
            .await?
            .ok_or_else(unknown)?;
        if let Some(course) = teacher_course
            && !self.course_expects(course.id, &student).await?
        {
            return Err(unknown());
        }
        let at = self.now();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let excuse = excuse::ActiveModel {
            student_id: Set(input.student_id),
            course_id: Set(input.course_id),
            from_date: Set(input.from),
            to_date: Set(input.to),
            reason: Set(reason),
            created_by: Set(user_id),
            created_at: Set(at),
            revoked_at: Set(None),
            revoked_by: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        let backend = txn.get_database_backend();
        // The automatic absences in range that no person has edited and no other excuse
        // holds: audited first, then linked, then changed, each in one statement.
        let records = txn
            .execute_raw(statement(
                backend,
                &format!(
                    "INSERT INTO record_change ({columns}) \
                 SELECT r.id, r.session_id, r.student_id, '{kind}', r.status, '{permission}', \
                 $1, $2, NULL, e.id FROM attendance_record r \
                 JOIN attendance_session s ON s.id = r.session_id \
                 JOIN excuse e ON e.id = $3 AND e.student_id = r.student_id \
                 WHERE {covers} AND {automatic} AND NOT {held}",
                    columns = AUDIT_COLUMNS,
                    kind = ChangeKind::Excuse.as_str(),
                    permission = AttendanceStatus::Permission.as_str(),
                    covers = rule::excuse_covers("s.date", "s.course_id"),
                    automatic = rule::automatic_absence("r"),
                    held = rule::held_by_excuse("r"),
                ),
                vec![user_id.into(), at.into(), excuse.id.into()],
            ))
            .await?
            .rows_affected();
        txn.execute_raw(statement(
            backend,
            "INSERT INTO record_excuse (record_id, excuse_id) \
             SELECT record_id, excuse_id FROM record_change WHERE excuse_id = $1",
            vec![excuse.id.into()],
        ))
        .await?;
        txn.execute_raw(statement(
            backend,
            &format!(
                "UPDATE attendance_record SET status = '{permission}', timestamp = $1 \
                 WHERE id IN (SELECT record_id FROM record_excuse WHERE excuse_id = $2)",
                permission = AttendanceStatus::Permission.as_str(),
            ),
            vec![at.into(), excuse.id.into()],
        ))
        .await?;
        let (touched, courses) = touched_sessions(&txn, excuse.id, ChangeKind::Excuse).await?;
        let followed = follow(
            &txn,
            at,
            Change::Excuse {
                excuse: &excuse,
                courses: &courses,
                records,
                revoked: false,
            },
        )
        .await?;
        txn.commit().await?;
        self.followed(followed);
        self.publish_edits(touched);
        Ok(excuse)
    }

    /// Revokes an excuse and turns back what it set, except records a person edited since
    /// (their decision stands). Admins, or the teacher of the excuse's course. Revoking
    /// twice is harmless.
    pub async fn revoke_excuse(&self, actor: &Principal, id: i32) -> AppResult<excuse::Model> {
        let user_id = actor.user_id().ok_or(AppError::Forbidden)?;
        let existing = self
            .visible_excuse(actor, id)
            .await?
            .ok_or(AppError::NotFound("excuse"))?;
        if access::scope(actor)? != Scope::All {
            let course_id = existing.course_id.ok_or(AppError::Forbidden)?;
            let course = self
                .course_row(course_id)
                .await?
                .ok_or(AppError::Forbidden)?;
            if !access::owns(actor, course.teacher_id) {
                return Err(AppError::Forbidden);
            }
        }
        if existing.revoked_at.is_some() {
            return Ok(existing);
        }
        let at = self.now();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let revoked = excuse::Entity::update_many()
            .col_expr(excuse::Column::RevokedAt, Expr::value(at))
            .col_expr(excuse::Column::RevokedBy, Expr::value(user_id))
            .filter(excuse::Column::Id.eq(id))
            .filter(excuse::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if revoked.rows_affected == 0 {
            txn.rollback().await?;
            return self
                .visible_excuse(actor, id)
                .await?
                .ok_or(AppError::NotFound("excuse"));
        }
        let backend = txn.get_database_backend();
        let records = txn
            .execute_raw(statement(
                backend,
                &format!(
                    "INSERT INTO record_change ({columns}) \
                 SELECT r.id, r.session_id, r.student_id, '{kind}', r.status, '{absent}', \
                 $1, $2, NULL, $3 FROM record_excuse l \
                 JOIN attendance_record r ON r.id = l.record_id WHERE l.excuse_id = $3",
                    columns = AUDIT_COLUMNS,
                    kind = ChangeKind::ExcuseRevoked.as_str(),
                    absent = AttendanceStatus::Absent.as_str(),
                ),
                vec![user_id.into(), at.into(), id.into()],
            ))
            .await?
            .rows_affected();
        txn.execute_raw(statement(
            backend,
            &format!(
                "UPDATE attendance_record SET status = '{absent}', source = '{auto}', \
                 timestamp = $1 \
                 WHERE id IN (SELECT record_id FROM record_excuse WHERE excuse_id = $2)",
                absent = AttendanceStatus::Absent.as_str(),
                auto = RecordSource::AutoAbsent.as_str(),
            ),
            vec![at.into(), id.into()],
        ))
        .await?;
        txn.execute_raw(statement(
            backend,
            "DELETE FROM record_excuse WHERE excuse_id = $1",
            vec![id.into()],
        ))
        .await?;
        let (touched, courses) = touched_sessions(&txn, id, ChangeKind::ExcuseRevoked).await?;
        let revoked = excuse::Model {
            revoked_at: Some(at),
            revoked_by: Some(user_id),
            ..existing
        };
        let followed = follow(
            &txn,
            at,
            Change::Excuse {
                excuse: &revoked,
                courses: &courses,
                records,
                revoked: true,
            },
        )
        .await?;
        txn.commit().await?;
        self.followed(followed);
        self.publish_edits(touched);
        Ok(revoked)
    }

    /// One page of excuses, newest first: admins all; teachers those of the courses they
    /// teach and those covering every course.
    pub async fn excuses(
        &self,
        actor: &Principal,
        filter: &ExcuseFilter,
        page: PageRequest,
    ) -> AppResult<Page<excuse::Model>> {
        use excuse::Column;
        let mut query = excuse::Entity::find()
            .apply_if(filter.student_id, |q, id| {
                q.filter(Column::StudentId.eq(id))
            })
            .apply_if(filter.from, |q, from| q.filter(Column::ToDate.gte(from)))
            .apply_if(filter.to, |q, to| q.filter(Column::FromDate.lte(to)));
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query = query.filter(own_or_school_wide(teacher_id));
        }
        paginate_newest_first(&self.db, query, Column::Id, page).await
    }

    /// One excuse visible to `actor`.
    pub async fn visible_excuse(
        &self,
        actor: &Principal,
        id: i32,
    ) -> AppResult<Option<excuse::Model>> {
        let mut query = excuse::Entity::find_by_id(id);
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query = query.filter(own_or_school_wide(teacher_id));
        }
        Ok(query.one(&self.db).await?)
    }

    /// Whether `student` is in one of the course's sections.
    async fn course_expects(&self, course_id: i32, student: &student::Model) -> AppResult<bool> {
        use crate::entities::course_section;
        Ok(course_section::Entity::find()
            .filter(course_section::Column::CourseId.eq(course_id))
            .filter(course_section::Column::SectionId.eq(student.section_id))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Excuses may not run backwards, nor longer than the longest term (or a year).
    async fn check_excuse_dates(&self, from: NaiveDate, to: NaiveDate) -> AppResult<()> {
        if to < from {
            return Err(AppError::invalid("to", "must not be before `from`"));
        }
        let longest = term::Entity::find()
            .all(&self.db)
            .await?
            .iter()
            .map(|t| (t.ends_on - t.starts_on).num_days() + 1)
            .max()
            .unwrap_or(MAX_DAYS_WITHOUT_TERM);
        if (to - from).num_days() + 1 > longest {
            return Err(AppError::invalid(
                "to",
                format!("an excuse may cover at most {longest} days (the longest term)"),
            ));
        }
        Ok(())
    }

    /// Tells live subscribers of each touched session that records changed.
    fn publish_edits(&self, sessions: Vec<i32>) {
        for session_id in sessions {
            self.events.publish(SessionEvent {
                session_id,
                kind: EventKind::Edit,
                record_id: None,
            });
        }
    }
}

/// The excuses a teacher sees: their courses', and those covering every course of a
/// student they teach (never a stranger's reason).
fn own_or_school_wide(teacher_id: i32) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(
            sea_orm::Condition::all()
                .add(excuse::Column::CourseId.is_null())
                .add(excuse::Column::StudentId.in_subquery(access::students_taught_by(teacher_id))),
        )
        .add(excuse::Column::CourseId.in_subquery(access::courses_taught_by(teacher_id)))
}

/// The sessions whose records an excuse's change of `kind` touched (for live events), and
/// their courses (for the warning rules).
async fn touched_sessions(
    txn: &DatabaseTransaction,
    excuse_id: i32,
    kind: ChangeKind,
) -> AppResult<(Vec<i32>, Vec<i32>)> {
    let touched = Touched::find_by_statement(statement(
        txn.get_database_backend(),
        "SELECT DISTINCT c.session_id AS session_id, s.course_id AS course_id \
         FROM record_change c JOIN attendance_session s ON s.id = c.session_id \
         WHERE c.excuse_id = $1 AND c.kind = $2",
        vec![excuse_id.into(), kind.as_str().into()],
    ))
    .all(txn)
    .await?;
    let courses: BTreeSet<i32> = touched.iter().map(|t| t.course_id).collect();
    Ok((
        touched.into_iter().map(|t| t.session_id).collect(),
        courses.into_iter().collect(),
    ))
}
