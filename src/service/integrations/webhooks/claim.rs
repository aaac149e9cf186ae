//! Claiming due deliveries, webhook by webhook: each webhook gets at most its cap of
//! deliveries in flight (counted over every process by their leases, and over this process
//! by its own attempts), one while it is probed after timeouts, and none while it is held.
//! A webhook at its cap is skipped, so the claim never fills up with a slow receiver's
//! deliveries while another's wait.
//!
//! Each delivery is leased to one process: on PostgreSQL the webhooks being claimed for are
//! locked (`FOR NO KEY UPDATE SKIP LOCKED`, which changes' outbox inserts do not wait for)
//! so two processes never count the same room twice, and the deliveries themselves are
//! taken `FOR UPDATE SKIP LOCKED`; on SQLite the write transaction is the lock.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, TransactionTrait};

use crate::entities::{webhook, webhook_delivery};
use crate::error::{AppError, AppResult};
use crate::service::Service;
use crate::service::integrations::webhooks::delivery::{Claimed, PENDING};
use crate::service::sql::{statement, write_transaction};

/// What one claim found.
#[derive(Default)]
pub struct Claim {
    /// The deliveries this process now holds, each with its webhook.
    pub claimed: Vec<Claimed>,
    /// The client to post them with.
    pub client: Option<reqwest::Client>,
    /// Why nothing was claimed though deliveries had room: the delivery client cannot be
    /// built, and deliveries are never posted without it (fail closed).
    pub halted: Option<AppError>,
    /// When something not claimable now may become so (a retry comes due, a lease or a
    /// hold ends); deliveries waiting only for a webhook's room are not counted here; the
    /// end of an attempt brings them.
    pub next_due: Option<DateTime<Utc>>,
}

/// A webhook with deliveries due and unleased, as the first look sees it.
#[derive(Debug, FromQueryResult)]
struct Candidate {
    id: i32,
    last_hold_ms: Option<i64>,
    leased: i64,
}

/// The SQL condition of a delivery that may be claimed at `$1`.
const CLAIMABLE: &str = "d.status = 'pending' AND d.next_attempt_at <= $1 \
     AND (d.locked_until IS NULL OR d.locked_until <= $1)";

/// [`CLAIMABLE`], less the deliveries this process is attempting (ids, so written inline).
fn claimable_except(attempting: &HashSet<i32>) -> String {
    if attempting.is_empty() {
        return CLAIMABLE.to_owned();
    }
    let ids: Vec<String> = attempting.iter().map(i32::to_string).collect();
    format!("{CLAIMABLE} AND d.id NOT IN ({})", ids.join(", "))
}

impl Service {
    /// Claims due deliveries for the webhooks with room, at most `room` in all. `in_flight`
    /// counts this process's attempts per webhook and `attempting` names their deliveries,
    /// which are never claimed again meanwhile (a lease that ran out on a moved clock does
    /// not end an attempt).
    pub(crate) async fn claim_deliveries(
        &self,
        in_flight: &HashMap<i32, usize>,
        attempting: &HashSet<i32>,
        room: usize,
    ) -> AppResult<Claim> {
        let now = self.now();
        let cap = self.config.webhook_max_in_flight;
        let room_of = |id: i32, last_hold_ms: Option<i64>, leased: i64| {
            let cap = if last_hold_ms.is_some() { 1 } else { cap };
            let busy = Ord::max(
                usize::try_from(leased).unwrap_or(usize::MAX),
                in_flight.get(&id).copied().unwrap_or(0),
            );
            cap.saturating_sub(busy)
        };
        let claimable = claimable_except(attempting);
        // A read first: while nothing has room, a look costs no write transaction.
        let candidates = self.claim_candidates(now, &claimable).await?;
        let wanted: Vec<i32> = candidates
            .iter()
            .filter(|c| room_of(c.id, c.last_hold_ms, c.leased) > 0)
            .map(|c| c.id)
            .collect();
        if wanted.is_empty() || room == 0 {
            return Ok(Claim {
                next_due: self.next_claimable(now).await?,
                ..Claim::default()
            });
        }
        // Built only now that there is work, so an idle server never holds it.
        let client = match self.webhook_client() {
            Ok(client) => client.clone(),
            Err(e) => {
                return Ok(Claim {
                    halted: Some(e),
                    ..Claim::default()
                });
            }
        };
        let claimed = self
            .claim_for(&wanted, &claimable, now, room, room_of)
            .await?;
        let next_due = if claimed.is_empty() {
            self.next_claimable(now).await?
        } else {
            // Claimed something: the caller looks again at once.
            Some(now)
        };
        Ok(Claim {
            claimed,
            client: Some(client),
            halted: None,
            next_due,
        })
    }

    /// The webhooks not held with deliveries claimable now, the longest-waiting first, with
    /// how many of their deliveries are leased.
    async fn claim_candidates(
        &self,
        now: DateTime<Utc>,
        claimable: &str,
    ) -> Result<Vec<Candidate>, DbErr> {
        let backend = self.db.get_database_backend();
        let sql = format!(
            "SELECT id, last_hold_ms, leased FROM (\
             SELECT w.id, w.last_hold_ms, \
             (SELECT COUNT(*) FROM webhook_delivery l WHERE l.webhook_id = w.id \
              AND l.status = '{PENDING}' AND l.locked_until > $1) AS leased, \
             (SELECT MIN(d.next_attempt_at) FROM webhook_delivery d \
              WHERE d.webhook_id = w.id AND {claimable}) AS due_since \
             FROM webhook w WHERE w.held_until IS NULL OR w.held_until <= $1) c \
             WHERE due_since IS NOT NULL ORDER BY due_since, id"
        );
        let rows = self
            .db
            .query_all_raw(statement(backend, &sql, vec![now.into()]))
            .await?;
        rows.iter()
            .map(|row| Candidate::from_query_result(row, ""))
            .collect()
    }

