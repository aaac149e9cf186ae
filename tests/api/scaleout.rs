//! Scale-out: several server processes on one database keep every guarantee of one. Each
//! test starts the real binary twice (or two bare services) on the database `TestApp` made.

use std::sync::Arc;

use attendance::config::Config;
use attendance::entities::{PunchOutcome, terminal_punch};
use attendance::service::Service;
use chrono::Utc;
use sea_orm::{EntityTrait, Set};
use serde_json::json;

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_login_lockout_counts_and_holds_across_processes,
    a_revoked_device_key_fails_at_once_in_every_process,
    two_processes_draining_one_terminal_judge_each_line_once,
    one_upload_sent_through_two_processes_is_judged_once,
);

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }";
const WRONG_PASSWORD: &str = "wrong-password";

/// The reason a login through `server` fails with (`<none>` when it succeeds).
async fn login_reason(server: &ServerProcess, username: &str, password: &str) -> String {
    let body = server
        .gql(None, LOGIN, json!({"u": username, "p": password}))
        .await;
    error_reason(&body).to_owned()
}

/// Sends wrong passwords for `username` to `servers` in turn; returns the number of the
/// first attempt refused as RATE_LIMITED.
async fn attempts_until_locked(servers: &[&ServerProcess], username: &str) -> usize {
    for attempt in 1..=20 {
        let server = servers[(attempt - 1) % servers.len()];
        match login_reason(server, username, WRONG_PASSWORD)
            .await
            .as_str()
        {
            "INVALID_CREDENTIALS" => {}
            "RATE_LIMITED" => return attempt,
            other => panic!("attempt {attempt}: unexpected reason {other}"),
        }
    }
    panic!("{username} was never locked out");
}

async fn a_login_lockout_counts_and_holds_across_processes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let limits = [
        ("LOGIN_MAX_FAILURES", "5"),
        ("LOGIN_MAX_FAILURES_PER_ADDRESS", "14"),
    ];
    let a = ServerCommand::with_test_env(&app.db.url)
        .envs(limits)
        .start()
        .await;
    let b = ServerCommand::with_test_env(&app.db.url)
        .envs(limits)
        .start()
        .await;

    // The attempt after the fifth failure is refused, whether one process sees them all or
    // two processes see them in turn.
    let alone = attempts_until_locked(&[&a], "nobody").await;
    let alternating = attempts_until_locked(&[&a, &b], ADMIN_USER).await;
    assert_eq!((alone, alternating), (6, 6));
    for server in [&a, &b] {
        assert_eq!(
            login_reason(server, ADMIN_USER, ADMIN_PASSWORD).await,
            "RATE_LIMITED",
            "the lock holds on every process, even for the right password"
        );
    }

    // The address has failed 10 times so far; four more, alternating, lock it everywhere.
    for n in 0..4 {
        let server = [&a, &b][n % 2];
        let reason = login_reason(server, &format!("user{n}"), WRONG_PASSWORD).await;
        assert_eq!(reason, "INVALID_CREDENTIALS", "failure {}", 11 + n);
    }
    for server in [&a, &b] {
        assert_eq!(
            login_reason(server, "someone-else", WRONG_PASSWORD).await,
            "RATE_LIMITED"
        );
    }
}

async fn a_revoked_device_key_fails_at_once_in_every_process(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(2).await;
    app.open_session(&school).await;
    let a = ServerCommand::with_test_env(&app.db.url).start().await;
    let b = ServerCommand::with_test_env(&app.db.url).start().await;
    let (date, time) = (app.today(), app.now_time());
    let key = &school.device_key;

    // Both processes have authenticated (and cached) the key.
    assert_eq!(a.scan(key, &school.students[0], &date, &time).await, 201);
    assert_eq!(b.scan(key, &school.students[1], &date, &time).await, 201);

    let admin = login_token(&a).await;
    let revoked = a
        .gql(
            Some(&admin),
            "mutation($id: ID!) { revokeDevice(id: $id) { isActive } }",
            json!({"id": school.device_row_id}),
        )
        .await;
    assert_eq!(
        revoked["data"]["revokeDevice"]["isActive"], false,
        "{revoked}"
    );

    assert_eq!(a.scan(key, &school.students[2], &date, &time).await, 401);
    assert_eq!(
        b.scan(key, &school.students[3], &date, &time).await,
        401,
        "the process that did not revoke the key refuses it too"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, 2);
}

/// The admin's access token, through `server`.
async fn login_token(server: &ServerProcess) -> String {
    let body = server
        .gql(None, LOGIN, json!({"u": ADMIN_USER, "p": ADMIN_PASSWORD}))
        .await;
    body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("login failed: {body}"))
        .to_owned()
}

/// A service over the app's database with no server and no background jobs: a process of
/// its own whose work the test drives by hand.
async fn bare_service(app: &TestApp) -> Service {
    let env = test_env(&app.db.url);
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    let pools = attendance::db::connect(&config).await.expect("connect");
    Service::new(pools, Arc::new(config))
}

