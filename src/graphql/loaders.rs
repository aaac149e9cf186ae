//! Batched loading of relations: one `is_in(keys)` query per relation and request, so a
//! query's statement count does not grow with the rows it returns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use async_graphql::dataloader::{DataLoader, Loader};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::entities::{
    attendance_session, course, course_section, dep_batch, device, holiday, record_change,
    schedule_slot, section, student, teacher, term, terminal_stamp, user,
};
use crate::error::AppError;
use crate::service::Service;
use crate::service::roll_call::records::RecordWithStudent;
use crate::service::roll_call::sessions::SessionCounts;

/// The per-request loader; one instance serves every key type below.
pub struct Db(Service);

/// Builds the loader for one request (its cache must not outlive the request), with the
/// task queue its batches run on.
pub fn request_loader(service: Service) -> (DataLoader<Db>, RequestTasks) {
    let tasks = RequestTasks::default();
    let spawner = tasks.clone();
    let loader =
        DataLoader::new(Db(service), move |task| spawner.push(task)).max_batch_size(100_000);
    (loader, tasks)
}

/// A loader for a WebSocket connection, whose events resolve one at a time.
pub fn connection_loader(service: Service) -> DataLoader<Db> {
    DataLoader::new(Db(service), tokio::spawn)
}

/// The loader's batch tasks, run by [`drive`] inside the request's own task instead of on
/// the runtime. A batch's timer can then only fire between two polls of the query, never in
/// the middle of one, so every key a list registers in one pass lands in the same batch
/// whatever the machine's speed.
#[derive(Clone, Default)]
pub struct RequestTasks(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

impl RequestTasks {
    fn push(&self, task: BoxFuture<'static, ()>) {
        if let Ok(mut queue) = self.0.lock() {
            queue.push(task);
        }
    }

    fn take(&self) -> Vec<BoxFuture<'static, ()>> {
        self.0
            .lock()
            .map(|mut queue| std::mem::take(&mut *queue))
            .unwrap_or_default()
    }
}

/// Runs `main` (the query) together with the loader tasks it spawns, in one task.
///
/// Large lists resolve their items in several polls (futures yield every few dozen
/// items), so the query is polled again for as long as it wakes itself, and the loader
/// tasks only when it waits for something else: by then every key is registered.
pub async fn drive<F: Future>(tasks: RequestTasks, main: F) -> F::Output {
    let mut main = std::pin::pin!(main);
    let mut running: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let woke = Arc::new(SelfWake::default());
    std::future::poll_fn(move |cx| {
        let waker = Waker::from(woke.clone());
        if let Ok(mut outer) = woke.outer.lock() {
            outer.clone_from(cx.waker());
        }
        for _ in 0..MAX_QUERY_POLLS {
            woke.flag.store(false, Ordering::SeqCst);
            if let Poll::Ready(output) = main.as_mut().poll(&mut Context::from_waker(&waker)) {
                return Poll::Ready(output);
            }
            if !woke.flag.load(Ordering::SeqCst) {
                break;
            }
        }
        loop {
            running.extend(tasks.take());
            while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
            let spawned = tasks.take();
            if spawned.is_empty() {
                break;
            }
            running.extend(spawned);
        }
        Poll::Pending
    })
    .await
}

/// How often the query may be re-polled in one turn before the runtime gets the thread back.
const MAX_QUERY_POLLS: usize = 4096;

/// A waker that remembers whether the query woke itself, then passes the wake on.
struct SelfWake {
    flag: AtomicBool,
    outer: Mutex<Waker>,
}

impl Default for SelfWake {
    fn default() -> Self {
        Self {
            flag: AtomicBool::new(false),
            outer: Mutex::new(Waker::noop().clone()),
        }
    }
}

impl Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::SeqCst);
        if let Ok(outer) = self.outer.lock() {
            outer.wake_by_ref();
        }
    }
}

macro_rules! by_id {
    ($key:ident, $entity:ident) => {
        /// Loads one row by primary key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $key(pub i32);

        impl Loader<$key> for Db {
            type Value = $entity::Model;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> Result<HashMap<$key, Self::Value>, Self::Error> {
                let rows = $entity::Entity::find()
                    .filter($entity::Column::Id.is_in(keys.iter().map(|k| k.0)))
                    .all(&self.0.db)
                    .await
                    .map_err(|e| AppError::from(e).into_graphql())?;
                Ok(rows.into_iter().map(|row| ($key(row.id), row)).collect())
            }
        }
    };
}

