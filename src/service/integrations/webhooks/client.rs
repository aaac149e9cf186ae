//! The HTTP client deliveries are posted with: no redirects, no proxy, rustls with the
//! webpki roots, and the guarded resolver. It fails closed: when it cannot be built as
//! configured, there is no client and no delivery is attempted, never a less careful one.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{AppError, AppResult};
use crate::service::integrations::webhooks::target;

/// Builds the delivery client; an error means deliveries wait (they stay pending).
pub fn build(allow_private: bool, timeout: Duration) -> AppResult<reqwest::Client> {
    // The process's default, for any other client built with reqwest's defaults; the
    // delivery client below names its provider itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AppError::Internal(format!("webhook TLS configuration failed: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("attendance-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(target::GuardedResolver { allow_private }))
        .tls_backend_preconfigured(tls);
    finish(builder)
}

/// The client a builder makes, or the error; never another client in its place.
fn finish(builder: reqwest::ClientBuilder) -> AppResult<reqwest::Client> {
    builder
        .build()
        .map_err(|e| AppError::Internal(format!("the webhook client could not be built: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_builds_as_configured() {
        assert!(build(false, Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_builder_that_fails_gives_an_error_not_a_default_client() {
        // An invalid header value is one way a builder fails at `build`.
        let failing = reqwest::Client::builder().user_agent("bad\nagent");
        assert!(finish(failing).is_err());
    }
}
