//! Failed-login limits per username and per client address, counted in the database so that
//! every server process on it, separate requests, aliases in one request and batches all
//! count alike.
//!
//! Each key (a username or an address) has a fixed window that starts at its first failure.
//! Reaching the key's limit within the window locks it for the window's length; a failure
//! after the window (and any lock) has passed starts a new window.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::now_millis;
use super::sql::statement;
use crate::auth::fast_hash;
use crate::entities::login_throttle::{Column, Entity};

/// The longest window honoured (a century): longer than any sensible lockout, and short
/// enough that `now + window` never overflows.
const MAX_WINDOW_MILLIS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The stored window has passed and the key is not locked, so this failure starts a new
/// window. `$2` is now and `$4` the window, in milliseconds.
const WINDOW_OVER: &str = "(login_throttle.window_started <= $2 - $4 \
     AND (login_throttle.locked_until IS NULL OR login_throttle.locked_until <= $2))";

/// Counts one failure against key `$1` with limit `$3`, atomically whichever process runs
/// it. In `DO UPDATE` every expression reads the row as it was before this failure.
static RECORD_FAILURE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO login_throttle (\"key\", failures, window_started, locked_until) \
         VALUES ($1, 1, $2, CASE WHEN 1 >= $3 THEN $2 + $4 END) \
         ON CONFLICT (\"key\") DO UPDATE SET \
         failures = CASE WHEN {WINDOW_OVER} THEN 1 ELSE login_throttle.failures + 1 END, \
         window_started = CASE WHEN {WINDOW_OVER} THEN $2 ELSE login_throttle.window_started END, \
         locked_until = CASE \
             WHEN (CASE WHEN {WINDOW_OVER} THEN 1 ELSE login_throttle.failures + 1 END) >= $3 \
             THEN $2 + $4 ELSE login_throttle.locked_until END"
    )
});

/// Counts failures per key in a fixed window and locks a key out once it reaches its limit.
/// Holds only the limits; the counts live in the `login_throttle` table.
#[derive(Debug)]
pub struct LoginLimiter {
    per_user: u32,
    per_address: u32,
    window_millis: i64,
}

impl LoginLimiter {
    /// A limiter allowing `per_user` failures per username and `per_address` per client
    /// address within `window`, each then locked for `window`.
    pub fn new(per_user: u32, per_address: u32, window: Duration) -> Self {
        let window_millis = i64::try_from(window.as_millis())
            .unwrap_or(MAX_WINDOW_MILLIS)
            .min(MAX_WINDOW_MILLIS);
        Self {
            per_user,
            per_address,
            window_millis,
        }
    }

    /// The username's key is a hash: its length is bounded whatever is typed, and a password
    /// typed into the username field is never stored.
    fn user_key(username: &str) -> String {
        format!("u:{}", fast_hash(&username.trim().to_lowercase()))
    }

    fn address_key(address: IpAddr) -> String {
        format!("a:{address}")
    }

