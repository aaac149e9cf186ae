//! ZKTeco push ("iclock") terminals: knowing a terminal by its serial number, the options of
//! its handshake, its attendance uploads fed line by line into the buffered-scan pipeline,
//! the command queue, and the health admins read.
//!
//! The transport (`crate::iclock`) only reads requests and writes the text replies; every
//! decision is made here.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use futures_util::{StreamExt, TryStreamExt, stream};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set,
};

use super::directory::paginate;
use super::scan::buffered::BufferedOutcome;
use super::scan::{ScanRequest, StudentRef};
use super::sessions::statement;
use super::{Page, PageRequest, Service, code_text, now, now_millis, required_text};
use crate::auth::{Principal, fast_hash, new_device_key};
use crate::entities::{
    DeviceApproval, PunchOutcome, device, section, student, terminal_command, terminal_punch,
    terminal_stamp,
};
use crate::error::{AppError, AppResult, ErrorCode, Reason, is_unique_violation};
use crate::iclock::protocol::{
    AttendanceLine, delete_user_command, firmware_from_info, firmware_from_options,
    parse_attendance, parse_attendance_line, parse_command_results, push_version, serial_number,
    time_zone_option, update_user_command,
};

/// Seconds between a terminal's polls for commands (`Delay`).
pub const POLL_DELAY_SECONDS: i64 = 10;
/// Seconds a terminal waits before retrying after a failed request (`ErrorDelay`).
pub const ERROR_DELAY_SECONDS: i64 = 30;
/// A terminal is online when it made contact within three poll intervals.
pub const ONLINE_WINDOW_SECONDS: i64 = 3 * POLL_DELAY_SECONDS;
/// Unknown serial numbers recorded as pending at most; beyond this they are refused
/// unrecorded, so anyone who can reach `/iclock/` cannot fill the device table.
pub const MAX_PENDING_TERMINALS: u64 = 100;
/// The most commands one poll hands out; the rest follow on the next polls.
pub const MAX_COMMANDS_PER_POLL: u64 = 50;
/// A command handed out but never answered (the reply to the poll may have been lost) is
/// handed out again after this long. Every command we queue is idempotent.
pub const COMMAND_RETRY_SECONDS: i64 = 300;
/// How often one command is handed out at most.
pub const MAX_COMMAND_ATTEMPTS: i32 = 3;
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
/// Claims a terminal's lines (`$1`) until `$2` if nobody holds them at `$3` (now). The row
/// lock makes it atomic: of two processes claiming at once, one sees the other's lease.
const CLAIM_SQL: &str = "UPDATE device SET drain_lease_until = $2 \
     WHERE id = $1 AND (drain_lease_until IS NULL OR drain_lease_until < $3)";
/// Added to [`CLAIM_SQL`] by an upload that would judge its lines at once: while lines of
/// the terminal are pending it yields, so those (stored earlier) are judged first, by the
/// drain, in time order.
const NONE_PENDING_SQL: &str = " AND NOT EXISTS (SELECT 1 FROM terminal_punch \
     WHERE device_id = $1 AND outcome = 'pending')";
/// What a terminal reports about itself in a request's query string.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminalReport<'a> {
    /// `pushver`: the push protocol version.
    pub push_version: Option<&'a str>,
    /// `INFO`: firmware version first, then counts and the terminal's address.
    pub info: Option<&'a str>,
}

/// The reply to an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadReply {
    /// `OK: n` for attendance logs: the lines taken (recorded, corrected, duplicates of a
    /// recorded student, repeats of lines taken before, or stored to be judged right after
    /// the reply).
    Taken(usize),
    /// A plain `OK` for every other table.
    Ok,
}

/// True when the terminal made contact within [`ONLINE_WINDOW_SECONDS`] of `at`.
pub fn is_online(device: &device::Model, at: DateTime<Utc>) -> bool {
    device
        .last_seen_at
        .is_some_and(|seen| at - seen <= Duration::seconds(ONLINE_WINDOW_SECONDS))
}

/// Parses an IANA zone name given by an admin.
pub fn parse_time_zone(field: &str, name: &str) -> AppResult<Tz> {
    name.trim().parse::<Tz>().map_err(|_| {
        AppError::invalid(
            field,
            format!("{name:?} is not an IANA time zone name (e.g. Africa/Addis_Ababa)"),
        )
    })
}

