//! Posting the outbox: claim due deliveries (each by one process: `FOR UPDATE SKIP LOCKED`
//! on PostgreSQL, SQLite's single writer otherwise, and a lease either way), post them
//! signed per Standard Webhooks with no transaction open, then record the attempt and
//! either settle the delivery or schedule its retry with exponential backoff and jitter.

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QuerySelect, Set, TransactionTrait,
};
use sha2::Sha256;

use super::target;
use crate::entities::{webhook, webhook_attempt, webhook_delivery};
use crate::error::AppResult;
use crate::service::Service;
use crate::service::sql::{statement, write_transaction};

/// Waiting to be sent (or sent again).
pub const PENDING: &str = "pending";
/// The receiver answered 2xx.
pub const DELIVERED: &str = "delivered";
/// Retried for 24 hours without success.
pub const FAILED: &str = "failed";
/// Its webhook was deleted before it was delivered.
pub const CANCELLED: &str = "cancelled";

/// How long deliveries are retried before they are marked failed.
pub const RETRY_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// The first retry comes after 5 to 10 seconds.
const FIRST_WAIT_MS: (i64, i64) = (5_000, 10_000);
/// No wait is longer than this.
const MAX_WAIT_MS: i64 = 2 * 3600 * 1000;
/// Deliveries one process claims at once, and posts concurrently.
const CLAIM_BATCH: u64 = 32;
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

/// The HTTP client deliveries use: no redirects, no proxy, rustls with the webpki roots,
/// and the guarded resolver.
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    // The process's default, for any other client built with reqwest's defaults; the
    // delivery client below names its provider itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("attendance-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(std::sync::Arc::new(target::GuardedResolver {
            allow_private,
        }));
    match tls {
        Ok(tls) => builder = builder.tls_backend_preconfigured(tls),
        Err(e) => {
            tracing::error!(error = %e, "webhook TLS configuration failed; https targets will fail")
        }
    }
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "webhook client could not be built; using the default one");
        reqwest::Client::new()
    })
}

/// What one pass of the worker did.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeliveryRun {
    /// Whether a full batch was claimed (more may be due at once).
    pub more: bool,
    /// When the next pending delivery is due, as far as this process can tell.
    pub next_due: Option<DateTime<Utc>>,
}

/// A claimed delivery with its webhook.
struct Claimed {
    delivery: webhook_delivery::Model,
    hook: Option<webhook::Model>,
    claim: i64,
}

/// How an attempt ended.
struct Outcome {
    status_code: Option<i32>,
    error: Option<String>,
    elapsed: Duration,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

impl Service {
    /// Claims the due deliveries, posts them, records each attempt; returns what it did and
    /// when the next is due.
    pub async fn deliver_due(&self) -> AppResult<DeliveryRun> {
        // A read first: while nothing is due, a process's look costs no write.
        let due = self.next_delivery_due().await?;
        if due.is_none_or(|at| at > self.now()) {
            return Ok(DeliveryRun {
                more: false,
                next_due: due,
            });
        }
        let claimed = self.claim_due().await?;
        let more = claimed.len() as u64 == CLAIM_BATCH;
        let service = self.clone();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(CLAIM_BATCH as usize, |claimed| {
                let service = service.clone();
                async move {
                    let id = claimed.delivery.id;
                    if let Err(e) = service.attempt(claimed).await {
                        tracing::warn!(delivery_id = id, error = %e, "recording a webhook attempt failed; it is retried after its lease");
                    }
                }
            })
            .await;
        Ok(DeliveryRun {
            more,
            next_due: self.next_delivery_due().await?,
        })
    }

    /// When the next pending delivery may be claimed: its due time, or the end of the lease
    /// another process holds on it.
    async fn next_delivery_due(&self) -> AppResult<Option<DateTime<Utc>>> {
        let row = self
            .db
            .query_one_raw(statement(
                self.db.get_database_backend(),
                &format!(
                    "SELECT MIN(CASE WHEN locked_until IS NOT NULL AND locked_until > next_attempt_at \
                     THEN locked_until ELSE next_attempt_at END) FROM webhook_delivery \
                     WHERE status = '{PENDING}'"
                ),
                vec![],
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get_by_index::<Option<DateTime<Utc>>>(0)?,
            None => None,
        })
    }

