//! The timetable over GraphQL (SPEC 8.2): terms and holidays, weekly slots, the classes in
//! a range, the classes whose attendance was not taken, cancellations and the import.

use async_graphql::{Context, Enum, ID, InputObject, Object, Upload};
use chrono::{DateTime, Utc};

use super::guard::{RoleGuard, principal};
use super::id_arg as id;
use super::loaders::*;
use super::objects::loader;
use super::objects::{AttendanceSession, Course, Device};
use super::query::optional_id;
use super::roster::ImportResult;
use super::scalars::{Date, Time};
use super::{required, service};
use crate::entities::{holiday, schedule_slot, term};
use crate::error::{AppError, GqlResultExt};
use crate::service::schedule::occurrences::Occurrence;
use crate::service::schedule::{SlotFields, TimetableFilter};

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum Weekday {
    /// ISO day 1.
    Monday,
    /// ISO day 2.
    Tuesday,
    /// ISO day 3.
    Wednesday,
    /// ISO day 4.
    Thursday,
    /// ISO day 5.
    Friday,
    /// ISO day 6.
    Saturday,
    /// ISO day 7.
    Sunday,
}

impl Weekday {
    fn iso(self) -> i16 {
        self as i16 + 1
    }

    fn from_iso(day: i16) -> Self {
        match day {
            1 => Self::Monday,
            2 => Self::Tuesday,
            3 => Self::Wednesday,
            4 => Self::Thursday,
            5 => Self::Friday,
            6 => Self::Saturday,
            _ => Self::Sunday,
        }
    }
}

/// Where a class stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::service::schedule::occurrences::OccurrenceStatus")]
pub enum OccurrenceStatus {
    /// Still to come (or due, its session not opened yet).
    Scheduled,
    /// Its session is open.
    Open,
    /// Its session has closed.
    Closed,
    /// It ended and no session was ever opened for it.
    Missed,
    /// Somebody cancelled it.
    Cancelled,
    /// It falls on a holiday of its term.
    Holiday,
}

/// A teaching period.
pub struct Term(pub term::Model);

#[Object]
impl Term {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn starts_on(&self) -> Date {
        Date(self.0.starts_on)
    }
    async fn ends_on(&self) -> Date {
        Date(self.0.ends_on)
    }
    /// Its holidays, in date order.
    async fn holidays(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Holiday>> {
        let mut rows = loader(ctx)
            .load_one(HolidaysOfTerm(self.0.id))
            .await?
            .unwrap_or_default();
        rows.sort_by_key(|h| (h.starts_on, h.id));
        Ok(rows.into_iter().map(Holiday).collect())
    }
}

/// Days of a term without classes (both ends included).
pub struct Holiday(pub holiday::Model);

#[Object]
impl Holiday {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn starts_on(&self) -> Date {
        Date(self.0.starts_on)
    }
    async fn ends_on(&self) -> Date {
        Date(self.0.ends_on)
    }
}

/// A weekly class of a course on a device, in a term.
pub struct ScheduleSlot(pub schedule_slot::Model);

#[Object]
impl ScheduleSlot {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn course(&self, ctx: &Context<'_>) -> async_graphql::Result<Course> {
        required(ctx, CourseById(self.0.course_id), "course")
            .await
            .map(Course)
    }
    async fn term(&self, ctx: &Context<'_>) -> async_graphql::Result<Term> {
        required(ctx, TermById(self.0.term_id), "term")
            .await
            .map(Term)
    }
    /// The code of the slot's device, such as `DEV-01`.
    async fn device_id(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        required(ctx, DeviceById(self.0.device_id), "device")
            .await
            .map(|d| d.device_id)
    }
    /// The slot's device (admins only).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn device(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Device>> {
        required(ctx, DeviceById(self.0.device_id), "device")
            .await
            .map(|d| Some(Device(d)))
    }
    async fn weekday(&self) -> Weekday {
        Weekday::from_iso(self.0.weekday)
    }
    /// Local start time in `TIME_ZONE`.
    async fn start_time(&self) -> Time {
        Time(self.0.start_time)
    }
    /// Local end time in `TIME_ZONE`.
    async fn end_time(&self) -> Time {
        Time(self.0.end_time)
    }
    /// False once deleted: its held classes stay, no new one opens.
    async fn is_active(&self) -> bool {
        self.0.deleted_at.is_none()
    }
}

/// One class: a slot on a date.
pub struct ClassOccurrence(pub Occurrence);

