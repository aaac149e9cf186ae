//! The client side, shared by the in-process `TestApp` and the child-process servers: an
//! HTTP client, the environment every test server starts with, the GraphQL and scan
//! requests, and readers of GraphQL errors.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Installs the rustls provider the server uses (ring); reqwest's clients need one.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for talking to test servers.
pub fn http_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::new()
}

/// The environment every test server starts with; tests override single variables.
pub fn test_env(database_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("DEBUG".into(), "false".into()),
        (
            "SECRET_KEY".into(),
            "test-secret-key-0123456789abcdef".into(),
        ),
        ("DATABASE_URL".into(), database_url.into()),
        ("BIND".into(), "127.0.0.1:0".into()),
        ("TIME_ZONE".into(), "UTC".into()),
        ("AUTO_CLOSE_INTERVAL_SECONDS".into(), "3600".into()),
        ("DATABASE_MAX_CONNECTIONS".into(), "8".into()),
    ])
}

/// Posts a GraphQL document to the server at `address` and returns the whole response body.
pub async fn post_graphql(
    client: &reqwest::Client,
    address: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut req = client
        .post(format!("{address}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("graphql request");
    res.json().await.expect("graphql json")
}

/// Posts `body` to the REST scan endpoint of the server at `address`; returns the status and
/// the JSON body (the text, as a JSON string, when it is not JSON).
pub async fn post_scan(
    client: &reqwest::Client,
    address: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = client
        .post(format!("{address}/api/attendance/scan"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.expect("scan request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("scan body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The body a device sends for a scan of `student_id` at the local `date` and `time`.
pub fn scan_body(student_id: &str, date: &str, time: &str) -> String {
    let id: i64 = student_id.parse().expect("numeric id");
    json!({"student_id": id, "date": date, "time": time}).to_string()
}

/// The first error's `extensions.code`.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

/// The first error's `extensions.reason`.
pub fn error_reason(body: &Value) -> &str {
    body["errors"][0]["extensions"]["reason"]
        .as_str()
        .unwrap_or("<none>")
}
