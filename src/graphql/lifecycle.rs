//! The directory over a school year (SPEC 8.1): corrections, deletions that refuse to take
//! history with them, departures, accounts and the audit trail.

use async_graphql::connection::{ConnectionNameType, EdgeNameType};
use async_graphql::{Context, ID, InputObject, Object, OutputType};

use super::guard::{ClientAddress, RoleGuard, principal};
use super::id_arg as id;
use super::objects::*;
use super::plain::Plain;
use super::query::{Conn, connection, optional_id, page_cost};
use super::service;
use crate::auth::Role;
use crate::error::GqlResultExt;
use crate::service::directory::{CourseChanges, TeacherChanges};
use crate::service::roll_call::records::ChangeFilter;
use crate::service::{PageRequest, Service};

/// Changes to a teacher; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateTeacherInput {
    /// New unique staff code.
    pub teacher_code: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
}

/// Changes to a course; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateCourseInput {
    /// New display name.
    pub name: Option<String>,
    /// New unique code.
    pub code: Option<String>,
    /// The new teacher; sessions already held stay with the teacher who ran them.
    pub teacher_id: Option<ID>,
    /// The complete new set of sections (at least one); expected from the next close on.
    pub section_ids: Option<Vec<ID>>,
}

/// Changes to a section; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateSectionInput {
    /// New name, unique within its dep-batch.
    pub name: Option<String>,
    /// The dep-batch it moves to.
    pub dep_batch_id: Option<ID>,
}

/// Changes to a dep-batch; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateDepBatchInput {
    /// New department name.
    pub dep: Option<String>,
    /// New intake.
    pub batch: Option<String>,
}

/// Changes to a device; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateDeviceInput {
    /// New human name.
    pub name: Option<String>,
}

/// A new admin account.
#[derive(InputObject)]
pub struct CreateAdminInput {
    /// Login name, unique among all accounts.
    pub username: String,
    /// Initial password (8 to 256 characters).
    pub password: String,
}

/// Names the connection of accounts `UserConnection`.
pub struct UserConnectionName;

impl ConnectionNameType for UserConnectionName {
    fn type_name<T: OutputType>() -> String {
        "UserConnection".into()
    }
}

/// Names the edge of accounts `UserEdge`.
pub struct UserEdgeName;

impl EdgeNameType for UserEdgeName {
    fn type_name<T: OutputType>() -> String {
        "UserEdge".into()
    }
}

/// Reads of the directory's lifecycle: accounts and the audit trail.
#[derive(Default)]
pub struct LifecycleQuery;

#[Object]
impl LifecycleQuery {
    /// Login accounts, optionally of one role (admins only); `DEVICE` lists none.
    #[graphql(
        guard = "RoleGuard::admin()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        role: Option<RoleValue>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Plain<Viewer>, UserConnectionName, UserEdgeName>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let result = ctx
            .data_unchecked::<Service>()
            .users(principal(ctx).gql()?, role.map(Role::from), page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |u| u.id,
            |u| Plain(Viewer(u)),
        ))
    }

    /// The audit trail, newest first: admins see all of it, teachers that of the sessions
    /// they ran. Entries of deleted records stay listed.
    #[graphql(
        guard = "RoleGuard::people()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn record_changes(
        &self,
        ctx: &Context<'_>,
        session_id: Option<ID>,
        student_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Plain<RecordChange>>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let filter = ChangeFilter {
            session_id: optional_id("sessionId", session_id)?,
            student_id: optional_id("studentId", student_id)?,
        };
        let result = ctx
            .data_unchecked::<Service>()
            .record_changes(principal(ctx).gql()?, &filter, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |c| c.id,
            |c| Plain(RecordChange(c)),
        ))
    }
}

/// Changes to the directory's lifecycle: corrections, deletions, departures, accounts.
#[derive(Default)]
pub struct LifecycleMutation;

