//! The object types of the schema: thin wrappers over entities whose relations go
//! through the request's DataLoader, and whose plain fields resolve without a future each
//! (see [`super::plain`]).

use async_graphql::dataloader::DataLoader;
use async_graphql::resolver_utils::enum_value;
use async_graphql::{Context, Enum, ID, Object, SimpleObject, Value};
use chrono::{DateTime, Utc};

use super::guard::{RoleGuard, principal};
use super::loaders::*;
use super::plain::{Field, IntoValue, PlainList, id};
use super::required;
use super::scalars::Date;
use crate::entities::{self, attendance_record, attendance_session, course, dep_batch, device};
use crate::entities::{record_change, section, student, teacher, user};
use crate::error::GqlResultExt;
use crate::plain_fields;
use crate::service::access;
use crate::service::roll_call::sessions::SessionCounts;

/// The cost given to one item of an unpaginated list of people or records (a class's size,
/// roughly), so a query's complexity grows with the lists it nests.
pub const LIST_WEIGHT: usize = 50;
/// The same for short lists (a course's sections, a teacher's courses).
pub const SMALL_LIST_WEIGHT: usize = 5;

pub(crate) fn loader<'a>(ctx: &'a Context<'_>) -> &'a DataLoader<Db> {
    ctx.data_unchecked::<DataLoader<Db>>()
}

/// A student's status in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(name = "AttendanceStatus", remote = "entities::AttendanceStatus")]
pub enum Status {
    /// Scanned (or set by a teacher).
    Present,
    /// Not scanned before the session closed (or set by a teacher).
    Absent,
    /// Excused by a teacher.
    Permission,
}

impl IntoValue for Status {
    fn into_value(self) -> Value {
        enum_value(self)
    }
}

/// The three roles of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(name = "Role", remote = "crate::auth::Role")]
pub enum RoleValue {
    /// Full access.
    Admin,
    /// Reads the directory and runs their own sessions.
    Teacher,
    /// Submits scans, reads nothing.
    Device,
}

impl IntoValue for RoleValue {
    fn into_value(self) -> Value {
        enum_value(self)
    }
}

/// The `totalCount` of a connection.
#[derive(SimpleObject)]
pub struct TotalCount {
    /// Items matching the filters, over all pages.
    pub total_count: i64,
}

/// A department's intake.
pub struct DepBatch(pub dep_batch::Model);

