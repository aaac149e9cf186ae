//! Slow receivers: one that hangs holds only its own webhook's slots while a healthy one
//! beside it gets every event at once; one that keeps timing out is held back, probed one
//! delivery at a time, given up after a day, and served again once it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Plan, Receiver, allow_private, deliveries, empty_close, first_record};
use crate::both_databases;
use crate::common::*;

both_databases!(
    a_hanging_receiver_does_not_delay_a_healthy_one,
    a_receiver_that_keeps_timing_out_is_held_back_probed_and_given_up_after_a_day,
    a_held_receiver_that_answers_again_gets_every_delivery,
);

/// A receiver on 127.0.0.1 that accepts connections and never answers them, until told to
/// answer: then it answers 200 to the connections that come after.
#[derive(Clone)]
struct Hanging {
    url: String,
    accepted: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    answering: Arc<AtomicBool>,
}

impl Hanging {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hanging = Self {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            accepted: Arc::default(),
            answered: Arc::default(),
            answering: Arc::default(),
        };
        let this = hanging.clone();
        tokio::spawn(async move {
            // Kept open, unanswered, so the client waits out its timeout.
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                this.accepted.fetch_add(1, Ordering::SeqCst);
                if this.answering.load(Ordering::SeqCst) {
                    let answered = this.answered.clone();
                    tokio::spawn(async move {
                        if answer_ok(socket).await.is_ok() {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                } else {
                    held.push(socket);
                }
            }
        });
        hanging
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    fn start_answering(&self) {
        self.answering.store(true, Ordering::SeqCst);
    }
}

/// Reads one HTTP/1.1 request and answers 200, closing the connection.
async fn answer_ok(mut socket: TcpStream) -> std::io::Result<()> {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let body_start = loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&buf[..n]);
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&read[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while read.len() < body_start + length {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        read.extend_from_slice(&buf[..n]);
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await?;
    socket.shutdown().await
}

/// A server on a manual clock, private targets allowed, with these webhook settings.
async fn spawn(backend: Backend, timeout_s: u64, max_in_flight: Option<usize>) -> TestApp {
    TestApp::spawn_with_clock(backend, Clock::manual(chrono::Utc::now()), |env| {
        allow_private(env);
        env.insert("WEBHOOK_TIMEOUT_SECONDS".into(), timeout_s.to_string());
        if let Some(n) = max_in_flight {
            env.insert("WEBHOOK_MAX_IN_FLIGHT".into(), n.to_string());
        }
    })
    .await
}

/// Registers a webhook for `RECORD_CHANGED` at `url`; returns its id.
async fn register_url(app: &TestApp, admin: &str, url: &str) -> String {
    app.gql_ok(
        Some(admin),
        "mutation($i: CreateWebhookInput!) { createWebhook(input: $i) { id } }",
        json!({"i": {"url": url, "events": ["RECORD_CHANGED"]}}),
    )
    .await["createWebhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Makes `n` record changes (alternating statuses of one record): `n` events.
async fn changes(app: &TestApp, school: &School, n: usize) {
    let session = empty_close(app, school).await;
    let record = first_record(app, &school.teacher, &session).await;
    for i in 0..n {
        app.gql_ok(
            Some(&school.teacher),
            "mutation($id: ID!, $s: AttendanceStatus!) { editStatus(recordId: $id, status: $s) { id } }",
            json!({"id": record, "s": if i % 2 == 0 { "PRESENT" } else { "ABSENT" }}),
        )
        .await;
    }
}

/// Polls `check` every 20 ms until it holds; fails after `limit` of real time.
async fn wait_for(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The attempts recorded over a webhook's deliveries, and its deliveries by status.
async fn log_summary(app: &TestApp, admin: &str, hook: &str) -> (usize, Vec<String>, Vec<Value>) {
    let log = deliveries(app, admin, hook).await;
    let attempts = log
        .iter()
        .map(|d| d["attempts"].as_array().map_or(0, Vec::len))
        .sum();
    let statuses = log
        .iter()
        .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    (attempts, statuses, log)
}

async fn held_until(app: &TestApp, admin: &str) -> Value {
    app.gql_ok(Some(admin), "{ webhooks { heldUntil } }", json!({}))
        .await["webhooks"][0]["heldUntil"]
        .clone()
}

async fn a_hanging_receiver_does_not_delay_a_healthy_one(backend: Backend) {
    let hanging = Hanging::start().await;
    let healthy = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend, 5, None).await;
    let school = app.seed_school(1).await;
    register_url(&app, &school.admin, &hanging.url).await;
    super::register(&app, &school.admin, &healthy, &["RECORD_CHANGED"]).await;

    changes(&app, &school, 40).await;
    let last_change = Instant::now();
    wait_for(
        Duration::from_secs(6),
        "40 events at the healthy receiver",
        async || healthy.delivered().len() == 40,
    )
    .await;
    let elapsed = last_change.elapsed();
    eprintln!("40 events reached the healthy receiver {elapsed:?} after the last change");
    assert!(healthy.calls().iter().all(|c| c.signed));
    let cap = app.service.config.webhook_max_in_flight;
    assert!(
        hanging.accepted() <= cap,
        "at most WEBHOOK_MAX_IN_FLIGHT ({cap}) at the hanging one: {}",
        hanging.accepted()
    );
}

async fn a_receiver_that_keeps_timing_out_is_held_back_probed_and_given_up_after_a_day(
    backend: Backend,
) {
    let hanging = Hanging::start().await;
    let app = spawn(backend, 1, Some(3)).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.clone();
    let hook = register_url(&app, &admin, &hanging.url).await;
    changes(&app, &school, 10).await;

    // The first three (the cap) hang; their timeouts hold the webhook back.
    wait_for(
        Duration::from_secs(15),
        "three timed-out attempts",
        async || log_summary(&app, &admin, &hook).await.0 == 3,
    )
    .await;
    assert_eq!(
        hanging.accepted(),
        3,
        "no fourth while three were in flight"
    );
    assert!(held_until(&app, &admin).await.is_string());
    // Held: however long it waits (the clock stands still), nothing more is sent.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        assert_eq!(hanging.accepted(), 3, "sent to while held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // After the hold (5 to 10 s), one probe; it times out too, and the hold grows.
    app.service.clock.advance(chrono::Duration::seconds(11));
    wait_for(Duration::from_secs(15), "the probe's attempt", async || {
        log_summary(&app, &admin, &hook).await.0 == 4
    })
    .await;
    assert_eq!(hanging.accepted(), 4, "one probe at a time");
    let (_, _, log) = log_summary(&app, &admin, &hook).await;
    let timed_out = log
        .iter()
        .flat_map(|d| d["attempts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["error"].as_str().is_some_and(|e| e.contains("timed out")))
        .count();
    assert_eq!(timed_out, 4);

    // A day later the next probe times out as well: every delivery is given up.
    app.service.clock.advance(chrono::Duration::hours(25));
    wait_for(
        Duration::from_secs(15),
        "every delivery given up",
        async || {
            let (_, statuses, _) = log_summary(&app, &admin, &hook).await;
            statuses.len() == 10 && statuses.iter().all(|s| s == "FAILED")
        },
    )
    .await;
    assert_eq!(hanging.accepted(), 5, "one probe, then the rest given up");
    let (_, _, log) = log_summary(&app, &admin, &hook).await;
    let given_up = log
        .iter()
        .filter(|d| d["attemptCount"] == 0)
        .inspect(|d| assert!(d["nextRetryAt"].is_null()))
        .count();
    assert_eq!(
        given_up, 5,
        "never attempted, given up with the webhook: {log:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("attendance_webhook_deliveries_total{outcome=\"failed\"} 10"),
        "{metrics}"
    );
}

async fn a_held_receiver_that_answers_again_gets_every_delivery(backend: Backend) {
    let hanging = Hanging::start().await;
    let app = spawn(backend, 1, Some(2)).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.clone();
    let hook = register_url(&app, &admin, &hanging.url).await;
    changes(&app, &school, 6).await;
    wait_for(
        Duration::from_secs(15),
        "two timed-out attempts",
        async || log_summary(&app, &admin, &hook).await.0 == 2,
    )
    .await;
    assert_eq!(hanging.accepted(), 2);

    // Back: the probe after the hold is answered, the hold ends, the rest flow.
    hanging.start_answering();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, statuses, _) = log_summary(&app, &admin, &hook).await;
        if statuses.len() == 6 && statuses.iter().all(|s| s == "DELIVERED") {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {statuses:?}");
        app.service.clock.advance(chrono::Duration::seconds(5));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(hanging.answered(), 6, "each delivered once");
    assert!(held_until(&app, &admin).await.is_null());
}
