//! The mutation root and its inputs.

use async_graphql::{Context, ID, InputObject, Object};

use super::guard::{ClientAddress, RoleGuard, principal};
use super::objects::*;
use super::scalars::{Date, Time};
use crate::error::GqlResultExt;
use crate::service::Service;
use crate::service::accounts::auth::TokenPair;
use crate::service::directory::{NewCourse, NewStudent, NewTeacher, StudentChanges};
use crate::service::roll_call::scan::{ScanRequest, StudentRef};
use crate::service::roll_call::sessions::NewSession;

/// A new dep-batch.
#[derive(InputObject)]
pub struct CreateDepBatchInput {
    /// Department name.
    pub dep: String,
    /// Intake, e.g. a year.
    pub batch: String,
}

/// A new section.
#[derive(InputObject)]
pub struct CreateSectionInput {
    /// Section name, unique within its dep-batch.
    pub name: String,
    /// The dep-batch it belongs to.
    pub dep_batch_id: ID,
}

/// A new student.
#[derive(InputObject)]
pub struct CreateStudentInput {
    /// Unique code.
    pub student_code: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// The student's section.
    pub section_id: ID,
}

/// Changes to a student; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateStudentInput {
    /// New unique code.
    pub student_code: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
    /// New section.
    pub section_id: Option<ID>,
}

/// A new teacher with their login.
#[derive(InputObject)]
pub struct CreateTeacherInput {
    /// Unique staff code.
    pub teacher_code: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Login name.
    pub username: String,
    /// Initial password (8 to 256 characters).
    pub password: String,
}

/// A new course.
#[derive(InputObject)]
pub struct CreateCourseInput {
    /// Display name.
    pub name: String,
    /// Unique code.
    pub code: String,
    /// The teacher who teaches it.
    pub teacher_id: ID,
    /// The sections it is taught to (at least one).
    pub section_ids: Vec<ID>,
}

/// A terminal to register.
#[derive(InputObject)]
pub struct RegisterDeviceInput {
    /// Unique device code, such as `DEV-01`.
    pub device_id: String,
    /// A human name; the code when omitted.
    pub name: Option<String>,
}

/// A session to open.
#[derive(InputObject)]
pub struct CreateSessionInput {
    /// The course.
    pub course_id: ID,
    /// The device's code, such as `DEV-01`.
    pub device_id: String,
    /// The session's date; today in the school's time zone when omitted.
    pub date: Option<Date>,
    /// How long the session stays open; the server's default when omitted.
    pub duration_minutes: Option<i32>,
    /// The teacher running it (admins only; the course's teacher when omitted).
    pub teacher_id: Option<ID>,
    /// The class's start, for lateness; the opening time when omitted.
    pub start_time: Option<Time>,
    /// Minutes after the start before a scan counts as late; the server's default when omitted.
    pub grace_minutes: Option<i32>,
}

/// A scan, as a device sends it.
#[derive(InputObject)]
pub struct ScanInput {
    /// The recognized student's id.
    pub student_id: ID,
    /// The device's local date.
    pub date: Date,
    /// The device's local time.
    pub time: Time,
}

use super::id_arg as id;

fn payload(pair: TokenPair) -> AuthPayload {
    AuthPayload {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        user: Viewer(pair.user),
    }
}

/// The core changes: auth, directory, sessions, scans and records.
#[derive(Default)]
pub struct CoreMutation;

#[Object]
impl CoreMutation {
    /// Exchanges a username and password for a token pair.
    async fn login(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let service = ctx.data_unchecked::<Service>();
        let address = ctx.data_opt::<ClientAddress>().map(|a| a.0);
        service
            .login(&username, &password, address)
            .await
            .gql()
            .map(payload)
    }

