//! The timetable (SPEC 8.2): a week on a clock the tests move, the overlap and date rules,
//! the import, daylight saving, and listings of constant cost.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::*;

mod dst;
mod import;
mod rules;
mod week;

/// An instant written as RFC 3339.
fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("instant")
        .with_timezone(&Utc)
}

/// Creates a term; returns its id.
async fn create_term(app: &TestApp, admin: &str, name: &str, from: &str, to: &str) -> String {
    app.gql_ok(
        Some(admin),
        "mutation($n: String!, $f: Date!, $t: Date!) { createTerm(input: {name: $n, startsOn: $f, endsOn: $t}) { id } }",
        json!({"n": name, "f": from, "t": to}),
    )
    .await["createTerm"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Imports a timetable CSV into `term`; returns the whole answer.
async fn import(app: &TestApp, admin: &str, term: &str, csv: &str) -> Value {
    app.gql_upload(
        Some(admin),
        "mutation($t: String!, $f: Upload!) { importTimetable(term: $t, file: $f) { applied created unchanged errors { line reason } } }",
        json!({"t": term, "f": null}),
        csv,
    )
    .await
}

/// Waits (ten seconds at most) until `sql` counts `wanted`: the scheduler runs in the
/// background and answers a moved clock within moments.
async fn wait_for(app: &TestApp, sql: &str, wanted: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = app.count(sql).await;
        if n == wanted {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql} counted {n}, not {wanted}, after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