#[Object]
impl DepBatch {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn dep(&self) -> &str {
        &self.0.dep
    }
    async fn batch(&self) -> &str {
        &self.0.batch
    }
    /// The sections of this intake.
    #[graphql(complexity = "SMALL_LIST_WEIGHT * child_complexity + 1")]
    async fn sections(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Section>> {
        let rows = loader(ctx).load_one(SectionsOfDepBatch(self.0.id)).await?;
        Ok(rows.unwrap_or_default().into_iter().map(Section).collect())
    }
}

plain_fields! {
    DepBatch(this) {
        "id" => id(this.0.id),
        "dep" => &this.0.dep,
        "batch" => &this.0.batch,
    }
}

/// A class group of students.
pub struct Section(pub section::Model);

#[Object]
impl Section {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn dep_batch(&self, ctx: &Context<'_>) -> async_graphql::Result<DepBatch> {
        required(ctx, DepBatchById(self.0.dep_batch_id), "dep-batch")
            .await
            .map(DepBatch)
    }
    /// The students of this section.
    #[graphql(complexity = "LIST_WEIGHT * child_complexity + 1")]
    async fn students(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Student>> {
        let rows = loader(ctx).load_one(StudentsOfSection(self.0.id)).await?;
        Ok(rows.unwrap_or_default().into_iter().map(Student).collect())
    }
}

plain_fields! {
    Section(this) {
        "id" => id(this.0.id),
        "name" => &this.0.name,
    }
}

/// A student.
pub struct Student(pub student::Model);

#[Object]
impl Student {
    /// The id devices send in scans.
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn student_code(&self) -> &str {
        &self.0.student_code
    }
    async fn first_name(&self) -> &str {
        &self.0.first_name
    }
    async fn last_name(&self) -> &str {
        &self.0.last_name
    }
    async fn section_id(&self) -> ID {
        self.0.section_id.into()
    }
    async fn section(&self, ctx: &Context<'_>) -> async_graphql::Result<Section> {
        required(ctx, SectionById(self.0.section_id), "section")
            .await
            .map(Section)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the student joined their current section.
    async fn enrolled_at(&self) -> DateTime<Utc> {
        self.0.enrolled_at
    }
    /// False once the student has left: their history stays, they are no longer expected,
    /// and their scans are refused.
    async fn is_active(&self) -> bool {
        self.0.is_active
    }
}

plain_fields! {
    Student(this) {
        "id" => id(this.0.id),
        "studentCode" => &this.0.student_code,
        "firstName" => &this.0.first_name,
        "lastName" => &this.0.last_name,
        "sectionId" => id(this.0.section_id),
        "createdAt" => this.0.created_at,
        "enrolledAt" => this.0.enrolled_at,
        "isActive" => this.0.is_active,
    }
}

/// A teacher.
pub struct Teacher(pub teacher::Model);

#[Object]
impl Teacher {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn teacher_code(&self) -> &str {
        &self.0.teacher_code
    }
    async fn first_name(&self) -> &str {
        &self.0.first_name
    }
    async fn last_name(&self) -> &str {
        &self.0.last_name
    }
    /// The login name; visible to admins and to the teacher themself.
    async fn username(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let viewer = principal(ctx).gql()?;
        if !access::may_see_username(viewer, self.0.id) {
            return Ok(None);
        }
        Ok(loader(ctx)
            .load_one(UserOfTeacher(self.0.id))
            .await?
            .map(|u| u.username))
    }
    /// The teacher's login account (admins only).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn account(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Viewer>> {
        Ok(loader(ctx)
            .load_one(UserOfTeacher(self.0.id))
            .await?
            .map(Viewer))
    }
    /// The courses this teacher teaches.
    #[graphql(complexity = "SMALL_LIST_WEIGHT * child_complexity + 1")]
    async fn courses(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Course>> {
        let rows = loader(ctx).load_one(CoursesOfTeacher(self.0.id)).await?;
        Ok(rows.unwrap_or_default().into_iter().map(Course).collect())
    }
}

plain_fields! {
    Teacher(this) {
        "id" => id(this.0.id),
        "teacherCode" => &this.0.teacher_code,
        "firstName" => &this.0.first_name,
        "lastName" => &this.0.last_name,
    }
}

/// A course taught by one teacher to one or more sections.
pub struct Course(pub course::Model);

#[Object]
impl Course {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn teacher_id(&self) -> ID {
        self.0.teacher_id.into()
    }
    async fn teacher(&self, ctx: &Context<'_>) -> async_graphql::Result<Teacher> {
        required(ctx, TeacherById(self.0.teacher_id), "teacher")
            .await
            .map(Teacher)
    }
    /// The sections the course is taught to.
    #[graphql(complexity = "SMALL_LIST_WEIGHT * child_complexity + 1")]
    async fn sections(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Section>> {
        let ids = loader(ctx)
            .load_one(SectionIdsOfCourse(self.0.id))
            .await?
            .unwrap_or_default();
        let mut rows = loader(ctx)
            .load_many(ids.iter().map(|id| SectionById(*id)))
            .await?;
        Ok(ids
            .iter()
            .filter_map(|id| rows.remove(&SectionById(*id)))
            .map(Section)
            .collect())
    }
    /// Every student enrolled through the course's sections.
    #[graphql(complexity = "LIST_WEIGHT * child_complexity + 1")]
    async fn students(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Student>> {
        let ids = loader(ctx)
            .load_one(SectionIdsOfCourse(self.0.id))
            .await?
            .unwrap_or_default();
        let mut groups = loader(ctx)
            .load_many(ids.iter().map(|id| StudentsOfSection(*id)))
            .await?;
        let mut students: Vec<Student> = ids
            .iter()
            .filter_map(|id| groups.remove(&StudentsOfSection(*id)))
            .flatten()
            .map(Student)
            .collect();
        students.sort_by_key(|s| s.0.id);
        Ok(PlainList(students))
    }
    /// The course's sessions visible to the caller (admins: all; teachers: their own).
    #[graphql(complexity = "LIST_WEIGHT * child_complexity + 1")]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<PlainList<AttendanceSession>> {
        let viewer = principal(ctx).gql()?;
        let rows = loader(ctx)
            .load_one(SessionsOfCourse(self.0.id))
            .await?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .filter(|s| access::may_see_session(viewer, s))
            .map(AttendanceSession)
            .collect())
    }
}

plain_fields! {
    Course(this) {
        "id" => id(this.0.id),
        "name" => &this.0.name,
        "code" => &this.0.code,
        "teacherId" => id(this.0.teacher_id),
    }
}

/// A registered terminal.
pub struct Device(pub device::Model);

#[Object]
impl Device {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    /// The device's code, such as `DEV-01`.
    async fn device_id(&self) -> &str {
        &self.0.device_id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// False once revoked.
    async fn is_active(&self) -> bool {
        self.0.is_active
    }
    /// Last contact (updated every few seconds, not on every scan).
    async fn last_seen_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_seen_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

plain_fields! {
    Device(this) {
        "id" => id(this.0.id),
        "deviceId" => &this.0.device_id,
        "name" => &this.0.name,
        "isActive" => this.0.is_active,
        "lastSeenAt" => this.0.last_seen_at,
        "createdAt" => this.0.created_at,
    }
}

/// A device together with its API key, shown only in this response.
#[derive(SimpleObject)]
pub struct DeviceRegistration {
    /// The device.
    pub device: Device,
    /// The key to configure on the device; only its hash is stored.
    pub api_key: String,
}

/// The authenticated user.
pub struct Viewer(pub user::Model);

#[Object]
impl Viewer {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn username(&self) -> &str {
        &self.0.username
    }
    async fn role(&self) -> RoleValue {
        crate::auth::Role::from(self.0.role).into()
    }
    async fn is_active(&self) -> bool {
        self.0.is_active
    }
    /// The teacher profile of a teacher account.
    async fn teacher(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Teacher>> {
        let Some(id) = self.0.teacher_id else {
            return Ok(None);
        };
        Ok(loader(ctx).load_one(TeacherById(id)).await?.map(Teacher))
    }
}

plain_fields! {
    Viewer(this) {
        "id" => id(this.0.id),
        "username" => &this.0.username,
        "role" => RoleValue::from(crate::auth::Role::from(this.0.role)),
        "isActive" => this.0.is_active,
    }
}

/// Tokens issued by `login` and `refreshToken`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Sent as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Exchanged once for a new pair.
    pub refresh_token: String,
    /// The user the tokens belong to.
    pub user: Viewer,
}

/// Counts of a session's roster by status.
#[derive(SimpleObject, Clone, Copy, Debug, Default)]
pub struct AttendanceCounts {
    /// Present records.
    pub present: i32,
    /// Absent records.
    pub absent: i32,
    /// Permission records.
    pub permission: i32,
    /// Enrolled students with no record yet (0 once the session is closed).
    pub not_yet_scanned: i32,
}

impl From<SessionCounts> for AttendanceCounts {
    fn from(c: SessionCounts) -> Self {
        Self {
            present: c.present as i32,
            absent: c.absent as i32,
            permission: c.permission as i32,
            not_yet_scanned: c.not_yet_scanned as i32,
        }
    }
}

/// A course's roll call on one date, bound to one device while active.
pub struct AttendanceSession(pub attendance_session::Model);

#[Object]
impl AttendanceSession {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn course_id(&self) -> ID {
        self.0.course_id.into()
    }
    async fn course(&self, ctx: &Context<'_>) -> async_graphql::Result<Course> {
        required(ctx, CourseById(self.0.course_id), "course")
            .await
            .map(Course)
    }
    async fn date(&self) -> Date {
        Date(self.0.date)
    }
    /// The teacher who opened the session.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Teacher> {
        required(ctx, TeacherById(self.0.created_by), "teacher")
            .await
            .map(Teacher)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The code of the bound device.
    async fn device_id(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        required(ctx, DeviceById(self.0.device_id), "device")
            .await
            .map(|d| d.device_id)
    }
    /// The bound device (admins only).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn device(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Device>> {
        Ok(loader(ctx)
            .load_one(DeviceById(self.0.device_id))
            .await?
            .map(Device))
    }
    async fn is_active(&self) -> bool {
        self.0.is_active
    }
    /// When the class starts; scans later than `graceMinutes` after it are late.
    async fn starts_at(&self) -> DateTime<Utc> {
        self.0.starts_at
    }
    async fn grace_minutes(&self) -> i32 {
        self.0.grace_minutes
    }
    /// When the session closes by itself.
    async fn closes_at(&self) -> DateTime<Utc> {
        self.0.closes_at
    }
    async fn closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.closed_at
    }
    /// Present, absent, permission and not-yet-scanned counts.
    async fn counts(&self, ctx: &Context<'_>) -> async_graphql::Result<AttendanceCounts> {
        Ok(loader(ctx)
            .load_one(CountsOfSession(self.0.clone()))
            .await?
            .unwrap_or_default()
            .into())
    }
    /// Every record of the session, in the order they were written.
    #[graphql(complexity = "LIST_WEIGHT * child_complexity + 1")]
    async fn records(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<PlainList<AttendanceRecord>> {
        // Whoever may see the session may read its records with their students: decided
        // once for the whole list, not on each record's `student`. A session reaches a caller
        // only through paths that apply the same rule; this holds even if one did not.
        if !access::may_see_session(principal(ctx).gql()?, &self.0) {
            return Err(crate::error::AppError::Forbidden.into_graphql());
        }
        let rows = loader(ctx).load_one(RecordsOfSession(self.0.id)).await?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(|(record, student)| AttendanceRecord::with_student(record, student))
            .collect())
    }
}

plain_fields! {
    AttendanceSession(this) {
        "id" => id(this.0.id),
        "courseId" => id(this.0.course_id),
        "date" => Date(this.0.date),
        "createdAt" => this.0.created_at,
        "isActive" => this.0.is_active,
        "startsAt" => this.0.starts_at,
        "graceMinutes" => this.0.grace_minutes,
        "closesAt" => this.0.closes_at,
        "closedAt" => this.0.closed_at,
    }
}

/// The result of `closeSession`.
#[derive(SimpleObject)]
pub struct CloseSessionResult {
    /// The session, now inactive.
    pub session: AttendanceSession,
    /// Students this call marked absent (0 when the session was already closed).
    pub marked_absent: i32,
}

/// One student's status in one session, with its student when the list it came in was
/// read for a person.
pub struct AttendanceRecord {
    /// The record.
    pub record: attendance_record::Model,
    /// Its student, joined in SQL by a read authorized once for the whole list; `None`
    /// sends the `student` field through its guard and the DataLoader.
    pub student: Option<Student>,
}

impl AttendanceRecord {
    /// A record on its own (a scan's or an edit's answer).
    pub fn new(record: attendance_record::Model) -> Self {
        Self {
            record,
            student: None,
        }
    }

