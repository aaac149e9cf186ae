//! Schema migrations, portable to SQLite and PostgreSQL.

// Column identifiers mirror the column names (`student.student_code`), so they repeat the table.
#![allow(clippy::enum_variant_names)]

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_directory;
mod m20261126_000002_auth;
mod m20261126_000003_attendance;
mod m20261126_000004_terminals;
mod m20261129_000005_login_throttle;
mod m20261129_000006_terminal_lease;
mod m20261130_000007_history_kept;
mod m20261130_000008_timetable;
mod m20261130_000009_excuses;
mod m20261130_000010_warnings_webhooks;
mod m20261207_000011_webhook_hold;
mod m20261207_000012_token_version;

/// Every migration of the schema, in the order they apply.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_directory::Migration),
            Box::new(m20261126_000002_auth::Migration),
            Box::new(m20261126_000003_attendance::Migration),
            Box::new(m20261126_000004_terminals::Migration),
            Box::new(m20261129_000005_login_throttle::Migration),
            Box::new(m20261129_000006_terminal_lease::Migration),
            Box::new(m20261130_000007_history_kept::Migration),
            Box::new(m20261130_000008_timetable::Migration),
            Box::new(m20261130_000009_excuses::Migration),
            Box::new(m20261130_000010_warnings_webhooks::Migration),
            Box::new(m20261207_000011_webhook_hold::Migration),
            Box::new(m20261207_000012_token_version::Migration),
        ]
    }
}
