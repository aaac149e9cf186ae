//! Draining terminals' pending attendance lines: one process at a time judges a terminal's
//! lines, earliest first, under a lease held in the database, and a sweep (at start, then
//! every few minutes) judges those a stopped process left behind.

use std::time::Duration;

use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use std::time::Instant;

use super::uploads::{CHUNK, Counts};
use crate::entities::{DeviceApproval, PunchOutcome, device, terminal_punch};
use crate::error::AppResult;
use crate::service::terminals::protocol::{AttendanceLine, parse_attendance_line};
use crate::service::{Service, now_millis};

/// How long a lease on a terminal's lines lasts unless renewed (each chunk renews it), in
/// milliseconds. Far longer than a chunk takes; a process that dies holding a lease delays
/// that terminal's pending lines by this much, plus the wait for the next sweep.
pub(super) const LEASE_MILLIS: i64 = 60_000;
/// How long an upload waits for a terminal's lease that another drain holds before it
/// stores its lines as pending (within its time budget).
pub(super) const LEASE_WAIT: Duration = Duration::from_secs(2);
/// How often a waiting upload tries the lease again.
pub(super) const LEASE_POLL: Duration = Duration::from_millis(20);

/// This process's right to judge one terminal's attendance lines, held in the database
/// (`device.drain_lease_until`) so that processes sharing it never judge the same lines and
/// a student's lines are judged earliest first. The end it wrote is its token: a lease is
/// claimed only once the previous one has ended, so no two holders share an end.
#[derive(Debug)]
pub(super) struct Lease {
    device_id: i32,
    until: i64,
}

/// How a drain under a lease ended.
pub(super) struct Drained {
    /// The lines judged.
    lines: usize,
    /// True when it found no line left; false when it stopped (the terminal is not
    /// admitted, or the lease was lost to another process, which goes on).
    emptied: bool,
}

impl Service {
    /// Judges a terminal's pending lines, earliest first, until none are left, under the
    /// terminal's lease: while another process holds it, that process judges them and this
    /// returns at once. Stops (leaving them pending) while the terminal is not approved and
    /// active, or when the database fails; the background job tries again. Returns the
    /// lines judged.
    pub async fn drain_terminal(&self, device_id: i32) -> AppResult<usize> {
        let mut judged = 0;
        loop {
            let Some(mut lease) = self.claim_lines(device_id, false).await? else {
                return Ok(judged);
            };
            let drained = self.drain_leased(&mut lease).await;
            self.release_lease(lease).await;
            let drained = drained?;
            judged += drained.lines;
            // Lines an upload stored after this drain's last look, finding the lease taken,
            // are still this drain's to judge: nobody else will before the next sweep.
            if !drained.emptied || !self.has_pending_lines(device_id).await? {
                return Ok(judged);
            }
        }
    }

    /// The body of [`Service::drain_terminal`], under `lease`.
    pub(super) async fn drain_leased(&self, lease: &mut Lease) -> AppResult<Drained> {
        let device_id = lease.device_id;
        let mut judged_lines = 0;
        loop {
            let device = device::Entity::find_by_id(device_id)
                .one(&self.db)
                .await?
                .filter(|d| d.approval == DeviceApproval::Approved && d.is_active);
            let Some(device) = device else {
                return Ok(Drained {
                    lines: judged_lines,
                    emptied: false,
                });
            };
            let pending = terminal_punch::Entity::find()
                .filter(terminal_punch::Column::DeviceId.eq(device_id))
                .filter(terminal_punch::Column::Outcome.eq(PunchOutcome::Pending))
                .order_by_asc(terminal_punch::Column::PunchTime)
                .order_by_asc(terminal_punch::Column::Id)
                .limit(CHUNK as u64)
                .all(&self.db)
                .await?;
            if pending.is_empty() {
                return Ok(Drained {
                    lines: judged_lines,
                    emptied: true,
                });
            }
            let lines: Vec<AttendanceLine> = pending
                .iter()
                .map(|row| parse_attendance_line(&row.line))
                .collect();
            let judged = self
                .judge_lines(&device, &lines, (0..lines.len()).collect())
                .await?;
            let mut counts = Counts::default();
            for (index, judged) in judged {
                let written = terminal_punch::Entity::update_many()
                    .col_expr(terminal_punch::Column::Outcome, Expr::value(judged.outcome))
                    .col_expr(
                        terminal_punch::Column::Reason,
                        Expr::value(judged.reason.map(str::to_owned)),
                    )
                    .col_expr(terminal_punch::Column::Message, Expr::value(judged.message))
                    .col_expr(
                        terminal_punch::Column::RecordId,
                        Expr::value(judged.record_id),
                    )
                    .filter(terminal_punch::Column::Id.eq(pending[index].id))
                    .filter(terminal_punch::Column::Outcome.eq(PunchOutcome::Pending))
                    .exec(&self.writer)
                    .await?;
                if written.rows_affected == 1 {
                    counts.add(judged.outcome);
                }
            }
            self.add_counts(device_id, counts).await?;
            judged_lines += lines.len();
            if !self.renew_lease(lease).await? {
                return Ok(Drained {
                    lines: judged_lines,
                    emptied: false,
                });
            }
        }
    }

