//! The timetable (SPEC 8.2): terms and their holidays, weekly slots, cancelled classes,
//! the listing of classes in a range, and (in `scheduler`) classes that open and close
//! their sessions by themselves.

pub mod import;
pub mod occurrences;
pub mod scheduler;
mod slots;
mod terms;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
};

use self::occurrences::{Calendar, Occurrence, OccurrenceStatus};
use crate::auth::Principal;
use crate::entities::{
    attendance_record, attendance_session, class_cancellation, device, holiday, record_change,
    schedule_slot, term,
};
use crate::error::{AppError, AppResult, Reason};
use crate::service::Service;
use crate::service::access::{self, Scope};

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
pub(super) fn scoped(actor: &Principal, filter: TimetableFilter) -> AppResult<TimetableFilter> {
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

pub(super) fn check_order(field: &str, from: NaiveDate, to: NaiveDate) -> AppResult<()> {
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
