//! Excused absences and a student's whole picture over GraphQL (SPEC 8.3).

use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::guard::{RoleGuard, principal};
use super::id_arg as id;
use super::loaders::*;
use super::objects::{Course, Student, Viewer, loader};
use super::query::{Conn, connection, optional_id, page_cost};
use super::scalars::Date;
use super::{required, service};
use crate::entities::excuse;
use crate::error::GqlResultExt;
use crate::service::reports::student_report::CourseAttendance;
use crate::service::roll_call::excuses::{ExcuseFilter, NewExcuse};
use crate::service::{PageRequest, access};

/// An absence excused in advance.
pub struct Excuse(pub excuse::Model);

#[Object]
impl Excuse {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn student(&self, ctx: &Context<'_>) -> async_graphql::Result<Student> {
        required(ctx, StudentById(self.0.student_id), "student")
            .await
            .map(Student)
    }
    /// The course it covers; null for every course of the student.
    async fn course(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Course>> {
        let Some(course_id) = self.0.course_id else {
            return Ok(None);
        };
        Ok(loader(ctx)
            .load_one(CourseById(course_id))
            .await?
            .map(Course))
    }
    /// First day covered.
    async fn from(&self) -> Date {
        Date(self.0.from_date)
    }
    /// Last day covered.
    async fn to(&self) -> Date {
        Date(self.0.to_date)
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// Who made it: admins see every account, teachers only their own.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Viewer>> {
        if !access::may_see_account(principal(ctx).gql()?, self.0.created_by) {
            return Ok(None);
        }
        Ok(loader(ctx)
            .load_one(UserById(self.0.created_by))
            .await?
            .map(Viewer))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was revoked; null while it holds.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// A student's figures in one course.
pub struct StudentCourseAttendance(pub CourseAttendance);

#[Object]
impl StudentCourseAttendance {
    async fn course(&self) -> Course {
        Course(self.0.course.clone())
    }
    /// Present records, on time or late.
    async fn present(&self) -> i32 {
        self.0.present as i32
    }
    /// Of the present records, those late.
    async fn late(&self) -> i32 {
        self.0.late as i32
    }
    async fn absent(&self) -> i32 {
        self.0.absent as i32
    }
    /// Excused absences.
    async fn permission(&self) -> i32 {
        self.0.permission as i32
    }
    /// present / (present + absent + permission); null without records.
    async fn rate(&self) -> Option<f64> {
        self.0.rate
    }
}

/// A new excuse.
#[derive(InputObject)]
pub struct CreateExcuseInput {
    /// The student excused.
    pub student_id: ID,
    /// First day covered.
    pub from: Date,
    /// Last day covered (at most the longest term after `from`).
    pub to: Date,
    /// Why, such as "doctor's note".
    pub reason: String,
    /// Only this course; every course of the student when omitted (admins only).
    pub course_id: Option<ID>,
}

/// Reads of excuses and a student's figures.
#[derive(Default)]
pub struct ExcuseQuery;

#[Object]
impl ExcuseQuery {
    /// Excuses, newest first: admins all; teachers those of their courses and those
    /// covering every course.
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn excuses(
        &self,
        ctx: &Context<'_>,
        student_id: Option<ID>,
        from: Option<Date>,
        to: Option<Date>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Excuse>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let filter = ExcuseFilter {
            student_id: optional_id("studentId", student_id)?,
            from: from.map(|d| d.0),
            to: to.map(|d| d.0),
        };
        let result = service(ctx)
            .excuses(principal(ctx).gql()?, &filter, page)
            .await
            .gql()?;
        Ok(connection(result, after.is_some(), |e| e.id, Excuse))
    }

    /// For each course of the student (teachers: the courses they teach), the counts of
    /// present, late, absent and permission records and the rate, between `from` and
    /// `to` (session dates, both included).
    #[graphql(guard = "RoleGuard::people()")]
    async fn student_report(
        &self,
        ctx: &Context<'_>,
        student_id: ID,
        from: Option<Date>,
        to: Option<Date>,
    ) -> async_graphql::Result<Vec<StudentCourseAttendance>> {
        let report = service(ctx)
            .student_report(
                principal(ctx).gql()?,
                id("studentId", &student_id)?,
                from.map(|d| d.0),
                to.map(|d| d.0),
            )
            .await
            .gql()?;
        Ok(report.into_iter().map(StudentCourseAttendance).collect())
    }
}

/// Excuses created and revoked.
#[derive(Default)]
pub struct ExcuseMutation;

#[Object]
impl ExcuseMutation {
    /// Excuses a student in advance (or after the fact): automatic absences in its range
    /// become permission at once, and sessions that close in it give permission instead of
    /// absent. Admins for any course or all; teachers for a course they teach.
    #[graphql(guard = "RoleGuard::people()")]
    async fn create_excuse(
        &self,
        ctx: &Context<'_>,
        input: CreateExcuseInput,
    ) -> async_graphql::Result<Excuse> {
        let new = NewExcuse {
            student_id: id("studentId", &input.student_id)?,
            course_id: optional_id("courseId", input.course_id)?,
            from: input.from.0,
            to: input.to.0,
            reason: input.reason,
        };
        service(ctx)
            .create_excuse(principal(ctx).gql()?, new)
            .await
            .gql()
            .map(Excuse)
    }

    /// Revokes an excuse, turning back what it set except what a person edited since.
    #[graphql(guard = "RoleGuard::people()")]
    async fn revoke_excuse(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Excuse> {
        service(ctx)
            .revoke_excuse(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()
            .map(Excuse)
    }
}
