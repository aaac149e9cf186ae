//! Webhook hygiene: IPv6 ranges that lead to an IPv4 host through a translator are refused,
//! and a delivery client that cannot be built halts deliveries instead of posting them with
//! a less careful one.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Plan, Receiver, deliveries, empty_close, register, spawn};
use crate::both_databases;
use crate::common::*;

both_databases!(
    mapped_6to4_and_local_nat64_targets_are_refused,
    no_delivery_is_attempted_when_the_client_cannot_be_built,
);

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
