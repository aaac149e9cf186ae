//! Building the router and state, binding (port 0 in tests), serving with graceful shutdown,
//! and the background jobs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::clock::Clock;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::db::{self, StatementCounter};
use crate::error::{AppError, Reason};
use crate::graphql::execute::GraphqlExecutor;
use crate::service::Service;
use crate::state::AppState;
use crate::{graphql, iclock, rest};

/// A failure to start, reported as one line.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database cannot be opened.
    #[error(transparent)]
    Connect(#[from] db::ConnectError),
    /// Migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(String),
    /// The address cannot be bound.
    #[error("BIND: cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    service: Service,
    statements: StatementCounter,
    stop: watch::Sender<bool>,
    /// When the timetable is next due, as the start-up run found it.
    next_due: Option<chrono::DateTime<chrono::Utc>>,
}

impl Application {
    /// Connects, migrates and binds `config.bind` (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with_routes(config, Router::new()).await
    }

    /// Like `build`, with extra routes behind the same middleware (tests use it to reach
    /// the panic and timeout handling).
    pub async fn build_with_routes(
        config: Config,
        extra: Router<AppState>,
    ) -> Result<Self, StartupError> {
        Self::build_with_clock(config, extra, Clock::system()).await
    }

    /// Like `build_with_routes`, with attendance time read from `clock` (tests move it).
    pub async fn build_with_clock(
        config: Config,
        extra: Router<AppState>,
        clock: Clock,
    ) -> Result<Self, StartupError> {
        let config = Arc::new(config);
        let pools = db::connect_migrated(&config).await.map_err(|e| match e {
            db::OpenError::Connect(e) => StartupError::Connect(e),
            db::OpenError::Migrate(e) => StartupError::Migrate(e),
        })?;
        let statements = pools.statements.clone();
        let service = Service::with_clock(pools, config.clone(), clock);
        // Rows from before secrets were sealed; every process does it, and the first wins.
        if let Err(e) = service.seal_plain_webhook_secrets().await {
            tracing::warn!(error = %e, "sealing plain webhook secrets failed; they are read as they are, and sealed at the next start");
        }
        // Catch up before serving: classes still running open, sessions past their end
        // close, so a restarted server answers with the timetable already in place.
        let next_due = match service.run_schedule().await {
            Ok(run) => run.next_due,
            Err(e) => {
                tracing::warn!(error = %e, "the start-up timetable run failed; will retry");
                None
            }
        };
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| StartupError::Bind(config.bind, e))?;
        let (stop, stopping) = watch::channel(false);
        let router = router(
            AppState {
                service: service.clone(),
                stopping,
            },
            extra,
        );
        Ok(Self {
            listener,
            router,
            service,
            statements,
            stop,
            next_due,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The services, for the CLI and tests.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The count of SQL statements issued so far.
    pub fn statements(&self) -> StatementCounter {
        self.statements.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, closes WebSockets with a close
    /// frame, and gives in-flight requests `SHUTDOWN_GRACE_SECONDS` to finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.stop.subscribe();
        let jobs = spawn_background_jobs(self.service.clone(), stopping.clone(), self.next_due);
        self.service
            .events
            .spawn_bridge(self.service.db.clone(), stopping.clone());
        let stop = self.stop;
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let grace = self.service.config.shutdown_grace;
        let server = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let mut deadline = stopping.clone();
        let served = tokio::select! {
            served = server => served,
            _ = async move {
                let _ = deadline.wait_for(|stopping| *stopping).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("in-flight requests did not finish within the shutdown grace period");
                Ok(())
            }
        };
        let _ = jobs.await;
        if let Err(e) = self.service.flush_last_seen().await {
            tracing::warn!(error = %e, "could not save devices' last contact at shutdown");
        }
        served
    }
}

/// Starts the background jobs, each in the module whose work it runs, and answers a handle
/// that ends once they have all stopped.
fn spawn_background_jobs(
    service: Service,
    stop: watch::Receiver<bool>,
    next_due: Option<chrono::DateTime<chrono::Utc>>,
) -> tokio::task::JoinHandle<()> {
    use crate::service::{accounts, integrations, roll_call, schedule, terminals};
    let jobs = [
        tokio::spawn(db::background(schedule::scheduler::run(
            service.clone(),
            stop.clone(),
            next_due,
        ))),
        tokio::spawn(db::background(integrations::webhooks::dispatch::run(
            service.clone(),
            stop.clone(),
        ))),
        tokio::spawn(db::background(roll_call::scan::save_last_seen(
            service.clone(),
            stop.clone(),
        ))),
        tokio::spawn(db::background(accounts::auth::prune_login_failures_job(
            service.clone(),
            stop.clone(),
        ))),
        tokio::spawn(db::background(terminals::drain::sweep(service, stop))),
    ];
    tokio::spawn(async move {
        for job in jobs {
            let _ = job.await;
        }
    })
}

/// The whole HTTP surface, plus `extra` routes behind the same middleware.
pub fn router(state: AppState, extra: Router<AppState>) -> Router {
    let config = state.service.config.clone();
    let state_metrics = state.service.metrics.clone();
    let api = extra
        .merge(graphql::http::routes(GraphqlExecutor::new(
            state.service.clone(),
        )))
        .merge(rest::routes())
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes));
    // Terminals upload everything they buffered in one request, so their routes have a
    // limit of their own; `guard_request` applies the same split to declared lengths.
    let terminals =
        iclock::routes().layer(RequestBodyLimitLayer::new(config.iclock_max_body_bytes));
    api.merge(terminals)
        .with_state(state)
        .layer(middleware::from_fn_with_state(state_metrics, track_request))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(config.clone(), guard_request))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(cors(&config))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Counts every request under its matched route (never the raw path, which would let
/// clients create unbounded label values).
async fn track_request(
    State(metrics): State<Arc<crate::metrics::Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    // Both clones are cheap: the matched path is shared, a standard method is a constant.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    metrics.http(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

fn cors(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

/// Checks `Host` against `ALLOWED_HOSTS` and refuses declared bodies over the limit with a
/// JSON 413 before anything reads them.
async fn guard_request(State(config): State<Arc<Config>>, req: Request, next: Next) -> Response {
    // Probes (container health checks, load balancers) often use an address as Host.
    let probe = matches!(req.uri().path(), "/health" | "/ready");
    if !probe && !host_allowed(&config.allowed_hosts, req.headers()) {
        // 400 as Django answers a disallowed host: the request is not for this server (422
        // would blame the body).
        let mut refused = AppError::invalid("Host", "is not in ALLOWED_HOSTS").into_response();
        *refused.status_mut() = StatusCode::BAD_REQUEST;
        return refused;
    }
    if req.method() == Method::POST
        && req.uri().path() == "/graphql"
        && !graphql_content_type(req.headers())
    {
        return AppError::rejected(
            Reason::UnsupportedMediaType,
            "POST /graphql needs Content-Type: application/json (multipart uploads also need an \
             apollo-require-preflight header)",
        )
        .into_response();
    }
    let limit = config.body_limit(req.uri().path());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return payload_too_large(limit);
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|ct| ct != "application/json")
    {
        return payload_too_large(limit);
    }
    response
}

/// JSON bodies only, so a cross-site form or text POST (a "simple request" that skips the
/// CORS preflight) can never run a mutation; multipart uploads must carry a header that
/// forces a preflight.
fn graphql_content_type(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    match essence.as_str() {
        "application/json" | "application/graphql-response+json" => true,
        "multipart/form-data" => {
            headers.contains_key("apollo-require-preflight")
                || headers.contains_key("x-apollo-operation-name")
        }
        _ => false,
    }
}

fn payload_too_large(limit: usize) -> Response {
    AppError::rejected(
        Reason::PayloadTooLarge,
        format!("the request body exceeds {limit} bytes"),
    )
    .into_response()
}

fn host_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() || allowed.iter().any(|h| h == "*") {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    allowed.iter().any(|h| {
        h == name || (h.starts_with('.') && (name.ends_with(h.as_str()) || name == &h[1..]))
    })
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    AppError::Internal("handler panicked".into()).into_response()
}

async fn not_found() -> Response {
    AppError::NotFound("route").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str], host: &str) -> bool {
        let list: Vec<String> = list.iter().map(|h| h.to_string()).collect();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        host_allowed(&list, &headers)
    }

    #[test]
    fn an_ipv6_literal_matches_its_host_header_with_or_without_a_port() {
        // As config lists `ALLOWED_HOSTS=localhost,127.0.0.1, [::1]`: trimmed, brackets off.
        let hosts = ["localhost", "127.0.0.1", "::1"];
        assert!(allowed(&hosts, "[::1]:8000"));
        assert!(allowed(&hosts, "[::1]"));
        assert!(allowed(&hosts, "127.0.0.1:8000"));
        assert!(allowed(&hosts, "localhost"));
        assert!(!allowed(&hosts, "[::2]:8000"));
        assert!(!allowed(&hosts, "evil.example"));
        assert!(!allowed(&hosts, "evil.example:8000"));
    }
}
