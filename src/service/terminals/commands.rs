//! The command queue: commands queued for a terminal, handed out on its polls (again when
//! never answered), and the results it reports.

use chrono::Duration;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use crate::auth::Principal;
use crate::entities::{device, terminal_command};
use crate::error::AppResult;
use crate::service::access::require_admin;
use crate::service::sql::paginate;
use crate::service::terminals::protocol::parse_command_results;
use crate::service::{Page, PageRequest, Service, now};

/// The most commands one poll hands out; the rest follow on the next polls.
pub const MAX_COMMANDS_PER_POLL: u64 = 50;
/// A command handed out but never answered (the reply to the poll may have been lost) is
/// handed out again after this long. Every command we queue is idempotent.
pub const COMMAND_RETRY_SECONDS: i64 = 300;
/// How often one command is handed out at most.
pub const MAX_COMMAND_ATTEMPTS: i32 = 3;

impl Service {
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

    /// Queues `commands` for `terminal`, in order, as `admin`'s. Its callers have checked
    /// that `admin` is one (`access::require_admin`); it records who queued them.
    pub(super) async fn queue_commands(
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
        actor: &Principal,
        terminal_id: i32,
        page: PageRequest,
    ) -> AppResult<Page<terminal_command::Model>> {
        require_admin(actor)?;
        let query = terminal_command::Entity::find()
            .filter(terminal_command::Column::DeviceId.eq(terminal_id));
        paginate(&self.db, query, terminal_command::Column::Id, page).await
    }
}
