//! Webhook hygiene: IPv6 ranges that lead to an IPv4 host through a translator are refused;
//! a delivery client that cannot be built halts deliveries instead of posting them with a
//! less careful one; signing secrets are sealed at rest (plain ones from before at start-up)
//! and can be rotated.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Plan, Receiver, allow_private, deliveries, empty_close, register, spawn, until};
use crate::both_databases;
use crate::common::*;

both_databases!(
    mapped_6to4_and_local_nat64_targets_are_refused,
    no_delivery_is_attempted_when_the_client_cannot_be_built,
    signing_secrets_are_sealed_at_rest,
    a_plain_secret_from_before_is_sealed_at_start_and_still_signs,
    rotating_a_secret_signs_later_deliveries_with_the_new_one,
    a_secret_sealed_under_another_key_fails_attempts_until_rotated,
);

const ROTATE: &str =
    "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret webhook { id url events } } }";

/// The stored `secret` column of the only webhook.
async fn stored_secret(app: &TestApp) -> String {
    app.text("SELECT secret FROM webhook").await
}

/// Waits until `receiver` has had `n` deliveries, all verified with its secret.
async fn delivered_signed(app: &TestApp, receiver: &Receiver, n: usize) {
    until(app, chrono::Duration::seconds(20), || {
        receiver.delivered().len() == n
    })
    .await;
    let calls = receiver.calls();
    assert!(calls.iter().all(|c| c.signed), "{calls:?}");
}

async fn mapped_6to4_and_local_nat64_targets_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    for url in [
        // IPv4-mapped, even of a public address; 6to4; local-use NAT64.
        "http://[::ffff:8.8.8.8]/hook",
        "http://[::ffff:7f00:1]:9/hook",
        "http://[2002:808:808::1]/hook",
        "http://[2002:a9fe:a9fe::]/latest",
        "http://[64:ff9b:1::808:808]/hook",
    ] {
        let body = app
            .gql(
                Some(&admin),
                "mutation($i: CreateWebhookInput!) { createWebhook(input: $i) { id } }",
                json!({"i": {"url": url, "events": ["SESSION_CLOSED"]}}),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{url}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "url", "{url}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook").await, 0);
}

async fn no_delivery_is_attempted_when_the_client_cannot_be_built(backend: Backend) {
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend).await;
    assert!(
        app.service
            .preset_webhook_client(Err("TLS configuration failed".into())),
        "set before the worker's first look"
    );
    let school = app.seed_school(1).await;
    let hook = register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    empty_close(&app, &school).await;

    // The worker looks (the counter says so) and, with no client, posts nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let looks = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("attendance_webhook_client_unavailable_total "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = looks(&app.metrics().await);
    while looks(&app.metrics().await) < before + 3 {
        assert!(receiver.calls().is_empty(), "posted with some other client");
        assert!(Instant::now() < deadline, "the worker never looked");
        app.service.clock.advance(chrono::Duration::seconds(20));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(receiver.calls().is_empty(), "nothing was posted");
    let log = deliveries(&app, &school.admin, &hook).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "PENDING", "{log:?}");
    assert_eq!(log[0]["attemptCount"], 0);
}

async fn signing_secrets_are_sealed_at_rest(backend: Backend) {
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    let secret = receiver.inner.lock().unwrap().secret.clone();
    let stored = stored_secret(&app).await;
    assert!(stored.starts_with("v1:"), "{stored}");
    let key = secret.trim_start_matches("whsec_");
    assert!(!stored.contains(key), "the secret is not in the column");
    // Delivered signed with the secret the admin was shown.
    empty_close(&app, &school).await;
    delivered_signed(&app, &receiver, 1).await;
}

async fn a_plain_secret_from_before_is_sealed_at_start_and_still_signs(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    // A row as an older version wrote it: the secret in plain text.
    let plain = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    app.service
        .db
        .execute_unprepared(&format!("UPDATE webhook SET secret = '{plain}'"))
        .await
        .unwrap();
    receiver.set_secret(plain);

    let app = app.restart(|| {}).await;
    let stored = stored_secret(&app).await;
    assert!(stored.starts_with("v1:"), "sealed at start-up: {stored}");
    let teacher = app.login("t001", TEACHER_PASSWORD).await;
    let session = app.open_session(&school).await;
    app.close_session(&teacher, &session).await;
    delivered_signed(&app, &receiver, 1).await;
}

async fn rotating_a_secret_signs_later_deliveries_with_the_new_one(backend: Backend) {
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    let hook = register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    let old = receiver.inner.lock().unwrap().secret.clone();
    let stored_before = stored_secret(&app).await;

    let body = app
        .gql(Some(&school.teacher), ROTATE, json!({"id": hook}))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let data = app
        .gql_ok(Some(&school.admin), ROTATE, json!({"id": hook}))
        .await;
    let new = data["rotateWebhookSecret"]["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != old, "{data}");
    assert_eq!(data["rotateWebhookSecret"]["webhook"]["id"], hook.as_str());
    assert_eq!(
        data["rotateWebhookSecret"]["webhook"]["url"],
        receiver.url.as_str()
    );
    let stored = stored_secret(&app).await;
    assert!(stored.starts_with("v1:") && stored != stored_before);
    assert!(!stored.contains(new.trim_start_matches("whsec_")));

    // The receiver now verifies with the new secret only.
    receiver.set_secret(new);
    empty_close(&app, &school).await;
    delivered_signed(&app, &receiver, 1).await;

    // A deleted webhook has no secret to rotate.
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { deleteWebhook(id: $id) }",
        json!({"id": hook}),
    )
    .await;
    let body = app
        .gql(Some(&school.admin), ROTATE, json!({"id": hook}))
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
}

async fn a_secret_sealed_under_another_key_fails_attempts_until_rotated(backend: Backend) {
    let receiver = Receiver::start(Plan::Always(200)).await;
    let app = spawn(backend).await;
    let school = app.seed_school(1).await;
    let hook = register(&app, &school.admin, &receiver, &["SESSION_CLOSED"]).await;
    // Another SECRET_KEY, as a DEBUG process without one gets at every start.
    let other = app
        .spawn_sibling(|env| {
            allow_private(env);
            env.insert("SECRET_KEY".into(), "another-secret-key-9876543210".into());
        })
        .await;
    app.stop().await;
    let admin = other.admin_token().await;
    let teacher = other.login("t001", TEACHER_PASSWORD).await;
    let session = other
        .create_session(
            &teacher,
            json!({"courseId": school.course_id, "deviceId": school.device_code}),
        )
        .await;
    other.close_session(&teacher, &session).await;

    // The attempt fails without posting, and says what to do.
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let log = deliveries(&other, &admin, &hook).await;
        if let Some(error) = log[0]["attempts"][0]["error"].as_str() {
            assert_eq!(log[0]["status"], "PENDING");
            break error.to_owned();
        }
        assert!(Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        error.contains("SECRET_KEY") && error.contains("rotate"),
        "{error}"
    );
    assert!(receiver.calls().is_empty(), "nothing unsigned was posted");

    // Rotated, the retry goes out signed with the new secret.
    let data = other
        .gql_ok(Some(&admin), ROTATE, json!({"id": hook}))
        .await;
    receiver.set_secret(data["rotateWebhookSecret"]["secret"].as_str().unwrap());
    delivered_signed(&other, &receiver, 1).await;
    other.stop().await;
}