    /// Claims the lines for an upload that would judge them at once, trying again until
    /// `deadline`: the holder is most often a drain that finds nothing to do and lets go
    /// within milliseconds (one starts when a terminal is approved, and after each upload),
    /// and judging now gives the terminal a reply that counts what its lines became.
    pub(super) async fn claim_lines_by(
        &self,
        device_id: i32,
        deadline: Instant,
    ) -> AppResult<Option<Lease>> {
        loop {
            if let Some(lease) = self.claim_lines(device_id, true).await? {
                return Ok(Some(lease));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// Claims the right to judge a terminal's lines for [`LEASE_MILLIS`], unless another
    /// process holds it (or, with `only_if_none_pending`, lines of it are pending).
    pub(super) async fn claim_lines(
        &self,
        device_id: i32,
        only_if_none_pending: bool,
    ) -> AppResult<Option<Lease>> {
        let now = now_millis();
        let until = now + LEASE_MILLIS;
        // One conditional UPDATE: the row lock makes it atomic, so of two processes claiming
        // at once one sees the other's lease.
        let claimed = device::Entity::update_many()
            .col_expr(device::Column::DrainLeaseUntil, Expr::value(until))
            .filter(device::Column::Id.eq(device_id))
            .filter(
                Condition::any()
                    .add(device::Column::DrainLeaseUntil.is_null())
                    .add(device::Column::DrainLeaseUntil.lt(now)),
            )
            .apply_if(only_if_none_pending.then_some(()), |update, ()| {
                // While lines of the terminal are pending an upload yields, so those (stored
                // earlier) are judged first, by the drain, in time order.
                update.filter(
                    device::Column::Id.not_in_subquery(
                        Query::select()
                            .column(terminal_punch::Column::DeviceId)
                            .from(terminal_punch::Entity)
                            .and_where(terminal_punch::Column::DeviceId.eq(device_id))
                            .and_where(terminal_punch::Column::Outcome.eq(PunchOutcome::Pending))
                            .to_owned(),
                    ),
                )
            })
            .exec(&self.writer)
            .await?;
        Ok((claimed.rows_affected == 1).then_some(Lease { device_id, until }))
    }

    /// Extends a lease by [`LEASE_MILLIS`] from now. False when it was lost (it ran out and
    /// another process claimed the lines): the caller must stop judging.
    pub(super) async fn renew_lease(&self, lease: &mut Lease) -> AppResult<bool> {
        let until = now_millis() + LEASE_MILLIS;
        let renewed = device::Entity::update_many()
            .col_expr(device::Column::DrainLeaseUntil, Expr::value(until))
            .filter(device::Column::Id.eq(lease.device_id))
            .filter(device::Column::DrainLeaseUntil.eq(lease.until))
            .exec(&self.writer)
            .await?;
        if renewed.rows_affected != 1 {
            tracing::warn!(
                device = lease.device_id,
                "lease on a terminal's lines lost to another process; it judges the rest"
            );
            return Ok(false);
        }
        lease.until = until;
        Ok(true)
    }

    /// Gives a lease up, so any process may claim the lines at once. A failure is logged
    /// only: the lease then runs out by itself.
    pub(super) async fn release_lease(&self, lease: Lease) {
        let released = device::Entity::update_many()
            .col_expr(device::Column::DrainLeaseUntil, Expr::value(None::<i64>))
            .filter(device::Column::Id.eq(lease.device_id))
            .filter(device::Column::DrainLeaseUntil.eq(lease.until))
            .exec(&self.writer)
            .await;
        if let Err(err) = released {
            tracing::warn!(error = %err, device = lease.device_id,
                "could not release a terminal's lease; it runs out by itself");
        }
    }

    /// True when lines of the terminal wait to be judged.
    pub(super) async fn has_pending_lines(&self, device_id: i32) -> AppResult<bool> {
        let pending: Option<i32> = terminal_punch::Entity::find()
            .select_only()
            .column(terminal_punch::Column::Id)
            .filter(terminal_punch::Column::DeviceId.eq(device_id))
            .filter(terminal_punch::Column::Outcome.eq(PunchOutcome::Pending))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(pending.is_some())
    }

    /// Drains every terminal with pending lines (the background job, also after a restart).
    pub async fn drain_terminals(&self) -> AppResult<usize> {
        let devices: Vec<i32> = terminal_punch::Entity::find()
            .select_only()
            .column(terminal_punch::Column::DeviceId)
            .distinct()
            .filter(terminal_punch::Column::Outcome.eq(PunchOutcome::Pending))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut judged = 0;
        for device_id in devices {
            judged += self.drain_terminal(device_id).await?;
        }
        Ok(judged)
    }
}

/// How often terminals' pending lines are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// The job that judges terminals' pending lines left behind (at start, then every few
/// minutes) until told to stop. Each sweep runs as a task of its own, so a long one never
/// delays the other jobs.
pub async fn sweep(service: Service, stop: tokio::sync::watch::Receiver<bool>) {
    crate::service::every(SWEEP_INTERVAL, stop, || {
        let drainer = service.clone();
        tokio::spawn(crate::db::background(async move {
            match drainer.drain_terminals().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(lines = n, "judged pending terminal lines"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "judging pending terminal lines failed; will retry"
                ),
            }
        }));
        async {}
    })
    .await;
}
