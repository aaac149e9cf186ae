//! Failed-login limits per username and per client address, counted in the database so that
//! every server process on it, separate requests, aliases in one request and batches all
//! count alike.
//!
//! An attempt is counted *before* its password is checked, in one statement that answers
//! whether the caller is over a limit: attempts sent at once are then counted one after the
//! other by the database, and only the first `limit` of a window reach the (slow) password
//! check. An attempt that was refused, or whose password was right, is taken back (a success
//! also forgets the username's count), so what remains counts failures: while attempts race,
//! a count can stand one too high for a moment, which only ever refuses, never admits.
//!
//! Each key (a username or an address) has a fixed window that starts at its first attempt.
//! The attempt that reaches the key's limit within the window locks it for the window's
//! length; attempts while locked are refused unchecked and do not extend the lock. An
//! attempt after the window (and any lock) has passed starts a new window.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use crate::auth::fast_hash;
use crate::entities::login_throttle::{Column, Entity};
use crate::service::now_millis;
use crate::service::sql::statement;

/// The longest window honoured (a century): longer than any sensible lockout, and short
/// enough that `now + window` never overflows.
const MAX_WINDOW_MILLIS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The stored window has passed and the key is not locked, so this attempt starts a new
/// window. `$1` is now and `$2` the window, in milliseconds.
const WINDOW_OVER: &str = "(login_throttle.window_started <= $1 - $2 \
     AND (login_throttle.locked_until IS NULL OR login_throttle.locked_until <= $1))";

