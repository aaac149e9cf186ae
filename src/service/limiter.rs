//! Failed-login limits per username and per client address, counted in the service so that
//! separate requests, aliases in one request and batches all count alike.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys remembered; beyond it the oldest windows are dropped first.
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Window {
    failures: u32,
    started: Instant,
    locked_until: Option<Instant>,
}

/// Counts failures in a sliding window and locks a key out once it reaches its limit.
#[derive(Debug)]
pub struct LoginLimiter {
    per_user: u32,
    per_address: u32,
    window: Duration,
    state: Mutex<HashMap<String, Window>>,
}

impl LoginLimiter {
    /// A limiter allowing `per_user` failures per username and `per_address` per client
    /// address within `window`, each then locked for `window`.
    pub fn new(per_user: u32, per_address: u32, window: Duration) -> Self {
        Self {
            per_user,
            per_address,
            window,
            state: Mutex::default(),
        }
    }

    fn keys(username: &str, address: Option<IpAddr>) -> (String, Option<String>) {
        (
            format!("u:{}", username.trim().to_lowercase()),
            address.map(|a| format!("a:{a}")),
        )
    }

    /// True while the username or the address is locked out.
    pub fn is_locked(&self, username: &str, address: Option<IpAddr>) -> bool {
        let (user, addr) = Self::keys(username, address);
        let now = Instant::now();
        let Ok(state) = self.state.lock() else {
            return false;
        };
        [Some(user), addr].into_iter().flatten().any(|key| {
            state
                .get(&key)
                .and_then(|w| w.locked_until)
                .is_some_and(|until| until > now)
        })
    }

    /// Records a failed attempt against both keys.
    pub fn record_failure(&self, username: &str, address: Option<IpAddr>) {
        let (user, addr) = Self::keys(username, address);
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.len() >= MAX_KEYS {
            let window = self.window;
            state.retain(|_, w| now.duration_since(w.started) < window);
        }
        for (key, limit) in [(Some(user), self.per_user), (addr, self.per_address)] {
            let Some(key) = key else { continue };
            let entry = state.entry(key).or_insert(Window {
                failures: 0,
                started: now,
                locked_until: None,
            });
            if now.duration_since(entry.started) >= self.window
                && entry.locked_until.is_none_or(|until| until <= now)
            {
                *entry = Window {
                    failures: 0,
                    started: now,
                    locked_until: None,
                };
            }
            entry.failures += 1;
            if entry.failures >= limit {
                entry.locked_until = Some(now + self.window);
            }
        }
    }

    /// Forgets the username's failures after a successful login (the address keeps its count).
    pub fn record_success(&self, username: &str) {
        let (user, _) = Self::keys(username, None);
        if let Ok(mut state) = self.state.lock() {
            state.remove(&user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_locks_after_its_limit_and_others_do_not() {
        let limiter = LoginLimiter::new(3, 100, Duration::from_secs(60));
        let addr = Some("10.0.0.1".parse().unwrap());
        for _ in 0..2 {
            limiter.record_failure("Alice", addr);
        }
        assert!(!limiter.is_locked("alice", addr));
        limiter.record_failure("alice ", addr);
        assert!(limiter.is_locked("ALICE", None));
        assert!(!limiter.is_locked("bob", addr));
    }

    #[test]
    fn an_address_locks_across_usernames() {
        let limiter = LoginLimiter::new(100, 4, Duration::from_secs(60));
        let addr = Some("10.0.0.2".parse().unwrap());
        for n in 0..4 {
            limiter.record_failure(&format!("user{n}"), addr);
        }
        assert!(limiter.is_locked("someone-else", addr));
        assert!(!limiter.is_locked("someone-else", Some("10.0.0.3".parse().unwrap())));
    }
}
