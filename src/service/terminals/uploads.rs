//! Attendance uploads: each line judged through the buffered-scan pipeline as the terminal,
//! logged with its outcome and counted; what the reply cannot wait for is stored as
//! pending and judged right after by the drain, under the terminal's lease in the database.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use futures_util::{StreamExt, TryStreamExt, stream};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set,
};

use super::UploadReply;
use crate::auth::Principal;
use crate::entities::{DeviceApproval, PunchOutcome, device, terminal_punch, terminal_stamp};
use crate::error::{AppError, AppResult, ErrorCode, Reason};
use crate::iclock::protocol::{
    AttendanceLine, firmware_from_options, parse_attendance, parse_attendance_line,
};
use crate::service::roll_call::scan::buffered::BufferedOutcome;
use crate::service::roll_call::scan::{ScanRequest, StudentRef};
use crate::service::sql::paginate;
use crate::service::{Page, PageRequest, Service, now, now_millis};

/// The tables whose upload stamps are kept and handed back in the handshake.
pub const STAMPED_TABLES: [&str; 2] = ["ATTLOG", "OPERLOG"];
/// Lines processed between two writes of the line log (an interrupted upload loses at
/// most this much bookkeeping: its scans are kept, a resend finds them as duplicates) and
/// between two looks at the time budget of an upload.
const CHUNK: usize = 250;
/// How long an upload's lines are judged before the reply at most; the rest are judged
/// after it. Terminals' own request timeouts are short and not configurable everywhere.
pub const SYNC_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// Students whose lines one upload processes at once. Enough to keep a few connections
/// busy, few enough to leave the pool to everyone else.
const PARALLEL_STUDENTS: usize = 4;
/// How long a lease on a terminal's lines lasts unless renewed (each chunk renews it), in
/// milliseconds. Far longer than a chunk takes; a process that dies holding a lease delays
/// that terminal's pending lines by this much, plus the wait for the next sweep.
const LEASE_MILLIS: i64 = 60_000;
/// How long an upload waits for a terminal's lease that another drain holds before it
/// stores its lines as pending (within its time budget).
const LEASE_WAIT: Duration = Duration::from_secs(2);
/// How often a waiting upload tries the lease again.
const LEASE_POLL: Duration = Duration::from_millis(20);

/// The unique key of a logged line: terminal, time, PIN.
const PUNCH_KEY: [terminal_punch::Column; 3] = [
    terminal_punch::Column::DeviceId,
    terminal_punch::Column::PunchTime,
    terminal_punch::Column::Pin,
];

/// A log row for `line` with `outcome` and nothing else filled in.
fn punch_row(
    device_id: i32,
    line: &AttendanceLine,
    outcome: PunchOutcome,
) -> terminal_punch::ActiveModel {
    terminal_punch::ActiveModel {
        device_id: Set(device_id),
        pin: Set(line.pin.clone()),
        punch_time: Set(line.time.clone()),
        line: Set(line.raw.clone()),
        outcome: Set(outcome),
        reason: Set(None),
        message: Set(None),
        record_id: Set(None),
        received_at: Set(now()),
        ..Default::default()
    }
}

/// Increments of a terminal's line counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    accepted: i64,
    duplicate: i64,
    rejected: i64,
}

impl Counts {
    fn of(outcomes: impl Iterator<Item = PunchOutcome>) -> Self {
        let mut counts = Self::default();
        outcomes.for_each(|o| counts.add(o));
        counts
    }

    fn add(&mut self, outcome: PunchOutcome) {
        match outcome {
            PunchOutcome::Accepted | PunchOutcome::Corrected => self.accepted += 1,
            PunchOutcome::Duplicate => self.duplicate += 1,
            PunchOutcome::Rejected => self.rejected += 1,
            PunchOutcome::Pending => {}
        }
    }
}

/// This process's right to judge one terminal's attendance lines, held in the database
/// (`device.drain_lease_until`) so that processes sharing it never judge the same lines and
/// a student's lines are judged earliest first. The end it wrote is its token: a lease is
/// claimed only once the previous one has ended, so no two holders share an end.
#[derive(Debug)]
struct Lease {
    device_id: i32,
    until: i64,
}

