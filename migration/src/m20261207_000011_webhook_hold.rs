//! Webhooks that keep timing out are held back: `held_until` (no delivery of theirs is
//! claimed before it) and `last_hold_ms` (the base of the next, longer hold; set while the
//! receiver is probed one delivery at a time). The partial indexes serve the per-webhook
//! claim, which counts a webhook's leases and picks its oldest due deliveries.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE webhook ADD COLUMN held_until timestamp with time zone",
    "ALTER TABLE webhook ADD COLUMN last_hold_ms bigint",
    "CREATE INDEX ix_delivery_pending_webhook ON webhook_delivery (webhook_id, next_attempt_at) \
     WHERE status = 'pending'",
    // The leases a webhook holds, counted at every claim: a range of this index, not a walk
    // over its whole backlog.
    "CREATE INDEX ix_delivery_leased ON webhook_delivery (webhook_id, locked_until) \
     WHERE status = 'pending'",
];

const DOWN: &[&str] = &[
    "DROP INDEX ix_delivery_leased",
    "DROP INDEX ix_delivery_pending_webhook",
    "ALTER TABLE webhook DROP COLUMN last_hold_ms",
    "ALTER TABLE webhook DROP COLUMN held_until",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in UP {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in DOWN {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