    /// Exchanges a refresh token (once) for a new pair.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let service = ctx.data_unchecked::<Service>();
        service.refresh(&refresh_token).await.gql().map(payload)
    }

    /// Revokes a refresh token; always true, so logging out twice is harmless.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<bool> {
        let service = ctx.data_unchecked::<Service>();
        service.logout(&refresh_token).await.gql().map(|_| true)
    }

    /// Creates a dep-batch.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_dep_batch(
        &self,
        ctx: &Context<'_>,
        input: CreateDepBatchInput,
    ) -> async_graphql::Result<DepBatch> {
        let service = ctx.data_unchecked::<Service>();
        service
            .create_dep_batch(principal(ctx).gql()?, &input.dep, &input.batch)
            .await
            .gql()
            .map(DepBatch)
    }

    /// Creates a section.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_section(
        &self,
        ctx: &Context<'_>,
        input: CreateSectionInput,
    ) -> async_graphql::Result<Section> {
        let service = ctx.data_unchecked::<Service>();
        let dep_batch_id = id("depBatchId", &input.dep_batch_id)?;
        service
            .create_section(principal(ctx).gql()?, &input.name, dep_batch_id)
            .await
            .gql()
            .map(Section)
    }

    /// Creates a student.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_student(
        &self,
        ctx: &Context<'_>,
        input: CreateStudentInput,
    ) -> async_graphql::Result<Student> {
        let service = ctx.data_unchecked::<Service>();
        let new = NewStudent {
            student_code: input.student_code,
            first_name: input.first_name,
            last_name: input.last_name,
            section_id: id("sectionId", &input.section_id)?,
        };
        service
            .create_student(principal(ctx).gql()?, new)
            .await
            .gql()
            .map(Student)
    }

    /// Updates a student.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_student(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateStudentInput,
    ) -> async_graphql::Result<Student> {
        let service = ctx.data_unchecked::<Service>();
        let student_id = self::id("id", &id)?;
        let changes = StudentChanges {
            student_code: input.student_code,
            first_name: input.first_name,
            last_name: input.last_name,
            section_id: input
                .section_id
                .map(|s| self::id("sectionId", &s))
                .transpose()?,
        };
        service
            .update_student(principal(ctx).gql()?, student_id, changes)
            .await
            .gql()
            .map(Student)
    }

    /// Creates a teacher and their login account.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_teacher(
        &self,
        ctx: &Context<'_>,
        input: CreateTeacherInput,
    ) -> async_graphql::Result<Teacher> {
        let service = ctx.data_unchecked::<Service>();
        let new = NewTeacher {
            teacher_code: input.teacher_code,
            first_name: input.first_name,
            last_name: input.last_name,
            username: input.username,
            password: input.password,
        };
        service
            .create_teacher(principal(ctx).gql()?, new)
            .await
            .gql()
            .map(Teacher)
    }

    /// Activates or deactivates a login account. Deactivation ends every token of the
    /// account at once; after re-activation it logs in again.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn set_user_active(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        active: bool,
    ) -> async_graphql::Result<Viewer> {
        let service = ctx.data_unchecked::<Service>();
        service
            .set_user_active(principal(ctx).gql()?, id("userId", &user_id)?, active)
            .await
            .gql()
            .map(Viewer)
    }

    /// Creates a course taught to one or more sections.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_course(
        &self,
        ctx: &Context<'_>,
        input: CreateCourseInput,
    ) -> async_graphql::Result<Course> {
        let service = ctx.data_unchecked::<Service>();
        let new = NewCourse {
            name: input.name,
            code: input.code,
            teacher_id: id("teacherId", &input.teacher_id)?,
            section_ids: input
                .section_ids
                .iter()
                .map(|s| id("sectionIds", s))
                .collect::<async_graphql::Result<_>>()?,
        };
        service
            .create_course(principal(ctx).gql()?, new)
            .await
            .gql()
            .map(Course)
    }

    /// Registers a device; the API key is returned only here.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn register_device(
        &self,
        ctx: &Context<'_>,
        input: RegisterDeviceInput,
    ) -> async_graphql::Result<DeviceRegistration> {
        let service = ctx.data_unchecked::<Service>();
        let issued = service
            .register_device(
                principal(ctx).gql()?,
                &input.device_id,
                input.name.as_deref(),
            )
            .await
            .gql()?;
        Ok(DeviceRegistration {
            device: Device(issued.device),
            api_key: issued.api_key,
        })
    }

    /// Revokes a device; its key stops working immediately.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn revoke_device(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Device> {
        let service = ctx.data_unchecked::<Service>();
        service
            .revoke_device(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()
            .map(Device)
    }

    /// Issues a device a new key (and re-activates it); the old key stops working.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn rotate_device_key(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<DeviceRegistration> {
        let service = ctx.data_unchecked::<Service>();
        let issued = service
            .rotate_device_key(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()?;
        Ok(DeviceRegistration {
            device: Device(issued.device),
            api_key: issued.api_key,
        })
    }

    /// Opens a session: a teacher for a course they teach, an admin for any.
    #[graphql(guard = "RoleGuard::people()")]
    async fn create_session(
        &self,
        ctx: &Context<'_>,
        input: CreateSessionInput,
    ) -> async_graphql::Result<AttendanceSession> {
        let service = ctx.data_unchecked::<Service>();
        let new = NewSession {
            course_id: id("courseId", &input.course_id)?,
            device_code: input.device_id,
            date: input.date.map(|d| d.0),
            duration_minutes: input.duration_minutes,
            teacher_id: input.teacher_id.map(|t| id("teacherId", &t)).transpose()?,
            start_time: input.start_time.map(|t| t.0),
            grace_minutes: input.grace_minutes,
        };
        service
            .create_session(principal(ctx).gql()?, new)
            .await
            .gql()
            .map(AttendanceSession)
    }

    /// Records a scan for the calling device's active session.
    #[graphql(guard = "RoleGuard::device()")]
    async fn scan(
        &self,
        ctx: &Context<'_>,
        input: ScanInput,
    ) -> async_graphql::Result<AttendanceRecord> {
        let service = ctx.data_unchecked::<Service>();
        let request = ScanRequest {
            student: StudentRef::Id(id("studentId", &input.student_id)?),
            date: input.date.0,
            time: input.time.0,
        };
        service
            .scan(principal(ctx).gql()?, request)
            .await
            .gql()
            .map(AttendanceRecord::new)
    }

    /// Closes a session, marking everyone without a record absent; harmless when repeated.
    #[graphql(guard = "RoleGuard::people()")]
    async fn close_session(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<CloseSessionResult> {
        let service = ctx.data_unchecked::<Service>();
        let closed = service
            .close_session(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()?;
        Ok(CloseSessionResult {
            session: AttendanceSession(closed.session),
            marked_absent: closed.marked_absent as i32,
        })
    }

    /// Changes a record's status, keeping the change in its audit trail.
    #[graphql(guard = "RoleGuard::people()")]
    async fn edit_status(
        &self,
        ctx: &Context<'_>,
        record_id: ID,
        status: Status,
        reason: Option<String>,
    ) -> async_graphql::Result<AttendanceRecord> {
        let service = ctx.data_unchecked::<Service>();
        service
            .edit_status(
                principal(ctx).gql()?,
                id("recordId", &record_id)?,
                status.into(),
                reason.as_deref(),
            )
            .await
            .gql()
            .map(AttendanceRecord::new)
    }

    /// Deletes an attendance record (admins only). The audit trail keeps an entry with the
    /// record's last status, session and student, and the optional reason.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_attendance_record(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<bool> {
        let service = ctx.data_unchecked::<Service>();
        let actor = principal(ctx).gql()?;
        service
            .delete_record(actor, self::id("id", &id)?, reason.as_deref())
            .await
            .gql()
            .map(|_| true)
    }
}
