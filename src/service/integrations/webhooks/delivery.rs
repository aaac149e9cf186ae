//! One attempt at a claimed delivery ([`crate::service::integrations::webhooks::claim`]): post it signed per Standard
//! Webhooks with no transaction open, then record the attempt and either settle the
//! delivery or schedule its retry with exponential backoff and jitter. A receiver that
//! times out is also held back as a whole (see [`hold_after_timeout`]).

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QuerySelect, Set, TransactionTrait,
};
use sha2::Sha256;

use crate::entities::DeliveryStatus;
use crate::entities::{webhook, webhook_attempt, webhook_delivery};
use crate::error::AppResult;
use crate::service::Service;
use crate::service::integrations::webhooks::target;
use crate::service::sql::{statement, write_transaction};

/// The stored statuses, named once by [`DeliveryStatus`], for the statements that match
/// them in SQL.
pub const PENDING: &str = DeliveryStatus::Pending.as_str();
/// See [`PENDING`].
pub const DELIVERED: &str = DeliveryStatus::Delivered.as_str();
/// See [`PENDING`].
pub const FAILED: &str = DeliveryStatus::Failed.as_str();
/// See [`PENDING`].
pub const CANCELLED: &str = DeliveryStatus::Cancelled.as_str();

/// How long deliveries are retried before they are marked failed.
pub const RETRY_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// The first retry comes after 5 to 10 seconds.
const FIRST_WAIT_MS: (i64, i64) = (5_000, 10_000);
/// No wait is longer than this.
const MAX_WAIT_MS: i64 = 2 * 3600 * 1000;
/// How much of a receiver's answer is read (and logged as the error of a failure).
const MAX_RESPONSE_BYTES: usize = 4096;

/// The wait before the next attempt after `last` (none: after the first attempt): each wait
/// is 1.5 to 2 times the one before, the first 5 to 10 seconds, capped at two hours. `jitter`
/// is a uniform draw in [0, 1).
pub fn next_wait_ms(last: Option<i64>, jitter: f64) -> i64 {
    let jitter = jitter.clamp(0.0, 1.0);
    let wait = match last {
        None => FIRST_WAIT_MS.0 as f64 + (FIRST_WAIT_MS.1 - FIRST_WAIT_MS.0) as f64 * jitter,
        Some(last) => last as f64 * (1.5 + 0.5 * jitter),
    };
    (wait as i64).clamp(1, MAX_WAIT_MS)
}

/// The `webhook-signature` of a message: `v1,` and base64 of HMAC-SHA256 over
/// `id.timestamp.body`, keyed with the secret's bytes (after `whsec_`).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_else(|_| key.as_bytes().to_vec());
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A claimed delivery with its webhook.
pub struct Claimed {
    /// The delivery, leased to this process.
    pub delivery: webhook_delivery::Model,
    /// Its webhook, as the claim read it.
    pub hook: webhook::Model,
    /// This claim's token: only its holder records the attempt.
    pub claim: i64,
}

/// How an attempt ended.
struct Outcome {
    status_code: Option<i32>,
    error: Option<String>,
    elapsed: Duration,
    /// No answer came within `WEBHOOK_TIMEOUT_SECONDS`.
    timed_out: bool,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

impl Service {
    /// One attempt at a claimed delivery with `client`, then its record.
    pub(crate) async fn attempt(
        &self,
        client: &reqwest::Client,
        claimed: Claimed,
    ) -> AppResult<()> {
        let Claimed {
            delivery,
            hook,
            claim,
        } = claimed;
        if hook.deleted_at.is_some() {
            webhook_delivery::Entity::update_many()
                .col_expr(
                    webhook_delivery::Column::Status,
                    sea_orm::sea_query::Expr::value(CANCELLED),
                )
                .col_expr(
                    webhook_delivery::Column::NextAttemptAt,
                    sea_orm::sea_query::Expr::value(None::<DateTime<Utc>>),
                )
                .filter(webhook_delivery::Column::Id.eq(delivery.id))
                .filter(webhook_delivery::Column::Claim.eq(claim))
                .exec(&self.writer)
                .await?;
            return Ok(());
        };
        let attempted_at = self.now();
        let outcome = self.post(client, &hook, &delivery, attempted_at).await;
        self.record_attempt(&hook, &delivery, claim, attempted_at, outcome)
            .await
    }