/// How a drain under a lease ended.
struct Drained {
    /// The lines judged.
    lines: usize,
    /// True when it found no line left; false when it stopped (the terminal is not
    /// admitted, or the lease was lost to another process, which goes on).
    emptied: bool,
}

/// What one new line of an upload became.
struct Judged {
    outcome: PunchOutcome,
    reason: Option<&'static str>,
    message: Option<String>,
    record_id: Option<i32>,
}

impl Judged {
    fn taken(outcome: PunchOutcome, record_id: i32) -> Self {
        Self {
            outcome,
            reason: None,
            message: None,
            record_id: Some(record_id),
        }
    }

    fn rejected(reason: &'static str, message: String) -> Self {
        Self {
            outcome: PunchOutcome::Rejected,
            reason: Some(reason),
            message: Some(message),
            record_id: None,
        }
    }
}

impl Service {
    /// Takes an upload of `table`. Attendance lines go through the buffered-scan pipeline;
    /// other tables are acknowledged (an `options` upload also updates the firmware). The
    /// stamp is stored only once the upload is, so a failed upload is sent again.
    pub async fn terminal_upload(
        &self,
        device: &device::Model,
        table: &str,
        stamp: Option<&str>,
        body: &str,
    ) -> AppResult<UploadReply> {
        let table = table.trim().to_ascii_uppercase();
        let reply = match table.as_str() {
            "ATTLOG" => UploadReply::Taken(self.take_attendance(device, body).await?),
            "OPTIONS" => {
                if let Some(firmware) = firmware_from_options(body) {
                    device::Entity::update_many()
                        .col_expr(device::Column::FirmwareVersion, Expr::value(firmware))
                        .filter(device::Column::Id.eq(device.id))
                        .exec(&self.db)
                        .await?;
                }
                UploadReply::Ok
            }
            _ => UploadReply::Ok,
        };
        let stamp = stamp.and_then(|s| s.trim().parse::<i64>().ok());
        if let Some(stamp) = stamp
            && STAMPED_TABLES.contains(&table.as_str())
        {
            terminal_stamp::Entity::insert(terminal_stamp::ActiveModel {
                device_id: Set(device.id),
                table_name: Set(table),
                stamp: Set(stamp),
                updated_at: Set(now()),
                ..Default::default()
            })
            .on_conflict(
                OnConflict::columns([
                    terminal_stamp::Column::DeviceId,
                    terminal_stamp::Column::TableName,
                ])
                .update_columns([
                    terminal_stamp::Column::Stamp,
                    terminal_stamp::Column::UpdatedAt,
                ])
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        }
        Ok(reply)
    }

    /// Runs each new line of an attendance upload through `scan_buffered` as the terminal
    /// (its PIN is a student code, its time read in the terminal's zone) and logs every
    /// line with its outcome. A line already logged (same terminal, PIN and time) is a
    /// resend and is ignored. Lines that are malformed or that a rule refuses are kept for
    /// review and never fail the upload; only an unreachable database or a terminal revoked
    /// meanwhile does, and then resending is harmless.
    ///
    /// Lines are processed before the reply for [`SYNC_BUDGET`] (or a third of
    /// `REQUEST_TIMEOUT`, if shorter) at most; what is left then is stored as pending and
    /// processed right after (see [`Service::drain_terminal`]), so an upload of any size is
    /// answered in time and the terminal never resends a batch that was stored. They are
    /// judged before the reply only under the terminal's lease: while another process holds
    /// it (or lines of the terminal are already pending), they are all stored as pending
    /// for the drain, so no two processes judge one terminal's lines. Returns the lines
    /// taken, pending ones included.
    async fn take_attendance(&self, device: &device::Model, body: &str) -> AppResult<usize> {
        let started = Instant::now();
        let budget = (self.config.request_timeout / 3).min(SYNC_BUDGET);
        let lines = parse_attendance(body);
        // Identical lines inside the upload count like their first occurrence.
        let mut first_of: HashMap<(String, String), usize> = HashMap::new();
        let mut unique: Vec<usize> = Vec::new();
        let mut first_occurrence: Vec<usize> = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            let first = *first_of.entry(line.key()).or_insert_with(|| {
                unique.push(index);
                index
            });
            first_occurrence.push(first);
        }
        // Earliest first, so a student's first scan in a session is the one recorded
        // whatever order the terminal sent its lines in.
        unique.sort_by(|a, b| lines[*a].time.cmp(&lines[*b].time).then(a.cmp(b)));

        let mut outcomes: HashMap<usize, PunchOutcome> = HashMap::with_capacity(unique.len());
        // New lines are judged now only under the terminal's lease, claimed at the first
        // of them. Once the budget is spent, or if another process holds the lease (or
        // lines wait before these), the rest are stored as pending for the drain.
        let mut lease: Option<Lease> = None;
        let mut deferring = false;
        let taken = async {
            for chunk in unique.chunks(CHUNK) {
                let known = self.logged_lines(device.id, chunk, &lines).await?;
                let mut fresh = Vec::with_capacity(chunk.len());
                for &index in chunk {
                    match known.get(&lines[index].key()) {
                        Some(outcome) => {
                            outcomes.insert(index, *outcome);
                        }
                        None => fresh.push(index),
                    }
                }
                if fresh.is_empty() {
                    continue;
                }
                if !deferring && started.elapsed() > budget {
                    deferring = true;
                    tracing::info!(serial = ?device.serial_number,
                        "large upload: the rest of its lines are judged after the reply");
                }
                if !deferring {
                    let holding = match &mut lease {
                        Some(held) => self.renew_lease(held).await?,
                        None => {
                            let deadline = started + budget.min(LEASE_WAIT);
                            lease = self.claim_lines_by(device.id, deadline).await?;
                            if lease.is_some() {
                                // Whoever held the lease meanwhile may have judged some of
                                // these lines (a resend through another process): theirs
                                // stand, and only what is still unlogged is judged here.
                                let logged = self.logged_lines(device.id, &fresh, &lines).await?;
                                fresh.retain(|index| match logged.get(&lines[*index].key()) {
                                    Some(outcome) => {
                                        outcomes.insert(*index, *outcome);
                                        false
                                    }
                                    None => true,
                                });
                            }
                            lease.is_some()
                        }
                    };
                    deferring = !holding;
                    if fresh.is_empty() {
                        continue;
                    }
                }
                if deferring {
                    self.defer_lines(device.id, &lines, &fresh).await?;
                    outcomes.extend(fresh.iter().map(|i| (*i, PunchOutcome::Pending)));
                    continue;
                }
                let judged = self.judge_lines(device, &lines, fresh).await?;
                outcomes.extend(judged.iter().map(|(i, j)| (*i, j.outcome)));
                self.log_lines(device.id, &lines, judged).await?;
            }
            Ok::<_, AppError>(())
        }
        .await;
        let held = lease.is_some();
        if let Some(lease) = lease {
            self.release_lease(lease).await;
        }
        // Another upload may have stored lines, finding the lease taken, while this one held
        // it: handing them on falls to this one. An error or a failed look means look again.
        let wake_drain = deferring
            || (held
                && (taken.is_err() || self.has_pending_lines(device.id).await.unwrap_or(true)));
        if wake_drain {
            self.spawn_drain(device.id);
        }
        taken?;
        Ok(first_occurrence
            .iter()
            .filter(|first| {
                outcomes
                    .get(first)
                    .is_some_and(|o| *o != PunchOutcome::Rejected)
            })
            .count())
    }

