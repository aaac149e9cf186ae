//! What every handler shares, whichever transport serves it.

use tokio::sync::watch;

use crate::service::Service;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The domain services.
    pub service: Service,
    /// Turns true when the server starts shutting down (WebSockets then close cleanly).
    pub stopping: watch::Receiver<bool>,
}
