//! Rosters in, attendance out: the student CSV import (all rows checked before anything is
//! written), per-course reports, and CSV exports of sessions and courses.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, Set,
    TransactionTrait,
};

use crate::auth::Principal;
use crate::entities::{course, student};
use crate::error::{AppError, AppResult};
use crate::service::access;
use crate::service::roll_call::records::{STUDENT_COLUMNS, student_at, student_select};
use crate::service::sql::{statement, write_transaction};
use crate::service::{Service, code_text, required_text};

/// The columns of a roster file, in order.
pub const ROSTER_HEADER: [&str; 4] = ["student_code", "first_name", "last_name", "section"];

/// One bad line of a roster file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// The line's number in the file (1 is the first line).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Students created.
    pub created: usize,
    /// Existing students (same code) whose names or section changed.
    pub updated: usize,
    /// Rows identical to what was there already.
    pub unchanged: usize,
}

/// The outcome of an import: applied, or refused with every bad line (nothing written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Every row was valid and the roster was applied.
    Applied(ImportReport),
    /// At least one row was bad; nothing changed.
    Rejected(Vec<BadLine>),
}

#[derive(Clone, Debug)]
struct Row {
    line: usize,
    code: String,
    first_name: String,
    last_name: String,
    section_id: i32,
}

/// Splits CSV text into records (RFC 4180: quotes, doubled quotes, CRLF), with the line
/// number each record starts on.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, BadLine> {
    // The reader drops a leading byte order mark by itself, but its positions count it.
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let bytes = text.as_bytes().get(bom..).unwrap_or_default();
    // csv reads an unclosed quote to the end of its input without complaint. A sentinel
    // line after the text shows it: it is read as a record of its own, past the end of the
    // text, only when every quote was closed. (One buffer, not a chain of two: the reader
    // looks for the byte order mark in its first read only.)
    let input = [text.as_bytes(), b"\n#"].concat();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of the wrong width are reported per line by `check_row`, not refused here.
        .flexible(true)
        // Only `\n` ends a record, so that a lone `\r` stays data as it always has; the
        // `\r` of a CRLF is dropped below.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(input.as_slice());
    let mut records = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut line = 1;
    loop {
        let read = reader.read_record(&mut record).map_err(|e| BadLine {
            line,
            reason: e.to_string(),
        })?;
        if !read {
            return Err(BadLine {
                line,
                reason: "a quoted field is never closed".into(),
            });
        }
        let (before_line, start) = record.position().map_or((line, 0), |p| {
            (p.line() as usize, (p.byte() as usize).saturating_sub(bom))
        });
        // A record's position is where the reader stood before it, ahead of the blank lines
        // it skipped; the record itself starts after them.
        let blank = bytes
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| **b == b'\n')
            .count();
        if start + blank >= bytes.len() {
            return Ok(records);
        }
        line = before_line + blank;
        // The reader now stands just past the record's `\n`.
        let end = (reader.position().byte() as usize).saturating_sub(bom);
        let crlf = end <= bytes.len() && end >= 2 && bytes[end - 2] == b'\r';
        let mut fields: Vec<String> = record.iter().map(str::to_owned).collect();
        if crlf && let Some(field) = fields.last_mut() {
            field.pop();
        }
        // A line of spaces is as empty as a blank one.
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            records.push((line, fields));
        }
    }
}

#[derive(FromQueryResult)]
struct SectionName {
    id: i32,
    name: String,
    dep: String,
    batch: String,
}