    /// True while the username or the address is locked out.
    pub async fn is_locked(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<bool, DbErr> {
        self.is_locked_at(db, username, address, now_millis()).await
    }

    async fn is_locked_at(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<bool, DbErr> {
        let keys = [
            Some(Self::user_key(username)),
            address.map(Self::address_key),
        ];
        let locked = Entity::find()
            .filter(Column::Key.is_in(keys.into_iter().flatten()))
            .filter(Column::LockedUntil.gt(now))
            .one(db)
            .await?;
        Ok(locked.is_some())
    }

    /// Records a failed attempt against both keys.
    pub async fn record_failure(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<(), DbErr> {
        self.record_failure_at(db, username, address, now_millis())
            .await
    }

    async fn record_failure_at(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<(), DbErr> {
        let keys = [
            (Some(Self::user_key(username)), self.per_user),
            (address.map(Self::address_key), self.per_address),
        ];
        for (key, limit) in keys {
            let Some(key) = key else { continue };
            db.execute_raw(statement(
                db.get_database_backend(),
                &RECORD_FAILURE_SQL,
                vec![
                    key.into(),
                    now.into(),
                    limit.into(),
                    self.window_millis.into(),
                ],
            ))
            .await?;
        }
        Ok(())
    }

    /// Forgets the username's failures after a successful login (the address keeps its count).
    pub async fn record_success(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
    ) -> Result<(), DbErr> {
        Entity::delete_by_id(Self::user_key(username))
            .exec(db)
            .await?;
        Ok(())
    }

    /// Deletes the keys whose window and lock have both passed: their next failure would
    /// start afresh anyway. Returns how many went.
    pub async fn prune(&self, db: &impl ConnectionTrait) -> Result<u64, DbErr> {
        self.prune_at(db, now_millis()).await
    }

    async fn prune_at(&self, db: &impl ConnectionTrait, now: i64) -> Result<u64, DbErr> {
        let pruned = Entity::delete_many()
            .filter(Column::WindowStarted.lte(now - self.window_millis))
            .filter(
                Condition::any()
                    .add(Column::LockedUntil.is_null())
                    .add(Column::LockedUntil.lte(now)),
            )
            .exec(db)
            .await?;
        Ok(pruned.rows_affected)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectOptions, Database, DatabaseConnection, PaginatorTrait};

    use super::*;

    const MINUTE: i64 = 60_000;

    /// A migrated in-memory SQLite database (one connection, kept open: it is the database).
    async fn database() -> DatabaseConnection {
        let mut options = ConnectOptions::new("sqlite::memory:");
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None::<Duration>)
            .max_lifetime(None::<Duration>)
            .sqlx_logging(false);
        let db = Database::connect(options).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        db
    }

    fn limiter(per_user: u32, per_address: u32) -> LoginLimiter {
        LoginLimiter::new(per_user, per_address, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_username_locks_after_its_limit_and_others_do_not() {
        let (db, limiter) = (database().await, limiter(3, 100));
        let addr = Some("10.0.0.1".parse().unwrap());
        for _ in 0..2 {
            limiter.record_failure(&db, "Alice", addr).await.unwrap();
        }
        assert!(!limiter.is_locked(&db, "alice", addr).await.unwrap());
        limiter.record_failure(&db, "alice ", addr).await.unwrap();
        assert!(limiter.is_locked(&db, "ALICE", None).await.unwrap());
        assert!(!limiter.is_locked(&db, "bob", addr).await.unwrap());
    }

    #[tokio::test]
    async fn an_address_locks_across_usernames() {
        let (db, limiter) = (database().await, limiter(100, 4));
        let addr = Some("10.0.0.2".parse().unwrap());
        for n in 0..4 {
            limiter
                .record_failure(&db, &format!("user{n}"), addr)
                .await
                .unwrap();
        }
        assert!(limiter.is_locked(&db, "someone-else", addr).await.unwrap());
        let other = Some("10.0.0.3".parse().unwrap());
        assert!(!limiter.is_locked(&db, "someone-else", other).await.unwrap());
    }

    #[tokio::test]
    async fn the_window_is_fixed_from_the_first_failure_and_a_lock_lasts_one_window() {
        let (db, limiter) = (database().await, limiter(3, 100));
        let t0 = 1_000 * MINUTE;
        // Two failures, then the window passes: the third starts a new window.
        limiter
            .record_failure_at(&db, "carol", None, t0)
            .await
            .unwrap();
        let late = t0 + 59_000;
        limiter
            .record_failure_at(&db, "carol", None, late)
            .await
            .unwrap();
        let next = t0 + MINUTE;
        limiter
            .record_failure_at(&db, "carol", None, next)
            .await
            .unwrap();
        assert!(
            !limiter
                .is_locked_at(&db, "carol", None, next)
                .await
                .unwrap()
        );
        // Two more within the new window lock it for a window from the third.
        for at in [next + 1, next + 2] {
            limiter
                .record_failure_at(&db, "carol", None, at)
                .await
                .unwrap();
        }
        let locked_at = next + 2;
        assert!(
            limiter
                .is_locked_at(&db, "carol", None, locked_at)
                .await
                .unwrap()
        );
        let unlocked_at = locked_at + MINUTE;
        assert!(
            limiter
                .is_locked_at(&db, "carol", None, unlocked_at - 1)
                .await
                .unwrap()
        );
        assert!(
            !limiter
                .is_locked_at(&db, "carol", None, unlocked_at)
                .await
                .unwrap()
        );
        // After the lock, one failure is one failure of a fresh window.
        limiter
            .record_failure_at(&db, "carol", None, unlocked_at)
            .await
            .unwrap();
        assert!(
            !limiter
                .is_locked_at(&db, "carol", None, unlocked_at)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_success_clears_the_username_but_not_the_address() {
        let (db, limiter) = (database().await, limiter(2, 3));
        let addr = Some("10.0.0.4".parse().unwrap());
        limiter.record_failure(&db, "dave", addr).await.unwrap();
        limiter.record_success(&db, "dave").await.unwrap();
        limiter.record_failure(&db, "dave", addr).await.unwrap();
        assert!(
            !limiter.is_locked(&db, "dave", None).await.unwrap(),
            "count restarted"
        );
        limiter.record_failure(&db, "erin", addr).await.unwrap();
        assert!(
            limiter.is_locked(&db, "nobody", addr).await.unwrap(),
            "three from the address"
        );
    }

    #[tokio::test]
    async fn pruning_drops_only_keys_whose_window_and_lock_have_passed() {
        let (db, limiter) = (database().await, limiter(2, 100));
        let t0 = 1_000 * MINUTE;
        limiter
            .record_failure_at(&db, "old", None, t0)
            .await
            .unwrap();
        // Locked at t0 + 50 s until t0 + 110 s, though its window ends at t0 + 60 s.
        for at in [t0, t0 + 50_000] {
            limiter
                .record_failure_at(&db, "locked", None, at)
                .await
                .unwrap();
        }
        limiter
            .record_failure_at(&db, "recent", None, t0 + 30_000)
            .await
            .unwrap();
        let now = t0 + 70_000;
        assert_eq!(limiter.prune_at(&db, now).await.unwrap(), 1, "only old");
        assert!(
            limiter
                .is_locked_at(&db, "locked", None, now)
                .await
                .unwrap()
        );
        assert_eq!(limiter.prune_at(&db, t0 + 110_000).await.unwrap(), 2);
        assert_eq!(Entity::find().count(&db).await.unwrap(), 0);
    }
}
