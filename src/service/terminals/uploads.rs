//! Attendance uploads: each line judged through the buffered-scan pipeline as the terminal,
//! logged with its outcome and counted; what the reply cannot wait for is stored as
//! pending and judged right after by the drain, under the terminal's lease in the database.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono_tz::Tz;
use futures_util::{StreamExt, TryStreamExt, stream};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, QueryTrait, Set};

use super::UploadReply;
use super::drain::{LEASE_WAIT, Lease};
use crate::auth::Principal;
use crate::entities::{PunchOutcome, device, terminal_punch, terminal_stamp};
use crate::error::{AppError, AppResult, ErrorCode, Reason};
use crate::service::roll_call::scan::buffered::BufferedOutcome;
use crate::service::roll_call::scan::{ScanRequest, StudentRef};
use crate::service::sql::paginate;
use crate::service::terminals::protocol::{
    AttendanceLine, firmware_from_options, parse_attendance,
};
use crate::service::{Page, PageRequest, Service, now};

/// The tables whose upload stamps are kept and handed back in the handshake.
pub const STAMPED_TABLES: [&str; 2] = ["ATTLOG", "OPERLOG"];
/// Lines processed between two writes of the line log (an interrupted upload loses at
/// most this much bookkeeping: its scans are kept, a resend finds them as duplicates) and
/// between two looks at the time budget of an upload.
pub(super) const CHUNK: usize = 250;
/// How long an upload's lines are judged before the reply at most; the rest are judged
/// after it. Terminals' own request timeouts are short and not configurable everywhere.
pub const SYNC_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// Students whose lines one upload processes at once. Enough to keep a few connections
/// busy, few enough to leave the pool to everyone else.
const PARALLEL_STUDENTS: usize = 4;

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
pub(super) struct Counts {
    accepted: i64,
    duplicate: i64,
    rejected: i64,
}

impl Counts {
    pub(super) fn of(outcomes: impl Iterator<Item = PunchOutcome>) -> Self {
        let mut counts = Self::default();
        outcomes.for_each(|o| counts.add(o));
        counts
    }

    pub(super) fn add(&mut self, outcome: PunchOutcome) {
        match outcome {
            PunchOutcome::Accepted | PunchOutcome::Corrected => self.accepted += 1,
            PunchOutcome::Duplicate => self.duplicate += 1,
            PunchOutcome::Rejected => self.rejected += 1,
            PunchOutcome::Pending => {}
        }
    }
}

/// What one new line of an upload became.
pub(super) struct Judged {
    pub(super) outcome: PunchOutcome,
    pub(super) reason: Option<&'static str>,
    pub(super) message: Option<String>,
    pub(super) record_id: Option<i32>,
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
    pub(super) async fn take_attendance(
        &self,
        device: &device::Model,
        body: &str,
    ) -> AppResult<usize> {
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
    pub(super) async fn judge_lines(
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
    pub(super) async fn log_lines(
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
    pub(super) async fn defer_lines(
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

    pub(super) async fn add_counts(&self, device_id: i32, counts: Counts) -> AppResult<()> {
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

    /// The outcomes already logged for the lines `indices` of `lines`.
    pub(super) async fn logged_lines(
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
    pub(super) async fn judge_line(
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