impl Service {
    /// Imports students from CSV (`student_code,first_name,last_name,section`, header
    /// optional). `section` is a section id, a name unique across the school, or
    /// `dep/batch/name`. Every row is checked first; one bad row rejects the whole file.
    /// Importing the same file again changes nothing. `progress` hears (rows done, total).
    pub async fn import_students(
        &self,
        actor: &Principal,
        text: &str,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> AppResult<ImportOutcome> {
        access::require_admin(actor)?;
        let records = match parse_csv(text) {
            Ok(records) => records,
            Err(bad) => return Ok(ImportOutcome::Rejected(vec![bad])),
        };
        let records = match records.first() {
            Some((_, first))
                if first.len() == 4
                    && first
                        .iter()
                        .zip(ROSTER_HEADER)
                        .all(|(a, b)| a.trim().eq_ignore_ascii_case(b)) =>
            {
                &records[1..]
            }
            _ => &records[..],
        };
        if records.is_empty() {
            return Err(AppError::invalid("file", "has no student rows"));
        }
        let sections = self.section_lookup().await?;
        let mut bad = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (line, fields) in records {
            match check_row(*line, fields, &sections) {
                Ok(row) => {
                    if let Some(first) = seen.insert(row.code.clone(), row.line) {
                        bad.push(BadLine {
                            line: row.line,
                            reason: format!(
                                "student_code {:?} already appears on line {first}",
                                row.code
                            ),
                        });
                    } else {
                        rows.push(row);
                    }
                }
                Err(reason) => bad.push(BadLine {
                    line: *line,
                    reason,
                }),
            }
        }
        if !bad.is_empty() {
            return Ok(ImportOutcome::Rejected(bad));
        }
        self.apply_roster(rows, progress)
            .await
            .map(ImportOutcome::Applied)
    }

    /// Section names, ids and dep-batch paths for resolving the `section` column.
    async fn section_lookup(&self) -> AppResult<SectionLookup> {
        let backend = self.db.get_database_backend();
        let names = SectionName::find_by_statement(statement(
            backend,
            "SELECT s.id AS id, s.name AS name, d.dep AS dep, d.batch AS batch \
             FROM section s JOIN dep_batch d ON d.id = s.dep_batch_id",
            vec![],
        ))
        .all(&self.db)
        .await?;
        let mut lookup = SectionLookup::default();
        for s in names {
            lookup.ids.insert(s.id);
            lookup
                .by_name
                .entry(s.name.to_lowercase())
                .or_default()
                .push(s.id);
            lookup.by_path.insert(
                format!("{}/{}/{}", s.dep, s.batch, s.name).to_lowercase(),
                s.id,
            );
        }
        Ok(lookup)
    }

    async fn apply_roster(
        &self,
        rows: Vec<Row>,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> AppResult<ImportReport> {
        let total = rows.len();
        let mut report = ImportReport::default();
        let at = self.now();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let mut done = 0;
        for chunk in rows.chunks(500) {
            let codes: Vec<String> = chunk.iter().map(|r| r.code.clone()).collect();
            let existing: HashMap<String, student::Model> = student::Entity::find()
                .filter(student::Column::StudentCode.is_in(codes))
                .all(&txn)
                .await?
                .into_iter()
                .map(|s| (s.student_code.clone(), s))
                .collect();
            let mut new = Vec::new();
            for row in chunk {
                match existing.get(&row.code) {
                    None => new.push(student::ActiveModel {
                        student_code: Set(row.code.clone()),
                        first_name: Set(row.first_name.clone()),
                        last_name: Set(row.last_name.clone()),
                        section_id: Set(row.section_id),
                        created_at: Set(at),
                        enrolled_at: Set(at),
                        is_active: Set(true),
                        ..Default::default()
                    }),
                    Some(old)
                        if old.first_name == row.first_name
                            && old.last_name == row.last_name
                            && old.section_id == row.section_id =>
                    {
                        report.unchanged += 1;
                    }
                    Some(old) => {
                        let moved = old.section_id != row.section_id;
                        let mut active: student::ActiveModel = old.clone().into();
                        active.first_name = Set(row.first_name.clone());
                        active.last_name = Set(row.last_name.clone());
                        active.section_id = Set(row.section_id);
                        if moved {
                            active.enrolled_at = Set(at);
                        }
                        active.update(&txn).await?;
                        report.updated += 1;
                    }
                }
            }
            if !new.is_empty() {
                report.created += new.len();
                student::Entity::insert_many(new).exec(&txn).await?;
            }
            done += chunk.len();
            progress(done, total);
        }
        txn.commit().await?;
        Ok(report)
    }

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

#[derive(Default)]
struct SectionLookup {
    ids: HashSet<i32>,
    by_name: HashMap<String, Vec<i32>>,
    by_path: HashMap<String, i32>,
}

fn check_row(line: usize, fields: &[String], sections: &SectionLookup) -> Result<Row, String> {
    if fields.len() != 4 {
        return Err(format!(
            "expected 4 columns ({}), found {}",
            ROSTER_HEADER.join(","),
            fields.len()
        ));
    }
    let describe = |e: AppError| match e {
        AppError::InvalidInput { field, message } => format!("{field} {message}"),
        other => other.to_string(),
    };
    let code = code_text("student_code", &fields[0]).map_err(describe)?;
    let first_name = required_text("first_name", &fields[1], 100).map_err(describe)?;
    let last_name = required_text("last_name", &fields[2], 100).map_err(describe)?;
    let wanted = fields[3].trim();
    let section_id = if let Ok(id) = wanted.parse::<i32>() {
        sections
            .ids
            .contains(&id)
            .then_some(id)
            .ok_or_else(|| format!("no section has id {id}"))?
    } else if let Some(id) = sections.by_path.get(&wanted.to_lowercase()) {
        *id
    } else {
        match sections
            .by_name
            .get(&wanted.to_lowercase())
            .map(Vec::as_slice)
        {
            Some([id]) => *id,
            Some(_) => {
                return Err(format!(
                    "section {wanted:?} exists in several dep-batches; write dep/batch/{wanted} or the section id"
                ));
            }
            None => return Err(format!("no section is named {wanted:?}")),
        }
    };
    Ok(Row {
        line,
        code,
        first_name,
        last_name,
        section_id,
    })
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
    fn csv_handles_quotes_crlf_and_bom() {
        let records =
            parse_csv("\u{feff}a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\r\n\r\nlast,\"multi\nline\"")
                .unwrap();
        assert_eq!(records[0], (1, vec!["a".into(), "b".into()]));
        assert_eq!(records[1], (2, vec!["x, y".into(), "say \"hi\"".into()]));
        assert_eq!(records[2], (4, vec!["last".into(), "multi\nline".into()]));
        assert!(parse_csv("a,\"open").is_err());
    }

    #[test]
    fn csv_line_numbers_count_blank_lines_and_a_lone_cr_stays_data() {
        let records = parse_csv("a,b\n\n  \r\nc,d\n\n\ne\rf,g").unwrap();
        assert_eq!(records[0], (1, vec!["a".into(), "b".into()]));
        assert_eq!(records[1], (4, vec!["c".into(), "d".into()]));
        assert_eq!(records[2], (7, vec!["e\rf".into(), "g".into()]));
        assert_eq!(records.len(), 3);
        assert_eq!(parse_csv("x\n\"open\nmore").unwrap_err().line, 2);
    }

    #[test]
    fn exported_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }
}
