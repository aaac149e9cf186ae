//! Classes that open and close themselves. Each run closes the sessions whose end has
//! passed, then opens every class whose opening time has come and whose end has not:
//! a server that was down opens the classes still running when it returns, and a class
//! that ended meanwhile stays MISSED. The database decides what happens once: a session's
//! (slot, date) is unique, so of several processes one opens each class, and a class that
//! finds its device busy is noted once, for `attendanceNotTaken` and the metric.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set};

use crate::entities::{attendance_session, class_not_opened, course, device};
use crate::error::{AppResult, is_unique_violation};
use crate::service::Service;
use crate::service::attendance::session::{self, Opening};
use crate::service::schedule::occurrences::{Occurrence, OccurrenceStatus};
use crate::service::schedule::{TimetableFilter, next_due};
use tokio::sync::watch;

/// What one run of the scheduler did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleRun {
    /// Sessions it closed.
    pub closed: usize,
    /// Classes whose session it opened.
    pub opened: usize,
    /// Classes it found unable to open (device busy or revoked), noted by this run.
    pub not_opened: usize,
    /// When the next class opens or session closes, if known.
    pub next_due: Option<DateTime<Utc>>,
}

/// Why a class did not open.
const DEVICE_BUSY: &str = "device_busy";
const DEVICE_REVOKED: &str = "device_revoked";

impl Service {
    /// Closes due sessions and opens due classes, once, at the clock's now.
    pub async fn run_schedule(&self) -> AppResult<ScheduleRun> {
        let closed = self.close_due_sessions().await?;
        let now = self.now();
        let today = self.local_today();
        // A class early after midnight opens the evening before.
        let tomorrow = today + Duration::days(1);
        let calendar = self
            .calendar(today, tomorrow, &TimetableFilter::default())
            .await?;
        let classes = calendar.occurrences(
            self.config.time_zone,
            self.config.schedule_open_early,
            today,
            tomorrow,
            now,
        );
        let due: Vec<Occurrence> = classes
            .iter()
            .filter(|o| o.status == OccurrenceStatus::Scheduled)
            .filter(|o| o.opens_at <= now && now < o.ends_at)
            .cloned()
            .collect();
        let mut run = ScheduleRun {
            closed,
            ..Default::default()
        };
        if !due.is_empty() {
            let teachers: HashMap<i32, i32> = course::Entity::find()
                .select_only()
                .column(course::Column::Id)
                .column(course::Column::TeacherId)
                .filter(course::Column::Id.is_in(due.iter().map(|o| o.slot.course_id)))
                .into_tuple::<(i32, i32)>()
                .all(&self.db)
                .await?
                .into_iter()
                .collect();
            let active_devices: HashMap<i32, bool> = device::Entity::find()
                .select_only()
                .column(device::Column::Id)
                .column(device::Column::IsActive)
                .filter(device::Column::Id.is_in(due.iter().map(|o| o.slot.device_id)))
                .into_tuple::<(i32, bool)>()
                .all(&self.db)
                .await?
                .into_iter()
                .collect();
            // Classes open independently.
            let parallel = session::parallel_writes(self.db.get_database_backend());
            let openings = due.into_iter().map(|class| {
                let teacher = teachers.get(&class.slot.course_id).copied();
                let active = active_devices.get(&class.slot.device_id).copied();
                let service = self.clone();
                async move { service.open_class(&class, teacher, active, now).await }
            });
            let outcomes: Vec<AppResult<ClassOpening>> = futures_util::stream::iter(openings)
                .buffer_unordered(parallel)
                .collect()
                .await;
            for outcome in outcomes {
                match outcome? {
                    ClassOpening::Opened => run.opened += 1,
                    ClassOpening::NotOpened => run.not_opened += 1,
                    ClassOpening::Nothing => {}
                }
            }
        }
        let earliest_close: Option<DateTime<Utc>> = attendance_session::Entity::find()
            .select_only()
            .column_as(attendance_session::Column::ClosesAt.min(), "closes_at")
            .filter(attendance_session::Column::IsActive.eq(true))
            .into_tuple::<Option<DateTime<Utc>>>()
            .one(&self.db)
            .await?
            .flatten();
        run.next_due = next_due(&classes, earliest_close, now);
        if run.opened + run.not_opened + run.closed > 0 {
            tracing::info!(
                opened = run.opened,
                not_opened = run.not_opened,
                closed = run.closed,
                "timetable run"
            );
        }
        Ok(run)
    }

