//! ZKTeco push terminals over GraphQL (admins only): approval, time zone, health, the
//! command queue (rosters onto terminals, students off them) and rejected upload lines.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::guard::{RoleGuard, principal};
use super::loaders::{Db, StampsOfTerminal, UserById};
use super::objects::Viewer;
use super::query::{Conn, connection, page_cost};
use crate::entities::{DeviceApproval, device, terminal_command, terminal_punch};
use crate::error::GqlResultExt;
use crate::service::terminals::is_online;
use crate::service::{PageRequest, Service};

use super::id_arg as id;

/// Whether an admin has admitted a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "DeviceApproval")]
pub enum TerminalApproval {
    /// Seen, but every request it makes is refused until an admin approves it.
    Pending,
    /// Admitted by an admin.
    Approved,
}

/// A ZKTeco push terminal: a device known by its serial number, with its health.
pub struct Terminal(pub device::Model);

#[Object]
impl Terminal {
    /// The device's row id (the same as in `devices`).
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    /// The device code sessions are opened with (the serial number unless taken).
    async fn device_id(&self) -> &str {
        &self.0.device_id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The serial number the terminal sends as `SN`.
    async fn serial_number(&self) -> &str {
        self.0.serial_number.as_deref().unwrap_or_default()
    }
    async fn approval(&self) -> TerminalApproval {
        self.0.approval.into()
    }
    /// False while pending and once revoked (`revokeDevice`).
    async fn is_active(&self) -> bool {
        self.0.is_active
    }
    /// The IANA zone its local times are read in; null means the server's `TIME_ZONE`.
    async fn time_zone(&self) -> Option<&str> {
        self.0.time_zone.as_deref()
    }
    /// The zone actually used for its local times.
    async fn effective_time_zone(&self, ctx: &Context<'_>) -> String {
        ctx.data_unchecked::<Service>()
            .terminal_zone(&self.0)
            .name()
            .to_owned()
    }
    /// The firmware version it reported (`INFO` or an `options` upload).
    async fn firmware_version(&self) -> Option<&str> {
        self.0.firmware_version.as_deref()
    }
    /// The push protocol version from its handshake (`pushver`).
    async fn push_version(&self) -> Option<&str> {
        self.0.push_version.as_deref()
    }
    /// Its last request of any kind.
    async fn last_contact_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_seen_at
    }
    /// True when it made contact within the last three poll intervals (30 seconds).
    async fn online(&self) -> bool {
        is_online(&self.0, Utc::now())
    }
    /// Attendance lines that created a record or corrected an automatic absence.
    async fn records_accepted(&self) -> i64 {
        self.0.records_accepted
    }
    /// Attendance lines for a student already recorded in that session.
    async fn records_duplicate(&self) -> i64 {
        self.0.records_duplicate
    }
    /// Attendance lines refused; see `terminalRejectedLines`.
    async fn records_rejected(&self) -> i64 {
        self.0.records_rejected
    }
    /// The last stamp stored per uploaded table, handed back in the handshake.
    async fn stamps(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TerminalStamp>> {
        let rows = ctx
            .data_unchecked::<DataLoader<Db>>()
            .load_one(StampsOfTerminal(self.0.id))
            .await?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|s| TerminalStamp {
                table: s.table_name,
                stamp: s.stamp,
                updated_at: s.updated_at,
            })
            .collect())
    }
    /// When it was first seen (or registered).
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// The last upload stamp of one of a terminal's tables.
#[derive(SimpleObject)]
pub struct TerminalStamp {
    /// `ATTLOG` or `OPERLOG`.
    pub table: String,
    /// The stamp the terminal sent with its last upload of the table.
    pub stamp: i64,
    /// When it was stored.
    pub updated_at: DateTime<Utc>,
}

/// Where a queued command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum TerminalCommandStatus {
    /// Waiting for the terminal's next poll.
    Queued,
    /// Handed to the terminal; no result yet.
    Sent,
    /// The terminal reported success (`Return=0`).
    Succeeded,
    /// The terminal reported a failure (any other return code).
    Failed,
}

/// A command queued for a terminal, and its result.
pub struct TerminalCommand(pub terminal_command::Model);

#[Object]
impl TerminalCommand {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn terminal_id(&self) -> ID {
        self.0.device_id.into()
    }
    /// The command line as the terminal receives it, after `C:<id>:`.
    async fn command(&self) -> &str {
        &self.0.command
    }
    async fn status(&self) -> TerminalCommandStatus {
        match (self.0.return_code, self.0.sent_at) {
            (Some(0), _) => TerminalCommandStatus::Succeeded,
            (Some(_), _) => TerminalCommandStatus::Failed,
            (None, Some(_)) => TerminalCommandStatus::Sent,
            (None, None) => TerminalCommandStatus::Queued,
        }
    }
    /// How often it was handed out (a command never answered is handed out again).
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// The terminal's return code (0 is success).
    async fn return_code(&self) -> Option<i32> {
        self.0.return_code
    }
    /// The command keyword the terminal echoed with its result (`CMD=`).
    async fn reply(&self) -> Option<&str> {
        self.0.reply.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The admin who queued it.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Viewer>> {
        let Some(user) = self.0.created_by else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<DataLoader<Db>>()
            .load_one(UserById(user))
            .await?
            .map(Viewer))
    }
    async fn sent_at(&self) -> Option<DateTime<Utc>> {
        self.0.sent_at
    }
    async fn returned_at(&self) -> Option<DateTime<Utc>> {
        self.0.returned_at
    }
}

