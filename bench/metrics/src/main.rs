//! ns per call of the metrics methods the scan path calls, for the server's hand-written
//! metrics (`src/metrics.rs`, compiled in here as it is) and the prometheus-client candidate.
//! Each figure is the median of 7 runs of 1,000,000 calls, single-threaded and then from two
//! threads at once (the server's machine has two cores).

#![allow(dead_code)]

mod candidate;
#[path = "../../../src/metrics.rs"]
mod current;

use std::hint::black_box;
use std::time::{Duration, Instant};

const N: u32 = 1_000_000;
const RUNS: usize = 7;

/// The calls one scan request makes, and the others on the same path.
trait Hot: Default + Sync {
    fn scan(&self);
    fn http(&self);
    fn scan_batch(&self);
    fn lock_conflict(&self);
    fn graphql(&self);
    fn render_len(&self) -> usize;
}

macro_rules! hot {
    ($t:ty, $gauges:expr) => {
        impl Hot for $t {
            fn scan(&self) {
                self.scan(black_box("accepted"), black_box(""));
            }
            fn http(&self) {
                self.http(
                    black_box("POST"),
                    black_box("/api/attendance/scan"),
                    black_box(201),
                    black_box(Duration::from_micros(4200)),
                );
            }
            fn scan_batch(&self) {
                self.scan_batch(black_box(4));
            }
            fn lock_conflict(&self) {
                self.lock_conflict(black_box("scan_batch"));
            }
            fn graphql(&self) {
                self.graphql(
                    black_box("MyCourses"),
                    black_box(false),
                    black_box(Duration::from_millis(3)),
                );
            }
            fn render_len(&self) -> usize {
                self.render($gauges).len()
            }
        }
    };
}
hot!(current::Metrics, current::Gauges::default());
hot!(candidate::Metrics, candidate::Gauges::default());

/// Median ns per call of `f` over RUNS runs of N calls on `threads` threads at once.
fn median_ns<M: Hot>(threads: usize, f: fn(&M)) -> f64 {
    let metrics = M::default();
    // Warm up: the first call of a label set allocates it.
    for _ in 0..1000 {
        f(&metrics);
    }
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..N {
                            f(&metrics);
                        }
                    });
                }
            });
            // Wall time per call of one thread: what each request waits.
            started.elapsed().as_nanos() as f64 / f64::from(N)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn row(name: &str, threads: usize, a: fn(&current::Metrics), b: fn(&candidate::Metrics)) {
    let (old, new) = (median_ns(threads, a), median_ns(threads, b));
    println!(
        "{name:<14} {threads:>7} {old:>12.1} {new:>14.1} {:>+8.0}%",
        (new / old - 1.0) * 100.0
    );
}

fn main() {
    println!(
        "{:<14} {:>7} {:>12} {:>14} {:>9}",
        "call", "threads", "hand ns", "client ns", "change"
    );
    for threads in [1, 2] {
        row("scan", threads, Hot::scan, Hot::scan);
        row("http", threads, Hot::http, Hot::http);
        row("scan_batch", threads, Hot::scan_batch, Hot::scan_batch);
        row(
            "lock_conflict",
            threads,
            Hot::lock_conflict,
            Hot::lock_conflict,
        );
        row("graphql", threads, Hot::graphql, Hot::graphql);
    }
    let one_scan = |m: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..N {
            m();
        }
        started.elapsed().as_nanos() as f64 / f64::from(N)
    };
    let (c, p) = (current::Metrics::default(), candidate::Metrics::default());
    let old = one_scan(&|| {
        Hot::scan(&c);
        Hot::http(&c);
    });
    let new = one_scan(&|| {
        Hot::scan(&p);
        Hot::http(&p);
    });
    println!("one scan request (scan + http), 1 thread: hand {old:.1} ns, client {new:.1} ns");
    println!(
        "render bytes: hand {}, client {}",
        c.render_len(),
        p.render_len()
    );
}
