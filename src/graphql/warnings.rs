//! Warning rules and the warnings they raise, over GraphQL (SPEC 8.4).

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::guard::{RoleGuard, principal};
use super::id_arg as id;
use super::loaders::*;
use super::objects::{Course, Student, loader};
use super::query::{Conn, connection, optional_id, page_cost};
use super::{required, service};
use crate::entities::{attendance_warning, warning_rule};
use crate::error::GqlResultExt;
use crate::service::PageRequest;
use crate::service::integrations::warnings::{NewRule, WarningFilter};

/// Which line a warning crossed.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// The attendance rate fell below the rule's `minRate`.
    LowRate,
    /// The student missed `consecutiveAbsences` sessions in a row.
    ConsecutiveAbsences,
}

/// When to warn about a student: a course's own rule, or the school-wide default.
pub struct WarningRule(pub warning_rule::Model);

#[Object]
impl WarningRule {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    /// The course; null for the school-wide rule, which applies where a course has none.
    async fn course(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Course>> {
        let Some(course_id) = self.0.course_id else {
            return Ok(None);
        };
        Ok(loader(ctx)
            .load_one(CourseById(course_id))
            .await?
            .map(Course))
    }
    /// Warn when a student's rate (present / all records) falls below this; null: never.
    async fn min_rate(&self) -> Option<f64> {
        self.0.min_rate
    }
    /// The rate is judged once the student has at least this many sessions of the course.
    async fn after_sessions(&self) -> i32 {
        self.0.after_sessions
    }
    /// Warn at this many absences in a row; null: never.
    async fn consecutive_absences(&self) -> Option<i32> {
        self.0.consecutive_absences
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A student who crossed a warning rule's line in a course: raised once per crossing, and
/// again only after the student recovered (`clearedAt`) and crossed once more.
pub struct AttendanceWarning(pub attendance_warning::Model);

#[Object]
impl AttendanceWarning {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn student(&self, ctx: &Context<'_>) -> async_graphql::Result<Student> {
        required(ctx, StudentById(self.0.student_id), "student")
            .await
            .map(Student)
    }
    async fn course(&self, ctx: &Context<'_>) -> async_graphql::Result<Course> {
        required(ctx, CourseById(self.0.course_id), "course")
            .await
            .map(Course)
    }
    async fn kind(&self) -> WarningKind {
        match self.0.kind {
            crate::entities::WarningKind::LowRate => WarningKind::LowRate,
            crate::entities::WarningKind::ConsecutiveAbsences => WarningKind::ConsecutiveAbsences,
        }
    }
    /// The student's rate in the course when it was raised.
    async fn rate(&self) -> Option<f64> {
        self.0.rate
    }
    /// Absences in a row when it was raised.
    async fn consecutive_absences(&self) -> i32 {
        self.0.consecutive_absences
    }
    /// The sessions of the course the student had a record in when it was raised.
    async fn sessions(&self) -> i32 {
        self.0.sessions
    }
    async fn raised_at(&self) -> DateTime<Utc> {
        self.0.raised_at
    }
    /// When the student was back on the right side of the line; null while it holds.
    async fn cleared_at(&self) -> Option<DateTime<Utc>> {
        self.0.cleared_at
    }
}

/// A warning rule to set.
#[derive(InputObject)]
pub struct WarningRuleInput {
    /// The course; omitted or null for the school-wide default (admins).
    pub course_id: Option<ID>,
    /// Warn below this attendance rate, between 0 and 1.
    pub min_rate: Option<f64>,
    /// Judge the rate only once the student has this many sessions (default 1).
    #[graphql(default = 1)]
    pub after_sessions: i32,
    /// Warn at this many absences in a row.
    pub consecutive_absences: Option<i32>,
}

/// Reads of rules and warnings.
#[derive(Default)]
pub struct WarningQuery;

#[Object]
impl WarningQuery {
    /// The warning rules: admins all; teachers the school-wide one and their courses'.
    #[graphql(guard = "RoleGuard::people()")]
    async fn warning_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WarningRule>> {
        let rules = service(ctx)
            .warning_rules(principal(ctx).gql()?)
            .await
            .gql()?;
        Ok(rules.into_iter().map(WarningRule).collect())
    }

    /// Warnings raised, newest first: admins all; teachers their courses'.
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn attendance_warnings(
        &self,
        ctx: &Context<'_>,
        course_id: Option<ID>,
        student_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<AttendanceWarning>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let filter = WarningFilter {
            course_id: optional_id("courseId", course_id)?,
            student_id: optional_id("studentId", student_id)?,
        };
        let result = service(ctx)
            .attendance_warnings(principal(ctx).gql()?, &filter, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |w| w.id,
            AttendanceWarning,
        ))
    }
}

/// Rules set and removed.
#[derive(Default)]
pub struct WarningMutation;

#[Object]
impl WarningMutation {
    /// Sets a course's rule (its teacher or an admin) or the school-wide one (admins),
    /// replacing the one it had. It applies from the next change to attendance on.
    #[graphql(guard = "RoleGuard::people()")]
    async fn set_warning_rule(
        &self,
        ctx: &Context<'_>,
        input: WarningRuleInput,
    ) -> async_graphql::Result<WarningRule> {
        let rule = NewRule {
            course_id: optional_id("courseId", input.course_id)?,
            min_rate: input.min_rate,
            after_sessions: input.after_sessions,
            consecutive_absences: input.consecutive_absences,
        };
        service(ctx)
            .set_warning_rule(principal(ctx).gql()?, rule)
            .await
            .gql()
            .map(WarningRule)
    }

    /// Removes a rule; the warnings it raised stay.
    #[graphql(guard = "RoleGuard::people()")]
    async fn delete_warning_rule(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        service(ctx)
            .delete_warning_rule(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()?;
        Ok(true)
    }
}