/// Counts one attempt against each key (`$3` with limit `$4`, and `$5` with limit `$6` when
/// `keys` is 2) and returns each key's count, atomically whichever process runs it. In
/// `DO UPDATE` every expression reads the row as it was before this attempt. Keys are
/// always given username first, so two statements lock rows in the same order.
fn count_attempt_sql(keys: usize) -> String {
    let limit = if keys == 2 {
        "(CASE WHEN excluded.\"key\" = $3 THEN $4 ELSE $6 END)"
    } else {
        "$4"
    };
    let values = (0..keys)
        .map(|k| {
            let (key, limit) = (3 + 2 * k, 4 + 2 * k);
            format!("(${key}, 1, $1, CASE WHEN 1 >= ${limit} THEN $1 + $2 END)")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO login_throttle (\"key\", failures, window_started, locked_until) \
         VALUES {values} \
         ON CONFLICT (\"key\") DO UPDATE SET \
         failures = CASE WHEN {WINDOW_OVER} THEN 1 ELSE login_throttle.failures + 1 END, \
         window_started = CASE WHEN {WINDOW_OVER} THEN $1 ELSE login_throttle.window_started END, \
         locked_until = CASE \
             WHEN {WINDOW_OVER} THEN (CASE WHEN 1 >= {limit} THEN $1 + $2 END) \
             WHEN login_throttle.failures + 1 = {limit} THEN $1 + $2 \
             ELSE login_throttle.locked_until END \
         RETURNING \"key\", failures"
    )
}

static COUNT_ONE_SQL: LazyLock<String> = LazyLock::new(|| count_attempt_sql(1));
static COUNT_TWO_SQL: LazyLock<String> = LazyLock::new(|| count_attempt_sql(2));

/// Takes an attempt back from key `$1` (limit `$2`), unlocking it if its count drops below
/// the limit. One key per statement: a statement that locked two rows in its own order could
/// deadlock against the count, which locks the username's row before the address's.
const TAKE_BACK_SQL: &str = "UPDATE login_throttle SET failures = failures - 1, \
     locked_until = CASE WHEN failures - 1 < $2 THEN NULL ELSE locked_until END \
     WHERE \"key\" = $1 AND failures > 0";

/// What counting an attempt decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Within the limits: check the password.
    Allowed,
    /// The username or the address is over its limit: refuse without checking.
    Refused,
}

/// Counts attempts per key in a fixed window and locks a key out once it reaches its limit.
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

    /// Counts an attempt to log in as `username` from `address`, before its password is
    /// checked, and says whether it may be checked. Call [`succeeded`](Self::succeeded)
    /// when it was right.
    pub async fn attempt(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<Attempt, DbErr> {
        self.attempt_at(db, username, address, now_millis()).await
    }

    async fn attempt_at(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt, DbErr> {
        let keys = self.keys(username, address);
        let mut values = vec![now.into(), self.window_millis.into()];
        for (key, limit) in &keys {
            values.push(key.as_str().into());
            values.push((*limit).into());
        }
        let sql = if keys.len() == 2 {
            &*COUNT_TWO_SQL
        } else {
            &*COUNT_ONE_SQL
        };
        let rows = db
            .query_all_raw(statement(db.get_database_backend(), sql, values))
            .await?;
        let mut over = false;
        for row in rows {
            let key: String = row.try_get_by_index(0)?;
            let count: i32 = row.try_get_by_index(1)?;
            let limit = keys.iter().find(|(k, _)| *k == key).map_or(0, |(_, l)| *l);
            over |= i64::from(count) > i64::from(limit);
        }
        if over {
            // Refused unchecked, so not a failure: a locked username must not count against
            // its address (nor the reverse).
            self.take_back(db, &keys).await?;
            return Ok(Attempt::Refused);
        }
        Ok(Attempt::Allowed)
    }

    /// The keys an attempt counts against, username first, each with its limit.
    fn keys(&self, username: &str, address: Option<IpAddr>) -> Vec<(String, u32)> {
        let mut keys = vec![(Self::user_key(username), self.per_user)];
        if let Some(address) = address {
            keys.push((Self::address_key(address), self.per_address));
        }
        keys
    }

    async fn take_back(
        &self,
        db: &impl ConnectionTrait,
        keys: &[(String, u32)],
    ) -> Result<(), DbErr> {
        for (key, limit) in keys {
            db.execute_raw(statement(
                db.get_database_backend(),
                TAKE_BACK_SQL,
                vec![key.as_str().into(), (*limit).into()],
            ))
            .await?;
        }
        Ok(())
    }

    /// Takes back an attempt whose password was right: the username's count is forgotten,
    /// and the address's lowered by this one attempt.
    pub async fn succeeded(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<(), DbErr> {
        self.forget_user(db, username).await?;
        if let Some(address) = address {
            self.take_back(db, &[(Self::address_key(address), self.per_address)])
                .await?;
        }
        Ok(())
    }

    /// Forgets the username's count (a password reset by an admin), leaving addresses be.
    pub async fn forget_user(
        &self,
        db: &impl ConnectionTrait,
        username: &str,
    ) -> Result<(), DbErr> {
        Entity::delete_by_id(Self::user_key(username))
            .exec(db)
            .await?;
        Ok(())
    }

    /// Deletes the keys whose window and lock have both passed: their next attempt would
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

    /// Counts `n` attempts and answers how many were allowed.
    async fn attempts(
        limiter: &LoginLimiter,
        db: &DatabaseConnection,
        username: &str,
        address: Option<IpAddr>,
        at: i64,
        n: usize,
    ) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            if limiter.attempt_at(db, username, address, at).await.unwrap() == Attempt::Allowed {
                allowed += 1;
            }
        }
        allowed
    }

    const T0: i64 = 1_000 * MINUTE;

    #[tokio::test]
    async fn a_username_allows_its_limit_of_attempts_and_others_are_untouched() {
        let (db, limiter) = (database().await, limiter(3, 100));
        let addr = Some("10.0.0.1".parse().unwrap());
        assert_eq!(attempts(&limiter, &db, "Alice", addr, T0, 2).await, 2);
        assert_eq!(attempts(&limiter, &db, "alice ", addr, T0, 1).await, 1);
        assert_eq!(attempts(&limiter, &db, "ALICE", None, T0, 5).await, 0);
        assert_eq!(attempts(&limiter, &db, "bob", addr, T0, 1).await, 1);
    }

    #[tokio::test]
    async fn an_address_locks_across_usernames() {
        let (db, limiter) = (database().await, limiter(100, 4));
        let addr = Some("10.0.0.2".parse().unwrap());
        for n in 0..4 {
            let name = format!("user{n}");
            assert_eq!(attempts(&limiter, &db, &name, addr, T0, 1).await, 1);
        }
        assert_eq!(attempts(&limiter, &db, "someone", addr, T0, 1).await, 0);
        let other = Some("10.0.0.3".parse().unwrap());
        assert_eq!(attempts(&limiter, &db, "someone", other, T0, 1).await, 1);
    }

    #[tokio::test]
    async fn the_window_is_fixed_from_the_first_attempt_and_a_lock_lasts_one_window() {
        let (db, limiter) = (database().await, limiter(3, 100));
        // Two attempts, then the window passes: the third starts a new window.
        assert_eq!(attempts(&limiter, &db, "carol", None, T0, 1).await, 1);
        assert_eq!(
            attempts(&limiter, &db, "carol", None, T0 + 59_000, 1).await,
            1
        );
        let next = T0 + MINUTE;
        assert_eq!(attempts(&limiter, &db, "carol", None, next, 1).await, 1);
        // Two more within the new window reach the limit and lock it for a window from the
        // third; attempts while locked are refused and do not extend it.
        assert_eq!(attempts(&limiter, &db, "carol", None, next + 2, 2).await, 2);
        let unlocked_at = next + 2 + MINUTE;
        assert_eq!(attempts(&limiter, &db, "carol", None, next + 3, 1).await, 0);
        assert_eq!(
            attempts(&limiter, &db, "carol", None, unlocked_at - 1, 1).await,
            0
        );
        // After the lock, an attempt is the first of a fresh window.
        assert_eq!(
            attempts(&limiter, &db, "carol", None, unlocked_at, 3).await,
            3
        );
        assert_eq!(
            attempts(&limiter, &db, "carol", None, unlocked_at, 1).await,
            0
        );
    }

    #[tokio::test]
    async fn a_success_forgets_the_username_and_takes_one_attempt_off_the_address() {
        let (db, limiter) = (database().await, limiter(2, 3));
        let addr = Some("10.0.0.4".parse().unwrap());
        assert_eq!(attempts(&limiter, &db, "dave", addr, T0, 2).await, 2);
        limiter.succeeded(&db, "dave", addr).await.unwrap();
        // The username starts again; the address holds one failure and this attempt.
        assert_eq!(attempts(&limiter, &db, "dave", addr, T0, 1).await, 1);
        // The third from the address reaches its limit; nothing more is checked.
        assert_eq!(attempts(&limiter, &db, "erin", addr, T0, 2).await, 1);
        assert_eq!(attempts(&limiter, &db, "nobody", addr, T0, 1).await, 0);
    }

    #[tokio::test]
    async fn attempts_sent_at_once_are_checked_at_most_limit_times() {
        let (db, limiter) = (database().await, std::sync::Arc::new(limiter(5, 100)));
        let addr = Some("10.0.0.5".parse().unwrap());
        let tries = (0..40).map(|_| {
            let (db, limiter) = (db.clone(), limiter.clone());
            tokio::spawn(async move { limiter.attempt_at(&db, "frank", addr, T0).await })
        });
        let mut allowed = 0;
        for attempt in futures_util::future::join_all(tries).await {
            if attempt.unwrap().unwrap() == Attempt::Allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5);
    }

    #[tokio::test]
    async fn pruning_drops_only_keys_whose_window_and_lock_have_passed() {
        let (db, limiter) = (database().await, limiter(2, 100));
        attempts(&limiter, &db, "old", None, T0, 1).await;
        // Locked at t0 + 50 s until t0 + 110 s, though its window ends at t0 + 60 s.
        attempts(&limiter, &db, "locked", None, T0, 1).await;
        attempts(&limiter, &db, "locked", None, T0 + 50_000, 1).await;
        attempts(&limiter, &db, "recent", None, T0 + 30_000, 1).await;
        let now = T0 + 70_000;
        assert_eq!(limiter.prune_at(&db, now).await.unwrap(), 1, "only old");
        assert_eq!(attempts(&limiter, &db, "locked", None, now, 1).await, 0);
        assert_eq!(limiter.prune_at(&db, T0 + 110_000).await.unwrap(), 2);
        assert_eq!(Entity::find().count(&db).await.unwrap(), 0);
    }
}
