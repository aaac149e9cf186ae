//! Webhooks and their delivery log over GraphQL (SPEC 8.4); admins only.

use crate::entities::DeliveryStatus;
use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::guard::{RoleGuard, principal};
use super::id_arg as id;
use super::query::{Conn, connection, page_cost};
use super::service;
use crate::entities::{webhook, webhook_attempt};
use crate::error::GqlResultExt;
use crate::service::PageRequest;
use crate::service::integrations::webhooks::{self as service_webhooks, DeliveryLog};

/// What a webhook can subscribe to.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "service_webhooks::WebhookEvent")]
pub enum WebhookEvent {
    /// A session closed: its counts and how many were marked absent.
    SessionClosed,
    /// A person changed or deleted a record.
    RecordChanged,
    /// A student crossed a warning rule's line.
    WarningRaised,
    /// An excuse was created.
    ExcuseCreated,
}

/// Where a delivery stands.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum WebhookDeliveryStatus {
    /// Not delivered yet; `nextRetryAt` says when it is tried (again).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Retried for 24 hours without success; `redeliver` sends it again.
    Failed,
    /// Its webhook was deleted first.
    Cancelled,
}

/// A receiver of signed event notifications.
pub struct Webhook(pub webhook::Model);

impl Webhook {
    fn event_list(&self) -> Vec<WebhookEvent> {
        service_webhooks::events_in(&self.0.events)
            .map(WebhookEvent::from)
            .collect()
    }
}

#[Object]
impl Webhook {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn url(&self) -> &str {
        &self.0.url
    }
    async fn events(&self) -> Vec<WebhookEvent> {
        self.event_list()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was deleted; null while it receives events.
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.0.deleted_at
    }
    /// Until when its deliveries wait because the receiver kept timing out (then one is
    /// tried at a time until one is answered); null while it answers.
    async fn held_until(&self) -> Option<DateTime<Utc>> {
        self.0.held_until
    }
}

/// A new webhook and its signing secret, shown this once. The webhook's fields are here
/// too, so `createWebhook { id secret }` and `createWebhook { webhook { id } secret }` both
/// read it.
pub struct CreateWebhookPayload {
    webhook: webhook::Model,
    secret: String,
}

#[Object]
impl CreateWebhookPayload {
    /// The webhook.
    async fn webhook(&self) -> Webhook {
        Webhook(self.webhook.clone())
    }
    /// The Standard Webhooks secret (`whsec_` and base64): verify `webhook-signature` with
    /// it. It is never shown again.
    async fn secret(&self) -> &str {
        &self.secret
    }
    async fn id(&self) -> ID {
        self.webhook.id.into()
    }
    async fn url(&self) -> &str {
        &self.webhook.url
    }
    async fn events(&self) -> Vec<WebhookEvent> {
        Webhook(self.webhook.clone()).event_list()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.webhook.created_at
    }
}

/// A webhook's new signing secret, shown this once, and the webhook.
pub struct RotateWebhookSecretPayload {
    webhook: webhook::Model,
    secret: String,
}

#[Object]
impl RotateWebhookSecretPayload {
    /// The webhook.
    async fn webhook(&self) -> Webhook {
        Webhook(self.webhook.clone())
    }
    /// The new Standard Webhooks secret (`whsec_` and base64): deliveries from now on are
    /// signed with it, and the old one no longer verifies them. It is never shown again.
    async fn secret(&self) -> &str {
        &self.secret
    }
}

/// One attempt at a delivery.
pub struct WebhookAttempt(pub webhook_attempt::Model);

#[Object]
impl WebhookAttempt {
    async fn id(&self) -> ID {
        self.0.id.into()
    }
    async fn attempted_at(&self) -> DateTime<Utc> {
        self.0.attempted_at
    }
    /// The receiver's HTTP status; null when no answer came (refused, timed out, blocked).
    async fn status_code(&self) -> Option<i32> {
        self.0.status_code
    }
    /// How long the attempt took.
    async fn duration_ms(&self) -> i32 {
        self.0.duration_ms
    }
    /// Why it failed (the start of the answer, or the connection error).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// When the delivery is tried again after this attempt; null when it was the last.
    async fn next_retry_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_retry_at
    }
}

/// One event for one webhook, with every attempt made.
pub struct WebhookDelivery(pub DeliveryLog);