/// The school's student codes (`seed_school` names them `ST<section><n>`).
fn student_codes(per_section: usize) -> Vec<String> {
    (0..2)
        .flat_map(|section| (0..per_section).map(move |n| format!("ST{section}{n:03}")))
        .collect()
}

/// One attendance line as firmware writes it, without its line end.
fn attlog(pin: &str, time: &str) -> String {
    format!("{pin}\t{time}\t0\t15\t0\t0\t0\t0\t0\t0")
}

async fn two_processes_draining_one_terminal_judge_each_line_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(10).await;
    app.open_session_from_midnight(&school, &school.device_code)
        .await;
    let device_id: i32 = school.device_row_id.parse().unwrap();
    let time = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let codes = student_codes(10);
    // A large upload's tail, stored as pending.
    let rows = codes.iter().map(|code| terminal_punch::ActiveModel {
        device_id: Set(device_id),
        pin: Set(code.clone()),
        punch_time: Set(time.clone()),
        line: Set(attlog(code, &time)),
        outcome: Set(PunchOutcome::Pending),
        received_at: Set(Utc::now()),
        ..Default::default()
    });
    terminal_punch::Entity::insert_many(rows)
        .exec_without_returning(&app.service.db)
        .await
        .unwrap();

    let (first, second) = (bare_service(&app).await, bare_service(&app).await);
    let (judged_first, judged_second) = tokio::join!(
        first.drain_terminal(device_id),
        second.drain_terminal(device_id)
    );
    let (judged_first, judged_second) = (judged_first.unwrap(), judged_second.unwrap());
    eprintln!("lines judged by each process: {judged_first} and {judged_second}");
    assert_eq!(judged_first + judged_second, codes.len());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM terminal_punch WHERE outcome = 'accepted'")
            .await,
        codes.len() as i64
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attendance_record").await,
        codes.len() as i64
    );
    assert_eq!(
        app.count(&format!(
            "SELECT records_accepted + records_duplicate FROM device WHERE id = {device_id}"
        ))
        .await,
        codes.len() as i64,
        "each line counted once"
    );
}

async fn one_upload_sent_through_two_processes_is_judged_once(backend: Backend) {
    const SN: &str = "SCALE0001";
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(20).await;
    let a = ServerCommand::with_test_env(&app.db.url).start().await;
    let b = ServerCommand::with_test_env(&app.db.url).start().await;
    let client = crate::common::http_client();
    let handshake = client
        .get(format!("{}/iclock/cdata?SN={SN}&options=all", a.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        handshake.status().as_u16(),
        403,
        "an unknown terminal waits"
    );
    let terminals = app
        .gql_ok(
            Some(&school.admin),
            "{ terminals(approval: PENDING) { id } }",
            json!({}),
        )
        .await;
    let id = terminals["terminals"][0]["id"].as_str().unwrap().to_owned();
    let approved = app
        .gql_ok(
            Some(&school.admin),
            "mutation($id: ID!) { approveTerminal(id: $id, timeZone: \"UTC\") { deviceId } }",
            json!({"id": id}),
        )
        .await;
    let code = approved["approveTerminal"]["deviceId"].as_str().unwrap();
    app.open_session_from_midnight(&school, code).await;

    // The terminal timed out and resent its upload, which the balancer sent elsewhere.
    let time = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let codes = student_codes(20);
    let body: String = codes
        .iter()
        .map(|code| format!("{}\r\n", attlog(code, &time)))
        .collect();
    let upload = |server: &ServerProcess| {
        client
            .post(format!(
                "{}/iclock/cdata?SN={SN}&table=ATTLOG&Stamp=9",
                server.address
            ))
            .header("Content-Type", "text/plain")
            .body(body.clone())
            .send()
    };
    let (through_a, through_b) = tokio::join!(upload(&a), upload(&b));
    let expected = format!("OK: {}", codes.len());
    for reply in [through_a, through_b] {
        let reply = reply.unwrap();
        assert_eq!(reply.status().as_u16(), 200);
        assert_eq!(reply.text().await.unwrap(), expected);
    }

    // Lines one process deferred to the other are judged right after its reply.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app
        .count("SELECT COUNT(*) FROM terminal_punch WHERE outcome = 'pending'")
        .await
        > 0
    {
        assert!(std::time::Instant::now() < deadline, "lines left pending");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let n = codes.len() as i64;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM terminal_punch WHERE outcome = 'accepted'")
            .await,
        n
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM attendance_record").await, n);
    let health = app
        .gql_ok(
            Some(&school.admin),
            "query($id: ID!) { terminal(id: $id) { recordsAccepted recordsDuplicate recordsRejected } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        health["terminal"],
        json!({"recordsAccepted": n, "recordsDuplicate": 0, "recordsRejected": 0}),
        "each line judged and counted once"
    );
}
