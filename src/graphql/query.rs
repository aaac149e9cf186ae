//! The query root.

use async_graphql::connection::{
    Connection, ConnectionNameType, DefaultConnectionName, DefaultEdgeName, Edge, EdgeNameType,
    EmptyFields,
};
use async_graphql::{Context, ID, Object, OutputType};

use super::guard::{RoleGuard, principal};
use super::objects::*;
use super::plain::{Plain, PlainList};
use super::scalars::Date;
use crate::error::GqlResultExt;
use crate::service::directory::StudentFilter;
use crate::service::roll_call::records::RecordFilter;
use crate::service::roll_call::sessions::SessionFilter;
use crate::service::{Page, PageRequest, Service, encode_cursor, parse_id};

/// A Relay connection with `totalCount`, named after its node type unless `N` and `E`
/// name it otherwise.
pub type Conn<T, N = DefaultConnectionName, E = DefaultEdgeName> =
    Connection<String, T, TotalCount, EmptyFields, N, E>;

/// Turns a service page into a connection.
pub fn connection<M, T: OutputType, N: ConnectionNameType, E: EdgeNameType>(
    page: Page<M>,
    had_cursor: bool,
    id: impl Fn(&M) -> i32,
    wrap: impl Fn(M) -> T,
) -> Conn<T, N, E> {
    let mut conn = Connection::with_additional_fields(
        had_cursor,
        page.has_next_page,
        TotalCount {
            total_count: page.total_count as i64,
        },
    );
    conn.edges.extend(
        page.items
            .into_iter()
            .map(|item| Edge::new(encode_cursor(id(&item)), wrap(item))),
    );
    conn
}

/// The complexity of a connection: its page size times the cost of one item.
pub(crate) fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let page = first.map_or(crate::service::DEFAULT_PAGE_SIZE as usize, |n| {
        n.max(0) as usize
    });
    page.min(crate::service::MAX_PAGE_SIZE as usize)
        .max(1)
        .saturating_mul(child_complexity)
        .saturating_add(1)
}

pub(crate) fn optional_id(field: &str, id: Option<ID>) -> async_graphql::Result<Option<i32>> {
    id.map(|id| parse_id(field, &id)).transpose().gql()
}

/// The core reads: directory, sessions and records.
#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// The authenticated user.
    #[graphql(guard = "RoleGuard::people()")]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
        let service = ctx.data_unchecked::<Service>();
        service
            .viewer(principal(ctx).gql()?)
            .await
            .gql()
            .map(Viewer)
    }

    /// Students, searchable by code or name and filterable by section and by whether they
    /// are still active (all when `active` is omitted).
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn students(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
        section_id: Option<ID>,
        active: Option<bool>,
    ) -> async_graphql::Result<Conn<Plain<Student>>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let filter = StudentFilter {
            search,
            section_id: optional_id("sectionId", section_id)?,
            active,
        };
        let result = ctx
            .data_unchecked::<Service>()
            .students(principal(ctx).gql()?, &filter, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |s| s.id,
            |s| Plain(Student(s)),
        ))
    }

    /// One student.
    #[graphql(guard = "RoleGuard::people()")]
    async fn student(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Student>> {
        let id = parse_id("id", &id).gql()?;
        Ok(ctx
            .data_unchecked::<Service>()
            .student(principal(ctx).gql()?, id)
            .await
            .gql()?
            .map(Student))
    }

    /// Teachers, searchable by code or name.
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn teachers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> async_graphql::Result<Conn<Plain<Teacher>>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let result = ctx
            .data_unchecked::<Service>()
            .teachers(principal(ctx).gql()?, search.as_deref(), page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |t| t.id,
            |t| Plain(Teacher(t)),
        ))
    }

    /// One teacher.
    #[graphql(guard = "RoleGuard::people()")]
    async fn teacher(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Teacher>> {
        let id = parse_id("id", &id).gql()?;
        Ok(ctx
            .data_unchecked::<Service>()
            .teacher(principal(ctx).gql()?, id)
            .await
            .gql()?
            .map(Teacher))
    }

    /// Every dep-batch.
    #[graphql(guard = "RoleGuard::people()")]
    async fn dep_batches(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<DepBatch>> {
        let rows = ctx
            .data_unchecked::<Service>()
            .dep_batches(principal(ctx).gql()?)
            .await
            .gql()?;
        Ok(rows.into_iter().map(DepBatch).collect())
    }

    /// Every section, or those of one dep-batch.
    #[graphql(guard = "RoleGuard::people()")]
    async fn sections(
        &self,
        ctx: &Context<'_>,
        dep_batch_id: Option<ID>,
    ) -> async_graphql::Result<PlainList<Section>> {
        let dep_batch_id = optional_id("depBatchId", dep_batch_id)?;
        let rows = ctx
            .data_unchecked::<Service>()
            .sections(principal(ctx).gql()?, dep_batch_id)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Section).collect())
    }

    /// Courses; `teacherId` narrows to one teacher's.
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn courses(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        teacher_id: Option<ID>,
    ) -> async_graphql::Result<Conn<Plain<Course>>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let teacher_id = optional_id("teacherId", teacher_id)?;
        let result = ctx
            .data_unchecked::<Service>()
            .courses(principal(ctx).gql()?, teacher_id, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |c| c.id,
            |c| Plain(Course(c)),
        ))
    }

    /// One course.
    #[graphql(guard = "RoleGuard::people()")]
    async fn course(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Course>> {
        let id = parse_id("id", &id).gql()?;
        Ok(ctx
            .data_unchecked::<Service>()
            .course(principal(ctx).gql()?, id)
            .await
            .gql()?
            .map(Course))
    }

    /// Every registered device (admins only).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn devices(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Device>> {
        let rows = ctx
            .data_unchecked::<Service>()
            .devices(principal(ctx).gql()?)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Device).collect())
    }

    /// Sessions: admins see all, teachers the ones they opened.
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        course_id: Option<ID>,
        active: Option<bool>,
        from: Option<Date>,
        to: Option<Date>,
    ) -> async_graphql::Result<Conn<Plain<AttendanceSession>>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let filter = SessionFilter {
            course_id: optional_id("courseId", course_id)?,
            active,
            from: from.map(|d| d.0),
            to: to.map(|d| d.0),
        };
        let result = ctx
            .data_unchecked::<Service>()
            .sessions(principal(ctx).gql()?, &filter, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |s| s.id,
            |s| Plain(AttendanceSession(s)),
        ))
    }

    /// One session with its records; null when it does not exist or is another teacher's.
    #[graphql(guard = "RoleGuard::people()")]
    async fn session(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<AttendanceSession>> {
        let id = parse_id("id", &id).gql()?;
        let session = ctx
            .data_unchecked::<Service>()
            .session_for(principal(ctx).gql()?, id)
            .await
            .gql()?;
        Ok(session.map(AttendanceSession))
    }

    /// Attendance records: admins see all, teachers those of their sessions.
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn attendance_records(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        session_id: Option<ID>,
        student_id: Option<ID>,
        status: Option<Status>,
    ) -> async_graphql::Result<Conn<Plain<AttendanceRecord>>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let filter = RecordFilter {
            session_id: optional_id("sessionId", session_id)?,
            student_id: optional_id("studentId", student_id)?,
            status: status.map(Into::into),
        };
        let result = ctx
            .data_unchecked::<Service>()
            .attendance_records(principal(ctx).gql()?, &filter, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |(r, _)| r.id,
            |(record, student)| Plain(AttendanceRecord::with_student(record, student)),
        ))
    }
}
