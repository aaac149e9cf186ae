//! The integration suite: one binary, every test against the real server on port 0, on
//! SQLite and (when `TEST_DATABASE_URL` is set) on PostgreSQL.

mod common;

mod auth;
mod authz;
mod cli;
mod directory;
mod dotenv;
mod excuses;
mod faults;
mod flow;
mod hardening;
mod iclock;
mod lifecycle;
mod limits;
mod live;
mod lockout;
mod offline;
mod openapi;
mod ops;
mod roster;
mod scaleout;
mod schema;
mod time;
mod timetable;
mod warnings;
mod webhooks;

/// Stands in the test list when PostgreSQL is not configured, so the report says so.
#[cfg(not(pg_tests))]
#[test]
#[ignore = "TEST_DATABASE_URL is not set: PostgreSQL was NOT tested (only SQLite ran)"]
fn postgresql_not_tested() {}
