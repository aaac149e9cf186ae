//! Webhooks (SPEC 8.4) against a local receiver on port 0 that verifies every signature with
//! the secret: a flaky receiver gets every event once delivered under one `webhook-id`, a
//! rolled-back change sends nothing, deliveries survive a restart, two processes never
//! deliver the same one, a receiver that never answers is given up after a day and can be
//! redelivered, and private targets are refused unless allowed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use attendance::clock::Clock;

use crate::both_databases;
use crate::common::*;

mod hygiene;
mod slow;

both_databases!(
    every_event_reaches_a_flaky_receiver_signed_once_under_one_id,
    a_rolled_back_change_sends_nothing,
    deliveries_survive_a_restart,
    two_processes_never_deliver_the_same_event,
    a_receiver_that_keeps_failing_is_given_up_after_a_day_and_can_be_redelivered,
    private_targets_are_refused_unless_allowed,
);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Call {
    id: String,
    signed: bool,
    body: Value,
    answered: u16,
}

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Plan {
    /// 500 to the first `n` calls of each `webhook-id`, then 200.
    FailFirst(usize),
    /// Always this status.
    Always(u16),
}

struct Inner {
    secret: String,
    plan: Plan,
    calls: Vec<Call>,
}

/// A webhook receiver on 127.0.0.1, port 0.
#[derive(Clone)]
struct Receiver {
    url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    async fn start(plan: Plan) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            secret: String::new(),
            plan,
            calls: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner }
    }

    fn set_secret(&self, secret: &str) {
        self.inner.lock().unwrap().secret = secret.to_owned();
    }

    fn set_plan(&self, plan: Plan) {
        self.inner.lock().unwrap().plan = plan;
    }

    fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Ids answered 2xx, with how many times each was.
    fn delivered(&self) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for call in self.calls() {
            if (200..300).contains(&call.answered) {
                *ids.entry(call.id).or_default() += 1;
            }
        }
        ids
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let mut inner = inner.lock().unwrap();
    let signed = verify(&inner.secret, &id, &timestamp, &body, &signature);
    let seen = inner.calls.iter().filter(|c| c.id == id).count();
    let answered = match inner.plan {
        Plan::FailFirst(n) if seen < n => 500,
        Plan::FailFirst(_) => 200,
        Plan::Always(status) => status,
    };
    inner.calls.push(Call {
        id,
        signed,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

/// Verifies a Standard Webhooks signature, as a receiver would.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(key) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    !id.is_empty()
        && timestamp.parse::<i64>().is_ok()
        && header
            .split(' ')
            .any(|sig| sig.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Waits for `done`, moving the clock by `step` each round so that retries come due; fails
/// after 60 seconds of real time.
async fn until(app: &TestApp, step: chrono::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        app.service.clock.advance(step);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn allow_private(env: &mut HashMap<String, String>) {
    env.insert("WEBHOOK_ALLOW_PRIVATE".into(), "true".into());
}

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with_clock(backend, Clock::manual(chrono::Utc::now()), allow_private).await
}

/// Registers a webhook for `events` at the receiver; returns its id.
async fn register(app: &TestApp, admin: &str, receiver: &Receiver, events: &[&str]) -> String {
    let data = app
        .gql_ok(
            Some(admin),
            "mutation($i: CreateWebhookInput!) { createWebhook(input: $i) { id secret webhook { id url events } } }",
            json!({"i": {"url": receiver.url, "events": events}}),
        )
        .await;
    let secret = data["createWebhook"]["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{data}");
    receiver.set_secret(secret);
    assert_eq!(data["createWebhook"]["webhook"]["events"], json!(events));
    assert_eq!(
        data["createWebhook"]["id"],
        data["createWebhook"]["webhook"]["id"]
    );
    data["createWebhook"]["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

const DELIVERIES: &str = "query($w: ID!) { webhookDeliveries(webhookId: $w, first: 100) { totalCount nodes { id eventId eventType status attemptCount statusCode durationMs nextRetryAt createdAt redeliveryOf attempts { statusCode durationMs attemptedAt nextRetryAt error } } } }";

async fn deliveries(app: &TestApp, admin: &str, webhook: &str) -> Vec<Value> {
    app.gql_ok(Some(admin), DELIVERIES, json!({"w": webhook}))
        .await["webhookDeliveries"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

/// A webhook's log once none of its `n` deliveries is pending: a receiver counts a call
/// before it answers, and the attempt is recorded only after the answer.
async fn settled_log(app: &TestApp, admin: &str, webhook: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = deliveries(app, admin, webhook).await;
        if log.len() == n && log.iter().all(|d| d["status"] != "PENDING") {
            return log;
        }
        assert!(std::time::Instant::now() < deadline, "not settled: {log:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Closes a session where nobody scanned; returns its id.
async fn empty_close(app: &TestApp, school: &School) -> String {
    let session = app.open_session(school).await;
    app.close_session(&school.teacher, &session).await;
    session
}

async fn first_record(app: &TestApp, token: &str, session: &str) -> String {
    app.gql_ok(
        Some(token),
        "query($id: ID!) { session(id: $id) { records { id } } }",
        json!({"id": session}),
    )
    .await["session"]["records"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn seconds_between(from: &Value, to: &Value) -> f64 {
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    (at(to) - at(from)).num_milliseconds() as f64 / 1000.0
}

async fn every_event_reaches_a_flaky_receiver_signed_once_under_one_id(backend: Backend) {
    let receiver = Receiver::start(Plan::FailFirst(2)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    let hook = register(
        &app,
        &school.admin,
        &receiver,
        &[
            "SESSION_CLOSED",
            "RECORD_CHANGED",
            "WARNING_RAISED",
            "EXCUSE_CREATED",
        ],
    )
    .await;
    app.gql_ok(
        Some(&school.admin),
        "mutation { setWarningRule(input: {consecutiveAbsences: 1}) { id } }",
        json!({}),
    )
    .await;
    // A close (two students absent, so two warnings), an edit, an excuse.
    let session = empty_close(&app, &school).await;
    let record = first_record(&app, &school.teacher, &session).await;
    app.gql_ok(
        Some(&school.teacher),
        "mutation($id: ID!) { editStatus(recordId: $id, status: PRESENT, reason: \"late bus\") { id } }",
        json!({"id": record}),
    )
    .await;
    app.gql_ok(
        Some(&school.teacher),
        "mutation($i: CreateExcuseInput!) { createExcuse(input: $i) { id } }",
        json!({"i": {"studentId": school.students[1], "courseId": school.course_id, "from": app.today(), "to": app.today(), "reason": "doctor's note"}}),
    )
    .await;

    let expected = 5; // closed, 2 warnings, changed, excuse
    until(&app, chrono::Duration::seconds(20), || {
        receiver.delivered().len() == expected
    })
    .await;
    let calls = receiver.calls();
    assert!(
        calls.iter().all(|c| c.signed),
        "every attempt is signed: {calls:?}"
    );
    let mut by_type: HashMap<String, Vec<&Call>> = HashMap::new();
    for call in &calls {
        by_type
            .entry(call.body["type"].as_str().unwrap().to_owned())
            .or_default()
            .push(call);
    }
    for (kind, n) in [
        ("SESSION_CLOSED", 1),
        ("RECORD_CHANGED", 1),
        ("WARNING_RAISED", 2),
        ("EXCUSE_CREATED", 1),
    ] {
        let ids: std::collections::HashSet<&str> =
            by_type[kind].iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), n, "{kind}");
        // Three attempts each (500, 500, 200), all under the one id.
        assert_eq!(by_type[kind].len(), 3 * n, "{kind}");
    }
    assert!(
        receiver.delivered().values().all(|n| *n == 1),
        "delivered once each"
    );
    let closed = &by_type["SESSION_CLOSED"][0].body;
    assert_eq!(closed["data"]["sessionId"], session.as_str());
    assert_eq!(closed["data"]["markedAbsent"], 2);
    assert_eq!(closed["data"]["absent"], 2);
    assert!(closed["timestamp"].is_string());
    let changed = &by_type["RECORD_CHANGED"][0].body["data"];
    assert_eq!(changed["recordId"], record.as_str());
    assert_eq!(
        (changed["oldStatus"].as_str(), changed["newStatus"].as_str()),
        (Some("ABSENT"), Some("PRESENT"))
    );
    assert_eq!(changed["reason"], "late bus");
    let warning = &by_type["WARNING_RAISED"][0].body["data"];
    assert_eq!(warning["kind"], "CONSECUTIVE_ABSENCES");
    assert_eq!(warning["consecutiveAbsences"], 1);
    let excuse = &by_type["EXCUSE_CREATED"][0].body["data"];
    assert_eq!(excuse["studentId"], school.students[1].as_str());
    assert_eq!(excuse["recordsChanged"], 1);

    // The log: three attempts, 500, 500, 200; the first retry within 10 s, the second
    // wait at most double the first.
    let log = settled_log(&app, &school.admin, &hook, expected).await;
    assert_eq!(log.len(), expected);
    for delivery in &log {
        assert_eq!(delivery["status"], "DELIVERED", "{delivery}");
        assert_eq!(delivery["attemptCount"], 3);
        assert_eq!(delivery["statusCode"], 200);
        assert!(delivery["nextRetryAt"].is_null());
        let attempts = delivery["attempts"].as_array().unwrap();
        let codes: Vec<&Value> = attempts.iter().map(|a| &a["statusCode"]).collect();
        assert_eq!(codes, [&json!(500), &json!(500), &json!(200)]);
        assert!(
            attempts
                .iter()
                .all(|a| a["durationMs"].as_i64().unwrap() >= 0)
        );
        // The wait runs from the end of the attempt (its start plus its duration).
        let wait = |a: &Value| {
            seconds_between(&a["attemptedAt"], &a["nextRetryAt"])
                - a["durationMs"].as_f64().unwrap() / 1000.0
        };
        let (first_wait, second_wait) = (wait(&attempts[0]), wait(&attempts[1]));
        assert!((5.0..=10.002).contains(&first_wait), "{first_wait}");
        assert!(
            second_wait <= 2.0 * first_wait + 0.002,
            "{first_wait} then {second_wait}"
        );
        assert!(attempts[2]["nextRetryAt"].is_null());
        assert_eq!(attempts[0]["error"], "HTTP 500");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("attendance_webhook_deliveries_total{outcome=\"delivered\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("attendance_webhook_deliveries_total{outcome=\"retried\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("attendance_webhook_oldest_pending_seconds 0\n"),
        "{metrics}"
    );
}

async fn a_rolled_back_change_sends_nothing(backend: Backend) {
    use attendance::service::integrations::webhooks::{Event, WebhookEvent, write_events};
    use sea_orm::TransactionTrait;
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    let hook = register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    let event = |n: i32| Event {
        kind: WebhookEvent::SessionClosed,
        data: json!({"sessionId": n.to_string()}),
    };
    // The change's transaction writes its event, then fails and rolls back.
    let txn = app.service.writer.begin().await.unwrap();
    assert_eq!(
        write_events(&txn, app.service.now(), &[event(1)])
            .await
            .unwrap(),
        1
    );
    txn.rollback().await.unwrap();
    // A committed change after it.
    let txn = app.service.writer.begin().await.unwrap();
    assert_eq!(
        write_events(&txn, app.service.now(), &[event(2)])
            .await
            .unwrap(),
        1
    );
    txn.commit().await.unwrap();
    // And a real one: a close.
    let session = empty_close(&app, &school).await;

    until(&app, chrono::Duration::seconds(1), || {
        receiver.delivered().len() == 2
    })
    .await;
    let sessions: Vec<String> = receiver
        .calls()
        .iter()
        .map(|c| c.body["data"]["sessionId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions.contains(&"2".to_owned()) && sessions.contains(&session));
    assert_eq!(
        deliveries(&app, &school.admin, &hook).await.len(),
        2,
        "the rolled-back row is gone"
    );
}

async fn deliveries_survive_a_restart(backend: Backend) {
    let receiver = Receiver::start(Plan::Always(503)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    let hook = register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    empty_close(&app, &school).await;
    until(&app, chrono::Duration::seconds(1), || {
        !receiver.calls().is_empty()
    })
    .await;
    let first_id = receiver.calls()[0].id.clone();

    // Down while the delivery is pending; the receiver recovers meanwhile.
    let app = app.restart(|| receiver.set_plan(Plan::Always(200))).await;
    until(&app, chrono::Duration::seconds(20), || {
        !receiver.delivered().is_empty()
    })
    .await;
    assert_eq!(receiver.delivered(), HashMap::from([(first_id, 1)]));
    let log = settled_log(&app, &school.admin, &hook, 1).await;
    assert_eq!(log[0]["status"], "DELIVERED");
    assert_eq!(log[0]["attempts"][0]["statusCode"], 503);
}

async fn two_processes_never_deliver_the_same_event(backend: Backend) {
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend).await;
    let sibling = app.spawn_sibling(allow_private).await;
    let school = app.seed_school(1).await;
    let hook = register(&app, &school.admin, &receiver, &["RECORD_CHANGED"]).await;
    let session = empty_close(&app, &school).await;
    let record = first_record(&app, &school.teacher, &session).await;
    // Forty changes, made through both processes, so both workers wake and claim.
    for n in 0..40 {
        let (server, status) = if n % 2 == 0 {
            (&app, "PRESENT")
        } else {
            (&sibling, "ABSENT")
        };
        server
            .gql_ok(
                Some(&school.teacher),
                "mutation($id: ID!, $s: AttendanceStatus!) { editStatus(recordId: $id, status: $s) { id } }",
                json!({"id": record, "s": status}),
            )
            .await;
    }
    until(&app, chrono::Duration::seconds(1), || {
        receiver.delivered().len() == 40
    })
    .await;
    let log = settled_log(&app, &school.admin, &hook, 40).await;
    assert!(
        log.iter()
            .all(|d| d["status"] == "DELIVERED" && d["attemptCount"] == 1),
        "{:?}",
        log.iter()
            .filter(|d| d["status"] != "DELIVERED" || d["attemptCount"] != 1)
            .collect::<Vec<_>>()
    );
    assert_eq!(receiver.calls().len(), 40, "no event was posted twice");
    sibling.stop().await;
}

async fn a_receiver_that_keeps_failing_is_given_up_after_a_day_and_can_be_redelivered(
    backend: Backend,
) {
    let receiver = Receiver::start(Plan::Always(500)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    let hook = register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    empty_close(&app, &school).await;
    let status = |log: &[Value]| log[0]["status"].as_str().unwrap().to_owned();
    let mut log = deliveries(&app, &school.admin, &hook).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status(&log) != "FAILED" {
        assert!(
            std::time::Instant::now() < deadline,
            "never given up: {log:?}"
        );
        app.service.clock.advance(chrono::Duration::minutes(30));
        tokio::time::sleep(Duration::from_millis(25)).await;
        log = deliveries(&app, &school.admin, &hook).await;
    }
    let attempts = log[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), receiver.calls().len());
    assert!(attempts.len() >= 5, "retried for a day: {}", attempts.len());
    let span = seconds_between(
        &log[0]["createdAt"],
        &attempts.last().unwrap()["attemptedAt"],
    );
    assert!(span <= 24.0 * 3600.0, "{span}");
    assert!(span >= 12.0 * 3600.0, "{span}");
    assert!(log[0]["nextRetryAt"].is_null());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("attendance_webhook_deliveries_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );

    // Redelivered once the receiver is back: a new delivery, the same webhook-id.
    receiver.set_plan(Plan::Always(200));
    let again = app
        .gql_ok(
            Some(&school.admin),
            "mutation($d: ID!) { redeliver(deliveryId: $d) { id eventId status redeliveryOf } }",
            json!({"d": log[0]["id"]}),
        )
        .await;
    assert_eq!(again["redeliver"]["eventId"], log[0]["eventId"]);
    assert_eq!(again["redeliver"]["redeliveryOf"], log[0]["id"]);
    until(&app, chrono::Duration::seconds(1), || {
        !receiver.delivered().is_empty()
    })
    .await;
    assert_eq!(
        receiver.delivered(),
        HashMap::from([(log[0]["eventId"].as_str().unwrap().to_owned(), 1)])
    );

    // Deleted, the webhook receives nothing more and its log stays.
    receiver.set_plan(Plan::Always(500));
    empty_close(&app, &school).await;
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { deleteWebhook(id: $id) }",
        json!({"id": hook}),
    )
    .await;
    let log = deliveries(&app, &school.admin, &hook).await;
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["status"], "CANCELLED", "{log:?}");
    assert!(
        app.gql_ok(Some(&school.admin), "{ webhooks { id } }", json!({}))
            .await["webhooks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn private_targets_are_refused_unless_allowed(backend: Backend) {
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let create = "mutation($i: CreateWebhookInput!) { createWebhook(input: $i) { secret } }";
    for url in [
        receiver.url.as_str(),
        "http://localhost:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://[::1]:9/hook",
        "ftp://example.org/hook",
        "not a url",
    ] {
        let body = app
            .gql(
                Some(&admin),
                create,
                json!({"i": {"url": url, "events": ["SESSION_CLOSED"]}}),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{url}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"], "url",
            "{url}: {body}"
        );
    }
    let body = app
        .gql(
            Some(&admin),
            create,
            json!({"i": {"url": "https://hooks.example.org/x", "events": []}}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "events", "{body}");
    assert!(
        app.gql_ok(Some(&admin), "{ webhooks { id } }", json!({}))
            .await["webhooks"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );

    // A target that turns private after creation (DNS rebinding, an edited row) is refused
    // again at delivery: the receiver hears nothing and the log says why.
    let school = app.seed_school(1).await;
    let sql = format!(
        "INSERT INTO webhook (url, secret, events, created_at) VALUES ('{}', 'whsec_AAAA', ',SESSION_CLOSED,', '2026-01-01T00:00:00+00:00')",
        receiver.url
    );
    use sea_orm::ConnectionTrait;
    app.service.db.execute_unprepared(&sql).await.unwrap();
    empty_close(&app, &school).await;
    let hook = app
        .gql_ok(Some(&admin), "{ webhooks { id } }", json!({}))
        .await["webhooks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = deliveries(&app, &admin, &hook).await;
        if let Some(error) = log[0]["attempts"][0]["error"].as_str() {
            assert!(error.contains("private"), "{error}");
            assert!(log[0]["attempts"][0]["statusCode"].is_null());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(receiver.calls().is_empty());
}
