//! The domain: every rule and every transaction, shared by GraphQL, the REST shim, the
//! terminals' protocol and the CLI. Grouped by what the product does; each folder says in
//! its own module comment what it owns and what it may import. From the bottom up:
//!
//! - [`access`], [`sql`] and this module (the [`Service`] handle, pages, time and text
//!   helpers): plumbing every context uses; they import no context.
//! - [`attendance`]: THE attendance core, what a session, a record, an absence and an
//!   excuse's coverage are. A leaf: it imports only entities, errors and [`sql`].
//! - [`accounts`], [`directory`]: who logs in; the school's people, courses and devices.
//! - [`integrations`]: what a change to attendance sets off (warnings, webhooks).
//! - [`roll_call`]: sessions opened and closed, scans, edits and excuses; uses the core and
//!   the integrations.
//! - [`reports`], [`schedule`], [`terminals`]: read attendance, open classes by the
//!   timetable, and speak with face terminals; they use the roll call.
//!
//! Service methods live on [`Service`], so a context calls another's method without an
//! import; imports run only downward in the list above.

pub mod access;
pub mod accounts;
pub mod attendance;
pub mod directory;
pub mod integrations;
pub mod reports;
pub mod roll_call;
pub mod schedule;
pub(crate) mod sql;
pub mod terminals;

use std::sync::Arc;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use sea_orm::DatabaseConnection;

use crate::auth::jwt::JwtKeys;
use crate::clock::Clock;
use crate::config::Config;
use crate::db::Pools;
use crate::error::{AppError, AppResult};
use crate::events::EventBus;
use crate::metrics::Metrics;

/// The largest page any list returns.
pub const MAX_PAGE_SIZE: u64 = 100;
/// The page size when the client names none.
pub const DEFAULT_PAGE_SIZE: u64 = 20;

/// The domain services. A handle: clones (one per request, loader and job) share one
/// [`Shared`], so cloning costs one reference count.
#[derive(Clone)]
pub struct Service(Arc<Shared>);

/// What every [`Service`] handle shares: database, configuration, keys, caches.
pub struct Shared {
    /// The connection pool.
    pub db: DatabaseConnection,
    /// The pool for the hot write paths (scans, closes, edits). On SQLite it is a single
    /// connection, so writers queue in the pool instead of sleeping in SQLite's busy
    /// handler; on PostgreSQL it is the same pool as `db`.
    pub writer: DatabaseConnection,
    /// The server's configuration.
    pub config: Arc<Config>,
    jwt: JwtKeys,
    devices: accounts::auth::DeviceCache,
    last_seen: roll_call::scan::LastSeen,
    /// Live events of sessions, for subscribers in this and other processes.
    pub events: EventBus,
    limiter: accounts::limiter::LoginLimiter,
    batcher: Option<roll_call::scan::batcher::ScanBatcher>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Attendance time: the system clock, or the tests' own.
    pub clock: Clock,
    /// Wakes the scheduler when this process changed the timetable.
    pub schedule_wake: tokio::sync::Notify,
    /// Wakes the webhook worker when this process wrote deliveries.
    pub webhook_wake: tokio::sync::Notify,
    /// The client webhook deliveries are posted with, or why it could not be built; made
    /// at the worker's first look (a server without webhooks keeps its TLS roots and
    /// connection pool out of memory). The build depends only on the configuration, so its
    /// outcome is kept: a failure halts deliveries until a restart, never falls back.
    webhook_client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    /// Seals webhook signing secrets at rest under a key derived from `SECRET_KEY`.
    pub webhook_secrets: integrations::webhooks::secret::SecretBox,
}

impl std::ops::Deref for Service {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Service {
    /// Services over `db` configured by `config`.
    pub fn new(pools: Pools, config: Arc<Config>) -> Self {
        Self::with_clock(pools, config, Clock::system())
    }

