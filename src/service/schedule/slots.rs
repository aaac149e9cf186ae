//! Weekly slots: a course on a device at a time of the week in a term, THE overlap rule
//! (one device, one teacher, one class at a time), and cancelled classes.

use chrono::NaiveDate;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};

use super::occurrences::{Occurrence, OccurrenceStatus};
use super::{SlotFacts, SlotFields, TimetableFilter, clash, live_slot_facts};
use crate::auth::Principal;
use crate::entities::{class_cancellation, device, schedule_slot, term};
use crate::error::{AppError, AppResult, Reason};
use crate::service::access::{self, Scope};
use crate::service::sql::write_transaction;
use crate::service::{Service, required_text};

impl Service {
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
}
