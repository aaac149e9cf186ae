//! Attendance read out: per-course reports, a student's whole picture, and CSV exports of
//! sessions and courses. Reads only; the roll call writes what they read.

pub mod student_report;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};

use crate::auth::Principal;
use crate::entities::{course, student};
use crate::error::{AppError, AppResult};
use crate::service::Service;
use crate::service::roll_call::records::{STUDENT_COLUMNS, student_at, student_select};
use crate::service::sql::statement;

impl Service {
    /// A course's attendance per student over a date range, with the attendance rate, in a
    /// constant number of statements. Teachers see their own courses, admins all.
    pub async fn course_report(
        &self,
        actor: &Principal,
        course_id: i32,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> AppResult<CourseReport> {
        let course = self.visible_course(actor, course_id).await?;
        let backend = self.db.get_database_backend();
        let (from, to) = date_range(from, to)?;
        // The students come with their tallies: the report always shows who they are. The
        // records are counted once per student before the join (grouping the students'
        // left join to every session instead cost 85 ms for 40 sessions of 500 on PostgreSQL).
        let rows = self
            .db
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT {students}, \
             COALESCE(t.present, 0), COALESCE(t.absent, 0), COALESCE(t.permission, 0) \
             FROM student st \
             JOIN course_section cs ON cs.section_id = st.section_id AND cs.course_id = $1 \
             LEFT JOIN (SELECT r.student_id, \
               SUM(CASE WHEN r.status = 'present' THEN 1 ELSE 0 END) AS present, \
               SUM(CASE WHEN r.status = 'absent' THEN 1 ELSE 0 END) AS absent, \
               SUM(CASE WHEN r.status = 'permission' THEN 1 ELSE 0 END) AS permission \
               FROM attendance_record r JOIN attendance_session s ON s.id = r.session_id \
               WHERE s.course_id = $1 AND s.date >= $2 AND s.date <= $3 \
               GROUP BY r.student_id) t ON t.student_id = st.id \
             ORDER BY st.id",
                    students = student_select("st"),
                ),
                vec![course.id.into(), from.into(), to.into()],
            ))
            .await?;
        let sessions = self
            .count_sql(
                "SELECT COUNT(*) AS n FROM attendance_session WHERE course_id = $1 AND date >= $2 AND date <= $3",
                vec![course.id.into(), from.into(), to.into()],
            )
            .await?;
        Ok(CourseReport {
            course,
            sessions,
            students: rows
                .iter()
                .map(|row| {
                    // By position: by-name decoding formats and hashes every column name.
                    let tally = STUDENT_COLUMNS.len();
                    let (present, absent, permission): (i64, i64, i64) = (
                        row.try_get_by_index(tally)?,
                        row.try_get_by_index(tally + 1)?,
                        row.try_get_by_index(tally + 2)?,
                    );
                    let total = present + absent + permission;
                    Ok(StudentAttendance {
                        student: student_at(row, 0)?,
                        present,
                        absent,
                        permission,
                        rate: (total > 0).then(|| present as f64 / total as f64),
                    })
                })
                .collect::<Result<_, sea_orm::DbErr>>()?,
        })
    }

    /// A course the actor may report on: admins any, teachers their own.
    pub async fn visible_course(
        &self,
        actor: &Principal,
        course_id: i32,
    ) -> AppResult<course::Model> {
        let course = self
            .course_row(course_id)
            .await?
            .ok_or(AppError::NotFound("course"))?;
        crate::service::access::require_course(actor, &course)?;
        Ok(course)
    }

    async fn count_sql(&self, sql: &str, values: Vec<sea_orm::Value>) -> AppResult<i64> {
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let backend = self.db.get_database_backend();
        Ok(Count::find_by_statement(statement(backend, sql, values))
            .one(&self.db)
            .await?
            .map_or(0, |c| c.n))
    }

    /// CSV of attendance records: one session's (`session_id`), or a course's over a date
    /// range. Teachers may export their own sessions and courses, admins all.
    pub async fn export_csv(&self, actor: &Principal, scope: ExportScope) -> AppResult<String> {
        let backend = self.db.get_database_backend();
        let (filter, values): (&str, Vec<sea_orm::Value>) = match scope {
            ExportScope::Session(id) => {
                self.session_for(actor, id)
                    .await?
                    .ok_or(AppError::NotFound("session"))?;
                ("s.id = $1", vec![id.into()])
            }
            ExportScope::Course { id, from, to } => {
                self.visible_course(actor, id).await?;
                let (from, to) = date_range(from, to)?;
                (
                    "s.course_id = $1 AND s.date >= $2 AND s.date <= $3",
                    vec![id.into(), from.into(), to.into()],
                )
            }
        };
        let rows = ExportRow::find_by_statement(statement(
            backend,
            &format!(
                "SELECT s.id AS session_id, s.date AS date, c.code AS course_code, \
                 st.student_code AS student_code, st.first_name AS first_name, \
                 st.last_name AS last_name, sec.name AS section, r.status AS status, \
                 r.scanned_at AS scanned_at, r.late_minutes AS late_minutes, r.timestamp AS timestamp, \
                 ch.changed_at AS edited_at, u.username AS edited_by, ch.reason AS edit_reason \
                 FROM attendance_record r \
                 JOIN attendance_session s ON s.id = r.session_id \
                 JOIN course c ON c.id = s.course_id \
                 JOIN student st ON st.id = r.student_id \
                 JOIN section sec ON sec.id = st.section_id \
                 LEFT JOIN record_change ch ON ch.id = \
                   (SELECT MAX(c2.id) FROM record_change c2 WHERE c2.record_id = r.id) \
                 LEFT JOIN app_user u ON u.id = ch.changed_by \
                 WHERE {filter} ORDER BY s.date, s.id, st.student_code"
            ),
            values,
        ))
        .all(&self.db)
        .await?;
        let zone = self.config.time_zone;
        let local = |t: Option<DateTime<Utc>>| {
            t.map(|t| {
                t.with_timezone(&zone)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default()
        };
        let header = [
            "session_id",
            "date",
            "course_code",
            "student_code",
            "first_name",
            "last_name",
            "section",
            "status",
            "scanned_at",
            "late_minutes",
            "status_set_at",
            "last_edit_at",
            "last_edit_by",
            "last_edit_reason",
        ]
        .map(String::from);
        let lines = rows.into_iter().map(|r| {
            [
                r.session_id.to_string(),
                r.date.to_string(),
                r.course_code,
                r.student_code,
                r.first_name,
                r.last_name,
                r.section,
                r.status,
                local(r.scanned_at),
                r.late_minutes.map(|m| m.to_string()).unwrap_or_default(),
                local(Some(r.timestamp)),
                local(r.edited_at),
                r.edited_by.unwrap_or_default(),
                r.edit_reason.unwrap_or_default(),
            ]
        });
        csv_text(std::iter::once(header).chain(lines))
    }
}

/// What to export.
#[derive(Clone, Copy, Debug)]
pub enum ExportScope {
    /// One session's records.
    Session(i32),
    /// A course's records over a date range (open ends allowed).
    Course {
        /// The course.
        id: i32,
        /// First date included.
        from: Option<NaiveDate>,
        /// Last date included.
        to: Option<NaiveDate>,
    },
}

/// A course's attendance per student.
#[derive(Clone, Debug)]
pub struct CourseReport {
    /// The course.
    pub course: course::Model,
    /// Sessions in the range.
    pub sessions: i64,
    /// One entry per enrolled student, in id order.
    pub students: Vec<StudentAttendance>,
}

impl CourseReport {
    /// The students whose rate is below `rate` (0 to 1), lowest first; students with no
    /// session yet have no rate and are never below.
    pub fn students_below(&self, rate: f64) -> AppResult<Vec<StudentAttendance>> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(AppError::invalid("rate", "must be between 0 and 1"));
        }
        let mut below: Vec<StudentAttendance> = self
            .students
            .iter()
            .filter(|s| s.rate.is_some_and(|r| r < rate))
            .cloned()
            .collect();
        below.sort_by(|a, b| {
            a.rate
                .partial_cmp(&b.rate)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(below)
    }
}

/// One student's tallies in a course.
#[derive(Clone, Debug)]
pub struct StudentAttendance {
    /// The student.
    pub student: student::Model,
    /// Present records.
    pub present: i64,
    /// Absent records.
    pub absent: i64,
    /// Permission records.
    pub permission: i64,
    /// present / (present + absent + permission); `None` with no records.
    pub rate: Option<f64>,
}

#[derive(FromQueryResult)]
struct ExportRow {
    session_id: i32,
    date: NaiveDate,
    course_code: String,
    student_code: String,
    first_name: String,
    last_name: String,
    section: String,
    status: String,
    scanned_at: Option<DateTime<Utc>>,
    late_minutes: Option<i32>,
    timestamp: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
    edited_by: Option<String>,
    edit_reason: Option<String>,
}

fn date_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> AppResult<(NaiveDate, NaiveDate)> {
    // Bounds every database and every date format compare correctly.
    let from = from.unwrap_or(NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default());
    let to = to.unwrap_or(NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or_default());
    if from > to {
        return Err(AppError::invalid("from", "is after `to`"));
    }
    Ok((from, to))
}

/// Writes records as CSV (`\n` line ends, fields quoted only when they must be), with a
/// leading formula character neutralised so that a spreadsheet never evaluates a student's
/// name.
fn csv_text<R>(records: impl IntoIterator<Item = R>) -> AppResult<String>
where
    R: IntoIterator<Item = String>,
{
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in records {
        writer
            .write_record(record.into_iter().map(|value| {
                if value.starts_with(['=', '+', '-', '@']) {
                    format!("'{value}")
                } else {
                    value
                }
            }))
            .map_err(|e| AppError::Internal(format!("writing CSV: {e}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| AppError::Internal(format!("writing CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| AppError::Internal(format!("writing CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One field as the export writes it.
    fn csv_field(value: &str) -> String {
        let line = csv_text([[value.to_owned()]]).unwrap();
        line.trim_end_matches('\n').to_owned()
    }

    #[test]
    fn exported_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }
}