macro_rules! group_by {
    ($key:ident, $entity:ident, $column:ident, $field:ident) => {
        /// Loads every row whose foreign key matches, in id order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $key(pub i32);

        impl Loader<$key> for Db {
            type Value = Vec<$entity::Model>;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> Result<HashMap<$key, Self::Value>, Self::Error> {
                let rows = $entity::Entity::find()
                    .filter($entity::Column::$column.is_in(keys.iter().map(|k| k.0)))
                    .order_by_asc($entity::Column::Id)
                    .all(&self.0.db)
                    .await
                    .map_err(|e| AppError::from(e).into_graphql())?;
                let mut groups: HashMap<$key, Self::Value> =
                    keys.iter().map(|k| (*k, Vec::new())).collect();
                for row in rows {
                    groups.entry($key(row.$field)).or_default().push(row);
                }
                Ok(groups)
            }
        }
    };
}

by_id!(StudentById, student);
by_id!(SectionById, section);
by_id!(DepBatchById, dep_batch);
by_id!(TeacherById, teacher);
by_id!(CourseById, course);
by_id!(SessionById, attendance_session);
by_id!(DeviceById, device);
by_id!(UserById, user);
by_id!(TermById, term);
by_id!(SlotById, schedule_slot);

group_by!(StudentsOfSection, student, SectionId, section_id);
group_by!(SectionsOfDepBatch, section, DepBatchId, dep_batch_id);
group_by!(CoursesOfTeacher, course, TeacherId, teacher_id);
group_by!(SessionsOfCourse, attendance_session, CourseId, course_id);
group_by!(ChangesOfRecord, record_change, RecordId, record_id);
group_by!(StampsOfTerminal, terminal_stamp, DeviceId, device_id);
group_by!(HolidaysOfTerm, holiday, TermId, term_id);

/// The records of a session with their students, joined in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordsOfSession(pub i32);

impl Loader<RecordsOfSession> for Db {
    type Value = Vec<RecordWithStudent>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[RecordsOfSession],
    ) -> Result<HashMap<RecordsOfSession, Self::Value>, Self::Error> {
        let ids: Vec<i32> = keys.iter().map(|k| k.0).collect();
        let rows = self
            .0
            .records_of_sessions(&ids)
            .await
            .map_err(AppError::into_graphql)?;
        let mut groups: HashMap<RecordsOfSession, Self::Value> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for row in rows {
            groups
                .entry(RecordsOfSession(row.0.session_id))
                .or_default()
                .push(row);
        }
        Ok(groups)
    }
}

/// The section ids of a course.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SectionIdsOfCourse(pub i32);

impl Loader<SectionIdsOfCourse> for Db {
    type Value = Vec<i32>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[SectionIdsOfCourse],
    ) -> Result<HashMap<SectionIdsOfCourse, Self::Value>, Self::Error> {
        let rows = course_section::Entity::find()
            .filter(course_section::Column::CourseId.is_in(keys.iter().map(|k| k.0)))
            .order_by_asc(course_section::Column::SectionId)
            .all(&self.0.db)
            .await
            .map_err(|e| AppError::from(e).into_graphql())?;
        let mut groups: HashMap<SectionIdsOfCourse, Vec<i32>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for row in rows {
            groups
                .entry(SectionIdsOfCourse(row.course_id))
                .or_default()
                .push(row.section_id);
        }
        Ok(groups)
    }
}

/// The counts of a session (keyed by the whole row: counts depend on its course and state).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CountsOfSession(pub attendance_session::Model);

impl Loader<CountsOfSession> for Db {
    type Value = SessionCounts;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[CountsOfSession],
    ) -> Result<HashMap<CountsOfSession, Self::Value>, Self::Error> {
        let sessions: Vec<attendance_session::Model> = keys.iter().map(|k| k.0.clone()).collect();
        let mut counts = self
            .0
            .session_counts(&sessions)
            .await
            .map_err(AppError::into_graphql)?;
        Ok(keys
            .iter()
            .filter_map(|k| counts.remove(&k.0.id).map(|c| (k.clone(), c)))
            .collect())
    }
}

/// The login account of a teacher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserOfTeacher(pub i32);

impl Loader<UserOfTeacher> for Db {
    type Value = user::Model;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[UserOfTeacher],
    ) -> Result<HashMap<UserOfTeacher, Self::Value>, Self::Error> {
        let rows = user::Entity::find()
            .filter(user::Column::TeacherId.is_in(keys.iter().map(|k| k.0)))
            .all(&self.0.db)
            .await
            .map_err(|e| AppError::from(e).into_graphql())?;
        Ok(rows
            .into_iter()
            .filter_map(|u| u.teacher_id.map(|t| (UserOfTeacher(t), u)))
            .collect())
    }
}
