//! Operations: health, readiness, metrics, request ids and logs that keep secrets out.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    health_and_readiness_answer,
    metrics_move_after_a_scan_and_a_named_operation,
    request_ids_are_echoed_or_generated,
);

async fn health_and_readiness_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let get = |path: &'static str| {
        let request = app.client.get(format!("{}{path}", app.address));
        async move {
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get("/health").await.0, 200, "/health");
    // Readiness waits for the live-event listener, which connects in the background on
    // PostgreSQL: until then the answer is 503 "starting", and it must turn 200 soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get("/ready").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "/ready: {body}");
        assert_eq!(body["status"], "starting", "/ready: {body}");
        assert!(
            Instant::now() < deadline,
            "/ready still 503 after 10 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let res = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    res.text().await.unwrap()
}

async fn metrics_move_after_a_scan_and_a_named_operation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    let before = scrape(&app).await;
    assert_eq!(metric(&before, "attendance_sessions_open"), 1.0);

    let (status, _) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .scan_today(&school, &school.students[0], "08:00:00")
        .await;
    assert_eq!(status, 409);
    let res = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(&school.teacher)
        .json(&json!({"query": "query MyCourses { courses { totalCount } }", "operationName": "MyCourses"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let after = scrape(&app).await;
    let moved = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        moved("attendance_scans_total{outcome=\"accepted\",reason=\"\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("attendance_scans_total{outcome=\"duplicate\",reason=\"DUPLICATE_SCAN\"}"),
        1.0
    );
    assert_eq!(
        moved(
            "attendance_http_requests_total{route=\"/api/attendance/scan\",method=\"POST\",status=\"201\"}"
        ),
        1.0
    );
    assert_eq!(
        moved("attendance_graphql_operations_total{operation=\"MyCourses\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        moved("attendance_graphql_operation_duration_seconds_count{operation=\"MyCourses\"}"),
        1.0
    );
    assert!(metric(&after, "attendance_db_pool_max_connections") >= 1.0);
    assert!(after.contains("attendance_db_pool_connections{state=\"idle\"}"));
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "req-from-the-client-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-from-the-client-42");
    let res = app
        .client
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_never_secrets() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let school = app.seed_school(1).await;
    app.open_session(&school).await;
    // Debug logs outgrow a pipe's buffer: the harness reads them while the server runs.
    let server = ServerCommand::with_test_env(&app.db.url)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .capture_output()
        .start()
        .await;
    let address = server.address.clone();
    let client = http_client();
    let login: Value = client
        .post(format!("{address}/graphql"))
        .header("x-request-id", "trace-me-7")
        .json(&json!({"query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken } }",
                       "variables": {"u": ADMIN_USER, "p": ADMIN_PASSWORD}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = login["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .gql(
            None,
            "mutation { login(username: \"admin\", password: \"a-wrong-secret-pw\") { accessToken } }",
            json!({}),
        )
        .await;
    server
        .gql(
            Some(&access),
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }",
            json!({"t": refresh}),
        )
        .await;
    server
        .scan(
            &school.device_key,
            &school.students[0],
            &app.today(),
            "08:00:00",
        )
        .await;
    let _ = client
        .post(format!("{address}/api/attendance/scan"))
        .bearer_auth("attdev_not_a_real_key_but_secret_looking")
        .body("{}")
        .send()
        .await;
    let logs = server.stop().join("\n");

    assert!(!logs.is_empty());
    for secret in [
        ADMIN_PASSWORD,
        "a-wrong-secret-pw",
        access.as_str(),
        refresh.as_str(),
        school.device_key.as_str(),
        "attdev_not_a_real_key_but_secret_looking",
        "test-secret-key-0123456789abcdef",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    assert!(!lines.is_empty());
    let traced = lines
        .iter()
        .filter(|l| l.to_string().contains("trace-me-7"))
        .count();
    assert!(
        traced >= 1,
        "the request id appears on the request's log lines:\n{logs}"
    );
}
