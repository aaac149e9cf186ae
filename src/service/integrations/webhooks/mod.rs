//! Webhooks (SPEC 8.4): admins register receivers; every change to attendance writes its
//! events to the outbox (`webhook_delivery`) in its own transaction, one row per event and
//! subscribed webhook; [`dispatch`] claims them ([`claim`]) and [`delivery`] posts them,
//! signed, after the commit, with the [`client`] that checks every [`target`].

pub mod claim;
pub mod client;
pub mod delivery;
pub mod dispatch;
pub mod secret;
pub mod target;

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use serde_json::Value as Json;

use crate::auth::Principal;
use crate::entities::{webhook, webhook_attempt, webhook_delivery};
use crate::error::{AppError, AppResult, Reason};
use crate::service::access;
use crate::service::sql::{paginate_newest_first, statement, write_transaction};
use crate::service::{Page, PageRequest, Service};

/// What a webhook can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    /// A session closed (by its teacher, an admin or the schedule).
    SessionClosed,
    /// A person changed or deleted a record.
    RecordChanged,
    /// A warning rule's line was crossed.
    WarningRaised,
    /// An excuse was created.
    ExcuseCreated,
}

impl WebhookEvent {
    /// Every event, in the API's order.
    pub const ALL: [Self; 4] = [
        Self::SessionClosed,
        Self::RecordChanged,
        Self::WarningRaised,
        Self::ExcuseCreated,
    ];

    /// The name stored, sent as the body's `type` and used by the API's enum.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionClosed => "SESSION_CLOSED",
            Self::RecordChanged => "RECORD_CHANGED",
            Self::WarningRaised => "WARNING_RAISED",
            Self::ExcuseCreated => "EXCUSE_CREATED",
        }
    }

    /// The event a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// One event to send: its type and its `data`.
#[derive(Clone, Debug)]
pub struct Event {
    /// The type.
    pub kind: WebhookEvent,
    /// The ids and figures a receiver needs without calling back.
    pub data: Json,
}

/// The events some live webhook subscribes to, read inside a change's transaction (so a
/// webhook created by another process is seen by the next change, not a cached copy).
#[derive(Clone, Debug, Default)]
pub(crate) struct Subscribed(HashSet<WebhookEvent>);

impl Subscribed {
    /// Whether any webhook wants `kind`.
    pub(crate) fn wants(&self, kind: WebhookEvent) -> bool {
        self.0.contains(&kind)
    }
}

/// The events the live webhooks subscribe to.
pub(crate) async fn subscribed(db: &impl ConnectionTrait) -> Result<Subscribed, DbErr> {
    let lists: Vec<String> = webhook::Entity::find()
        .select_only()
        .column(webhook::Column::Events)
        .filter(webhook::Column::DeletedAt.is_null())
        .into_tuple()
        .all(db)
        .await?;
    Ok(Subscribed(
        lists.iter().flat_map(|list| events_in(list)).collect(),
    ))
}

/// The stored form of a webhook's events: comma-surrounded (`,SESSION_CLOSED,WARNING_RAISED,`),
/// so that `events LIKE '%,NAME,%'` selects the subscribers of one event in SQL.
fn events_column(events: &[WebhookEvent]) -> String {
    let mut column = String::from(",");
    for kind in WebhookEvent::ALL {
        if events.contains(&kind) {
            column.push_str(kind.as_str());
            column.push(',');
        }
    }
    column
}

/// The events of a stored `webhook.events` value, in the API's order.
pub fn events_in(column: &str) -> impl Iterator<Item = WebhookEvent> + '_ {
    column.split(',').filter_map(WebhookEvent::parse)
}

/// Events written per statement (three parameters each).
const EVENTS_PER_STATEMENT: usize = 500;

/// Writes `events` to the outbox inside the caller's transaction: one row per event and
/// live webhook subscribed to it, due at once. A committed change has its deliveries; a
/// rolled-back one has none. Returns how many deliveries were written.
pub async fn write_events(
    txn: &impl ConnectionTrait,
    at: DateTime<Utc>,
    events: &[Event],
) -> Result<u64, DbErr> {
    let backend = txn.get_database_backend();
    let mut written = 0;
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        let mut values: Vec<sea_orm::Value> = vec![at.into()];
        let mut rows = Vec::with_capacity(chunk.len());
        for event in chunk {
            let id = new_event_id();
            let body = serde_json::json!({
                "type": event.kind.as_str(),
                "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "data": event.data,
            });
            let n = values.len();
            rows.push(format!("(${}, ${}, ${})", n + 1, n + 2, n + 3));
            values.push(id.into());
            values.push(event.kind.as_str().into());
            values.push(body.to_string().into());
        }
        let sql = format!(
            "INSERT INTO webhook_delivery \
             (webhook_id, event_id, event_type, payload, status, attempts, created_at, next_attempt_at) \
             SELECT w.id, e.column1, e.column2, e.column3, '{pending}', 0, $1, $1 \
             FROM (VALUES {rows}) e \
             JOIN webhook w ON w.deleted_at IS NULL AND w.events LIKE '%,' || e.column2 || ',%' \
             ORDER BY w.id",
            pending = delivery::PENDING,
            rows = rows.join(", "),
        );
        written += txn
            .execute_raw(statement(backend, &sql, values))
            .await?
            .rows_affected();
    }
    Ok(written)
}