#[Object]
impl WebhookDelivery {
    async fn id(&self) -> ID {
        self.0.delivery.id.into()
    }
    async fn webhook_id(&self) -> ID {
        self.0.delivery.webhook_id.into()
    }
    /// The `webhook-id` header: the same on every attempt and redelivery.
    async fn event_id(&self) -> &str {
        &self.0.delivery.event_id
    }
    async fn event_type(&self) -> Option<WebhookEvent> {
        service_webhooks::WebhookEvent::parse(&self.0.delivery.event_type).map(Into::into)
    }
    /// The JSON body sent (`type`, `timestamp`, `data`).
    async fn payload(&self) -> &str {
        &self.0.delivery.payload
    }
    async fn status(&self) -> WebhookDeliveryStatus {
        match self.0.delivery.status {
            DeliveryStatus::Pending => WebhookDeliveryStatus::Pending,
            DeliveryStatus::Delivered => WebhookDeliveryStatus::Delivered,
            DeliveryStatus::Failed => WebhookDeliveryStatus::Failed,
            DeliveryStatus::Cancelled => WebhookDeliveryStatus::Cancelled,
        }
    }
    /// Attempts made so far.
    async fn attempt_count(&self) -> i32 {
        self.0.delivery.attempts
    }
    /// The last attempt's HTTP status.
    async fn status_code(&self) -> Option<i32> {
        self.0.delivery.last_status_code
    }
    /// How long the last attempt took.
    async fn duration_ms(&self) -> Option<i32> {
        self.0.delivery.last_duration_ms
    }
    /// Why the last attempt failed.
    async fn error(&self) -> Option<&str> {
        self.0.delivery.last_error.as_deref()
    }
    /// When it is tried next; null once delivered, failed or cancelled.
    async fn next_retry_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivery.next_attempt_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.delivery.created_at
    }
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivery.delivered_at
    }
    /// The delivery this one sends again, when made by `redeliver`.
    async fn redelivery_of(&self) -> Option<ID> {
        self.0.delivery.redelivery_of.map(Into::into)
    }
    /// Every attempt, oldest first: status code, duration and the next retry.
    async fn attempts(&self) -> Vec<WebhookAttempt> {
        self.0
            .attempts
            .iter()
            .cloned()
            .map(WebhookAttempt)
            .collect()
    }
}

/// A webhook to register.
#[derive(InputObject)]
pub struct CreateWebhookInput {
    /// Where to post: http(s); private and loopback targets are refused unless
    /// `WEBHOOK_ALLOW_PRIVATE=true`.
    pub url: String,
    /// The events to receive (at least one).
    pub events: Vec<WebhookEvent>,
}

/// Reads of webhooks and their log.
#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The live webhooks, oldest first.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn webhooks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Webhook>> {
        let hooks = service(ctx).webhooks(principal(ctx).gql()?).await.gql()?;
        Ok(hooks.into_iter().map(Webhook).collect())
    }

    /// A webhook's deliveries, newest first, each with its attempts.
    #[graphql(
        guard = "RoleGuard::admin()",
        complexity = "page_cost(first, child_complexity)"
    )]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        webhook_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<WebhookDelivery>> {
        let page = PageRequest::new(first, after.as_deref()).gql()?;
        let result = service(ctx)
            .webhook_deliveries(principal(ctx).gql()?, id("webhookId", &webhook_id)?, page)
            .await
            .gql()?;
        Ok(connection(
            result,
            after.is_some(),
            |d| d.delivery.id,
            WebhookDelivery,
        ))
    }
}

/// Webhooks registered, deleted and redelivered.
#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Registers a webhook; the answer carries its signing secret, shown this once.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookInput,
    ) -> async_graphql::Result<CreateWebhookPayload> {
        let events: Vec<service_webhooks::WebhookEvent> =
            input.events.into_iter().map(Into::into).collect();
        let (hook, secret) = service(ctx)
            .create_webhook(principal(ctx).gql()?, &input.url, &events)
            .await
            .gql()?;
        Ok(CreateWebhookPayload {
            webhook: hook,
            secret,
        })
    }

    /// Gives a webhook a new signing secret, shown this once in the answer; deliveries
    /// from now on are signed with it.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<RotateWebhookSecretPayload> {
        let (hook, secret) = service(ctx)
            .rotate_webhook_secret(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()?;
        Ok(RotateWebhookSecretPayload {
            webhook: hook,
            secret,
        })
    }

    /// Deletes a webhook: it receives nothing more, its pending deliveries are cancelled,
    /// and its log stays readable (`webhookDeliveries`).
    #[graphql(guard = "RoleGuard::admin()")]
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        service(ctx)
            .delete_webhook(principal(ctx).gql()?, self::id("id", &id)?)
            .await
            .gql()?;
        Ok(true)
    }

    /// Sends a delivery's event again, with the same `webhook-id`, as a new delivery.
    #[graphql(guard = "RoleGuard::admin()")]
    async fn redeliver(
        &self,
        ctx: &Context<'_>,
        delivery_id: ID,
    ) -> async_graphql::Result<WebhookDelivery> {
        service(ctx)
            .redeliver(principal(ctx).gql()?, id("deliveryId", &delivery_id)?)
            .await
            .gql()
            .map(WebhookDelivery)
    }
}