    /// Services whose attendance time (sessions, scans, the timetable) reads `clock`.
    pub fn with_clock(pools: Pools, config: Arc<Config>, clock: Clock) -> Self {
        let Pools {
            db,
            writer,
            statements,
        } = pools;
        let jwt = JwtKeys::new(&config.secret_key);
        let events = EventBus::new(!config.is_sqlite());
        // SQLite has one writer and cheap commits; group commit pays off on PostgreSQL.
        let metrics = Arc::new(Metrics::default());
        let batcher = (writer.get_database_backend() == sea_orm::DbBackend::Postgres).then(|| {
            roll_call::scan::batcher::ScanBatcher::start(
                writer.get_postgres_connection_pool().clone(),
                metrics.clone(),
                statements,
            )
        });
        let limiter = accounts::limiter::LoginLimiter::new(
            config.login_max_failures,
            config.login_max_failures_per_address,
            config.login_lockout,
        );
        Self(Arc::new(Shared {
            db,
            writer,
            jwt,
            devices: accounts::auth::DeviceCache::default(),
            last_seen: roll_call::scan::LastSeen::default(),
            events,
            limiter,
            batcher,
            metrics,
            clock,
            schedule_wake: tokio::sync::Notify::new(),
            webhook_wake: tokio::sync::Notify::new(),
            webhook_client: std::sync::OnceLock::new(),
            webhook_secrets: integrations::webhooks::secret::SecretBox::new(&config.secret_key),
            config,
        }))
    }

    /// The school's local date and time for `now`.
    pub fn local_today(&self) -> NaiveDate {
        self.now()
            .with_timezone(&self.config.time_zone)
            .date_naive()
    }

    /// The client webhook deliveries are posted with; an error when it cannot be built as
    /// configured, and then no delivery is attempted (they stay pending).
    pub fn webhook_client(&self) -> AppResult<&reqwest::Client> {
        self.webhook_client
            .get_or_init(|| {
                integrations::webhooks::client::build(
                    self.config.webhook_allow_private,
                    self.config.webhook_timeout,
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| AppError::Internal(e.clone()))
    }

    /// Sets the outcome of the delivery client's build before the worker first builds it;
    /// false when it was built already. Tests use it to reach the fail-closed path, which a
    /// sound configuration never takes.
    #[doc(hidden)]
    pub fn preset_webhook_client(&self, client: Result<reqwest::Client, String>) -> bool {
        self.webhook_client.set(client).is_ok()
    }

    /// The current instant of attendance time, to the microsecond.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Reads a local date and time in `TIME_ZONE` as a UTC instant. In the repeated hour of
    /// a DST change the earlier instant wins; a time skipped by a DST change is invalid.
    pub fn local_to_utc(&self, date: NaiveDate, time: NaiveTime) -> AppResult<DateTime<Utc>> {
        local_to_utc_in(self.config.time_zone, date, time)
    }
}

/// Reads a local date and time in `zone` as a UTC instant (earlier instant in a repeated
/// hour; a skipped hour is invalid).
pub fn local_to_utc_in(zone: Tz, date: NaiveDate, time: NaiveTime) -> AppResult<DateTime<Utc>> {
    match zone.from_local_datetime(&date.and_time(time)) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Ok(earlier.with_timezone(&Utc)),
        LocalResult::None => Err(AppError::invalid(
            "time",
            format!("{date} {time} does not exist in {zone} (daylight-saving change)"),
        )),
    }
}

/// Runs `work` at once and then every `period` until `stop` changes: the shape of the
/// background jobs each context keeps beside the work it does.
pub(crate) async fn every<Fut>(
    period: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut work: impl FnMut() -> Fut,
) where
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => work().await,
            _ = stop.changed() => break,
        }
    }
}

/// Runs of one statement or transaction before a lock conflict is reported (as UNAVAILABLE).
const LOCK_CONFLICT_RUNS: u32 = 3;

