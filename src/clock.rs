//! The server's notion of "now" for attendance: the system clock in production, and in
//! tests a clock they set and move, so a week of timetable runs in seconds without sleeps.
//! Security time (token expiry, login throttles) always reads the system clock.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

/// Where "now" comes from.
#[derive(Clone, Debug)]
pub struct Clock(Option<Arc<watch::Sender<DateTime<Utc>>>>);

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stands at `at` until moved (tests).
    pub fn manual(at: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(watch::channel(truncate(at)).0)))
    }

    /// The current instant, to the microsecond (what both databases store).
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            None => truncate(Utc::now()),
            Some(manual) => *manual.borrow(),
        }
    }

    /// Moves a manual clock to `at` and wakes whoever waits on it; the system clock
    /// cannot be moved.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(manual) = &self.0 {
            manual.send_replace(truncate(at));
        }
    }

    /// Moves a manual clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.set(self.now() + by);
    }

    /// A watch on this clock's moves, for a loop that sleeps on it: a move made while the
    /// loop was busy is still reported at its next wait.
    pub fn watch(&self) -> ClockWatch {
        ClockWatch(self.0.as_ref().map(|manual| {
            let mut changes = manual.subscribe();
            changes.mark_unchanged();
            changes
        }))
    }

    /// How long until `at` by this clock; zero when it has passed. A manual clock never
    /// reaches `at` by itself, so this is only a cap on how long to wait before looking
    /// again.
    pub fn until(&self, at: DateTime<Utc>) -> std::time::Duration {
        (at - self.now()).to_std().unwrap_or_default()
    }
}

/// Reports the moves of a manual clock (see [`Clock::watch`]).
pub struct ClockWatch(Option<watch::Receiver<DateTime<Utc>>>);

impl ClockWatch {
    /// Waits until the clock has moved since the last wait; never returns for the system
    /// clock, whose passing time is waited for with timers.
    pub async fn moved(&mut self) {
        let moved = match &mut self.0 {
            Some(changes) => changes.changed().await.is_ok(),
            None => false,
        };
        if !moved {
            std::future::pending::<()>().await;
        }
    }
}

fn truncate(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_stands_still_until_moved_and_wakes_its_waiters() {
        let start = DateTime::parse_from_rfc3339("2027-03-01T07:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        let mut watch = clock.watch();
        let waiter = tokio::spawn(async move { watch.moved().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        clock.advance(Duration::minutes(5));
        waiter.await.unwrap();
        // A move made while nobody waited is reported at the next wait.
        let mut watch = clock.watch();
        clock.advance(Duration::minutes(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.moved())
            .await
            .expect("the earlier move is reported");
        assert_eq!(clock.now(), start + Duration::minutes(6));
        assert_eq!(clock.until(start), std::time::Duration::ZERO);
        assert_eq!(
            clock.until(start + Duration::minutes(7)),
            std::time::Duration::from_secs(60)
        );
    }
}
