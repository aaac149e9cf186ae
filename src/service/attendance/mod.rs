//! THE attendance core: what a session, a record, an absence and an excuse's coverage are,
//! written once and used by the roll call (sessions, scans, edits, excuses), the schedule
//! (classes that open themselves), the integrations (warning rules) and the reports.
//!
//! A leaf: it imports entities, errors and [`super::sql`], nothing above them, so every
//! context may use it and none of it can come to depend on a context.

pub mod record;
pub mod rule;
pub mod session;
