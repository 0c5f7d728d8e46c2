//! Result rows and latency summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// One measured row of a benchmark table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Workload name: `cycles`, `handoff`, `renew` or `renew ×N` (see [`renew_label`]).
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Completed operations (cycles, handoffs or renewals).
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency, ms (per cycle, per acquire-wait, or per renewal).
    pub p50_ms: f64,
    /// 99th-percentile latency, ms.
    pub p99_ms: f64,
    /// Mutual-exclusion violations seen by the fenced counter (must be 0).
    pub violations: u64,
    /// For handoff: true when no grant went to a client while another had been asking for
    /// [`OVERTAKE_TOLERANCE`](crate::workload::OVERTAKE_TOLERANCE) longer (FIFO; see
    /// [`Fence::asking`](crate::workload::Fence::asking)).
    pub fifo: Option<bool>,
    /// For handoff: how many grants overtook a client that had been asking longer.
    pub overtakes: Option<u64>,
    /// For handoff: fewest and most acquisitions per client (fairness).
    pub per_client_min_max: Option<(u64, u64)>,
    /// For handoff: (p50, p99) ms from one holder leaving its critical section to the next
    /// entering it (see [`Fence`](crate::workload::Fence)).
    pub handoff_ms: Option<(f64, f64)>,
    /// Errors other than expected refusals.
    pub errors: u64,
}

/// The renew workload's name: `renew`, or `renew ×N` when each client keeps N renewals (of N
/// leases) in flight on its one connection.
pub fn renew_label(in_flight: usize) -> String {
    if in_flight <= 1 {
        "renew".to_owned()
    } else {
        format!("renew ×{in_flight}")
    }
}

/// A latency recorder (microsecond resolution, up to 60 s).
#[derive(Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // 3 significant figures up to 60 s in µs; the bounds are constants, so this cannot fail.
        Self(
            Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("valid sigfig"))
            }),
        )
    }
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.0.record(us);
    }

    /// Merges another recorder in.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// A quantile, in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Renders rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | clients | ops/s | p50 ms | p99 ms | handoff p50/p99 ms | violations | FIFO | per-client min/max | errors |\n|---|---:|---:|---:|---:|---:|---:|---|---|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.clients,
            r.ops_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.handoff_ms
                .map_or("-".to_string(), |(p50, p99)| format!("{p50:.3}/{p99:.3}")),
            r.violations,
            match (r.fifo, r.overtakes) {
                (Some(true), _) => "yes".to_string(),
                (Some(false), Some(n)) => format!("no ({n} overtakes)"),
                (Some(false), None) => "no".to_string(),
                (None, _) => "-".to_string(),
            },
            r.per_client_min_max
                .map_or("-".to_string(), |(a, b)| format!("{a}/{b}")),
            r.errors
        ));
    }
    s
}