/// A new event id (`msg_` and 128 random bits): the `webhook-id` receivers deduplicate on.
fn new_event_id() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("msg_{}", hex::encode(bytes))
}

/// A new signing secret in the Standard Webhooks form: `whsec_` and base64 of 32 random bytes.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A delivery with its attempts, oldest first.
#[derive(Clone, Debug)]
pub struct DeliveryLog {
    /// The delivery.
    pub delivery: webhook_delivery::Model,
    /// Its attempts.
    pub attempts: Vec<webhook_attempt::Model>,
}

impl Service {
    /// Registers a webhook (admins). The secret is returned here once and never again.
    pub async fn create_webhook(
        &self,
        actor: &Principal,
        url: &str,
        events: &[WebhookEvent],
    ) -> AppResult<(webhook::Model, String)> {
        access::require_admin(actor)?;
        let url = target::parse_url(url)?;
        if events.is_empty() {
            return Err(AppError::invalid("events", "name at least one event"));
        }
        target::check_target(&url, self.config.webhook_allow_private).await?;
        let secret = new_secret();
        let hook = webhook::ActiveModel {
            url: Set(url.to_string()),
            secret: Set(self.webhook_secrets.seal(&secret)?),
            events: Set(events_column(events)),
            created_at: Set(self.now()),
            deleted_at: Set(None),
            ..Default::default()
        }
        .insert(&self.writer)
        .await?;
        tracing::info!(webhook_id = hook.id, url = %hook.url, "webhook created");
        Ok((hook, secret))
    }

    /// Gives a webhook a new signing secret (admins), returned here once and never again:
    /// attempts from now on are signed with it; an attempt already under way when the
    /// change commits still carries the old signature.
    pub async fn rotate_webhook_secret(
        &self,
        actor: &Principal,
        id: i32,
    ) -> AppResult<(webhook::Model, String)> {
        access::require_admin(actor)?;
        let hook = self.live_webhook(id).await?;
        let secret = new_secret();
        let sealed = self.webhook_secrets.seal(&secret)?;
        let updated = webhook::Entity::update_many()
            .col_expr(
                webhook::Column::Secret,
                sea_orm::sea_query::Expr::value(sealed.clone()),
            )
            .filter(webhook::Column::Id.eq(id))
            .filter(webhook::Column::DeletedAt.is_null())
            .exec(&self.writer)
            .await?;
        if updated.rows_affected == 0 {
            return Err(AppError::NotFound("webhook"));
        }
        tracing::info!(webhook_id = id, "webhook secret rotated");
        Ok((
            webhook::Model {
                secret: sealed,
                ..hook
            },
            secret,
        ))
    }