#[Object]
impl ClassOccurrence {
    async fn date(&self) -> Date {
        Date(self.0.date)
    }
    async fn starts_at(&self) -> DateTime<Utc> {
        self.0.starts_at
    }
    async fn ends_at(&self) -> DateTime<Utc> {
        self.0.ends_at
    }
    /// When its session opens (`SCHEDULE_OPEN_EARLY_MINUTES` before the start).
    async fn opens_at(&self) -> DateTime<Utc> {
        self.0.opens_at
    }
    async fn slot(&self) -> ScheduleSlot {
        ScheduleSlot(self.0.slot.clone())
    }
    async fn status(&self) -> OccurrenceStatus {
        self.0.status.into()
    }
    /// Its session, once opened.
    async fn session(&self) -> Option<AttendanceSession> {
        self.0.session.clone().map(AttendanceSession)
    }
    /// Why it was cancelled, when it was and a reason was given.
    async fn cancellation_reason(&self) -> Option<&str> {
        self.0
            .cancellation
            .as_ref()
            .and_then(|c| c.reason.as_deref())
    }
    /// The holiday it falls on.
    async fn holiday(&self) -> Option<&str> {
        self.0.holiday.as_deref()
    }
}

/// A new term.
#[derive(InputObject)]
pub struct CreateTermInput {
    /// Unique name, such as `2026/27 Autumn`.
    pub name: String,
    /// First day.
    pub starts_on: Date,
    /// Last day (not before the first).
    pub ends_on: Date,
}

/// Changes to a term; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateTermInput {
    /// New name.
    pub name: Option<String>,
    /// New first day.
    pub starts_on: Option<Date>,
    /// New last day.
    pub ends_on: Option<Date>,
}

/// A holiday to add to a term.
#[derive(InputObject)]
pub struct AddHolidayInput {
    /// The term.
    pub term_id: ID,
    /// First day, inside the term.
    pub starts_on: Date,
    /// Last day, inside the term; the first day when omitted.
    pub ends_on: Option<Date>,
    /// What it is, such as `Spring break`.
    pub name: String,
}

/// A new weekly slot.
#[derive(InputObject)]
pub struct CreateScheduleSlotInput {
    /// The course.
    pub course_id: ID,
    /// The term.
    pub term_id: ID,
    /// The device's code, such as `DEV-01`.
    pub device_id: String,
    /// The day of the week.
    pub weekday: Weekday,
    /// Local start time (`HH:MM:SS`).
    pub start_time: Time,
    /// Local end time, after the start.
    pub end_time: Time,
}

/// Changes to a slot; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateScheduleSlotInput {
    /// New course.
    pub course_id: Option<ID>,
    /// New term.
    pub term_id: Option<ID>,
    /// New device code.
    pub device_id: Option<String>,
    /// New day of the week.
    pub weekday: Option<Weekday>,
    /// New local start time.
    pub start_time: Option<Time>,
    /// New local end time.
    pub end_time: Option<Time>,
}

/// Reads of the timetable.
#[derive(Default)]
pub struct TimetableQuery;

#[Object]
impl TimetableQuery {
    /// Every term, in date order.
    #[graphql(guard = "RoleGuard::people()")]
    async fn terms(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Term>> {
        let terms = service(ctx).terms(principal(ctx).gql()?).await.gql()?;
        Ok(terms.into_iter().map(Term).collect())
    }

    /// The live weekly slots, optionally of one term or course; teachers see their own
    /// courses' slots.
    #[graphql(guard = "RoleGuard::people()")]
    async fn schedule_slots(
        &self,
        ctx: &Context<'_>,
        term_id: Option<ID>,
        course_id: Option<ID>,
    ) -> async_graphql::Result<Vec<ScheduleSlot>> {
        let slots = service(ctx)
            .visible_schedule_slots(
                principal(ctx).gql()?,
                optional_id("termId", term_id)?,
                optional_id("courseId", course_id)?,
            )
            .await
            .gql()?;
        Ok(slots.into_iter().map(ScheduleSlot).collect())
    }

    /// Every class between `from` and `to` (both included, at most 366 days), in time
    /// order; teachers see their own courses' classes.
    #[graphql(guard = "RoleGuard::people()")]
    async fn timetable(
        &self,
        ctx: &Context<'_>,
        from: Date,
        to: Date,
        course_id: Option<ID>,
        teacher_id: Option<ID>,
        device_id: Option<String>,
    ) -> async_graphql::Result<Vec<ClassOccurrence>> {
        let filter = TimetableFilter {
            course_id: optional_id("courseId", course_id)?,
            teacher_id: optional_id("teacherId", teacher_id)?,
            device_code: device_id,
        };
        let classes = service(ctx)
            .timetable(principal(ctx).gql()?, from.0, to.0, filter)
            .await
            .gql()?;
        Ok(classes.into_iter().map(ClassOccurrence).collect())
    }

    /// Past classes whose attendance was not taken: no session opened (their device was
    /// busy, or nobody opened it), or it closed without a single scan.
    #[graphql(guard = "RoleGuard::people()")]
    async fn attendance_not_taken(
        &self,
        ctx: &Context<'_>,
        from: Date,
        to: Date,
    ) -> async_graphql::Result<Vec<ClassOccurrence>> {
        let classes = service(ctx)
            .attendance_not_taken(principal(ctx).gql()?, from.0, to.0)
            .await
            .gql()?;
        Ok(classes.into_iter().map(ClassOccurrence).collect())
    }
}

/// Changes to the timetable.
#[derive(Default)]
pub struct TimetableMutation;

#[Object]
impl TimetableMutation {
    /// Creates a term.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_term(
        &self,
        ctx: &Context<'_>,
        input: CreateTermInput,
    ) -> async_graphql::Result<Term> {
        service(ctx)
            .create_term(
                principal(ctx).gql()?,
                &input.name,
                input.starts_on.0,
                input.ends_on.0,
            )
            .await
            .gql()
            .map(Term)
    }

