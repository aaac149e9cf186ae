//! A student's whole picture: their figures in each of their courses over a range.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryTrait};

use crate::auth::Principal;
use crate::entities::{AttendanceStatus, course};
use crate::error::{AppError, AppResult};
use crate::service::Service;
use crate::service::access::{self, Scope};
use crate::service::sql::statement;

/// A student's figures in one course.
#[derive(Clone, Debug, PartialEq)]
pub struct CourseAttendance {
    /// The course.
    pub course: course::Model,
    /// Present records (on time or late).
    pub present: i64,
    /// Of those, late.
    pub late: i64,
    /// Absent records.
    pub absent: i64,
    /// Permission records (excused).
    pub permission: i64,
    /// present / (present + absent + permission); `None` without records.
    pub rate: Option<f64>,
}

#[derive(FromQueryResult)]
struct Tally {
    course_id: i32,
    present: i64,
    late: i64,
    absent: i64,
    permission: i64,
}

impl Service {
    /// A student's figures in each of their courses between `from` and `to` (session dates,
    /// both included): the courses of their section and any with records of theirs;
    /// teachers see only the courses they teach. Three statements, whatever the range.
    pub async fn student_report(
        &self,
        actor: &Principal,
        student_id: i32,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> AppResult<Vec<CourseAttendance>> {
        let scope = access::scope(actor)?;
        let student = self
            .student_row(student_id)
            .await?
            .ok_or(AppError::NotFound("student"))?;
        let backend = self.db.get_database_backend();
        let tallies = Tally::find_by_statement(statement(
            backend,
            &format!(
                "SELECT s.course_id AS course_id, \
                 COALESCE(SUM(CASE WHEN r.status = '{present}' THEN 1 ELSE 0 END), 0) AS present, \
                 COALESCE(SUM(CASE WHEN r.status = '{present}' AND r.late_minutes > 0 THEN 1 ELSE 0 END), 0) AS late, \
                 COALESCE(SUM(CASE WHEN r.status = '{absent}' THEN 1 ELSE 0 END), 0) AS absent, \
                 COALESCE(SUM(CASE WHEN r.status = '{permission}' THEN 1 ELSE 0 END), 0) AS permission \
                 FROM attendance_record r JOIN attendance_session s ON s.id = r.session_id \
                 WHERE r.student_id = $1 AND ($2 IS NULL OR s.date >= $2) \
                 AND ($3 IS NULL OR s.date <= $3) GROUP BY s.course_id",
                present = AttendanceStatus::Present.as_str(),
                absent = AttendanceStatus::Absent.as_str(),
                permission = AttendanceStatus::Permission.as_str(),
            ),
            vec![student_id.into(), from.into(), to.into()],
        ))
        .all(&self.db)
        .await?;
        let mut by_course: BTreeMap<i32, Tally> =
            tallies.into_iter().map(|t| (t.course_id, t)).collect();
        let courses = course::Entity::find()
            .filter(
                course::Column::Id
                    .in_subquery(
                        Query::select()
                            .column(crate::entities::course_section::Column::CourseId)
                            .from(crate::entities::course_section::Entity)
                            .and_where(
                                Expr::col(crate::entities::course_section::Column::SectionId)
                                    .eq(student.section_id),
                            )
                            .to_owned(),
                    )
                    .or(course::Column::Id.is_in(by_course.keys().copied())),
            )
            .apply_if(
                match scope {
                    Scope::Teacher(teacher_id) => Some(teacher_id),
                    Scope::All => None,
                },
                |q, teacher_id| q.filter(course::Column::TeacherId.eq(teacher_id)),
            )
            .all(&self.db)
            .await?;
        let mut report: Vec<CourseAttendance> = courses
            .into_iter()
            .map(|course| {
                let tally = by_course.remove(&course.id);
                let (present, late, absent, permission) = tally.map_or((0, 0, 0, 0), |t| {
                    (t.present, t.late, t.absent, t.permission)
                });
                let total = present + absent + permission;
                CourseAttendance {
                    course,
                    present,
                    late,
                    absent,
                    permission,
                    rate: (total > 0).then(|| present as f64 / total as f64),
                }
            })
            .collect();
        report.sort_by(|a, b| a.course.code.cmp(&b.course.code));
        Ok(report)
    }
}
