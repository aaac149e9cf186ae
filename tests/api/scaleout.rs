//! Scale-out: several server processes on one database keep every guarantee of one. Each
//! test starts the real binary twice on the database `TestApp` made.

use serde_json::json;

use crate::both_databases;
use crate::common::*;

both_databases!(
    a_login_lockout_counts_and_holds_across_processes,
    a_revoked_device_key_fails_at_once_in_every_process,
);

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }";
const WRONG_PASSWORD: &str = "wrong-password";

/// The reason a login through `server` fails with (`<none>` when it succeeds).
async fn login_reason(server: &Server, username: &str, password: &str) -> String {
    let body = server
        .gql(None, LOGIN, json!({"u": username, "p": password}))
        .await;
    error_reason(&body).to_owned()
}

/// Sends wrong passwords for `username` to `servers` in turn; returns the number of the
/// first attempt refused as RATE_LIMITED.
async fn attempts_until_locked(servers: &[&Server], username: &str) -> usize {
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
    let a = Server::start(&app.db.url, &limits).await;
    let b = Server::start(&app.db.url, &limits).await;

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
    let a = Server::start(&app.db.url, &[]).await;
    let b = Server::start(&app.db.url, &[]).await;
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
async fn login_token(server: &Server) -> String {
    let body = server
        .gql(None, LOGIN, json!({"u": ADMIN_USER, "p": ADMIN_PASSWORD}))
        .await;
    body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("login failed: {body}"))
        .to_owned()
}