    /// Claims up to a batch of due deliveries for this process: each is leased to it (the
    /// lease outlasts an attempt), so another process skips it; a process that dies
    /// mid-attempt leaves it to be claimed again when the lease ends.
    async fn claim_due(&self) -> AppResult<Vec<Claimed>> {
        let now = self.now();
        let lease = now
            + chrono::Duration::from_std(self.config.webhook_timeout * 6)
                .unwrap_or(chrono::Duration::minutes(1));
        let claim: i64 = rand::random::<i64>() & i64::MAX;
        let backend = self.writer.get_database_backend();
        let due = format!(
            "SELECT id FROM webhook_delivery WHERE status = '{PENDING}' AND next_attempt_at <= $1 \
             AND (locked_until IS NULL OR locked_until <= $1) \
             ORDER BY next_attempt_at, id LIMIT {CLAIM_BATCH}{skip}",
            skip = if backend == DbBackend::Postgres {
                " FOR UPDATE SKIP LOCKED"
            } else {
                ""
            },
        );
        let sql = format!(
            "UPDATE webhook_delivery SET locked_until = $2, claim = $3 WHERE id IN ({due}) \
             RETURNING {columns}",
            columns = DELIVERY_COLUMNS,
        );
        let rows = self
            .writer
            .query_all_raw(statement(
                backend,
                &sql,
                vec![now.into(), lease.into(), claim.into()],
            ))
            .await?;
        let deliveries = rows
            .iter()
            .map(|row| webhook_delivery::Model::from_query_result(row, ""))
            .collect::<Result<Vec<_>, DbErr>>()?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let hooks: std::collections::HashMap<i32, webhook::Model> = webhook::Entity::find()
            .filter(webhook::Column::Id.is_in(deliveries.iter().map(|d| d.webhook_id)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|h| (h.id, h))
            .collect();
        Ok(deliveries
            .into_iter()
            .map(|delivery| Claimed {
                hook: hooks.get(&delivery.webhook_id).cloned(),
                delivery,
                claim,
            })
            .collect())
    }

    /// One attempt at a claimed delivery, then its record.
    async fn attempt(&self, claimed: Claimed) -> AppResult<()> {
        let Claimed {
            delivery,
            hook,
            claim,
        } = claimed;
        let Some(hook) = hook.filter(|h| h.deleted_at.is_none()) else {
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
        let outcome = self.post(&hook, &delivery, attempted_at).await;
        self.record_attempt(&delivery, claim, attempted_at, outcome)
            .await
    }

    /// Posts the delivery's body, signed; no database work happens meanwhile.
    async fn post(
        &self,
        hook: &webhook::Model,
        delivery: &webhook_delivery::Model,
        at: DateTime<Utc>,
    ) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome {
            status_code: None,
            error: Some(error),
            elapsed: started.elapsed(),
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
        let timestamp = at.timestamp();
        let signature = sign(
            &hook.secret,
            &delivery.event_id,
            timestamp,
            &delivery.payload,
        );
        let sent = self
            .webhook_client()
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
                }
            }
            Err(e) => {
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    message = format!("{message}: {inner}");
                    source = inner.source();
                }
                failed(if e.is_timeout() {
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

    /// Writes the attempt and settles or reschedules the delivery, in one transaction, if
    /// this process still holds its claim. The next attempt is due `wait` after this one
    /// ended; a delivery cancelled meanwhile (its webhook deleted) stays cancelled.
    async fn record_attempt(
        &self,
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
        txn.commit().await?;
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

/// The columns of a `webhook_delivery::Model`, for RETURNING.
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, payload, status, attempts, \
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