    /// Judges the lines `indices` of `lines` through the scan pipeline. One student's lines
    /// run in the given (time) order; different students' lines are independent and run
    /// side by side. Results come back in line order.
    async fn judge_lines(
        &self,
        device: &device::Model,
        lines: &[AttendanceLine],
        indices: Vec<usize>,
    ) -> AppResult<Vec<(usize, Judged)>> {
        let principal = Principal::Device {
            id: device.id,
            key_hash: device.key_hash.clone(),
        };
        let zone = self.terminal_zone(device);
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for index in indices {
            let group = *group_of
                .entry(lines[index].pin.as_str())
                .or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
            groups[group].push(index);
        }
        let principal = &principal;
        let mut judged: Vec<(usize, Judged)> = stream::iter(groups)
            .map(|group| async move {
                let mut judged = Vec::with_capacity(group.len());
                for index in group {
                    let verdict = self
                        .judge_line(device, principal, zone, &lines[index])
                        .await?;
                    judged.push((index, verdict));
                }
                Ok::<_, AppError>(judged)
            })
            .buffer_unordered(PARALLEL_STUDENTS)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        judged.sort_by_key(|(index, _)| *index);
        Ok(judged)
    }

    /// Logs judged lines of an upload and adds them to the terminal's counts.
    async fn log_lines(
        &self,
        device_id: i32,
        lines: &[AttendanceLine],
        judged: Vec<(usize, Judged)>,
    ) -> AppResult<()> {
        let counts = Counts::of(judged.iter().map(|(_, j)| j.outcome));
        let log: Vec<terminal_punch::ActiveModel> = judged
            .into_iter()
            .map(|(index, judged)| {
                let mut row = punch_row(device_id, &lines[index], judged.outcome);
                row.reason = Set(judged.reason.map(str::to_owned));
                row.message = Set(judged.message);
                row.record_id = Set(judged.record_id);
                row
            })
            .collect();
        // An upload through another process may have stored some of these as pending (it
        // found the lease taken): they get this verdict instead of being judged again. Any
        // other row logged first stands.
        terminal_punch::Entity::insert_many(log)
            .on_conflict(
                OnConflict::columns(PUNCH_KEY)
                    .update_columns([
                        terminal_punch::Column::Outcome,
                        terminal_punch::Column::Reason,
                        terminal_punch::Column::Message,
                        terminal_punch::Column::RecordId,
                    ])
                    .action_and_where(terminal_punch::Column::Outcome.eq(PunchOutcome::Pending))
                    .to_owned(),
            )
            .exec_without_returning(&self.writer)
            .await?;
        self.add_counts(device_id, counts).await
    }

