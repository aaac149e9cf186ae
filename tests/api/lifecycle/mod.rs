//! The directory over a school year (SPEC 8.1): corrections, deletions that keep history,
//! departures, accounts, the audit trail, and the migration that made history safe.

use serde_json::Value;

use crate::common::*;

mod accounts;
mod audit;
mod corrections;
mod migration;
mod removal;

/// Runs an admin mutation expected to fail; returns the whole answer.
async fn refused(app: &TestApp, admin: &str, document: &str, variables: Value) -> Value {
    let body = app.gql(Some(admin), document, variables).await;
    assert!(body["errors"].is_array(), "expected a refusal: {body}");
    body
}

/// The first error's message.
fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or("<none>")
}

/// The first error's `extensions.field`.
fn field(body: &Value) -> &str {
    body["errors"][0]["extensions"]["field"]
        .as_str()
        .unwrap_or("<none>")
}