/// Runs `work` again while the database aborts it to break a deadlock or a serialization
/// conflict: it rolled the work back whole, so another run is safe. Each conflict is counted
/// under `operation` (one of [`crate::metrics::LOCK_CONFLICT_OPERATIONS`]).
pub(crate) async fn retry_lock_conflicts<T, E, Fut>(
    metrics: &Metrics,
    operation: &'static str,
    is_conflict: impl Fn(&E) -> bool,
    mut work: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut run = 1;
    loop {
        match work().await {
            Err(e) if is_conflict(&e) => {
                metrics.lock_conflict(operation);
                if run == LOCK_CONFLICT_RUNS {
                    return Err(e);
                }
                tracing::warn!(error = %e, operation, run, "aborted by a lock conflict; retrying");
                run += 1;
            }
            other => return other,
        }
    }
}

/// The current instant at the databases' common precision (microseconds), so a value
/// written and read back compares equal on SQLite and PostgreSQL.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The current instant in epoch milliseconds: how state shared by server processes (login
/// throttles, terminal leases) stores time, so its arithmetic is plain integer arithmetic on
/// both databases. Processes' clocks must agree, as they must for token expiry.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// A request for one page of a list, keyed on ascending ids.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    /// How many items to return.
    pub first: u64,
    /// Return items after this id.
    pub after: Option<i32>,
}

impl PageRequest {
    /// Validates the client's `first` and `after`.
    pub fn new(first: Option<i32>, after: Option<&str>) -> AppResult<Self> {
        let first = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if n >= 0 && (n as u64) <= MAX_PAGE_SIZE => n as u64,
            Some(_) => {
                return Err(AppError::invalid(
                    "first",
                    format!("must be between 0 and {MAX_PAGE_SIZE}"),
                ));
            }
        };
        let after = after
            .map(|cursor| {
                decode_cursor(cursor)
                    .ok_or_else(|| AppError::invalid("after", "is not a cursor from this API"))
            })
            .transpose()?;
        Ok(Self { first, after })
    }
}

/// One page of a list, with what Relay connections need.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// True when more items follow.
    pub has_next_page: bool,
    /// The number of items matching the filters, over all pages.
    pub total_count: u64,
}

/// The opaque cursor of an item id.
pub fn encode_cursor(id: i32) -> String {
    format!("c{id}")
}

fn decode_cursor(cursor: &str) -> Option<i32> {
    cursor.strip_prefix('c')?.parse().ok()
}

/// Parses a GraphQL `ID` that must be a row id.
pub fn parse_id(field: &str, id: &str) -> AppResult<i32> {
    id.trim()
        .parse::<i32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AppError::invalid(field, "is not a valid id"))
}

/// Trims a required text field and checks its length.
pub fn required_text(field: &str, value: &str, max: usize) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// A code such as a student, teacher, course or device code: no spaces, at most 64 characters.
pub fn code_text(field: &str, value: &str) -> AppResult<String> {
    let value = required_text(field, value, 64)?;
    if value.chars().any(char::is_whitespace) {
        return Err(AppError::invalid(field, "must not contain spaces"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A `work` that fails with `errors` in turn, then succeeds.
    async fn run_with(errors: &[&'static str]) -> (Result<u32, &'static str>, u32, u64) {
        let metrics = Metrics::default();
        let runs = Cell::new(0);
        let result = retry_lock_conflicts(
            &metrics,
            "scan_batch",
            |e: &&str| *e == "deadlock",
            || {
                let run = runs.get();
                runs.set(run + 1);
                let outcome = errors.get(run as usize).map_or(Ok(run), |e| Err(*e));
                async move { outcome }
            },
        )
        .await;
        (result, runs.get(), metrics.lock_conflicts())
    }

    #[tokio::test]
    async fn lock_conflicts_are_retried_up_to_three_runs_and_counted() {
        assert_eq!(run_with(&[]).await, (Ok(0), 1, 0));
        assert_eq!(run_with(&["deadlock", "deadlock"]).await, (Ok(2), 3, 2));
        assert_eq!(
            run_with(&["deadlock", "deadlock", "deadlock"]).await,
            (Err("deadlock"), 3, 3)
        );
        assert_eq!(
            run_with(&["broken", "deadlock"]).await,
            (Err("broken"), 1, 0)
        );
        assert_eq!(
            run_with(&["deadlock", "broken"]).await,
            (Err("broken"), 2, 1)
        );
    }
}