    /// In one write transaction: locks the `wanted` webhooks (skipping any another process
    /// is claiming for), counts their leases again, and leases each its room's worth of its
    /// oldest due deliveries.
    async fn claim_for(
        &self,
        wanted: &[i32],
        claimable: &str,
        now: DateTime<Utc>,
        mut room: usize,
        room_of: impl Fn(i32, Option<i64>, i64) -> usize,
    ) -> AppResult<Vec<Claimed>> {
        let backend = self.writer.get_database_backend();
        let postgres = backend == DbBackend::Postgres;
        let lease = now
            + chrono::Duration::from_std(self.config.webhook_timeout * 6)
                .unwrap_or(chrono::Duration::minutes(1));
        let claim: i64 = rand::random::<i64>() & i64::MAX;
        let ids = wanted
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let hooks = txn
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT * FROM webhook WHERE id IN ({ids}) \
                     AND (held_until IS NULL OR held_until <= $1) ORDER BY id{lock}",
                    lock = if postgres {
                        " FOR NO KEY UPDATE SKIP LOCKED"
                    } else {
                        ""
                    },
                ),
                vec![now.into()],
            ))
            .await?
            .iter()
            .map(|row| webhook::Model::from_query_result(row, ""))
            .collect::<Result<Vec<_>, DbErr>>()?;
        let hooks: HashMap<i32, webhook::Model> = hooks.into_iter().map(|h| (h.id, h)).collect();
        // Counted after the lock, in a statement of its own: it sees every claim committed
        // before, and no other process claims for these webhooks until this one commits.
        let leased: HashMap<i32, i64> = txn
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT webhook_id, COUNT(*) FROM webhook_delivery \
                     WHERE webhook_id IN ({ids}) AND status = '{PENDING}' AND locked_until > $1 \
                     GROUP BY webhook_id"
                ),
                vec![now.into()],
            ))
            .await?
            .iter()
            .map(|row| Ok::<_, DbErr>((row.try_get_by_index(0)?, row.try_get_by_index::<i64>(1)?)))
            .collect::<Result<_, _>>()?;
        let mut claimed = Vec::new();
        // In the order of the first look: the longest-waiting webhook first.
        for &id in wanted {
            // Skipped by the lock (another process is claiming for it) or held meanwhile.
            let Some(hook) = hooks.get(&id) else {
                continue;
            };
            let take =
                room_of(id, hook.last_hold_ms, leased.get(&id).copied().unwrap_or(0)).min(room);
            if take == 0 {
                continue;
            }
            let sql = format!(
                "UPDATE webhook_delivery SET locked_until = $2, claim = $3 WHERE id IN (\
                 SELECT d.id FROM webhook_delivery d WHERE d.webhook_id = $4 AND {claimable} \
                 ORDER BY d.next_attempt_at, d.id LIMIT {take}{skip}) RETURNING {columns}",
                skip = if postgres {
                    " FOR UPDATE SKIP LOCKED"
                } else {
                    ""
                },
                columns = crate::service::integrations::webhooks::delivery::DELIVERY_COLUMNS,
            );
            let rows = txn
                .query_all_raw(statement(
                    backend,
                    &sql,
                    vec![now.into(), lease.into(), claim.into(), id.into()],
                ))
                .await?;
            for row in &rows {
                claimed.push(Claimed {
                    delivery: webhook_delivery::Model::from_query_result(row, "")?,
                    hook: hook.clone(),
                    claim,
                });
            }
            room = room.saturating_sub(rows.len());
            if room == 0 {
                break;
            }
        }
        txn.commit().await?;
        Ok(claimed)
    }

    /// When something not claimable at `now` may become so: the earliest future retry or
    /// lease end of a pending delivery, or hold end of a webhook with pending deliveries.
    async fn next_claimable(&self, now: DateTime<Utc>) -> AppResult<Option<DateTime<Utc>>> {
        let free_at = "CASE WHEN d.locked_until IS NOT NULL AND d.locked_until > d.next_attempt_at \
             THEN d.locked_until ELSE d.next_attempt_at END";
        let row = self
            .db
            .query_one_raw(statement(
                self.db.get_database_backend(),
                &format!(
                    "SELECT (SELECT MIN({free_at}) FROM webhook_delivery d \
                     WHERE d.status = '{PENDING}' AND {free_at} > $1), \
                     (SELECT MIN(w.held_until) FROM webhook w WHERE w.held_until > $1 \
                     AND EXISTS (SELECT 1 FROM webhook_delivery d \
                     WHERE d.webhook_id = w.id AND d.status = '{PENDING}'))"
                ),
                vec![now.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let retry: Option<DateTime<Utc>> = row.try_get_by_index(0)?;
        let hold: Option<DateTime<Utc>> = row.try_get_by_index(1)?;
        Ok(match (retry, hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}
