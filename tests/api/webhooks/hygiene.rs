//! Webhook hygiene: IPv6 ranges that lead to an IPv4 host through a translator are refused.

use serde_json::json;

use crate::both_databases;
use crate::common::*;

both_databases!(mapped_6to4_and_local_nat64_targets_are_refused,);

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