    /// Opens one due class's session, unless another process did, its device is bound to
    /// another active session, or its device is revoked.
    async fn open_class(
        &self,
        class: &Occurrence,
        teacher: Option<i32>,
        device_active: Option<bool>,
        now: DateTime<Utc>,
    ) -> AppResult<ClassOpening> {
        let Some(teacher) = teacher else {
            return Ok(ClassOpening::Nothing);
        };
        if device_active != Some(true) {
            return self.note_not_opened(class, DEVICE_REVOKED, now).await;
        }
        let inserted = session::open(
            &self.writer,
            Opening {
                course_id: class.slot.course_id,
                date: class.date,
                created_by: teacher,
                device_id: class.slot.device_id,
                at: now,
                starts_at: class.starts_at,
                grace_minutes: self.config.late_grace_minutes as i32,
                closes_at: class.ends_at,
                slot_id: Some(class.slot.id),
            },
        )
        .await;
        match inserted {
            Ok(_) => {
                self.metrics.class_opened();
                Ok(ClassOpening::Opened)
            }
            Err(err) if is_unique_violation(&err) => {
                let opened_elsewhere = attendance_session::Entity::find()
                    .filter(attendance_session::Column::SlotId.eq(class.slot.id))
                    .filter(attendance_session::Column::Date.eq(class.date))
                    .one(&self.db)
                    .await?
                    .is_some();
                if opened_elsewhere {
                    Ok(ClassOpening::Nothing)
                } else {
                    self.note_not_opened(class, DEVICE_BUSY, now).await
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Notes once, across processes, that a class could not open.
    async fn note_not_opened(
        &self,
        class: &Occurrence,
        reason: &'static str,
        now: DateTime<Utc>,
    ) -> AppResult<ClassOpening> {
        let noted = class_not_opened::ActiveModel {
            slot_id: Set(class.slot.id),
            date: Set(class.date),
            reason: Set(reason.to_owned()),
            at: Set(now),
            ..Default::default()
        }
        .insert(&self.writer)
        .await;
        match noted {
            Ok(_) => {
                self.metrics.class_not_opened(reason);
                tracing::warn!(
                    slot_id = class.slot.id,
                    date = %class.date,
                    reason,
                    "a timetable class could not open"
                );
                Ok(ClassOpening::NotOpened)
            }
            Err(err) if is_unique_violation(&err) => Ok(ClassOpening::Nothing),
            Err(err) => Err(err.into()),
        }
    }
}

/// What trying to open one class came to.
enum ClassOpening {
    Opened,
    NotOpened,
    Nothing,
}

/// Runs the timetable after the start-up run: sleeps until the next class opens or session
/// closes (so both happen within moments of their time, not at the next sweep), at most
/// `AUTO_CLOSE_INTERVAL_SECONDS` so that what other processes changed is seen too, then
/// closes due sessions and opens due classes. It wakes early when this process changes the
/// timetable, or when a test moves the clock.
pub async fn run(
    service: Service,
    mut stop: watch::Receiver<bool>,
    mut next_due: Option<chrono::DateTime<chrono::Utc>>,
) {
    let cap = service.config.auto_close_interval;
    let mut moves = service.clock.watch();
    loop {
        let wait = next_due.map_or(cap, |at| service.clock.until(at).min(cap));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = moves.moved() => {}
            _ = service.schedule_wake.notified() => {}
            _ = stop.changed() => break,
        }
        next_due = match service.run_schedule().await {
            Ok(run) => run.next_due,
            Err(e) => {
                tracing::warn!(error = %e, "the timetable run failed; will retry");
                None
            }
        };
    }
}