    /// Stores lines of an upload as pending, to be judged after the reply.
    async fn defer_lines(
        &self,
        device_id: i32,
        lines: &[AttendanceLine],
        indices: &[usize],
    ) -> AppResult<()> {
        let rows = indices
            .iter()
            .map(|i| punch_row(device_id, &lines[*i], PunchOutcome::Pending));
        terminal_punch::Entity::insert_many(rows)
            .on_conflict_do_nothing_on(PUNCH_KEY)
            .exec_without_returning(&self.writer)
            .await?;
        Ok(())
    }

    async fn add_counts(&self, device_id: i32, counts: Counts) -> AppResult<()> {
        if counts == Counts::default() {
            return Ok(());
        }
        device::Entity::update_many()
            .col_expr(
                device::Column::RecordsAccepted,
                Expr::col(device::Column::RecordsAccepted).add(counts.accepted),
            )
            .col_expr(
                device::Column::RecordsDuplicate,
                Expr::col(device::Column::RecordsDuplicate).add(counts.duplicate),
            )
            .col_expr(
                device::Column::RecordsRejected,
                Expr::col(device::Column::RecordsRejected).add(counts.rejected),
            )
            .filter(device::Column::Id.eq(device_id))
            .exec(&self.writer)
            .await?;
        Ok(())
    }

