//! Logging in, refreshing, tokens of every wrong kind, and the CLI's start-up behaviour.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::both_databases;
use crate::common::*;

both_databases!(
    login_returns_tokens_and_me_answers,
    unknown_user_and_wrong_password_fail_identically,
    refresh_tokens_work_once_and_reuse_revokes_the_family,
    logout_revokes_the_refresh_token,
    malformed_expired_and_foreign_tokens_are_unauthenticated,
    device_keys_authenticate_only_scans,
);

const LOGIN: &str = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken user { username role } } }";
const REFRESH: &str =
    "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";

async fn login_returns_tokens_and_me_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let data = app
        .gql_ok(None, LOGIN, json!({"u": "t001", "p": TEACHER_PASSWORD}))
        .await;
    assert_eq!(
        data["login"]["user"],
        json!({"username": "t001", "role": "TEACHER"})
    );
    let token = data["login"]["accessToken"].as_str().unwrap();
    let me = app
        .gql_ok(
            Some(token),
            "{ me { username role teacher { id teacherCode } } }",
            json!({}),
        )
        .await;
    assert_eq!(me["me"]["role"], "TEACHER");
    assert_eq!(me["me"]["teacher"]["id"], school.teacher_id.as_str());

    let admin_me = app
        .gql_ok(
            Some(&school.admin),
            "{ me { username role teacher { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        admin_me["me"],
        json!({"username": "admin", "role": "ADMIN", "teacher": null})
    );
}

async fn unknown_user_and_wrong_password_fail_identically(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wrong = app
        .gql(
            None,
            LOGIN,
            json!({"u": ADMIN_USER, "p": "not-the-password"}),
        )
        .await;
    let unknown = app
        .gql(
            None,
            LOGIN,
            json!({"u": "nobody-here", "p": "not-the-password"}),
        )
        .await;
    assert_eq!(error_code(&wrong), "UNAUTHENTICATED");
    assert_eq!(error_reason(&wrong), "INVALID_CREDENTIALS");
    assert_eq!(
        wrong.to_string(),
        unknown.to_string(),
        "byte-identical errors"
    );
}

async fn refresh_tokens_work_once_and_reuse_revokes_the_family(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app
        .gql_ok(None, LOGIN, json!({"u": ADMIN_USER, "p": ADMIN_PASSWORD}))
        .await;
    let refresh1 = first["login"]["refreshToken"].as_str().unwrap().to_owned();

    let second = app.gql_ok(None, REFRESH, json!({"t": refresh1})).await;
    let refresh2 = second["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let access2 = second["refreshToken"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(refresh1, refresh2);
    app.gql_ok(Some(&access2), "{ me { username } }", json!({}))
        .await;

    let reused = app.gql(None, REFRESH, json!({"t": refresh1})).await;
    assert_eq!(error_code(&reused), "UNAUTHENTICATED");
    // Reuse means theft: the newer token of the same family is revoked too.
    let after_reuse = app.gql(None, REFRESH, json!({"t": refresh2})).await;
    assert_eq!(error_code(&after_reuse), "UNAUTHENTICATED");

    // An access token is not a refresh token, nor the other way round.
    let wrong_kind = app.gql(None, REFRESH, json!({"t": access2})).await;
    assert_eq!(error_code(&wrong_kind), "UNAUTHENTICATED");
    let refresh_as_access = app
        .gql(Some(&refresh2), "{ me { username } }", json!({}))
        .await;
    assert_eq!(error_code(&refresh_as_access), "UNAUTHENTICATED");
}

async fn logout_revokes_the_refresh_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login = app
        .gql_ok(None, LOGIN, json!({"u": ADMIN_USER, "p": ADMIN_PASSWORD}))
        .await;
    let refresh = login["login"]["refreshToken"].as_str().unwrap();
    let out = app
        .gql_ok(
            None,
            "mutation($t: String!) { logout(refreshToken: $t) }",
            json!({"t": refresh}),
        )
        .await;
    assert_eq!(out["logout"], true);
    let after = app.gql(None, REFRESH, json!({"t": refresh})).await;
    assert_eq!(error_code(&after), "UNAUTHENTICATED");
}