    /// Seals the signing secrets still stored in plain text (rows from before sealing), at
    /// start-up; returns how many. With a key random to this process (`DEBUG` without
    /// `SECRET_KEY`) it leaves them as they are, since sealing them would lose them at the
    /// next start.
    pub async fn seal_plain_webhook_secrets(&self) -> AppResult<u64> {
        let plain: Vec<(i32, String)> = webhook::Entity::find()
            .select_only()
            .column(webhook::Column::Id)
            .column(webhook::Column::Secret)
            .filter(webhook::Column::Secret.starts_with("whsec_"))
            .into_tuple::<(i32, String)>()
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|(_, stored)| secret::is_plain(stored))
            .collect();
        if plain.is_empty() {
            return Ok(0);
        }
        if self.config.secret_key_generated {
            tracing::warn!(
                webhooks = plain.len(),
                "webhook secrets stored in plain text are left so: SECRET_KEY is random to \
                 this process (DEBUG), and secrets sealed with it could not be read after a restart"
            );
            return Ok(0);
        }
        let mut sealed = 0;
        for (id, secret) in plain {
            // Only if still the same plain value: a rotation meanwhile wins.
            sealed += webhook::Entity::update_many()
                .col_expr(
                    webhook::Column::Secret,
                    sea_orm::sea_query::Expr::value(self.webhook_secrets.seal(&secret)?),
                )
                .filter(webhook::Column::Id.eq(id))
                .filter(webhook::Column::Secret.eq(secret))
                .exec(&self.writer)
                .await?
                .rows_affected;
        }
        tracing::info!(
            webhooks = sealed,
            "sealed webhook secrets stored in plain text"
        );
        Ok(sealed)
    }

    /// The live webhooks (admins), oldest first.
    pub async fn webhooks(&self, actor: &Principal) -> AppResult<Vec<webhook::Model>> {
        access::require_admin(actor)?;
        Ok(webhook::Entity::find()
            .filter(webhook::Column::DeletedAt.is_null())
            .order_by_asc(webhook::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Deletes a webhook (admins): it receives nothing more and its pending deliveries are
    /// cancelled; the deliveries and their attempts stay, as the log.
    pub async fn delete_webhook(&self, actor: &Principal, id: i32) -> AppResult<webhook::Model> {
        access::require_admin(actor)?;
        let hook = self.live_webhook(id).await?;
        let at = self.now();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        webhook::Entity::update_many()
            .col_expr(
                webhook::Column::DeletedAt,
                sea_orm::sea_query::Expr::value(at),
            )
            .filter(webhook::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                sea_orm::sea_query::Expr::value(delivery::CANCELLED),
            )
            .col_expr(
                webhook_delivery::Column::NextAttemptAt,
                sea_orm::sea_query::Expr::value(None::<DateTime<Utc>>),
            )
            .filter(webhook_delivery::Column::WebhookId.eq(id))
            .filter(webhook_delivery::Column::Status.eq(delivery::PENDING))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(webhook::Model {
            deleted_at: Some(at),
            ..hook
        })
    }

    /// One page of a webhook's deliveries, newest first, each with its attempts (admins);
    /// deleted webhooks' logs stay readable.
    pub async fn webhook_deliveries(
        &self,
        actor: &Principal,
        webhook_id: i32,
        page: PageRequest,
    ) -> AppResult<Page<DeliveryLog>> {
        access::require_admin(actor)?;
        webhook::Entity::find_by_id(webhook_id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("webhook"))?;
        let page = paginate_newest_first(
            &self.db,
            webhook_delivery::Entity::find()
                .filter(webhook_delivery::Column::WebhookId.eq(webhook_id)),
            webhook_delivery::Column::Id,
            page,
        )
        .await?;
        let ids: Vec<i32> = page.items.iter().map(|d| d.id).collect();
        let mut attempts: HashMap<i32, Vec<webhook_attempt::Model>> = HashMap::new();
        if !ids.is_empty() {
            for attempt in webhook_attempt::Entity::find()
                .filter(webhook_attempt::Column::DeliveryId.is_in(ids))
                .order_by_asc(webhook_attempt::Column::Id)
                .all(&self.db)
                .await?
            {
                attempts
                    .entry(attempt.delivery_id)
                    .or_default()
                    .push(attempt);
            }
        }
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|delivery| DeliveryLog {
                    attempts: attempts.remove(&delivery.id).unwrap_or_default(),
                    delivery,
                })
                .collect(),
            has_next_page: page.has_next_page,
            total_count: page.total_count,
        })
    }

    /// Sends a delivery's event again, to the same webhook with the same `webhook-id`
    /// (receivers that already processed it can tell): a new delivery, due now, with a
    /// fresh 24-hour retry window. The old delivery and its attempts stay as they were.
    pub async fn redeliver(&self, actor: &Principal, delivery_id: i32) -> AppResult<DeliveryLog> {
        access::require_admin(actor)?;
        let old = webhook_delivery::Entity::find_by_id(delivery_id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("webhook delivery"))?;
        let hook = webhook::Entity::find_by_id(old.webhook_id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("webhook"))?;
        if hook.deleted_at.is_some() {
            return Err(AppError::rejected(
                Reason::InUse,
                "the webhook was deleted; create a new one to receive events",
            ));
        }
        let at = self.now();
        let new = webhook_delivery::ActiveModel {
            webhook_id: Set(old.webhook_id),
            event_id: Set(old.event_id.clone()),
            event_type: Set(old.event_type.clone()),
            payload: Set(old.payload.clone()),
            status: Set(crate::entities::DeliveryStatus::Pending),
            attempts: Set(0),
            created_at: Set(at),
            next_attempt_at: Set(Some(at)),
            redelivery_of: Set(Some(old.id)),
            ..Default::default()
        }
        .insert(&self.writer)
        .await?;
        self.webhook_wake.notify_one();
        Ok(DeliveryLog {
            delivery: new,
            attempts: Vec::new(),
        })
    }

    async fn live_webhook(&self, id: i32) -> AppResult<webhook::Model> {
        webhook::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|hook| hook.deleted_at.is_none())
            .ok_or(AppError::NotFound("webhook"))
    }
}
