//! ZKTeco push ("iclock") terminals: knowing a terminal by its serial number, the options of
//! its handshake, and the reads and changes admins make. What a terminal uploads is judged
//! in `uploads`, the commands it polls for are queued in `commands`, and the students it
//! knows are pushed in `enrolment`.
//!
//! The transport (`crate::iclock`) only reads requests and writes the text replies, in the
//! wire format of `crate::service::terminals::protocol`; every decision is made here.

mod commands;
pub mod drain;
mod enrolment;
pub mod protocol;
mod uploads;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QueryTrait, Set,
};

use super::{Service, now, required_text};
use crate::auth::{Principal, fast_hash, new_device_key};
use crate::entities::{DeviceApproval, device, terminal_stamp};
use crate::error::{AppError, AppResult, Reason, is_unique_violation};
use crate::service::access::require_admin;
use crate::service::terminals::protocol::{
    firmware_from_info, push_version, serial_number, time_zone_option,
};

pub use commands::{COMMAND_RETRY_SECONDS, MAX_COMMAND_ATTEMPTS, MAX_COMMANDS_PER_POLL};
pub use uploads::{STAMPED_TABLES, SYNC_BUDGET};

/// Seconds between a terminal's polls for commands (`Delay`).
pub const POLL_DELAY_SECONDS: i64 = 10;
/// Seconds a terminal waits before retrying after a failed request (`ErrorDelay`).
pub const ERROR_DELAY_SECONDS: i64 = 30;
/// A terminal is online when it made contact within three poll intervals.
pub const ONLINE_WINDOW_SECONDS: i64 = 3 * POLL_DELAY_SECONDS;
/// Unknown serial numbers recorded as pending at most; beyond this they are refused
/// unrecorded, so anyone who can reach `/iclock/` cannot fill the device table.
pub const MAX_PENDING_TERMINALS: u64 = 100;

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
        Reason::TerminalNotApproved,
        "this terminal is waiting for an admin's approval",
    )
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

    /// Every terminal (a device with a serial number), optionally only those in one
    /// approval state, in the order they were first seen.
    pub async fn terminals(
        &self,
        actor: &Principal,
        approval: Option<DeviceApproval>,
    ) -> AppResult<Vec<device::Model>> {
        require_admin(actor)?;
        Ok(device::Entity::find()
            .filter(device::Column::SerialNumber.is_not_null())
            .apply_if(approval, |q, a| q.filter(device::Column::Approval.eq(a)))
            .order_by_asc(device::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// One terminal by row id; `None` for unknown ids and devices without a serial.
    pub async fn terminal(&self, actor: &Principal, id: i32) -> AppResult<Option<device::Model>> {
        require_admin(actor)?;
        self.find_terminal(id).await
    }

    async fn find_terminal(&self, id: i32) -> AppResult<Option<device::Model>> {
        Ok(device::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|d| d.serial_number.is_some()))
    }

    async fn existing_terminal(&self, id: i32) -> AppResult<device::Model> {
        self.find_terminal(id)
            .await?
            .ok_or(AppError::NotFound("terminal"))
    }

    /// Admits a terminal (or re-admits a revoked one), optionally naming it and setting
    /// the zone its local times are read in.
    pub async fn approve_terminal(
        &self,
        actor: &Principal,
        id: i32,
        name: Option<&str>,
        time_zone: Option<&str>,
    ) -> AppResult<device::Model> {
        require_admin(actor)?;
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
        actor: &Principal,
        id: i32,
        time_zone: Option<&str>,
    ) -> AppResult<device::Model> {
        require_admin(actor)?;
        let zone = time_zone
            .map(|z| parse_time_zone("timeZone", z))
            .transpose()?;
        let existing = self.existing_terminal(id).await?;
        let mut model: device::ActiveModel = existing.into();
        model.time_zone = Set(zone.map(|z| z.name().to_owned()));
        Ok(model.update(&self.db).await?)
    }
}