    /// Judges a terminal's pending lines in the background (if no other process is).
    pub(super) fn spawn_drain(&self, device_id: i32) {
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(err) = service.drain_terminal(device_id).await {
                tracing::warn!(error = %err, device = device_id,
                    "pending terminal lines wait for the next sweep");
            }
        });
    }

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
    async fn drain_leased(&self, lease: &mut Lease) -> AppResult<Drained> {
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
    async fn claim_lines_by(&self, device_id: i32, deadline: Instant) -> AppResult<Option<Lease>> {
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
    async fn claim_lines(
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
    async fn renew_lease(&self, lease: &mut Lease) -> AppResult<bool> {
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
    async fn release_lease(&self, lease: Lease) {
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
    async fn has_pending_lines(&self, device_id: i32) -> AppResult<bool> {
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

    /// The outcomes already logged for the lines `indices` of `lines`.
    async fn logged_lines(
        &self,
        device_id: i32,
        indices: &[usize],
        lines: &[AttendanceLine],
    ) -> AppResult<HashMap<(String, String), PunchOutcome>> {
        let wanted: HashSet<(String, String)> = indices.iter().map(|i| lines[*i].key()).collect();
        let times: HashSet<&str> = indices.iter().map(|i| lines[*i].time.as_str()).collect();
        let rows: Vec<(String, String, PunchOutcome)> = terminal_punch::Entity::find()
            .select_only()
            .columns([
                terminal_punch::Column::Pin,
                terminal_punch::Column::PunchTime,
                terminal_punch::Column::Outcome,
            ])
            .filter(terminal_punch::Column::DeviceId.eq(device_id))
            .filter(terminal_punch::Column::PunchTime.is_in(times))
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(pin, time, outcome)| ((pin, time), outcome))
            .filter(|(key, _)| wanted.contains(key))
            .collect())
    }

    /// What one new attendance line becomes; a bad line is logged here with its reason.
    async fn judge_line(
        &self,
        device: &device::Model,
        principal: &Principal,
        zone: Tz,
        line: &AttendanceLine,
    ) -> AppResult<Judged> {
        let judged = match &line.parsed {
            Err(problem) => Judged::rejected(Reason::MalformedLine.as_str(), problem.clone()),
            Ok(at) => {
                let request = ScanRequest {
                    student: StudentRef::Code(line.pin.clone()),
                    date: at.date(),
                    time: at.time(),
                };
                match self.scan_buffered(principal, &request, Some(zone)).await {
                    Ok(BufferedOutcome::Accepted(record)) => {
                        Judged::taken(PunchOutcome::Accepted, record.id)
                    }
                    Ok(BufferedOutcome::CorrectedAbsence(record)) => {
                        Judged::taken(PunchOutcome::Corrected, record.id)
                    }
                    Ok(BufferedOutcome::Duplicate(record_id)) => {
                        Judged::taken(PunchOutcome::Duplicate, record_id)
                    }
                    // Nothing of this line was written: fail the upload so it comes again.
                    Err(AppError::Unavailable) => return Err(AppError::Unavailable),
                    // The terminal was revoked (or given a new key) during the upload.
                    Err(AppError::Unauthenticated) => return Err(AppError::Forbidden),
                    Err(AppError::Internal(detail)) => {
                        // Failing the upload would make the terminal resend it forever and
                        // block everything it records after; the line is kept instead.
                        tracing::error!(error = %detail, serial = ?device.serial_number,
                            "internal error on a terminal's attendance line");
                        Judged::rejected(ErrorCode::Internal.as_str(), "internal error".to_owned())
                    }
                    Err(err) => Judged::rejected(
                        err.reason()
                            .map(Reason::as_str)
                            .unwrap_or(err.code().as_str()),
                        err.public_message(),
                    ),
                }
            }
        };
        if judged.outcome == PunchOutcome::Rejected {
            tracing::warn!(
                serial = ?device.serial_number,
                pin = %line.pin,
                time = %line.time,
                reason = judged.reason.unwrap_or_default(),
                message = judged.message.as_deref().unwrap_or_default(),
                "terminal attendance line rejected"
            );
        }
        Ok(judged)
    }

    /// A page of rejected attendance lines, of one terminal or all, oldest first.
    pub async fn terminal_rejected_lines(
        &self,
        actor: &Principal,
        terminal_id: Option<i32>,
        page: PageRequest,
    ) -> AppResult<Page<terminal_punch::Model>> {
        crate::service::access::require_admin(actor)?;
        let query = terminal_punch::Entity::find()
            .filter(terminal_punch::Column::Outcome.eq(PunchOutcome::Rejected))
            .apply_if(terminal_id, |q, id| {
                q.filter(terminal_punch::Column::DeviceId.eq(id))
            });
        paginate(&self.db, query, terminal_punch::Column::Id, page).await
    }
}
