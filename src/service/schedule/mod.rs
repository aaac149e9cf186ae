//! The timetable (SPEC 8.2): terms and their holidays, weekly slots, cancelled classes,
//! the listing of classes in a range, and (in `scheduler`) classes that open and close
//! their sessions by themselves.

pub mod import;
pub mod occurrences;
pub mod scheduler;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use self::occurrences::{Calendar, Occurrence, OccurrenceStatus};
use crate::auth::Principal;
use crate::entities::{
    attendance_record, attendance_session, class_cancellation, device, holiday, record_change,
    schedule_slot, term,
};
use crate::error::{AppError, AppResult, Reason};
use crate::service::access::{self, Scope};
use crate::service::sql::{conflict_on, write_transaction};
use crate::service::{Service, required_text};

/// The longest range one listing covers.
const MAX_RANGE_DAYS: i64 = 366;

/// A slot's fields, for creating one or (all optional) changing one.
#[derive(Clone, Debug, Default)]
pub struct SlotFields {
    /// The course taught.
    pub course_id: Option<i32>,
    /// The term it repeats in.
    pub term_id: Option<i32>,
    /// The device's code, such as `DEV-01`.
    pub device_code: Option<String>,
    /// ISO weekday, 1 (Monday) to 7.
    pub weekday: Option<i16>,
    /// Local start time.
    pub start_time: Option<NaiveTime>,
    /// Local end time, after the start.
    pub end_time: Option<NaiveTime>,
}

/// What the overlap rule compares of a slot: its device, its course's teacher, its term's
/// dates, its weekday and times.
#[derive(Clone, Debug, FromQueryResult)]
pub(crate) struct SlotFacts {
    pub id: Option<i32>,
    pub course_code: String,
    pub teacher_id: i32,
    pub device_id: i32,
    pub term_starts: NaiveDate,
    pub term_ends: NaiveDate,
    pub weekday: i16,
    pub start_time: NaiveTime,
    pub end_time: NaiveTime,
}

/// THE overlap rule: two live slots clash when they share a device or a teacher, meet on
/// the same weekday at overlapping times, in terms whose dates overlap. The refusal names
/// the other slot.
pub(crate) fn clash(slot: &SlotFacts, other: &SlotFacts) -> Option<AppError> {
    if slot.id.is_some() && slot.id == other.id {
        return None;
    }
    let shared = if slot.device_id == other.device_id {
        "the same device"
    } else if slot.teacher_id == other.teacher_id {
        "the same teacher"
    } else {
        return None;
    };
    let meets = slot.weekday == other.weekday
        && slot.start_time < other.end_time
        && other.start_time < slot.end_time
        && slot.term_starts <= other.term_ends
        && other.term_starts <= slot.term_ends;
    if !meets {
        return None;
    }
    let name = match other.id {
        Some(id) => format!("slot {id}"),
        None => "another slot".to_owned(),
    };
    Some(AppError::rejected(
        Reason::SlotOverlap,
        format!(
            "overlaps {name} ({}, {} {}-{}) on {shared}",
            other.course_code,
            weekday_name(other.weekday),
            other.start_time.format("%H:%M"),
            other.end_time.format("%H:%M"),
        ),
    ))
}

/// The facts of every live slot, or of those on one weekday, in one statement.
pub(crate) async fn live_slot_facts(
    db: &impl ConnectionTrait,
    weekday: Option<i16>,
) -> AppResult<Vec<SlotFacts>> {
    let backend = db.get_database_backend();
    let mut sql = "SELECT s.id AS id, c.code AS course_code, c.teacher_id AS teacher_id, \
         s.device_id AS device_id, t.starts_on AS term_starts, t.ends_on AS term_ends, \
         s.weekday AS weekday, s.start_time AS start_time, s.end_time AS end_time \
         FROM schedule_slot s JOIN course c ON c.id = s.course_id \
         JOIN term t ON t.id = s.term_id WHERE s.deleted_at IS NULL"
        .to_owned();
    let mut values = Vec::new();
    if let Some(weekday) = weekday {
        sql.push_str(" AND s.weekday = $1");
        values.push(weekday.into());
    }
    sql.push_str(" ORDER BY s.id");
    Ok(
        SlotFacts::find_by_statement(crate::service::sql::statement(backend, &sql, values))
            .all(db)
            .await?,
    )
}