#[Object]
impl LifecycleMutation {
    /// Corrects a teacher.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_teacher(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTeacherInput,
    ) -> async_graphql::Result<Teacher> {
        let changes = TeacherChanges {
            teacher_code: input.teacher_code,
            first_name: input.first_name,
            last_name: input.last_name,
        };
        service(ctx)
            .update_teacher(principal(ctx).gql()?, self::id("id", &id)?, changes)
            .await
            .gql()
            .map(Teacher)
    }

    /// Corrects a course: name, code, teacher or sections.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_course(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateCourseInput,
    ) -> async_graphql::Result<Course> {
        let changes = CourseChanges {
            name: input.name,
            code: input.code,
            teacher_id: input
                .teacher_id
                .map(|t| self::id("teacherId", &t))
                .transpose()?,
            section_ids: input
                .section_ids
                .map(|ids| {
                    ids.iter()
                        .map(|s| self::id("sectionIds", s))
                        .collect::<async_graphql::Result<Vec<_>>>()
                })
                .transpose()?,
        };
        service(ctx)
            .update_course(principal(ctx).gql()?, self::id("id", &id)?, changes)
            .await
            .gql()
            .map(Course)
    }

    /// Renames a section or moves it to another dep-batch.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_section(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateSectionInput,
    ) -> async_graphql::Result<Section> {
        let dep_batch_id = input
            .dep_batch_id
            .map(|d| self::id("depBatchId", &d))
            .transpose()?;
        service(ctx)
            .update_section(
                principal(ctx).gql()?,
                self::id("id", &id)?,
                input.name.as_deref(),
                dep_batch_id,
            )
            .await
            .gql()
            .map(Section)
    }

    /// Corrects a dep-batch.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_dep_batch(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateDepBatchInput,
    ) -> async_graphql::Result<DepBatch> {
        service(ctx)
            .update_dep_batch(
                principal(ctx).gql()?,
                self::id("id", &id)?,
                input.dep.as_deref(),
                input.batch.as_deref(),
            )
            .await
            .gql()
            .map(DepBatch)
    }

    /// Renames a device.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_device(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateDeviceInput,
    ) -> async_graphql::Result<Device> {
        service(ctx)
            .update_device(
                principal(ctx).gql()?,
                self::id("id", &id)?,
                input.name.as_deref(),
            )
            .await
            .gql()
            .map(Device)
    }

    /// Deletes a student nothing refers to; one with attendance history is CONFLICT
    /// `IN_USE` (use `setStudentActive` when a student leaves).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_student(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let id = self::id("id", &id)?;
        service(ctx)
            .delete_student(principal(ctx).gql()?, id)
            .await
            .gql()
            .map(|_| true)
    }

    /// Deletes a teacher (and their login) with no courses, sessions or audit entries;
    /// otherwise CONFLICT `IN_USE`.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_teacher(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let id = self::id("id", &id)?;
        service(ctx)
            .delete_teacher(principal(ctx).gql()?, id)
            .await
            .gql()
            .map(|_| true)
    }

    /// Deletes a course that never held a session; otherwise CONFLICT `IN_USE`.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_course(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let id = self::id("id", &id)?;
        service(ctx)
            .delete_course(principal(ctx).gql()?, id)
            .await
            .gql()
            .map(|_| true)
    }

    /// Deletes a section with no students or courses; otherwise CONFLICT `IN_USE`.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_section(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let id = self::id("id", &id)?;
        service(ctx)
            .delete_section(principal(ctx).gql()?, id)
            .await
            .gql()
            .map(|_| true)
    }

    /// Deletes a dep-batch with no sections; otherwise CONFLICT `IN_USE`.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_dep_batch(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let id = self::id("id", &id)?;
        service(ctx)
            .delete_dep_batch(principal(ctx).gql()?, id)
            .await
            .gql()
            .map(|_| true)
    }

    /// Deletes a device that never ran a session or uploaded a line; otherwise CONFLICT
    /// `IN_USE` (use `revokeDevice` to retire it).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_device(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let id = self::id("id", &id)?;
        service(ctx)
            .delete_device(principal(ctx).gql()?, id)
            .await
            .gql()
            .map(|_| true)
    }

    /// Marks a student as departed (`false`) or back (`true`). A departed student keeps
    /// their history, is not marked absent by sessions that close afterwards, and their
    /// scans are refused with `STUDENT_INACTIVE`.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn set_student_active(
        &self,
        ctx: &Context<'_>,
        id: ID,
        active: bool,
    ) -> async_graphql::Result<Student> {
        service(ctx)
            .set_student_active(principal(ctx).gql()?, self::id("id", &id)?, active)
            .await
            .gql()
            .map(Student)
    }

    /// Changes the caller's own password and ends every token of the account at once, the
    /// caller's too: log in again with the new password. A wrong current password is
    /// UNAUTHENTICATED and counts toward the login lockout.
    #[graphql(guard = "RoleGuard::people()")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        let address = ctx.data_opt::<ClientAddress>().map(|a| a.0);
        service(ctx)
            .change_password(
                principal(ctx).gql()?,
                &current_password,
                &new_password,
                address,
            )
            .await
            .gql()
            .map(|_| true)
    }

    /// Sets an account's password (admins only) and ends every token of it at once.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn set_password(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        service(ctx)
            .set_password(
                principal(ctx).gql()?,
                id("userId", &user_id)?,
                &new_password,
            )
            .await
            .gql()
            .map(|_| true)
    }

    /// Creates an admin account.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_admin(
        &self,
        ctx: &Context<'_>,
        input: CreateAdminInput,
    ) -> async_graphql::Result<Viewer> {
        service(ctx)
            .create_admin(principal(ctx).gql()?, &input.username, &input.password)
            .await
            .gql()
            .map(Viewer)
    }
}