/// An attendance line a terminal uploaded that was not taken, kept for review.
pub struct TerminalLine(pub terminal_punch::Model);

#[Object]
impl TerminalLine {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn terminal_id(&self) -> ID {
        self.0.device_id.into()
    }
    /// The PIN field (a student code) as sent.
    async fn pin(&self) -> &str {
        &self.0.pin
    }
    /// The terminal's local time as sent (`YYYY-MM-DD HH:MM:SS` when readable).
    async fn time(&self) -> &str {
        &self.0.punch_time
    }
    /// The whole line as sent.
    async fn line(&self) -> &str {
        &self.0.line
    }
    /// Why it was refused: a stable code such as `STUDENT_NOT_FOUND`, `NO_ACTIVE_SESSION`
    /// or `MALFORMED_LINE`.
    async fn reason(&self) -> &str {
        self.0.reason.as_deref().unwrap_or_default()
    }
    /// The explanation.
    async fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.received_at
    }
}

/// Reads of terminals.
#[derive(Default)]
pub struct TerminalQuery;

#[Object]
impl TerminalQuery {
    /// Every ZKTeco terminal, optionally only pending or approved ones (admins only).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn terminals(
        &self,
        ctx: &Context<'_>,
        approval: Option<TerminalApproval>,
    ) -> async_graphql::Result<Vec<Terminal>> {
        let rows = ctx
            .data_unchecked::<Service>()
            .terminals(principal(ctx).gql()?, approval.map(Into::into))
            .await
            .gql()?;
        Ok(rows.into_iter().map(Terminal).collect())
    }

    /// One terminal (admins only).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn terminal(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Terminal>> {
        let id = self::id("id", &id)?;
        Ok(ctx
            .data_unchecked::<Service>()
            .terminal(principal(ctx).gql()?, id)
            .await
            .gql()?
            .map(Terminal))
    }

    /// A terminal's commands and their results, oldest first (admins only).
    #[graphql(
        guard = "RoleGuard::admin()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn terminal_commands(
        &self,
        ctx: &Context<'_>,
        terminal_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<TerminalCommand>> {
        let terminal_id = id("terminalId", &terminal_id)?;
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let result = ctx
            .data_unchecked::<Service>()
            .terminal_commands(principal(ctx).gql()?, terminal_id, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |c| c.id,
            TerminalCommand,
        ))
    }

    /// Uploaded attendance lines that were refused, of one terminal or all, oldest first
    /// (admins only).
    #[graphql(
        guard = "RoleGuard::admin()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn terminal_rejected_lines(
        &self,
        ctx: &Context<'_>,
        terminal_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<TerminalLine>> {
        let terminal_id = terminal_id.map(|t| id("terminalId", &t)).transpose()?;
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let result = ctx
            .data_unchecked::<Service>()
            .terminal_rejected_lines(principal(ctx).gql()?, terminal_id, page)
            .await
            .gql()?;
        Ok(connection(result, after.is_some(), |l| l.id, TerminalLine))
    }
}

/// Changes to terminals.
#[derive(Default)]
pub struct TerminalMutation;

#[Object]
impl TerminalMutation {
    /// Admits a pending terminal (or re-admits a revoked one), optionally naming it and
    /// setting the IANA zone of its clock.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn approve_terminal(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: Option<String>,
        time_zone: Option<String>,
    ) -> async_graphql::Result<Terminal> {
        ctx.data_unchecked::<Service>()
            .approve_terminal(
                principal(ctx).gql()?,
                self::id("id", &id)?,
                name.as_deref(),
                time_zone.as_deref(),
            )
            .await
            .gql()
            .map(Terminal)
    }

    /// Sets the IANA zone a terminal's local times are read in; null restores `TIME_ZONE`.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn set_terminal_time_zone(
        &self,
        ctx: &Context<'_>,
        id: ID,
        time_zone: Option<String>,
    ) -> async_graphql::Result<Terminal> {
        ctx.data_unchecked::<Service>()
            .set_terminal_time_zone(
                principal(ctx).gql()?,
                self::id("id", &id)?,
                time_zone.as_deref(),
            )
            .await
            .gql()
            .map(Terminal)
    }

    /// Queues a section's roster for a terminal: one `DATA UPDATE USERINFO` per student,
    /// PIN = student code. Delivered on the terminal's next polls.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn push_section_to_terminal(
        &self,
        ctx: &Context<'_>,
        terminal_id: ID,
        section_id: ID,
    ) -> async_graphql::Result<Vec<TerminalCommand>> {
        let service = ctx.data_unchecked::<Service>();
        let queued = service
            .push_section_to_terminal(
                principal(ctx).gql()?,
                id("terminalId", &terminal_id)?,
                id("sectionId", &section_id)?,
            )
            .await
            .gql()?;
        Ok(queued.into_iter().map(TerminalCommand).collect())
    }

    /// Queues the removal of a student code from a terminal (`DATA DELETE USERINFO`); the
    /// student need not exist any more.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn remove_student_from_terminal(
        &self,
        ctx: &Context<'_>,
        terminal_id: ID,
        student_code: String,
    ) -> async_graphql::Result<TerminalCommand> {
        let service = ctx.data_unchecked::<Service>();
        service
            .remove_student_from_terminal(
                principal(ctx).gql()?,
                id("terminalId", &terminal_id)?,
                &student_code,
            )
            .await
            .gql()
            .map(TerminalCommand)
    }
}