/// Which classes a listing shows.
#[derive(Clone, Debug, Default)]
pub struct TimetableFilter {
    /// Only this course's classes.
    pub course_id: Option<i32>,
    /// Only classes of this teacher's courses.
    pub teacher_id: Option<i32>,
    /// Only classes on the device with this code.
    pub device_code: Option<String>,
}

impl Service {
    /// Every term, in date order.
    pub async fn terms(&self, actor: &Principal) -> AppResult<Vec<term::Model>> {
        access::require_person(actor)?;
        Ok(term::Entity::find()
            .order_by_asc(term::Column::StartsOn)
            .order_by_asc(term::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// The holidays of `term_ids`, in date order.
    pub async fn holidays_of(&self, term_ids: &[i32]) -> AppResult<Vec<holiday::Model>> {
        Ok(holiday::Entity::find()
            .filter(holiday::Column::TermId.is_in(term_ids.iter().copied()))
            .order_by_asc(holiday::Column::StartsOn)
            .all(&self.db)
            .await?)
    }

    /// Creates a term; its dates must be in order and its name unique (admins only).
    pub async fn create_term(
        &self,
        actor: &Principal,
        name: &str,
        starts_on: NaiveDate,
        ends_on: NaiveDate,
    ) -> AppResult<term::Model> {
        access::require_admin(actor)?;
        let name = required_text("name", name, 100)?;
        check_order("endsOn", starts_on, ends_on)?;
        term::ActiveModel {
            name: Set(name.clone()),
            starts_on: Set(starts_on),
            ends_on: Set(ends_on),
            created_at: Set(self.now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("name", &name))
    }

    /// Corrects a term; its holidays must still fall inside it (admins only).
    pub async fn update_term(
        &self,
        actor: &Principal,
        id: i32,
        name: Option<&str>,
        starts_on: Option<NaiveDate>,
        ends_on: Option<NaiveDate>,
    ) -> AppResult<term::Model> {
        access::require_admin(actor)?;
        let existing = term::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("term"))?;
        let name = match name {
            Some(name) => required_text("name", name, 100)?,
            None => existing.name.clone(),
        };
        let starts_on = starts_on.unwrap_or(existing.starts_on);
        let ends_on = ends_on.unwrap_or(existing.ends_on);
        check_order("endsOn", starts_on, ends_on)?;
        if let Some(outside) = self
            .holidays_of(&[id])
            .await?
            .into_iter()
            .find(|h| h.starts_on < starts_on || h.ends_on > ends_on)
        {
            return Err(AppError::invalid(
                if outside.starts_on < starts_on {
                    "startsOn"
                } else {
                    "endsOn"
                },
                format!("the holiday {:?} would fall outside the term", outside.name),
            ));
        }
        let mut active: term::ActiveModel = existing.into();
        active.name = Set(name.clone());
        active.starts_on = Set(starts_on);
        active.ends_on = Set(ends_on);
        active
            .update(&self.db)
            .await
            .map_err(conflict_on("name", &name))
    }

    /// Adds a holiday (one day when `ends_on` is omitted) inside its term (admins only).
    pub async fn add_holiday(
        &self,
        actor: &Principal,
        term_id: i32,
        name: &str,
        starts_on: NaiveDate,
        ends_on: Option<NaiveDate>,
    ) -> AppResult<holiday::Model> {
        access::require_admin(actor)?;
        let name = required_text("name", name, 100)?;
        let ends_on = ends_on.unwrap_or(starts_on);
        check_order("endsOn", starts_on, ends_on)?;
        let term = term::Entity::find_by_id(term_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::invalid("termId", "no term has this id"))?;
        if starts_on < term.starts_on || starts_on > term.ends_on {
            return Err(AppError::invalid("startsOn", "must fall inside the term"));
        }
        if ends_on > term.ends_on {
            return Err(AppError::invalid("endsOn", "must fall inside the term"));
        }
        let holiday = holiday::ActiveModel {
            term_id: Set(term_id),
            name: Set(name),
            starts_on: Set(starts_on),
            ends_on: Set(ends_on),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        self.timetable_changed();
        Ok(holiday)
    }

    /// Removes a holiday: its days' classes take place again (admins only).
    pub async fn remove_holiday(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        let deleted = holiday::Entity::delete_by_id(id).exec(&self.db).await?;
        if deleted.rows_affected == 0 {
            return Err(AppError::NotFound("holiday"));
        }
        self.timetable_changed();
        Ok(())
    }

    /// The live slots `actor` may see, optionally of one term or course: admins all,
    /// teachers their own courses'.
    pub async fn visible_schedule_slots(
        &self,
        actor: &Principal,
        term_id: Option<i32>,
        course_id: Option<i32>,
    ) -> AppResult<Vec<schedule_slot::Model>> {
        use schedule_slot::Column;
        let mut query = schedule_slot::Entity::find().filter(Column::DeletedAt.is_null());
        if let Some(id) = term_id {
            query = query.filter(Column::TermId.eq(id));
        }
        if let Some(id) = course_id {
            query = query.filter(Column::CourseId.eq(id));
        }
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query =
                query.filter(Column::CourseId.in_subquery(access::courses_taught_by(teacher_id)));
        }
        Ok(query
            .order_by_asc(Column::Weekday)
            .order_by_asc(Column::StartTime)
            .order_by_asc(Column::Id)
            .all(&self.db)
            .await?)
    }

    /// One slot by id (deleted ones too: their held classes still name them).
    pub async fn schedule_slot(&self, id: i32) -> AppResult<Option<schedule_slot::Model>> {
        Ok(schedule_slot::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Creates a weekly slot (admins only). Refused when it overlaps another slot of the
    /// same device or of the same teacher (CONFLICT naming that slot).
    pub async fn create_schedule_slot(
        &self,
        actor: &Principal,
        fields: SlotFields,
    ) -> AppResult<schedule_slot::Model> {
        access::require_admin(actor)?;
        let (slot, facts) = self.checked_slot(None, fields).await?;
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        self.refuse_overlap(&txn, &facts).await?;
        let created = slot.insert(&txn).await?;
        txn.commit().await?;
        self.timetable_changed();
        Ok(created)
    }

    /// Changes a slot (admins only). Classes already opened keep their sessions and times;
    /// the change applies to classes that open from now on.
    pub async fn update_schedule_slot(
        &self,
        actor: &Principal,
        id: i32,
        fields: SlotFields,
    ) -> AppResult<schedule_slot::Model> {
        access::require_admin(actor)?;
        let existing = self
            .schedule_slot(id)
            .await?
            .filter(|s| s.deleted_at.is_none())
            .ok_or(AppError::NotFound("schedule slot"))?;
        let (slot, facts) = self.checked_slot(Some(existing), fields).await?;
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        self.refuse_overlap(&txn, &facts).await?;
        let updated = slot.update(&txn).await?;
        txn.commit().await?;
        self.timetable_changed();
        Ok(updated)
    }

    /// Deletes a slot (admins only): no class of it opens from now on; classes already
    /// held, and one open now, keep their sessions.
    pub async fn delete_schedule_slot(&self, actor: &Principal, id: i32) -> AppResult<()> {
        access::require_admin(actor)?;
        let deleted = schedule_slot::Entity::update_many()
            .col_expr(schedule_slot::Column::DeletedAt, Expr::value(self.now()))
            .filter(schedule_slot::Column::Id.eq(id))
            .filter(schedule_slot::Column::DeletedAt.is_null())
            .exec(&self.writer)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(AppError::NotFound("schedule slot"));
        }
        self.timetable_changed();
        Ok(())
    }

    /// Validates `fields` over `existing` (all required for a new slot) into a row to write.
    async fn checked_slot(
        &self,
        existing: Option<schedule_slot::Model>,
        fields: SlotFields,
    ) -> AppResult<(schedule_slot::ActiveModel, SlotFacts)> {
        let required = |name: &str| AppError::invalid(name, "is required");
        let course_id = fields
            .course_id
            .or(existing.as_ref().map(|s| s.course_id))
            .ok_or_else(|| required("courseId"))?;
        let term_id = fields
            .term_id
            .or(existing.as_ref().map(|s| s.term_id))
            .ok_or_else(|| required("termId"))?;
        let weekday = fields
            .weekday
            .or(existing.as_ref().map(|s| s.weekday))
            .ok_or_else(|| required("weekday"))?;
        let start_time = fields
            .start_time
            .or(existing.as_ref().map(|s| s.start_time))
            .ok_or_else(|| required("startTime"))?;
        let end_time = fields
            .end_time
            .or(existing.as_ref().map(|s| s.end_time))
            .ok_or_else(|| required("endTime"))?;
        if !(1..=7).contains(&weekday) {
            return Err(AppError::invalid("weekday", "must be a day of the week"));
        }
        if end_time <= start_time {
            return Err(AppError::invalid("endTime", "must be after the start time"));
        }
        let course = self
            .course_row(course_id)
            .await?
            .ok_or_else(|| AppError::invalid("courseId", "no course has this id"))?;
        let term = term::Entity::find_by_id(term_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::invalid("termId", "no term has this id"))?;
        let device_id = match (&fields.device_code, &existing) {
            (Some(code), _) => {
                device::Entity::find()
                    .filter(device::Column::DeviceId.eq(code.trim()))
                    .one(&self.db)
                    .await?
                    .ok_or(AppError::NotFound("device"))?
                    .id
            }
            (None, Some(slot)) => slot.device_id,
            (None, None) => return Err(required("deviceId")),
        };
        let own_id = existing.as_ref().map(|s| s.id);
        let mut row: schedule_slot::ActiveModel = match existing {
            Some(slot) => slot.into(),
            None => schedule_slot::ActiveModel {
                created_at: Set(self.now()),
                deleted_at: Set(None),
                ..Default::default()
            },
        };
        row.course_id = Set(course_id);
        row.term_id = Set(term_id);
        row.device_id = Set(device_id);
        row.weekday = Set(weekday);
        row.start_time = Set(start_time);
        row.end_time = Set(end_time);
        let facts = SlotFacts {
            id: own_id,
            course_code: course.code,
            teacher_id: course.teacher_id,
            device_id,
            term_starts: term.starts_on,
            term_ends: term.ends_on,
            weekday,
            start_time,
            end_time,
        };
        Ok((row, facts))
    }

    /// Refuses `slot` when it clashes with another live slot ([`clash`]). Inside the write
    /// transaction; on PostgreSQL the device and teacher rows are locked first, so two
    /// clashing slots created at once cannot both pass.
    async fn refuse_overlap(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        facts: &SlotFacts,
    ) -> AppResult<()> {
        let backend = txn.get_database_backend();
        if backend == DbBackend::Postgres {
            for (table, id) in [("device", facts.device_id), ("teacher", facts.teacher_id)] {
                txn.execute_raw(crate::service::sql::statement(
                    backend,
                    &format!("SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE"),
                    vec![id.into()],
                ))
                .await?;
            }
        }
        let others = live_slot_facts(txn, Some(facts.weekday)).await?;
        match others.iter().find_map(|other| clash(facts, other)) {
            Some(conflict) => Err(conflict),
            None => Ok(()),
        }
    }

    /// Cancels one class of a slot (admins, or the course's teacher); repeating it is
    /// harmless. A class whose session has opened is not cancelled (CONFLICT): close it.
    pub async fn cancel_class(
        &self,
        actor: &Principal,
        slot_id: i32,
        date: NaiveDate,
        reason: Option<&str>,
    ) -> AppResult<Occurrence> {
        let slot = self
            .schedule_slot(slot_id)
            .await?
            .ok_or(AppError::NotFound("schedule slot"))?;
        let course = self
            .course_row(slot.course_id)
            .await?
            .ok_or(AppError::NotFound("course"))?;
        if access::scope(actor)? != Scope::All {
            access::require_course(actor, &course)?;
        }
        let reason = match reason.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => Some(required_text("reason", r, 500)?),
            None => None,
        };
        let filter = TimetableFilter {
            course_id: Some(slot.course_id),
            ..Default::default()
        };
        let calendar = self.calendar(date, date, &filter).await?;
        let mut occurrence = calendar
            .occurrences(
                self.config.time_zone,
                self.config.schedule_open_early,
                date,
                date,
                self.now(),
            )
            .into_iter()
            .find(|o| o.slot.id == slot_id)
            .ok_or_else(|| AppError::invalid("date", "the slot has no class on this date"))?;
        if occurrence.session.is_some() {
            return Err(AppError::rejected(
                Reason::ClassHeld,
                "the class has already opened; close its session instead",
            ));
        }
        if occurrence.cancellation.is_none() {
            let inserted = class_cancellation::ActiveModel {
                slot_id: Set(slot_id),
                date: Set(date),
                reason: Set(reason),
                created_by: Set(actor.user_id()),
                created_at: Set(self.now()),
                ..Default::default()
            }
            .insert(&self.writer)
            .await;
            let cancellation = match inserted {
                Ok(cancellation) => cancellation,
                // Someone cancelled it meanwhile: the same outcome, with their reason.
                Err(err) if crate::error::is_unique_violation(&err) => {
                    class_cancellation::Entity::find()
                        .filter(class_cancellation::Column::SlotId.eq(slot_id))
                        .filter(class_cancellation::Column::Date.eq(date))
                        .one(&self.db)
                        .await?
                        .ok_or(AppError::NotFound("class"))?
                }
                Err(err) => return Err(err.into()),
            };
            occurrence.cancellation = Some(cancellation);
            occurrence.status = OccurrenceStatus::Cancelled;
            self.timetable_changed();
        }
        Ok(occurrence)
    }

    /// Every class between `from` and `to` (local dates, both included), in time order:
    /// admins any, teachers only their own courses'. A constant number of statements,
    /// whatever the range and the number of slots.
    pub async fn timetable(
        &self,
        actor: &Principal,
        from: NaiveDate,
        to: NaiveDate,
        filter: TimetableFilter,
    ) -> AppResult<Vec<Occurrence>> {
        let filter = scoped(actor, filter)?;
        check_range(from, to)?;
        let calendar = self.calendar(from, to, &filter).await?;
        let classes = calendar.occurrences(
            self.config.time_zone,
            self.config.schedule_open_early,
            from,
            to,
            self.now(),
        );
        Ok(sessions_seen_by(actor, classes))
    }

    /// Past classes whose attendance was not taken: no session ever opened, or it closed
    /// without a single scan. Admins see all, teachers their own courses'.
    pub async fn attendance_not_taken(
        &self,
        actor: &Principal,
        from: NaiveDate,
        to: NaiveDate,
    ) -> AppResult<Vec<Occurrence>> {
        let filter = scoped(actor, TimetableFilter::default())?;
        check_range(from, to)?;
        let calendar = self.calendar(from, to, &filter).await?;
        let now = self.now();
        let classes = calendar.occurrences(
            self.config.time_zone,
            self.config.schedule_open_early,
            from,
            to,
            now,
        );
        let held = || {
            Query::select()
                .column(attendance_session::Column::Id)
                .from(attendance_session::Entity)
                .and_where(Expr::col(attendance_session::Column::SlotId).is_not_null())
                .and_where(Expr::col(attendance_session::Column::Date).gte(from))
                .and_where(Expr::col(attendance_session::Column::Date).lte(to))
                .to_owned()
        };
        // Attendance was taken where a terminal scanned someone or a person set a status.
        let scanned = attendance_record::Entity::find()
            .select_only()
            .column(attendance_record::Column::SessionId)
            .distinct()
            .filter(attendance_record::Column::Source.eq(crate::entities::RecordSource::Scan))
            .filter(attendance_record::Column::SessionId.in_subquery(held()))
            .into_tuple::<i32>()
            .all(&self.db)
            .await?;
        let edited = record_change::Entity::find()
            .select_only()
            .column(record_change::Column::SessionId)
            .distinct()
            .filter(record_change::Column::Kind.eq(crate::entities::ChangeKind::Edit))
            .filter(record_change::Column::SessionId.in_subquery(held()))
            .into_tuple::<i32>()
            .all(&self.db)
            .await?;
        let taken: HashSet<i32> = scanned.into_iter().chain(edited).collect();
        let classes = classes
            .into_iter()
            .filter(|o| match o.status {
                OccurrenceStatus::Missed => true,
                OccurrenceStatus::Closed => {
                    o.session.as_ref().is_some_and(|s| !taken.contains(&s.id))
                }
                _ => false,
            })
            .collect();
        Ok(sessions_seen_by(actor, classes))
    }

    /// The rows the classes between `from` and `to` are computed from, in five statements.
    pub(crate) async fn calendar(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        filter: &TimetableFilter,
    ) -> AppResult<Calendar> {
        use schedule_slot::Column;
        let mut slots = schedule_slot::Entity::find().filter(
            Column::TermId.in_subquery(
                Query::select()
                    .column(term::Column::Id)
                    .from(term::Entity)
                    .and_where(Expr::col(term::Column::StartsOn).lte(to))
                    .and_where(Expr::col(term::Column::EndsOn).gte(from))
                    .to_owned(),
            ),
        );
        if let Some(id) = filter.course_id {
            slots = slots.filter(Column::CourseId.eq(id));
        }
        if let Some(teacher_id) = filter.teacher_id {
            slots =
                slots.filter(Column::CourseId.in_subquery(access::courses_taught_by(teacher_id)));
        }
        if let Some(code) = &filter.device_code {
            slots = slots.filter(
                Column::DeviceId.in_subquery(
                    Query::select()
                        .column(device::Column::Id)
                        .from(device::Entity)
                        .and_where(Expr::col(device::Column::DeviceId).eq(code.trim()))
                        .to_owned(),
                ),
            );
        }
        let slots = slots.all(&self.db).await?;
        let terms: HashMap<i32, term::Model> = term::Entity::find()
            .filter(term::Column::StartsOn.lte(to))
            .filter(term::Column::EndsOn.gte(from))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let holidays = holiday::Entity::find()
            .filter(holiday::Column::StartsOn.lte(to))
            .filter(holiday::Column::EndsOn.gte(from))
            .all(&self.db)
            .await?;
        let cancellations = class_cancellation::Entity::find()
            .filter(class_cancellation::Column::Date.gte(from))
            .filter(class_cancellation::Column::Date.lte(to))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| ((c.slot_id, c.date), c))
            .collect();
        let sessions = attendance_session::Entity::find()
            .filter(attendance_session::Column::SlotId.is_not_null())
            .filter(attendance_session::Column::Date.gte(from))
            .filter(attendance_session::Column::Date.lte(to))
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|s| s.slot_id.map(|slot| ((slot, s.date), s)))
            .collect();
        Ok(Calendar {
            slots,
            terms,
            holidays,
            cancellations,
            sessions,
        })
    }

    /// Wakes this process's scheduler: the timetable changed.
    pub(crate) fn timetable_changed(&self) {
        self.schedule_wake.notify_one();
    }
}

/// A teacher's listings are narrowed to their own courses; devices see nothing.
fn scoped(actor: &Principal, filter: TimetableFilter) -> AppResult<TimetableFilter> {
    Ok(match access::scope(actor)? {
        Scope::All => filter,
        Scope::Teacher(teacher_id) => {
            if filter.teacher_id.is_some_and(|t| t != teacher_id) {
                return Err(AppError::Forbidden);
            }
            TimetableFilter {
                teacher_id: Some(teacher_id),
                ..filter
            }
        }
    })
}

fn check_order(field: &str, from: NaiveDate, to: NaiveDate) -> AppResult<()> {
    if to < from {
        return Err(AppError::invalid(field, "must not be before the start"));
    }
    Ok(())
}

fn check_range(from: NaiveDate, to: NaiveDate) -> AppResult<()> {
    check_order("to", from, to)?;
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(AppError::invalid(
            "to",
            format!("the range may cover at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(())
}

/// The weekday's name as the API spells it.
pub fn weekday_name(weekday: i16) -> &'static str {
    match weekday {
        1 => "MONDAY",
        2 => "TUESDAY",
        3 => "WEDNESDAY",
        4 => "THURSDAY",
        5 => "FRIDAY",
        6 => "SATURDAY",
        _ => "SUNDAY",
    }
}

/// The next instant anything of the timetable is due after `now`: a class to open or a
/// session to close.
pub(crate) fn next_due(
    classes: &[Occurrence],
    earliest_close: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    classes
        .iter()
        .filter(|o| o.status == OccurrenceStatus::Scheduled && o.opens_at > now)
        .map(|o| o.opens_at)
        .chain(earliest_close.filter(|at| *at > now))
        .min()
}

/// The classes as `actor` may see them: a session is its creator's (and admins'), so a
/// teacher who took over a course sees its earlier classes without their sessions.
fn sessions_seen_by(actor: &Principal, mut classes: Vec<Occurrence>) -> Vec<Occurrence> {
    for class in &mut classes {
        if class
            .session
            .as_ref()
            .is_some_and(|s| !access::may_see_session(actor, s))
        {
            class.session = None;
        }
    }
    classes
}
