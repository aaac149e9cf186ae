//! The webhook worker: deliveries flow continuously, each attempt a task of its own, so a
//! receiver that hangs holds only its own webhook's slots (`WEBHOOK_MAX_IN_FLIGHT`) while
//! the others' deliveries are claimed and posted as they come due. Whenever an attempt
//! ends, this process writes deliveries, a test moves the clock, a retry comes due or the
//! poll ends, the worker claims what has room.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

use crate::db;
use crate::service::Service;
use crate::service::integrations::webhooks::claim::Claim;

/// The longest the worker sleeps before looking again: other processes' deliveries (and
/// their attempts' ends) are found within this; this process's own wake it at once.
const POLL: Duration = Duration::from_secs(1);
/// Deliveries one process has in flight at once, over all webhooks.
pub const PROCESS_MAX_IN_FLIGHT: usize = 128;
/// How often the worker repeats that the delivery client cannot be built.
const CLIENT_ERROR_EVERY: Duration = Duration::from_secs(300);

/// This process's attempts in flight, by webhook and by delivery.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<()>,
    /// The webhook and delivery of each task.
    task_of: HashMap<Id, (i32, i32)>,
    per_hook: HashMap<i32, usize>,
    /// Never claimed again while their attempt runs, even when a moved clock ends their
    /// lease.
    deliveries: HashSet<i32>,
}

impl InFlight {
    fn start(
        &mut self,
        service: &Service,
        client: &reqwest::Client,
        claimed: crate::service::integrations::webhooks::delivery::Claimed,
    ) {
        let (hook, delivery) = (claimed.hook.id, claimed.delivery.id);
        let (service, client) = (service.clone(), client.clone());
        let task = self.tasks.spawn(db::background(async move {
            let id = claimed.delivery.id;
            if let Err(e) = service.attempt(&client, claimed).await {
                tracing::warn!(delivery_id = id, error = %e, "recording a webhook attempt failed; it is retried after its lease");
            }
        }));
        self.task_of.insert(task.id(), (hook, delivery));
        self.deliveries.insert(delivery);
        *self.per_hook.entry(hook).or_default() += 1;
    }

    /// Forgets an ended attempt (a panicked one too: its lease runs out and it is claimed
    /// again).
    fn ended(&mut self, task: Id) {
        let Some((hook, delivery)) = self.task_of.remove(&task) else {
            return;
        };
        self.deliveries.remove(&delivery);
        if let Some(n) = self.per_hook.get_mut(&hook) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_hook.remove(&hook);
            }
        }
    }

    fn reap(&mut self) {
        while let Some(ended) = self.tasks.try_join_next_with_id() {
            self.ended(ended.map_or_else(|e| e.id(), |(id, ())| id));
        }
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }
}

/// Delivers webhooks until told to stop; then lets the attempts in flight end (each within
/// `WEBHOOK_TIMEOUT_SECONDS`) so that they are recorded.
pub async fn run(service: Service, mut stop: watch::Receiver<bool>) {
    let mut moves = service.clock.watch();
    let mut in_flight = InFlight::default();
    let mut client_error_logged: Option<Instant> = None;
    loop {
        in_flight.reap();
        let room = PROCESS_MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        let wait = match service
            .claim_deliveries(&in_flight.per_hook, &in_flight.deliveries, room)
            .await
        {
            Ok(Claim {
                halted: Some(e), ..
            }) => {
                // Fail closed: nothing was claimed, so every delivery stays pending.
                service.metrics.webhook_client_unavailable();
                if client_error_logged.is_none_or(|at| at.elapsed() >= CLIENT_ERROR_EVERY) {
                    tracing::error!(error = %e, "webhook deliveries are halted: the delivery client cannot be built; they stay pending");
                    client_error_logged = Some(Instant::now());
                }
                POLL
            }
            Ok(Claim {
                claimed,
                client: Some(client),
                ..
            }) if !claimed.is_empty() => {
                for claimed in claimed {
                    in_flight.start(&service, &client, claimed);
                }
                // More may have room at once.
                Duration::ZERO
            }
            Ok(claim) => claim
                .next_due
                .map_or(POLL, |at| service.clock.until(at).min(POLL)),
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed; will retry");
                POLL
            }
        };
        if *stop.borrow() {
            break;
        }
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = moves.moved() => {}
            _ = service.webhook_wake.notified() => {}
            Some(ended) = in_flight.tasks.join_next_with_id() => {
                in_flight.ended(ended.map_or_else(|e| e.id(), |(id, ())| id));
            }
            _ = stop.changed() => break,
        }
    }
    while in_flight.tasks.join_next().await.is_some() {}
}
