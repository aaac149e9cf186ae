//! The same metrics as `src/metrics.rs`, kept with prometheus-client 0.26 instead of the
//! hand-written registry and text: the candidate this benchmark weighs.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The operations that count lock conflicts (always rendered, so a zero is visible).
pub const LOCK_CONFLICT_OPERATIONS: [&str; 2] = ["scan_batch", "session_close"];

/// GraphQL operation names are client-chosen: past this many, new names are not counted.
const MAX_OPERATION_NAMES: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationResultLabels {
    operation: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_latency: Latencies<RouteLabels>,
    graphql_operations: Family<OperationResultLabels, Counter>,
    graphql_latency: Latencies<OperationLabels>,
    /// Distinct operation names counted so far; taken only to add a new name.
    graphql_names: Mutex<usize>,
    scans: Family<ScanLabels, Counter>,
    scan_batches: Counter,
    scan_batch_rows: Counter,
    lock_conflicts: Family<LockLabels, Counter>,
    sessions_open: Gauge,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    /// Scrapes set the gauges, then render: one at a time, so each shows its own values.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            graphql_operations: Family::default(),
            graphql_latency: Family::new_with_constructor(latency_histogram),
            graphql_names: Mutex::new(0),
            scans: Family::default(),
            scan_batches: Counter::default(),
            scan_batch_rows: Counter::default(),
            lock_conflicts: Family::default(),
            sessions_open: Gauge::default(),
            pool_connections: Family::default(),
            pool_max: Gauge::default(),
            scrape: Mutex::new(()),
        };
        for operation in LOCK_CONFLICT_OPERATIONS {
            let _ = metrics
                .lock_conflicts
                .get_or_create(&LockLabels { operation });
        }
        // Help texts get their closing full stop from the registry, and counters their
        // `_total` suffix from the encoder.
        let r = &mut metrics.registry;
        r.register(
            "attendance_http_requests",
            "HTTP requests by route, method and status",
            metrics.http_requests.clone(),
        );
        r.register(
            "attendance_http_request_duration_seconds",
            "HTTP request latency by route",
            metrics.http_latency.clone(),
        );
        r.register(
            "attendance_graphql_operations",
            "GraphQL operations by name and result",
            metrics.graphql_operations.clone(),
        );
        r.register(
            "attendance_graphql_operation_duration_seconds",
            "GraphQL operation latency by name",
            metrics.graphql_latency.clone(),
        );
        r.register(
            "attendance_scans",
            "Device scans by outcome and reason",
            metrics.scans.clone(),
        );
        r.register(
            "attendance_scan_batches",
            "Group-commit batches of live scans (PostgreSQL)",
            metrics.scan_batches.clone(),
        );
        r.register(
            "attendance_scan_batch_rows",
            "Scans carried by those batches",
            metrics.scan_batch_rows.clone(),
        );
        r.register(
            "attendance_db_lock_conflicts",
            "Statements the database aborted to break a deadlock or serialization conflict, by operation",
            metrics.lock_conflicts.clone(),
        );
        r.register(
            "attendance_sessions_open",
            "Sessions currently active",
            metrics.sessions_open.clone(),
        );
        r.register(
            "attendance_db_pool_connections",
            "Database pool connections by state",
            metrics.pool_connections.clone(),
        );
        r.register(
            "attendance_db_pool_max_connections",
            "The pool's maximum size",
            metrics.pool_max.clone(),
        );
        metrics
    }
}

/// Values read from the database and pools at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Sessions currently active.
    pub sessions_open: i64,
    /// Connections the pool holds.
    pub pool_size: u32,
    /// Of those, idle.
    pub pool_idle: u32,
    /// The pool's maximum.
    pub pool_max: u32,
}

impl Metrics {
    /// Counts an HTTP request on `route` (the matched path, never the raw URI).
    pub fn http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = RouteLabels {
            route: route.to_owned(),
            method: method.to_owned(),
        };
        self.http_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let RouteLabels { route, method } = labels;
        self.http_requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// Counts a GraphQL operation by name (`anonymous` when unnamed).
    pub fn graphql(&self, operation: &str, failed: bool, elapsed: Duration) {
        // Names are client-chosen: keep the label set bounded.
        let operation = if operation.len() <= 64
            && operation
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            operation
        } else {
            "invalid_name"
        };
        let labels = OperationLabels {
            operation: operation.to_owned(),
        };
        if self.graphql_latency.get(&labels).is_none() {
            let Ok(mut names) = self.graphql_names.lock() else {
                return;
            };
            // Checked again under the lock: another request may have added this name.
            if self.graphql_latency.get(&labels).is_none() {
                if *names > MAX_OPERATION_NAMES {
                    return;
                }
                *names += 1;
                let _ = self.graphql_latency.get_or_create(&labels);
            }
        }
        self.graphql_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.graphql_operations
            .get_or_create(&OperationResultLabels {
                operation: labels.operation,
                result: if failed { "error" } else { "ok" },
            })
            .inc();
    }

    /// Counts a scan: `outcome` is accepted, duplicate or rejected; `reason` the code.
    pub fn scan(&self, outcome: &'static str, reason: &'static str) {
        self.scans
            .get_or_create(&ScanLabels { outcome, reason })
            .inc();
    }

    /// Counts one group-commit batch of `rows` scans.
    pub fn scan_batch(&self, rows: usize) {
        self.scan_batches.inc();
        self.scan_batch_rows.inc_by(rows as u64);
    }

    /// Counts a statement or transaction of `operation` that the database aborted to break
    /// a deadlock or a serialization conflict.
    pub fn lock_conflict(&self, operation: &'static str) {
        self.lock_conflicts
            .get_or_create(&LockLabels { operation })
            .inc();
    }

    /// Lock conflicts counted so far, over all operations.
    pub fn lock_conflicts(&self) -> u64 {
        LOCK_CONFLICT_OPERATIONS
            .iter()
            .filter_map(|operation| {
                self.lock_conflicts
                    .get(&LockLabels { operation })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// The exposition text.
    pub fn render(&self, gauges: Gauges) -> String {
        let Ok(_one_scrape) = self.scrape.lock() else {
            return String::new();
        };
        self.sessions_open.set(gauges.sessions_open);
        let busy = gauges.pool_size.saturating_sub(gauges.pool_idle);
        self.pool_connections
            .get_or_create(&PoolLabels { state: "busy" })
            .set(busy.into());
        self.pool_connections
            .get_or_create(&PoolLabels { state: "idle" })
            .set(gauges.pool_idle.into());
        self.pool_max.set(gauges.pool_max.into());
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
    }
}
