//! The attendance flow: opening sessions, every scan outcome, closing with auto-absent,
//! edits with their audit trail, deletes, reads, and the concurrency cases. One sub-module
//! per capability; the GraphQL documents more than one of them sends live here.

mod close;
mod records;
mod scans;
mod sessions;

/// Opens a session (GraphQL `createSession`).
pub(super) const CREATE: &str = "mutation($i: CreateSessionInput!) { createSession(input: $i) { id date isActive closesAt createdAt deviceId createdBy { id } course { id } } }";

/// Closes a session (GraphQL `closeSession`).
pub(super) const CLOSE: &str = "mutation($id: ID!) { closeSession(id: $id) { markedAbsent session { id isActive closedAt } } }";