    /// Posts the delivery's body, signed; no database work happens meanwhile.
    async fn post(
        &self,
        client: &reqwest::Client,
        hook: &webhook::Model,
        delivery: &webhook_delivery::Model,
        at: DateTime<Utc>,
    ) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome {
            status_code: None,
            error: Some(error),
            elapsed: started.elapsed(),
            timed_out: false,
        };
        let url = match target::parse_url(&hook.url) {
            Ok(url) => url,
            Err(e) => return failed(e.to_string()),
        };
        // The client resolves names through the guarded resolver; an address written in the
        // URL is never resolved, so it is checked here.
        if let Some(ip) = target::literal_ip(&url)
            && !self.config.webhook_allow_private
            && !target::is_public(ip)
        {
            return failed(format!("{ip} is a private, loopback or metadata address"));
        }
        // Never posted unsigned: a secret that cannot be opened fails the attempt (it is
        // retried, and a rotation mends it).
        let secret = match self.webhook_secrets.open(&hook.secret) {
            Ok(secret) => secret,
            Err(e) => return failed(e.to_string()),
        };
        let timestamp = at.timestamp();
        let signature = sign(&secret, &delivery.event_id, timestamp, &delivery.payload);
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let status = response.status().as_u16() as i32;
                // Read a little of the answer (a failure's reason), never all of it.
                let mut text = Vec::new();
                while text.len() < MAX_RESPONSE_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                text.truncate(MAX_RESPONSE_BYTES);
                let ok = (200..300).contains(&status);
                Outcome {
                    status_code: Some(status),
                    error: (!ok).then(|| {
                        let body = String::from_utf8_lossy(&text);
                        let body = body.trim();
                        if body.is_empty() {
                            format!("HTTP {status}")
                        } else {
                            format!(
                                "HTTP {status}: {}",
                                body.chars().take(500).collect::<String>()
                            )
                        }
                    }),
                    elapsed: started.elapsed(),
                    timed_out: false,
                }
            }
            Err(e) => {
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    message = format!("{message}: {inner}");
                    source = inner.source();
                }
                Outcome {
                    timed_out: e.is_timeout(),
                    ..failed(if e.is_timeout() {
                        format!(
                            "timed out after {} s",
                            self.config.webhook_timeout.as_secs()
                        )
                    } else {
                        message
                    })
                }
            }
        }
    }

    /// Writes the attempt and settles or reschedules the delivery, in one transaction, if
    /// this process still holds its claim. The next attempt is due `wait` after this one
    /// ended; a delivery cancelled meanwhile (its webhook deleted) stays cancelled.
    async fn record_attempt(
        &self,
        hook: &webhook::Model,
        delivery: &webhook_delivery::Model,
        claim: i64,
        at: DateTime<Utc>,
        outcome: Outcome,
    ) -> AppResult<()> {
        let elapsed_ms = outcome.elapsed.as_millis().min(i32::MAX as u128) as i32;
        let ended = at + chrono::Duration::from_std(outcome.elapsed).unwrap_or_default();
        let (status, next, wait) = if outcome.delivered() {
            (DELIVERED, None, delivery.last_wait_ms)
        } else {
            let wait = next_wait_ms(delivery.last_wait_ms, rand::random::<f64>());
            let next = ended + chrono::Duration::milliseconds(wait);
            if next > delivery.created_at + RETRY_WINDOW {
                (FAILED, None, Some(wait))
            } else {
                (PENDING, Some(next), Some(wait))
            }
        };
        let backend = self.writer.get_database_backend();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let ends_hold = outcome.status_code.is_some()
            && (hook.last_hold_ms.is_some() || hook.held_until.is_some());
        // The webhook's row first, when its hold changes: the order deleteWebhook takes
        // them in (webhook, then deliveries), so the two never deadlock.
        let hold = if outcome.timed_out || ends_hold {
            lock_hold(&txn, hook.id).await?
        } else {
            None
        };
        let settled = txn
            .query_one_raw(statement(
                backend,
                &format!(
                    "UPDATE webhook_delivery SET \
                     status = CASE WHEN status = '{CANCELLED}' THEN status ELSE $1 END, \
                     next_attempt_at = CASE WHEN status = '{CANCELLED}' THEN NULL ELSE $2 END, \
                     attempts = attempts + 1, locked_until = NULL, claim = NULL, \
                     last_wait_ms = $3, last_status_code = $4, last_duration_ms = $5, \
                     last_error = $6, delivered_at = $7 \
                     WHERE id = $8 AND claim = $9 RETURNING status"
                ),
                vec![
                    status.into(),
                    next.into(),
                    wait.into(),
                    outcome.status_code.into(),
                    elapsed_ms.into(),
                    outcome.error.clone().into(),
                    outcome.delivered().then_some(ended).into(),
                    delivery.id.into(),
                    claim.into(),
                ],
            ))
            .await?;
        let Some(settled) = settled else {
            // The lease ran out and another process owns it now: its attempt is the record.
            txn.rollback().await?;
            tracing::warn!(
                delivery_id = delivery.id,
                "a webhook attempt outlived its lease"
            );
            return Ok(());
        };
        let settled: String = settled.try_get_by_index(0)?;
        webhook_attempt::ActiveModel {
            delivery_id: Set(delivery.id),
            attempted_at: Set(at),
            status_code: Set(outcome.status_code),
            duration_ms: Set(elapsed_ms),
            error: Set(outcome.error.clone()),
            next_retry_at: Set(next.filter(|_| settled == PENDING)),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        let mut given_up = 0;
        if outcome.timed_out
            && let Some(hold) = hold
        {
            given_up = hold_after_timeout(&txn, hook.id, hold, at, ended).await?;
        } else if ends_hold {
            // An answer, even an error, ends the hold: the receiver is back.
            webhook::Entity::update_many()
                .col_expr(
                    webhook::Column::HeldUntil,
                    sea_orm::sea_query::Expr::value(None::<DateTime<Utc>>),
                )
                .col_expr(
                    webhook::Column::LastHoldMs,
                    sea_orm::sea_query::Expr::value(None::<i64>),
                )
                .filter(webhook::Column::Id.eq(hook.id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        for _ in 0..given_up {
            self.metrics.webhook_delivery("failed");
        }
        let label = match status {
            DELIVERED => {
                tracing::debug!(delivery_id = delivery.id, "webhook delivered");
                "delivered"
            }
            FAILED => {
                tracing::warn!(delivery_id = delivery.id, error = ?outcome.error, "webhook delivery failed for 24 hours; given up");
                "failed"
            }
            _ => {
                tracing::info!(delivery_id = delivery.id, error = ?outcome.error, wait_ms = ?wait, "webhook delivery failed; will retry");
                "retried"
            }
        };
        self.metrics.webhook_delivery(label);
        Ok(())
    }

    /// How old the oldest pending delivery is, in seconds (0 when none).
    pub async fn oldest_pending_delivery_age(&self) -> AppResult<f64> {
        let oldest: Option<Option<DateTime<Utc>>> = webhook_delivery::Entity::find()
            .select_only()
            .column_as(webhook_delivery::Column::CreatedAt.min(), "oldest")
            .filter(webhook_delivery::Column::Status.eq(PENDING))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(oldest.flatten().map_or(0.0, |at| {
            Ord::max((self.now() - at).num_milliseconds(), 0) as f64 / 1000.0
        }))
    }
}

/// A webhook's `held_until` and `last_hold_ms`.
type Hold = (Option<DateTime<Utc>>, Option<i64>);

/// Reads a webhook's hold, locking its row on PostgreSQL (`FOR NO KEY UPDATE`, which the
/// outbox inserts of changes do not wait for) until the transaction ends.
async fn lock_hold(txn: &DatabaseTransaction, webhook_id: i32) -> AppResult<Option<Hold>> {
    let backend = txn.get_database_backend();
    let lock = if backend == DbBackend::Postgres {
        " FOR NO KEY UPDATE"
    } else {
        ""
    };
    let row = txn
        .query_one_raw(statement(
            backend,
            &format!("SELECT held_until, last_hold_ms FROM webhook WHERE id = $1{lock}"),
            vec![webhook_id.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => Some((row.try_get_by_index(0)?, row.try_get_by_index(1)?)),
        None => None,
    })
}

/// Holds a webhook back after an attempt at it got no answer, so a receiver that hangs is
/// not sent more meanwhile. The hold runs 5 to 10 s from the attempt's end and, with each
/// later attempt that times out too, grows as a retry's wait does (1.5 to 2 times, at most
/// two hours); attempts that began before the hold do not lengthen it. After it, one
/// delivery at a time probes the receiver until one gets an answer. Returns how many
/// deliveries were given up: those of the webhook past their 24 hours, which the hold would
/// otherwise keep pending with no attempt to fail them.
async fn hold_after_timeout(
    txn: &DatabaseTransaction,
    webhook_id: i32,
    (held_until, last_hold_ms): Hold,
    attempted_at: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> AppResult<u64> {
    let backend = txn.get_database_backend();
    if held_until.is_some_and(|until| until > attempted_at) {
        // In flight when the hold began: that hold already answers this timeout.
        return Ok(0);
    }
    let hold = next_wait_ms(last_hold_ms, rand::random::<f64>());
    txn.execute_raw(statement(
        backend,
        "UPDATE webhook SET held_until = $1, last_hold_ms = $2 WHERE id = $3",
        vec![
            (ended + chrono::Duration::milliseconds(hold)).into(),
            hold.into(),
            webhook_id.into(),
        ],
    ))
    .await?;
    tracing::warn!(
        webhook_id,
        hold_ms = hold,
        "a webhook receiver timed out; its deliveries are held back"
    );
    let given_up = txn
        .execute_raw(statement(
            backend,
            &format!(
                "UPDATE webhook_delivery SET status = '{FAILED}', next_attempt_at = NULL,                  last_error = $1 WHERE webhook_id = $2 AND status = '{PENDING}'                  AND created_at <= $3 AND (locked_until IS NULL OR locked_until <= $4)"
            ),
            vec![
                "given up after 24 hours: the receiver kept timing out".into(),
                webhook_id.into(),
                (ended - RETRY_WINDOW).into(),
                ended.into(),
            ],
        ))
        .await?
        .rows_affected();
    Ok(given_up)
}

/// The columns of a `webhook_delivery::Model`, for RETURNING.
pub(super) const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, payload, status, attempts, \
     created_at, next_attempt_at, locked_until, claim, last_wait_ms, last_status_code, \
     last_duration_ms, last_error, delivered_at, redelivery_of";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_within_ten_seconds_and_at_most_double() {
        for jitter in [0.0, 0.3, 0.999] {
            let first = next_wait_ms(None, jitter);
            assert!((5_000..=10_000).contains(&first), "{first}");
            let mut last = first;
            let mut total = first;
            for _ in 0..40 {
                let wait = next_wait_ms(Some(last), jitter);
                assert!(wait <= 2 * last, "{wait} after {last}");
                assert!(wait >= last || wait == MAX_WAIT_MS, "{wait} after {last}");
                last = wait;
                total += wait;
            }
            // Forty retries reach past the 24-hour window whatever the draws.
            assert!(total > RETRY_WINDOW.num_milliseconds());
        }
    }

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
