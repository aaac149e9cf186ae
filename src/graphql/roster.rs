//! Roster import and attendance reports over GraphQL.

use async_graphql::{Context, ID, Object, SimpleObject, Upload};

use super::guard::{RoleGuard, principal};
use super::objects::{Course, Student};
use super::plain::{Field, PlainList};
use super::scalars::Date;
use crate::error::{AppError, GqlResultExt};
use crate::plain_fields;
use crate::service::directory::import::ImportOutcome;
use crate::service::reports::{CourseReport as Report, StudentAttendance as Tally};
use crate::service::{Service, parse_id};

/// One bad line of a rejected roster file.
#[derive(SimpleObject)]
pub struct ImportLineError {
    /// The line number (1 is the first line of the file).
    pub line: i32,
    /// What is wrong with it.
    pub reason: String,
}

/// The result of a roster import: applied (counts) or rejected (every bad line; nothing
/// was changed).
#[derive(SimpleObject)]
pub struct ImportResult {
    /// True when the roster was applied.
    pub applied: bool,
    /// Students created.
    pub created: i32,
    /// Students whose names or section changed.
    pub updated: i32,
    /// Rows identical to the directory already.
    pub unchanged: i32,
    /// Every bad line, when the file was rejected.
    pub errors: Vec<ImportLineError>,
}

impl From<ImportOutcome> for ImportResult {
    fn from(outcome: ImportOutcome) -> Self {
        match outcome {
            ImportOutcome::Applied(r) => Self {
                applied: true,
                created: r.created as i32,
                updated: r.updated as i32,
                unchanged: r.unchanged as i32,
                errors: Vec::new(),
            },
            ImportOutcome::Rejected(lines) => Self {
                applied: false,
                created: 0,
                updated: 0,
                unchanged: 0,
                errors: lines
                    .into_iter()
                    .map(|l| ImportLineError {
                        line: l.line as i32,
                        reason: l.reason,
                    })
                    .collect(),
            },
        }
    }
}

/// One student's attendance in a course, with the student read in the same statement.
pub struct StudentAttendance {
    student: Student,
    present: i64,
    absent: i64,
    permission: i64,
    rate: Option<f64>,
}

impl From<Tally> for StudentAttendance {
    fn from(tally: Tally) -> Self {
        Self {
            student: Student(tally.student),
            present: tally.present,
            absent: tally.absent,
            permission: tally.permission,
            rate: tally.rate,
        }
    }
}

#[Object]
impl StudentAttendance {
    async fn student(&self) -> Option<Student> {
        Some(Student(self.student.0.clone()))
    }
    async fn present(&self) -> i32 {
        self.present as i32
    }
    async fn absent(&self) -> i32 {
        self.absent as i32
    }
    async fn permission(&self) -> i32 {
        self.permission as i32
    }
    /// present / (present + absent + permission); null without records.
    async fn rate(&self) -> Option<f64> {
        self.rate
    }
}

plain_fields! {
    StudentAttendance(this) {
        "present" => this.present as i32,
        "absent" => this.absent as i32,
        "permission" => this.permission as i32,
        "rate" => this.rate,
    }
    extra(name) {
        match name {
            "student" => Field::Object(&this.student),
            _ => Field::Async,
        }
    }
}

/// A course's attendance per student over a date range.
pub struct CourseReport(Report);

#[Object]
impl CourseReport {
    async fn course(&self) -> Course {
        Course(self.0.course.clone())
    }
    /// Sessions held in the range.
    async fn sessions(&self) -> i32 {
        self.0.sessions as i32
    }
    /// Every enrolled student with their counts and rate.
    #[graphql(complexity = "super::objects::LIST_WEIGHT * child_complexity + 1")]
    async fn students(&self) -> PlainList<StudentAttendance> {
        self.0
            .students
            .iter()
            .cloned()
            .map(StudentAttendance::from)
            .collect()
    }
    /// The students whose rate is below `rate` (0 to 1), lowest first.
    #[graphql(complexity = "super::objects::LIST_WEIGHT * child_complexity + 1")]
    async fn students_below(
        &self,
        rate: f64,
    ) -> async_graphql::Result<PlainList<StudentAttendance>> {
        let below = self.0.students_below(rate).gql()?;
        Ok(below.into_iter().map(StudentAttendance::from).collect())
    }
}

/// Reports.
#[derive(Default)]
pub struct RosterQuery;

#[Object]
impl RosterQuery {
    /// A course's attendance per student (teachers: their own courses; admins: all).
    #[graphql(guard = "RoleGuard::people()")]
    async fn course_report(
        &self,
        ctx: &Context<'_>,
        course_id: ID,
        from: Option<Date>,
        to: Option<Date>,
    ) -> async_graphql::Result<CourseReport> {
        let service = ctx.data_unchecked::<Service>();
        let id = parse_id("courseId", &course_id).gql()?;
        service
            .course_report(
                principal(ctx).gql()?,
                id,
                from.map(|d| d.0),
                to.map(|d| d.0),
            )
            .await
            .gql()
            .map(CourseReport)
    }
}

/// Roster import.
#[derive(Default)]
pub struct RosterMutation;

#[Object]
impl RosterMutation {
    /// Imports students from a CSV upload (`student_code,first_name,last_name,section`).
    /// Every row is checked first; a file with any bad row changes nothing. Send it as a
    /// GraphQL multipart request with an `apollo-require-preflight: 1` header.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn import_students(
        &self,
        ctx: &Context<'_>,
        file: Upload,
    ) -> async_graphql::Result<ImportResult> {
        let service = ctx.data_unchecked::<Service>();
        let upload = file.value(ctx)?;
        let text = String::from_utf8(upload.content.to_vec())
            .map_err(|_| AppError::invalid("file", "is not UTF-8 text").into_graphql())?;
        service
            .import_students(principal(ctx).gql()?, &text, &|_, _| {})
            .await
            .gql()
            .map(ImportResult::from)
    }
}