fn not_approved() -> AppError {
    AppError::rejected(
        ErrorCode::Forbidden,
        Reason::TerminalNotApproved,
        "this terminal is waiting for an admin's approval",
    )
}

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
    /// Recognises the terminal behind an iclock request: records an unknown serial as a
    /// pending device, notes the contact and what the terminal reports about itself, and
    /// admits only approved, active terminals (403 otherwise).
    pub async fn terminal_contact(
        &self,
        serial: &str,
        report: TerminalReport<'_>,
    ) -> AppResult<device::Model> {
        let serial = serial_number(serial)?;
        let known = device::Entity::find()
            .filter(device::Column::SerialNumber.eq(serial.as_str()))
            .one(&self.db)
            .await?;
        let mut device = match known {
            Some(device) => device,
            None => self.enrol_terminal(&serial).await?,
        };
        let at = now();
        let mut update = device::Entity::update_many()
            .col_expr(device::Column::LastSeenAt, Expr::value(at))
            .filter(device::Column::Id.eq(device.id));
        if let Some(version) = report.push_version.and_then(push_version)
            && device.push_version.as_deref() != Some(version.as_str())
        {
            update = update.col_expr(device::Column::PushVersion, Expr::value(version.clone()));
            device.push_version = Some(version);
        }
        if let Some(firmware) = report.info.and_then(firmware_from_info)
            && device.firmware_version.as_deref() != Some(firmware.as_str())
        {
            update = update.col_expr(
                device::Column::FirmwareVersion,
                Expr::value(firmware.clone()),
            );
            device.firmware_version = Some(firmware);
        }
        update.exec(&self.db).await?;
        device.last_seen_at = Some(at);
        if device.approval != DeviceApproval::Approved {
            return Err(not_approved());
        }
        if !device.is_active {
            return Err(AppError::Forbidden);
        }
        Ok(device)
    }

    /// Records an unknown serial as a pending, inactive device. Its key is random and never
    /// shown: a terminal is known by its serial, and only an admin can issue it a key.
    async fn enrol_terminal(&self, serial: &str) -> AppResult<device::Model> {
        let pending = device::Entity::find()
            .filter(device::Column::Approval.eq(DeviceApproval::Pending))
            .count(&self.db)
            .await?;
        if pending >= MAX_PENDING_TERMINALS {
            tracing::warn!(
                serial,
                "unknown terminal refused unrecorded: too many terminals await approval"
            );
            return Err(not_approved());
        }
        // The serial is the device code, unless a device registered by hand already has it.
        for code in [serial.to_owned(), format!("iclock-{serial}")] {
            let inserted = device::ActiveModel {
                device_id: Set(code),
                name: Set(format!("Terminal {serial}")),
                is_active: Set(false),
                key_hash: Set(fast_hash(&new_device_key())),
                last_seen_at: Set(None),
                created_at: Set(now()),
                serial_number: Set(Some(serial.to_owned())),
                approval: Set(DeviceApproval::Pending),
                ..Default::default()
            }
            .insert(&self.db)
            .await;
            match inserted {
                Ok(device) => {
                    tracing::info!(serial, device = device.id, "new terminal awaits approval");
                    return Ok(device);
                }
                Err(err) if is_unique_violation(&err) => {
                    // Either a concurrent request recorded this serial first, or the code
                    // is taken: the first case ends here, the second tries the next code.
                    let raced = device::Entity::find()
                        .filter(device::Column::SerialNumber.eq(serial))
                        .one(&self.db)
                        .await?;
                    if let Some(device) = raced {
                        return Ok(device);
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(AppError::Internal(format!(
            "no free device code for terminal {serial}"
        )))
    }

    /// The zone a terminal's local times are read in: its own, or `TIME_ZONE`.
    pub fn terminal_zone(&self, device: &device::Model) -> Tz {
        device
            .time_zone
            .as_deref()
            .and_then(|name| name.parse::<Tz>().ok())
            .unwrap_or(self.config.time_zone)
    }

    /// The options of the handshake, in order: the stamps stored for the terminal (so it
    /// sends only newer rows), the polling rhythm, what to upload, and its zone's offset.
    pub async fn terminal_options(
        &self,
        device: &device::Model,
    ) -> AppResult<Vec<(&'static str, String)>> {
        let stamps: HashMap<String, i64> = terminal_stamp::Entity::find()
            .filter(terminal_stamp::Column::DeviceId.eq(device.id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| (s.table_name, s.stamp))
            .collect();
        let stamp = |table: &str| stamps.get(table).copied().unwrap_or(0).to_string();
        Ok(vec![
            ("ATTLOGStamp", stamp("ATTLOG")),
            ("OPERLOGStamp", stamp("OPERLOG")),
            ("ErrorDelay", ERROR_DELAY_SECONDS.to_string()),
            ("Delay", POLL_DELAY_SECONDS.to_string()),
            ("TransTimes", "00:00;14:05".to_owned()),
            ("TransInterval", "1".to_owned()),
            ("TransFlag", "TransData AttLog OpLog".to_owned()),
            (
                "TimeZone",
                time_zone_option(self.terminal_zone(device), Utc::now()),
            ),
            ("Realtime", "1".to_owned()),
            ("Encrypt", "None".to_owned()),
        ])
    }

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
                            lease = self.claim_lines(device.id, true).await?;
                            lease.is_some()
                        }
                    };
                    deferring = !holding;
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
    fn spawn_drain(&self, device_id: i32) {
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

    /// Claims the right to judge a terminal's lines for [`LEASE_MILLIS`], unless another
    /// process holds it (or, with `only_if_none_pending`, lines of it are pending).
    async fn claim_lines(
        &self,
        device_id: i32,
        only_if_none_pending: bool,
    ) -> AppResult<Option<Lease>> {
        let now = now_millis();
        let until = now + LEASE_MILLIS;
        let sql = if only_if_none_pending {
            format!("{CLAIM_SQL}{NONE_PENDING_SQL}")
        } else {
            CLAIM_SQL.to_owned()
        };
        let claimed = self
            .writer
            .execute_raw(statement(
                self.writer.get_database_backend(),
                &sql,
                vec![device_id.into(), until.into(), now.into()],
            ))
            .await?;
        Ok((claimed.rows_affected() == 1).then_some(Lease { device_id, until }))
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

    /// Hands out the terminal's due commands (never sent, or sent long ago and never
    /// answered) and marks them sent.
    pub async fn terminal_poll(
        &self,
        device: &device::Model,
    ) -> AppResult<Vec<terminal_command::Model>> {
        use terminal_command::Column;
        let at = now();
        let retry_before = at - Duration::seconds(COMMAND_RETRY_SECONDS);
        let due = terminal_command::Entity::find()
            .filter(Column::DeviceId.eq(device.id))
            .filter(Column::ReturnedAt.is_null())
            .filter(
                Condition::any().add(Column::SentAt.is_null()).add(
                    Condition::all()
                        .add(Column::SentAt.lt(retry_before))
                        .add(Column::Attempts.lt(MAX_COMMAND_ATTEMPTS)),
                ),
            )
            .order_by_asc(Column::Id)
            .limit(MAX_COMMANDS_PER_POLL)
            .all(&self.db)
            .await?;
        if !due.is_empty() {
            terminal_command::Entity::update_many()
                .col_expr(Column::SentAt, Expr::value(at))
                .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
                .filter(Column::Id.is_in(due.iter().map(|c| c.id)))
                .exec(&self.db)
                .await?;
        }
        Ok(due)
    }

    /// Records the results a terminal reports for its commands; results for unknown
    /// commands, or another terminal's, are ignored. The first result of a command stands.
    pub async fn terminal_command_results(
        &self,
        device: &device::Model,
        body: &str,
    ) -> AppResult<usize> {
        use terminal_command::Column;
        let mut recorded = 0;
        for result in parse_command_results(body) {
            let updated = terminal_command::Entity::update_many()
                .col_expr(Column::ReturnedAt, Expr::value(now()))
                .col_expr(Column::ReturnCode, Expr::value(result.return_code))
                .col_expr(Column::Reply, Expr::value(result.reply.clone()))
                .filter(Column::Id.eq(result.id))
                .filter(Column::DeviceId.eq(device.id))
                .filter(Column::ReturnedAt.is_null())
                .exec(&self.db)
                .await?;
            if updated.rows_affected == 0 {
                tracing::warn!(serial = ?device.serial_number, command = result.id,
                    "result for an unknown or already answered command ignored");
            } else {
                recorded += 1;
                if result.return_code != 0 {
                    tracing::warn!(serial = ?device.serial_number, command = result.id,
                        code = result.return_code, "terminal reports a failed command");
                }
            }
        }
        Ok(recorded)
    }

    /// Every terminal (a device with a serial number), optionally only those in one
    /// approval state, in the order they were first seen.
    pub async fn terminals(
        &self,
        approval: Option<DeviceApproval>,
    ) -> AppResult<Vec<device::Model>> {
        Ok(device::Entity::find()
            .filter(device::Column::SerialNumber.is_not_null())
            .apply_if(approval, |q, a| q.filter(device::Column::Approval.eq(a)))
            .order_by_asc(device::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// One terminal by row id; `None` for unknown ids and devices without a serial.
    pub async fn terminal(&self, id: i32) -> AppResult<Option<device::Model>> {
        Ok(device::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|d| d.serial_number.is_some()))
    }

    async fn existing_terminal(&self, id: i32) -> AppResult<device::Model> {
        self.terminal(id)
            .await?
            .ok_or(AppError::NotFound("terminal"))
    }

    /// Admits a terminal (or re-admits a revoked one), optionally naming it and setting
    /// the zone its local times are read in.
    pub async fn approve_terminal(
        &self,
        id: i32,
        name: Option<&str>,
        time_zone: Option<&str>,
    ) -> AppResult<device::Model> {
        let name = name.map(|n| required_text("name", n, 200)).transpose()?;
        let zone = time_zone
            .map(|z| parse_time_zone("timeZone", z))
            .transpose()?;
        let existing = self.existing_terminal(id).await?;
        let mut model: device::ActiveModel = existing.into();
        model.approval = Set(DeviceApproval::Approved);
        model.is_active = Set(true);
        if let Some(name) = name {
            model.name = Set(name);
        }
        if let Some(zone) = zone {
            model.time_zone = Set(Some(zone.name().to_owned()));
        }
        let device = model.update(&self.db).await?;
        self.forget_device_keys();
        tracing::info!(serial = ?device.serial_number, device = device.id, "terminal approved");
        // Lines left pending while it was revoked are judged now.
        self.spawn_drain(device.id);
        Ok(device)
    }

    /// Sets the IANA zone a terminal's local times are read in; `None` restores `TIME_ZONE`.
    pub async fn set_terminal_time_zone(
        &self,
        id: i32,
        time_zone: Option<&str>,
    ) -> AppResult<device::Model> {
        let zone = time_zone
            .map(|z| parse_time_zone("timeZone", z))
            .transpose()?;
        let existing = self.existing_terminal(id).await?;
        let mut model: device::ActiveModel = existing.into();
        model.time_zone = Set(zone.map(|z| z.name().to_owned()));
        Ok(model.update(&self.db).await?)
    }

    /// Queues, for one terminal, a `DATA UPDATE USERINFO` of every student of a section
    /// (PIN = student code, name = first and last name), in student order.
    pub async fn push_section_to_terminal(
        &self,
        admin: &Principal,
        terminal_id: i32,
        section_id: i32,
    ) -> AppResult<Vec<terminal_command::Model>> {
        let terminal = self.existing_terminal(terminal_id).await?;
        section::Entity::find_by_id(section_id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("section"))?;
        let students = student::Entity::find()
            .filter(student::Column::SectionId.eq(section_id))
            .order_by_asc(student::Column::Id)
            .all(&self.db)
            .await?;
        let commands: Vec<String> = students
            .iter()
            .map(|s| update_user_command(&s.student_code, &s.first_name, &s.last_name))
            .collect();
        self.queue_commands(admin, &terminal, commands).await
    }

    /// Queues, for one terminal, a `DATA DELETE USERINFO` of a student code. The student
    /// need not exist any more: removing a deleted student is the common case.
    pub async fn remove_student_from_terminal(
        &self,
        admin: &Principal,
        terminal_id: i32,
        student_code: &str,
    ) -> AppResult<terminal_command::Model> {
        let code = code_text("studentCode", student_code)?;
        let terminal = self.existing_terminal(terminal_id).await?;
        self.queue_commands(admin, &terminal, vec![delete_user_command(&code)])
            .await?
            .pop()
            .ok_or_else(|| AppError::Internal("queued command not returned".into()))
    }

    async fn queue_commands(
        &self,
        admin: &Principal,
        terminal: &device::Model,
        commands: Vec<String>,
    ) -> AppResult<Vec<terminal_command::Model>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let at = now();
        let rows = commands
            .into_iter()
            .map(|command| terminal_command::ActiveModel {
                device_id: Set(terminal.id),
                command: Set(command),
                created_by: Set(admin.user_id()),
                created_at: Set(at),
                attempts: Set(0),
                sent_at: Set(None),
                returned_at: Set(None),
                return_code: Set(None),
                reply: Set(None),
                ..Default::default()
            });
        let mut queued = terminal_command::Entity::insert_many(rows)
            .exec_with_returning(&self.db)
            .await?;
        queued.sort_by_key(|c| c.id);
        Ok(queued)
    }

    /// A page of a terminal's commands, oldest first.
    pub async fn terminal_commands(
        &self,
        terminal_id: i32,
        page: PageRequest,
    ) -> AppResult<Page<terminal_command::Model>> {
        let query = terminal_command::Entity::find()
            .filter(terminal_command::Column::DeviceId.eq(terminal_id));
        paginate(&self.db, query, terminal_command::Column::Id, page).await
    }

    /// A page of rejected attendance lines, of one terminal or all, oldest first.
    pub async fn terminal_rejected_lines(
        &self,
        terminal_id: Option<i32>,
        page: PageRequest,
    ) -> AppResult<Page<terminal_punch::Model>> {
        let query = terminal_punch::Entity::find()
            .filter(terminal_punch::Column::Outcome.eq(PunchOutcome::Rejected))
            .apply_if(terminal_id, |q, id| {
                q.filter(terminal_punch::Column::DeviceId.eq(id))
            });
        paginate(&self.db, query, terminal_punch::Column::Id, page).await
    }
}
