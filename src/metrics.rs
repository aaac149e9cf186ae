//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`: request
//! counts and latency histograms per route and per GraphQL operation, scans by outcome,
//! scan batch sizes, and (read at scrape time) open sessions and database pool usage.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The operations that count lock conflicts (always rendered, so a zero is visible).
pub const LOCK_CONFLICT_OPERATIONS: [&str; 2] = ["scan_batch", "session_close"];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// One route and method's requests by status, and their latency.
#[derive(Default)]
struct RouteStats {
    statuses: BTreeMap<u16, u64>,
    latency: Histogram,
}

/// One GraphQL operation name's results and latency.
#[derive(Default)]
struct OperationStats {
    ok: u64,
    error: u64,
    latency: Histogram,
}

#[derive(Default)]
struct Registry {
    /// By route, then method: nested so that counting a request allocates nothing once its
    /// route and method have been seen.
    http: BTreeMap<String, BTreeMap<String, RouteStats>>,
    graphql: BTreeMap<String, OperationStats>,
    scans: BTreeMap<(&'static str, &'static str), u64>,
    scan_batches: u64,
    scan_batch_rows: u64,
    lock_conflicts: BTreeMap<&'static str, u64>,
    classes_opened: u64,
    classes_not_opened: BTreeMap<&'static str, u64>,
    webhook_deliveries: BTreeMap<&'static str, u64>,
    webhook_client_unavailable: u64,
}

/// The process's metrics.
#[derive(Default)]
pub struct Metrics(Mutex<Registry>);

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
    /// Seconds since the oldest pending webhook delivery was written (0 when none).
    pub webhook_oldest_pending_seconds: f64,
}

/// The outcomes webhook attempts are counted under (always rendered, so a zero is visible).
pub const WEBHOOK_OUTCOMES: [&str; 3] = ["delivered", "retried", "failed"];

