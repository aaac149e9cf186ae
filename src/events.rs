//! Live roll-call events: an in-process broadcast, bridged across server processes through
//! PostgreSQL `LISTEN/NOTIFY` (no extra infrastructure). On SQLite (one process) the
//! broadcast alone is enough.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbBackend};
use tokio::sync::{Notify, broadcast, watch};

/// The channel every server process listens on.
const CHANNEL: &str = "attendance_events";
/// How many events a subscriber may fall behind before it is told to resynchronise.
const SUBSCRIBER_BUFFER: usize = 1024;
/// How long the publisher gathers events into one NOTIFY, so scans cost no extra statement.
const PUBLISH_BATCH: Duration = Duration::from_millis(20);
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7000;

/// What happened in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, async_graphql::Enum)]
pub enum EventKind {
    /// A device scan wrote or corrected a record.
    Scan,
    /// A teacher or admin changed or deleted a record.
    Edit,
    /// The session closed.
    Close,
    /// Events may have been missed (a lagging subscriber, a lost connection): reload.
    Resync,
    /// The state when the subscription starts (always the first update).
    Snapshot,
}

impl EventKind {
    fn code(self) -> char {
        match self {
            Self::Scan => 's',
            Self::Edit => 'e',
            Self::Close => 'c',
            Self::Resync => 'r',
            Self::Snapshot => 'n',
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        match code {
            "s" => Some(Self::Scan),
            "e" => Some(Self::Edit),
            "c" => Some(Self::Close),
            "r" => Some(Self::Resync),
            "n" => Some(Self::Snapshot),
            _ => None,
        }
    }
}

/// One event of one session (`session_id` 0 with `Resync` means every session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEvent {
    /// The session.
    pub session_id: i32,
    /// What happened.
    pub kind: EventKind,
    /// The record concerned, for scans and edits.
    pub record_id: Option<i32>,
}

impl SessionEvent {
    fn encode(&self) -> String {
        format!(
            "{}:{}:{}",
            self.session_id,
            self.kind.code(),
            self.record_id.map(|id| id.to_string()).unwrap_or_default()
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let session_id = parts.next()?.parse().ok()?;
        let kind = EventKind::from_code(parts.next()?)?;
        let record_id = match parts.next()? {
            "" => None,
            id => Some(id.parse().ok()?),
        };
        Some(Self {
            session_id,
            kind,
            record_id,
        })
    }
}

/// Publishes session events to local subscribers and, on PostgreSQL, to other processes.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<SessionEvent>,
    outbox: Arc<Mutex<Vec<SessionEvent>>>,
    wake: Arc<Notify>,
    origin: String,
    shared: bool,
    listening: Arc<std::sync::atomic::AtomicBool>,
}

impl EventBus {
    /// A bus; `shared` when other processes may share the database (PostgreSQL).
    pub fn new(shared: bool) -> Self {
        let (local, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Self {
            local,
            outbox: Arc::default(),
            wake: Arc::default(),
            origin: crate::auth::random_token(6),
            shared,
            listening: Arc::default(),
        }
    }

    /// True when events from other processes can arrive (always true without a bridge).
    pub fn is_listening(&self) -> bool {
        !self.shared || self.listening.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Delivers an event to this process's subscribers now and queues it for the others.
    /// Never blocks: a full subscriber buffer makes that subscriber lag, not the caller.
    pub fn publish(&self, event: SessionEvent) {
        let _ = self.local.send(event);
        if self.shared {
            if let Ok(mut outbox) = self.outbox.lock()
                && outbox.len() < 100_000
            {
                outbox.push(event);
            }
            self.wake.notify_one();
        }
    }

    /// A receiver of every event; it lags (and must resynchronise) if it falls behind.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.local.subscribe()
    }

    /// On PostgreSQL, starts the NOTIFY publisher and the LISTEN relay; both stop with `stop`.
    pub fn spawn_bridge(&self, db: DatabaseConnection, stop: watch::Receiver<bool>) {
        if !self.shared || db.get_database_backend() != DbBackend::Postgres {
            return;
        }
        tokio::spawn(self.clone().publish_loop(db.clone(), stop.clone()));
        tokio::spawn(self.clone().listen_loop(db, stop));
    }

    async fn publish_loop(self, db: DatabaseConnection, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
            tokio::time::sleep(PUBLISH_BATCH).await;
            let events = self
                .outbox
                .lock()
                .map(|mut outbox| std::mem::take(&mut *outbox))
                .unwrap_or_default();
            // Straight on the pool: this background traffic is not a request's statements.
            let pool = db.get_postgres_connection_pool();
            for payload in self.payloads(&events) {
                let notify = sea_orm::sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(payload);
                if let Err(e) = notify.execute(pool).await {
                    tracing::warn!(error = %e, "could not publish live events to other processes");
                }
            }
        }
    }

    /// `origin|event;event;...` chunks under PostgreSQL's payload limit.
    fn payloads(&self, events: &[SessionEvent]) -> Vec<String> {
        let mut payloads = Vec::new();
        let mut current = String::new();
        for event in events {
            let encoded = event.encode();
            if !current.is_empty() && current.len() + encoded.len() + 1 > MAX_PAYLOAD {
                payloads.push(std::mem::take(&mut current));
            }
            if current.is_empty() {
                current.push_str(&self.origin);
                current.push('|');
            } else {
                current.push(';');
            }
            current.push_str(&encoded);
        }
        if !current.is_empty() {
            payloads.push(current);
        }
        payloads
    }

    async fn listen_loop(self, db: DatabaseConnection, mut stop: watch::Receiver<bool>) {
        use sea_orm::sqlx::postgres::PgListener;
        let pool = db.get_postgres_connection_pool().clone();
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "live events: cannot listen; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "live events: LISTEN failed; retrying");
                continue;
            }
            // Anything published while we were not listening is lost: subscribers reload.
            self.listening
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.resync_all();
            loop {
                let received = tokio::select! {
                    received = listener.try_recv() => received,
                    _ = stop.changed() => return,
                };
                match received {
                    Ok(Some(notification)) => self.relay(notification.payload()),
                    Ok(None) => self.resync_all(),
                    Err(e) => {
                        self.listening
                            .store(false, std::sync::atomic::Ordering::SeqCst);
                        tracing::warn!(error = %e, "live events: connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    fn relay(&self, payload: &str) {
        let Some((origin, events)) = payload.split_once('|') else {
            return;
        };
        if origin == self.origin {
            return;
        }
        for event in events.split(';').filter_map(SessionEvent::decode) {
            let _ = self.local.send(event);
        }
    }

    fn resync_all(&self) {
        let _ = self.local.send(SessionEvent {
            session_id: 0,
            kind: EventKind::Resync,
            record_id: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_payloads_under_the_limit() {
        let bus = EventBus::new(true);
        let events: Vec<SessionEvent> = (0..2000)
            .map(|i| SessionEvent {
                session_id: i,
                kind: if i % 2 == 0 {
                    EventKind::Scan
                } else {
                    EventKind::Close
                },
                record_id: (i % 2 == 0).then_some(i * 10),
            })
            .collect();
        let payloads = bus.payloads(&events);
        assert!(payloads.len() > 1);
        let mut decoded = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < 8000);
            let (origin, body) = payload.split_once('|').unwrap();
            assert_eq!(origin, bus.origin);
            decoded.extend(body.split(';').filter_map(SessionEvent::decode));
        }
        assert_eq!(decoded, events);
    }
}
