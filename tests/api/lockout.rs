//! The login lockout under attempts sent at once: each is counted before its password is
//! checked, so however many arrive together, on one process or several, at most the limit
//! reach the password check.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    wrong_passwords_sent_at_once_are_checked_at_most_limit_times,
    wrong_current_passwords_sent_at_once_are_checked_at_most_limit_times,
    wrong_passwords_sent_at_once_to_two_processes_are_checked_at_most_limit_times,
);

const LIMIT: usize = 5;

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }";

/// How many answers were judged by the password check (`INVALID_CREDENTIALS` or
/// `UNAUTHENTICATED`) and how many were refused unchecked (`RATE_LIMITED`); anything else
/// fails the test.
fn tally(answers: &[Value]) -> (usize, usize) {
    let (mut checked, mut refused) = (0, 0);
    for body in answers {
        match (error_code(body), error_reason(body)) {
            (_, "RATE_LIMITED") => refused += 1,
            ("UNAUTHENTICATED", _) => checked += 1,
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    (checked, refused)
}

fn limits(env: &mut std::collections::HashMap<String, String>) {
    env.insert("LOGIN_MAX_FAILURES".into(), LIMIT.to_string());
    // The address's own limit stays out of the way: the username's is under test.
    env.insert("LOGIN_MAX_FAILURES_PER_ADDRESS".into(), "1000".into());
}

async fn wrong_passwords_sent_at_once_are_checked_at_most_limit_times(backend: Backend) {
    let app = TestApp::spawn_with(backend, limits).await;
    let guesses = (0..8 * LIMIT).map(|n| {
        app.gql(
            None,
            LOGIN,
            json!({"u": ADMIN_USER, "p": format!("wrong-guess-{n}")}),
        )
    });
    let answers = futures_util::future::join_all(guesses).await;
    assert_eq!(tally(&answers), (LIMIT, 7 * LIMIT));
    // The lock holds for the right password too, and other accounts are untouched.
    let right = app
        .gql(None, LOGIN, json!({"u": ADMIN_USER, "p": ADMIN_PASSWORD}))
        .await;
    assert_eq!(error_reason(&right), "RATE_LIMITED", "{right}");
    let other = app
        .gql(
            None,
            LOGIN,
            json!({"u": "someone-else", "p": "wrong-guess"}),
        )
        .await;
    assert_eq!(error_reason(&other), "INVALID_CREDENTIALS", "{other}");
}

async fn wrong_current_passwords_sent_at_once_are_checked_at_most_limit_times(backend: Backend) {
    let app = TestApp::spawn_with(backend, limits).await;
    app.seed_school(1).await;
    let access = app.login("t001", TEACHER_PASSWORD).await;
    let change = "mutation($c: String!, $n: String!) { \
                  changePassword(currentPassword: $c, newPassword: $n) }";
    let guesses = (0..8 * LIMIT).map(|n| {
        app.gql(
            Some(&access),
            change,
            json!({"c": format!("wrong-guess-{n}"), "n": "brand-new-pass-1"}),
        )
    });
    let answers = futures_util::future::join_all(guesses).await;
    assert_eq!(tally(&answers), (LIMIT, 7 * LIMIT));
}

async fn wrong_passwords_sent_at_once_to_two_processes_are_checked_at_most_limit_times(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let limits = [
        ("LOGIN_MAX_FAILURES", "5"),
        ("LOGIN_MAX_FAILURES_PER_ADDRESS", "1000"),
    ];
    let a = ServerCommand::with_test_env(&app.db.url)
        .envs(limits)
        .start()
        .await;
    let b = ServerCommand::with_test_env(&app.db.url)
        .envs(limits)
        .start()
        .await;
    let guesses = (0..8 * LIMIT).map(|n| {
        let server = if n % 2 == 0 { &a } else { &b };
        server.gql(
            None,
            LOGIN,
            json!({"u": ADMIN_USER, "p": format!("wrong-guess-{n}")}),
        )
    });
    let answers = futures_util::future::join_all(guesses).await;
    assert_eq!(tally(&answers), (LIMIT, 7 * LIMIT));
}
