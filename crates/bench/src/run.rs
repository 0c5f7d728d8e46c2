//! One timed run of a workload, the same for every system measured: the clients connect and
//! set up, wait for the start signal together, run until the stop signal, and the row is built
//! from what they return. Used by Locksmith's workloads ([`crate::workload`]) and the peers'
//! ([`crate::peers`]), so that every system is timed the same way: connecting is not part of
//! the run, and no client has the server to itself while the others are still connecting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::stats::{Latencies, Row};

/// What one client task returns: its latencies and how many operations it completed.
pub(crate) type Out = anyhow::Result<(Latencies, u64)>;

/// Shared per-run state: the start and stop signals and the error counter.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    go: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    errors: Arc<AtomicU64>,
}

/// The run's controls, kept by the caller.
#[derive(Debug)]
pub(crate) struct Control {
    go: watch::Sender<bool>,
    stop: watch::Sender<bool>,
}

impl Run {
    /// Resolves once every client is connected and set up, so that all start together (the
    /// first clients would otherwise have the lock to themselves while the last connect).
    pub(crate) async fn started(&self) {
        let mut go = self.go.clone();
        let _ = go.wait_for(|g| *g).await;
    }

    pub(crate) fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the run is over.
    pub(crate) async fn until_stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    pub(crate) async fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        // An error storm must not turn into a busy loop.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the spawned clients for `duration`, then stops them and builds the row.
pub(crate) async fn finish(
    workload: &str,
    clients: usize,
    duration: Duration,
    control: Control,
    run: &Run,
    tasks: Vec<JoinHandle<Out>>,
    fairness: bool,
) -> anyhow::Result<Row> {
    let start = Instant::now();
    let _ = control.go.send(true);
    tokio::time::sleep(duration).await;
    let _ = control.stop.send(true);
    let mut all = Latencies::default();
    let (mut min, mut max) = (u64::MAX, 0);
    for t in tasks {
        let (lat, mine) = t.await??;
        all.merge(&lat);
        min = min.min(mine);
        max = max.max(mine);
    }
    // Like Locksmith's workloads: the waits drained after the stop count, and so does their time.
    let elapsed = start.elapsed();
    Ok(Row {
        workload: workload.into(),
        clients,
        ops: all.count(),
        ops_per_sec: all.count() as f64 / elapsed.as_secs_f64(),
        p50_ms: all.quantile_ms(0.5),
        p99_ms: all.quantile_ms(0.99),
        // Set by the caller once its clients are done.
        violations: 0,
        // Set by the caller from its fence's overtakes (`Fence::asking`).
        fifo: None,
        overtakes: None,
        per_client_min_max: fairness.then_some((min, max)),
        handoff_ms: None,
        errors: run.errors.load(Ordering::Relaxed),
    })
}

pub(crate) fn start_run() -> (Control, Run) {
    let (go, go_rx) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    (
        Control { go, stop },
        Run {
            go: go_rx,
            stop: stop_rx,
            errors: Arc::new(AtomicU64::new(0)),
        },
    )
}