    /// A record of a list read for a person, with its student.
    pub fn with_student(record: attendance_record::Model, student: student::Model) -> Self {
        Self {
            record,
            student: Some(Student(student)),
        }
    }
}

plain_fields! {
    AttendanceRecord(this) {
        "id" => id(this.record.id),
        "sessionId" => id(this.record.session_id),
        "studentId" => id(this.record.student_id),
        "status" => Status::from(this.record.status),
        "timestamp" => this.record.timestamp,
        "scannedAt" => this.record.scanned_at,
        "lateMinutes" => this.record.late_minutes,
    }
    // The student is plain when the list was read with it: that read was authorized for
    // the whole list. Otherwise the field's guard and the DataLoader decide.
    extra(name) {
        match (name, &this.student) {
            ("student", Some(student)) => Field::Object(student),
            _ => Field::Async,
        }
    }
}

#[Object]
impl AttendanceRecord {
    async fn id(&self) -> ID {
        self.record.id.into()
    }
    async fn session_id(&self) -> ID {
        self.record.session_id.into()
    }
    async fn student_id(&self) -> ID {
        self.record.student_id.into()
    }
    async fn status(&self) -> Status {
        self.record.status.into()
    }
    /// When the status was last set: the scan time, the close, or the last edit.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.record.timestamp
    }
    /// The device's scan time; never changed by edits.
    async fn scanned_at(&self) -> Option<DateTime<Utc>> {
        self.record.scanned_at
    }
    /// Minutes after the session's start for a late scan, 0 when on time; null when not scanned.
    async fn late_minutes(&self) -> Option<i32> {
        self.record.late_minutes
    }
    /// The session (people only).
    #[graphql(guard = "RoleGuard::people()")]
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<AttendanceSession>> {
        Ok(loader(ctx)
            .load_one(SessionById(self.record.session_id))
            .await?
            .map(AttendanceSession))
    }
    /// The student (people only).
    #[graphql(guard = "RoleGuard::people()")]
    async fn student(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Student>> {
        if let Some(student) = &self.student {
            return Ok(Some(Student(student.0.clone())));
        }
        Ok(loader(ctx)
            .load_one(StudentById(self.record.student_id))
            .await?
            .map(Student))
    }
    /// The manual edits of this record, oldest first.
    #[graphql(guard = "RoleGuard::people()")]
    async fn changes(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<RecordChange>> {
        let rows = loader(ctx)
            .load_one(ChangesOfRecord(self.record.id))
            .await?;
        Ok(rows
            .unwrap_or_default()
            .into_iter()
            .map(RecordChange)
            .collect())
    }
}

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "entities::ChangeKind")]
pub enum RecordChangeKind {
    /// A person changed the record's status.
    Edit,
    /// An admin deleted the record; `oldStatus` is its last status.
    Delete,
    /// An excuse set the status (`excuseId` names it).
    Excuse,
    /// A revoked excuse turned back the status it had set.
    ExcuseRevoked,
}

impl IntoValue for RecordChangeKind {
    fn into_value(self) -> Value {
        enum_value(self)
    }
}

/// One entry of the audit trail: a manual status edit, or a record's deletion. Entries
/// are never changed or removed, and outlive the record they describe.
pub struct RecordChange(pub record_change::Model);

#[Object]
impl RecordChange {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    /// The record changed; it may since have been deleted.
    async fn record_id(&self) -> ID {
        self.0.record_id.into()
    }
    async fn session_id(&self) -> ID {
        self.0.session_id.into()
    }
    async fn student_id(&self) -> ID {
        self.0.student_id.into()
    }
    async fn kind(&self) -> RecordChangeKind {
        self.0.kind.into()
    }
    async fn old_status(&self) -> Status {
        self.0.old_status.into()
    }
    /// The status set; null when the record was deleted.
    async fn new_status(&self) -> Option<Status> {
        self.0.new_status.map(Into::into)
    }
    /// Who made the change: admins see every account, teachers only their own.
    async fn changed_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Viewer>> {
        let Some(id) = self.0.changed_by else {
            return Ok(None);
        };
        if !access::may_see_account(principal(ctx).gql()?, id) {
            return Ok(None);
        }
        Ok(loader(ctx).load_one(UserById(id)).await?.map(Viewer))
    }
    async fn changed_at(&self) -> DateTime<Utc> {
        self.0.changed_at
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// The excuse behind an `EXCUSE` or `EXCUSE_REVOKED` entry.
    async fn excuse_id(&self) -> Option<ID> {
        self.0.excuse_id.map(Into::into)
    }
    /// The record's session.
    async fn session(&self, ctx: &Context<'_>) -> async_graphql::Result<AttendanceSession> {
        required(ctx, SessionById(self.0.session_id), "session")
            .await
            .map(AttendanceSession)
    }
    /// The record's student.
    async fn student(&self, ctx: &Context<'_>) -> async_graphql::Result<Student> {
        required(ctx, StudentById(self.0.student_id), "student")
            .await
            .map(Student)
    }
}

plain_fields! {
    RecordChange(this) {
        "id" => id(this.0.id),
        "recordId" => id(this.0.record_id),
        "sessionId" => id(this.0.session_id),
        "studentId" => id(this.0.student_id),
        "kind" => RecordChangeKind::from(this.0.kind),
        "oldStatus" => Status::from(this.0.old_status),
        "newStatus" => this.0.new_status.map(Status::from),
        "changedAt" => this.0.changed_at,
        "reason" => this.0.reason.as_deref(),
        "excuseId" => this.0.excuse_id.map(id),
    }
}