impl Metrics {
    /// Counts an HTTP request on `route` (the matched path, never the raw URI).
    pub fn http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        if let Ok(mut r) = self.0.lock() {
            with_slot(&mut r.http, route, |methods| {
                with_slot(methods, method, |stats: &mut RouteStats| {
                    *stats.statuses.entry(status).or_default() += 1;
                    stats.latency.observe(elapsed.as_secs_f64());
                });
            });
        }
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
        if let Ok(mut r) = self.0.lock() {
            if r.graphql.len() > 500 && !r.graphql.contains_key(operation) {
                return;
            }
            with_slot(&mut r.graphql, operation, |stats| {
                *(if failed {
                    &mut stats.error
                } else {
                    &mut stats.ok
                }) += 1;
                stats.latency.observe(elapsed.as_secs_f64());
            });
        }
    }

    /// Counts a scan: `outcome` is accepted, duplicate or rejected; `reason` the code.
    pub fn scan(&self, outcome: &'static str, reason: &'static str) {
        if let Ok(mut r) = self.0.lock() {
            *r.scans.entry((outcome, reason)).or_default() += 1;
        }
    }

    /// Counts one group-commit batch of `rows` scans.
    pub fn scan_batch(&self, rows: usize) {
        if let Ok(mut r) = self.0.lock() {
            r.scan_batches += 1;
            r.scan_batch_rows += rows as u64;
        }
    }

    /// Counts a statement or transaction of `operation` that the database aborted to break
    /// a deadlock or a serialization conflict.
    pub fn lock_conflict(&self, operation: &'static str) {
        if let Ok(mut r) = self.0.lock() {
            *r.lock_conflicts.entry(operation).or_default() += 1;
        }
    }

    /// Counts a class the timetable opened in this process.
    pub fn class_opened(&self) {
        if let Ok(mut r) = self.0.lock() {
            r.classes_opened += 1;
        }
    }

    /// Counts a class the timetable could not open, for `reason` (counted by the one
    /// process that noted it).
    pub fn class_not_opened(&self, reason: &'static str) {
        if let Ok(mut r) = self.0.lock() {
            *r.classes_not_opened.entry(reason).or_default() += 1;
        }
    }

    /// Counts a webhook attempt by `outcome` (one of [`WEBHOOK_OUTCOMES`]).
    pub fn webhook_delivery(&self, outcome: &'static str) {
        if let Ok(mut r) = self.0.lock() {
            *r.webhook_deliveries.entry(outcome).or_default() += 1;
        }
    }

    /// Counts a look of the webhook worker that attempted nothing because the delivery
    /// client could not be built.
    pub fn webhook_client_unavailable(&self) {
        if let Ok(mut r) = self.0.lock() {
            r.webhook_client_unavailable += 1;
        }
    }

    /// Lock conflicts counted so far, over all operations.
    pub fn lock_conflicts(&self) -> u64 {
        self.0
            .lock()
            .map(|r| r.lock_conflicts.values().sum())
            .unwrap_or_default()
    }

    /// The exposition text.
    pub fn render(&self, gauges: Gauges) -> String {
        let Ok(r) = self.0.lock() else {
            return String::new();
        };
        let mut out = String::with_capacity(8192);
        out.push_str(
            "# HELP attendance_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE attendance_http_requests_total counter\n");
        for (route, methods) in &r.http {
            for (method, stats) in methods {
                for (status, n) in &stats.statuses {
                    let _ = writeln!(
                        out,
                        "attendance_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                        escape(route)
                    );
                }
            }
        }
        out.push_str(
            "# HELP attendance_http_request_duration_seconds HTTP request latency by route.\n",
        );
        out.push_str("# TYPE attendance_http_request_duration_seconds histogram\n");
        for (route, methods) in &r.http {
            for (method, stats) in methods {
                histogram(
                    &mut out,
                    "attendance_http_request_duration_seconds",
                    &format!("route=\"{}\",method=\"{method}\"", escape(route)),
                    &stats.latency,
                );
            }
        }
        out.push_str(
            "# HELP attendance_graphql_operations_total GraphQL operations by name and result.\n",
        );
        out.push_str("# TYPE attendance_graphql_operations_total counter\n");
        for (operation, stats) in &r.graphql {
            for (result, n) in [("ok", stats.ok), ("error", stats.error)] {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "attendance_graphql_operations_total{{operation=\"{operation}\",result=\"{result}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP attendance_graphql_operation_duration_seconds GraphQL operation latency by name.\n");
        out.push_str("# TYPE attendance_graphql_operation_duration_seconds histogram\n");
        for (operation, stats) in &r.graphql {
            histogram(
                &mut out,
                "attendance_graphql_operation_duration_seconds",
                &format!("operation=\"{operation}\""),
                &stats.latency,
            );
        }
        out.push_str("# HELP attendance_scans_total Device scans by outcome and reason.\n");
        out.push_str("# TYPE attendance_scans_total counter\n");
        for ((outcome, reason), n) in &r.scans {
            let _ = writeln!(
                out,
                "attendance_scans_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP attendance_scan_batches_total Group-commit batches of live scans (PostgreSQL).\n");
        out.push_str("# TYPE attendance_scan_batches_total counter\n");
        let _ = writeln!(out, "attendance_scan_batches_total {}", r.scan_batches);
        out.push_str("# HELP attendance_scan_batch_rows_total Scans carried by those batches.\n");
        out.push_str("# TYPE attendance_scan_batch_rows_total counter\n");
        let _ = writeln!(
            out,
            "attendance_scan_batch_rows_total {}",
            r.scan_batch_rows
        );
        out.push_str("# HELP attendance_db_lock_conflicts_total Statements the database aborted to break a deadlock or serialization conflict, by operation.\n");
        out.push_str("# TYPE attendance_db_lock_conflicts_total counter\n");
        for operation in LOCK_CONFLICT_OPERATIONS {
            let n = r.lock_conflicts.get(operation).copied().unwrap_or_default();
            let _ = writeln!(
                out,
                "attendance_db_lock_conflicts_total{{operation=\"{operation}\"}} {n}"
            );
        }
        out.push_str("# HELP attendance_classes_opened_total Timetable classes whose session this process opened.\n");
        out.push_str("# TYPE attendance_classes_opened_total counter\n");
        let _ = writeln!(out, "attendance_classes_opened_total {}", r.classes_opened);
        out.push_str("# HELP attendance_classes_not_opened_total Timetable classes that could not open, by reason.\n");
        out.push_str("# TYPE attendance_classes_not_opened_total counter\n");
        let busy = r
            .classes_not_opened
            .get("device_busy")
            .copied()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "attendance_classes_not_opened_total{{reason=\"device_busy\"}} {busy}"
        );
        out.push_str("# HELP attendance_webhook_deliveries_total Webhook delivery attempts this process made, by outcome (retried: failed and scheduled again; failed: given up after 24 hours, with those a held webhook gave up without another attempt).\n");
        out.push_str("# TYPE attendance_webhook_deliveries_total counter\n");
        for outcome in WEBHOOK_OUTCOMES {
            let n = r
                .webhook_deliveries
                .get(outcome)
                .copied()
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "attendance_webhook_deliveries_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP attendance_webhook_client_unavailable_total Looks of the webhook worker that attempted nothing because the delivery client could not be built (deliveries stay pending).\n");
        out.push_str("# TYPE attendance_webhook_client_unavailable_total counter\n");
        let _ = writeln!(
            out,
            "attendance_webhook_client_unavailable_total {}",
            r.webhook_client_unavailable
        );
        out.push_str("# HELP attendance_webhook_oldest_pending_seconds Age of the oldest webhook delivery not yet delivered or given up, over all processes.\n");
        out.push_str("# TYPE attendance_webhook_oldest_pending_seconds gauge\n");
        let _ = writeln!(
            out,
            "attendance_webhook_oldest_pending_seconds {}",
            gauges.webhook_oldest_pending_seconds
        );
        out.push_str("# HELP attendance_sessions_open Sessions currently active.\n");
        out.push_str("# TYPE attendance_sessions_open gauge\n");
        let _ = writeln!(out, "attendance_sessions_open {}", gauges.sessions_open);
        out.push_str("# HELP attendance_db_pool_connections Database pool connections by state.\n");
        out.push_str("# TYPE attendance_db_pool_connections gauge\n");
        let busy = gauges.pool_size.saturating_sub(gauges.pool_idle);
        let _ = writeln!(
            out,
            "attendance_db_pool_connections{{state=\"busy\"}} {busy}"
        );
        let _ = writeln!(
            out,
            "attendance_db_pool_connections{{state=\"idle\"}} {}",
            gauges.pool_idle
        );
        out.push_str("# HELP attendance_db_pool_max_connections The pool's maximum size.\n");
        out.push_str("# TYPE attendance_db_pool_max_connections gauge\n");
        let _ = writeln!(
            out,
            "attendance_db_pool_max_connections {}",
            gauges.pool_max
        );
        out
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Runs `f` on the value under `key`, inserting a default (and allocating the key) only the
/// first time the key is seen.
fn with_slot<V: Default>(map: &mut BTreeMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(value) => f(value),
        None => f(map.entry(key.to_owned()).or_default()),
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_names_bounded() {
        let m = Metrics::default();
        m.http(
            "POST",
            "/api/attendance/scan",
            201,
            Duration::from_millis(3),
        );
        m.http(
            "POST",
            "/api/attendance/scan",
            201,
            Duration::from_millis(30),
        );
        m.graphql("Me", false, Duration::from_millis(2));
        m.graphql("bad name\"}", true, Duration::from_millis(2));
        let text = m.render(Gauges::default());
        assert!(text.contains("attendance_http_requests_total{route=\"/api/attendance/scan\",method=\"POST\",status=\"201\"} 2"));
        assert!(text.contains("attendance_http_request_duration_seconds_bucket{route=\"/api/attendance/scan\",method=\"POST\",le=\"0.005\"} 1"));
        assert!(text.contains("attendance_http_request_duration_seconds_bucket{route=\"/api/attendance/scan\",method=\"POST\",le=\"0.05\"} 2"));
        assert!(text.contains(
            "attendance_graphql_operations_total{operation=\"invalid_name\",result=\"error\"} 1"
        ));
    }
}