async fn malformed_expired_and_foreign_tokens_are_unauthenticated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let valid = app.admin_token().await;
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[2] = "AAAA".into();
    let tampered = parts.join(".");
    // {"alg":"none","typ":"JWT"} . {"sub":"1","typ":"access","iat":1,"exp":99999999999,"jti":"x"} .
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwidHlwIjoiYWNjZXNzIiwiaWF0IjoxLCJleHAiOjk5OTk5OTk5OTk5LCJqdGkiOiJ4In0.";
    let foreign = attendance::auth::jwt::JwtKeys::new("some-other-secret-key-xxxxxxxxxx")
        .issue(
            1,
            0,
            attendance::auth::jwt::TokenKind::Access,
            Duration::from_secs(600),
        )
        .unwrap();
    let expired = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let claims = json!({"sub": "1", "typ": "access", "iat": 1_000, "exp": 2_000, "jti": "old"});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"test-secret-key-0123456789abcdef"),
        )
        .unwrap()
    };
    for token in [
        "garbage",
        tampered.as_str(),
        alg_none,
        foreign.as_str(),
        expired.as_str(),
        "attdev_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let body = app.gql(Some(token), "{ me { username } }", json!({})).await;
        assert_eq!(
            error_code(&body),
            "UNAUTHENTICATED",
            "token {token}: {body}"
        );
    }
    let res = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("authorization", "Basic YWRtaW46eA==")
        .json(&json!({"query": "{ me { username } }"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
}

async fn device_keys_authenticate_only_scans(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let me = app
        .gql(Some(&school.device_key), "{ me { username } }", json!({}))
        .await;
    assert_eq!(error_code(&me), "FORBIDDEN");
    let students = app
        .gql(
            Some(&school.device_key),
            "{ students { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&students), "FORBIDDEN");
    assert!(students["data"].is_null());
    // A person's JWT does not open the device endpoint.
    let (status, body) = app
        .scan(&school.admin, &school.students[0], &app.today(), "08:00:00")
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .rest_scan(
            None,
            r#"{"student_id": 1, "date": "2025-11-25", "time": "08:00:00"}"#,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
}

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attendance"));
    for var in [
        "DEBUG",
        "SECRET_KEY",
        "DATABASE_URL",
        "TIME_ZONE",
        "BIND",
        "ALLOWED_HOSTS",
        "JWT_ACCESS_TOKEN_LIFETIME",
        "JWT_REFRESH_TOKEN_LIFETIME",
        "CORS_ALLOWED_ORIGINS",
        "ADMIN_PASSWORD",
        "LOG_FORMAT",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn a_bad_database_url_or_time_zone_is_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("att_cli_{}", attendance::auth::random_token(4)));
    std::fs::create_dir_all(&dir).unwrap();
    let out = binary()
        .current_dir(&dir)
        .args(["migrate"])
        .env("DEBUG", "true")
        .env("TIME_ZONE", "Mars/Olympus_Mons")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("TIME_ZONE"), "{stderr}");
    assert!(!stderr.contains("panicked"));

    let out = binary()
        .current_dir(&dir)
        .args(["migrate"])
        .env("DEBUG", "true")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let out = binary()
        .current_dir(&dir)
        .env("DEBUG", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SECRET_KEY"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn create_admin_and_migrate_work_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("att_cli_{}", attendance::auth::random_token(4)));
    std::fs::create_dir_all(&dir).unwrap();
    let out = binary()
        .current_dir(&dir)
        .env("DEBUG", "true")
        .args(["migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.join("attendance.db").exists(),
        "the default database is attendance.db"
    );
    let out = binary()
        .current_dir(&dir)
        .env("DEBUG", "true")
        .env("ADMIN_PASSWORD", "from-the-environment")
        .args(["create-admin", "--username", "root"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("from-the-environment"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_start_serves_on_8000_and_prints_the_first_admin_once() {
    let dir = std::env::temp_dir().join(format!("att_cli_{}", attendance::auth::random_token(4)));
    std::fs::create_dir_all(&dir).unwrap();
    // Port 8000 may be taken on a shared machine; BIND is the only variable set here.
    // Started, the server serves; its output up to "listening" is returned.
    let run = async |expect_admin: bool| {
        let mut server = ServerCommand::bare()
            .current_dir(&dir)
            .capture_output()
            .start()
            .await;
        server.wait_for_line(|l| l.contains("listening"));
        let text = server.output.join("\n");
        assert!(
            text.contains("SECRET_KEY"),
            "warns about the throwaway key: {text}"
        );
        assert_eq!(text.contains("password:"), expect_admin, "{text}");
        text
    };
    let first = run(true).await;
    let password = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap()
        .to_owned();
    let second = run(false).await;
    assert!(
        !second.contains(&password),
        "credentials are never printed again"
    );
    assert!(dir.join("attendance.db").exists());
    let _ = std::fs::remove_dir_all(dir);
}