    /// Corrects a term; its holidays must stay inside it.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_term(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTermInput,
    ) -> async_graphql::Result<Term> {
        service(ctx)
            .update_term(
                principal(ctx).gql()?,
                self::id("id", &id)?,
                input.name.as_deref(),
                input.starts_on.map(|d| d.0),
                input.ends_on.map(|d| d.0),
            )
            .await
            .gql()
            .map(Term)
    }

    /// Adds a holiday to a term: its classes do not take place.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn add_holiday(
        &self,
        ctx: &Context<'_>,
        input: AddHolidayInput,
    ) -> async_graphql::Result<Holiday> {
        service(ctx)
            .add_holiday(
                principal(ctx).gql()?,
                id("termId", &input.term_id)?,
                &input.name,
                input.starts_on.0,
                input.ends_on.map(|d| d.0),
            )
            .await
            .gql()
            .map(Holiday)
    }

    /// Removes a holiday.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn remove_holiday(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        service(ctx)
            .remove_holiday(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()
            .map(|_| true)
    }

    /// Creates a weekly slot; one overlapping another slot of its device or teacher is
    /// CONFLICT `SLOT_OVERLAP` naming that slot.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_schedule_slot(
        &self,
        ctx: &Context<'_>,
        input: CreateScheduleSlotInput,
    ) -> async_graphql::Result<ScheduleSlot> {
        let fields = SlotFields {
            course_id: Some(id("courseId", &input.course_id)?),
            term_id: Some(id("termId", &input.term_id)?),
            device_code: Some(input.device_id),
            weekday: Some(input.weekday.iso()),
            start_time: Some(input.start_time.0),
            end_time: Some(input.end_time.0),
        };
        service(ctx)
            .create_schedule_slot(principal(ctx).gql()?, fields)
            .await
            .gql()
            .map(ScheduleSlot)
    }

    /// Changes a slot; classes already opened keep their sessions.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn update_schedule_slot(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateScheduleSlotInput,
    ) -> async_graphql::Result<ScheduleSlot> {
        let fields = SlotFields {
            course_id: optional_id("courseId", input.course_id)?,
            term_id: optional_id("termId", input.term_id)?,
            device_code: input.device_id,
            weekday: input.weekday.map(Weekday::iso),
            start_time: input.start_time.map(|t| t.0),
            end_time: input.end_time.map(|t| t.0),
        };
        service(ctx)
            .update_schedule_slot(principal(ctx).gql()?, self::id("id", &id)?, fields)
            .await
            .gql()
            .map(ScheduleSlot)
    }

    /// Deletes a slot: no class of it opens from now on; held classes stay.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_schedule_slot(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        service(ctx)
            .delete_schedule_slot(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()
            .map(|_| true)
    }

    /// Cancels one class (admins, or the course's teacher); repeating it is harmless.
    #[graphql(guard = "RoleGuard::people()")]
    async fn cancel_class(
        &self,
        ctx: &Context<'_>,
        slot_id: ID,
        date: Date,
        reason: Option<String>,
    ) -> async_graphql::Result<ClassOccurrence> {
        service(ctx)
            .cancel_class(
                principal(ctx).gql()?,
                id("slotId", &slot_id)?,
                date.0,
                reason.as_deref(),
            )
            .await
            .gql()
            .map(ClassOccurrence)
    }

    /// Imports weekly slots into a term (its name or id) from a CSV upload
    /// (`course_code,device_id,weekday,start_time,end_time`). Every line is checked first;
    /// a file with any bad line changes nothing. Lines equal to existing slots are left
    /// as they are. Send it as a GraphQL multipart request.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn import_timetable(
        &self,
        ctx: &Context<'_>,
        term: String,
        file: Upload,
    ) -> async_graphql::Result<ImportResult> {
        let upload = file.value(ctx)?;
        let text = String::from_utf8(upload.content.to_vec())
            .map_err(|_| AppError::invalid("file", "is not UTF-8 text").into_graphql())?;
        service(ctx)
            .import_timetable(principal(ctx).gql()?, &term, &text)
            .await
            .gql()
            .map(ImportResult::from)
    }
}
