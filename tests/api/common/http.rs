//! The client side: an HTTP client with the server's TLS provider, and the environment
//! every test server starts with.

use std::collections::HashMap;

use serde_json::Value;

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
