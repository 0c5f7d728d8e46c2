//! The measuring half of the `fanout` benchmark: a row's changes, each awaited by every
//! watcher, with the server process's CPU and memory, and the table. The binary
//! (`src/bin/fanout.rs`) sets up the watchers of each system and reports to [`Channels`].

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::procfs;
use crate::stats::Latencies;

/// How long every watcher gets to see a change before the run fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// One measured row: `changes` changes, each seen by every watcher.
#[derive(Debug)]
pub struct Outcome {
    /// `etcd` or `zookeeper`.
    pub system: &'static str,
    /// N.
    pub watchers: usize,
    /// gRPC connections (etcd) or sessions (ZooKeeper) the watchers used.
    pub connections: usize,
    /// What [`Rounds::run`] measured.
    pub measured: Measured,
}

/// What the measured changes of one row gave.
#[derive(Debug)]
pub struct Measured {
    /// Every watcher's latency for every measured change.
    pub latencies: Latencies,
    /// The slowest of them, ms.
    pub max_ms: f64,
    /// The median over the measured changes of the writer's wait for its change's
    /// acknowledgement, ms.
    pub change_ms: f64,
    /// Server CPU per change, s.
    pub cpu_s: f64,
    /// The server's largest `VmRSS` after a change, MiB.
    pub rss_mib: f64,
}

/// Measures `changes` changes after `warmup` unmeasured ones. Before a change, it waits for
/// every watcher's readiness on `ready` (before the first only, unless watches must be re-armed
/// after each change) and runs `check`; `change` makes one and returns when the server
/// acknowledged it.
#[derive(Debug)]
pub struct Rounds {
    /// The server process.
    pub pid: i32,
    /// From [`procfs::clock_ticks_per_second`].
    pub ticks_per_s: u64,
    /// Watchers: every one must see every change.
    pub n: usize,
    /// Measured changes.
    pub changes: usize,
    /// Unmeasured changes first.
    pub warmup: usize,
    /// For error messages.
    pub system: &'static str,
}

/// What the watcher tasks report: each one's readiness (or setup error), each event's arrival.
#[derive(Debug)]
pub struct Channels {
    /// One message a watcher each time it is armed.
    pub ready: mpsc::UnboundedReceiver<anyhow::Result<()>>,
    /// One instant a watcher per change it saw.
    pub arrivals: mpsc::UnboundedReceiver<Instant>,
}

impl Rounds {
    /// Runs the changes; fails when a watcher misses one or a check fails.
    pub async fn run<C>(
        &self,
        channels: Channels,
        rearm: bool,
        check: impl Fn() -> anyhow::Result<()>,
        mut change: impl FnMut(u64) -> C,
    ) -> anyhow::Result<Measured>
    where
        C: std::future::Future<Output = anyhow::Result<()>>,
    {
        let Channels {
            mut ready,
            mut arrivals,
        } = channels;
        let mut all = Latencies::default();
        let (mut max_ms, mut cpu_s, mut rss_mib) = (0.0f64, 0.0, 0.0);
        let mut acked = Vec::new();
        for round in 0..self.warmup + self.changes {
            if round == 0 || rearm {
                for _ in 0..self.n {
                    ready.recv().await.context("a watcher task ended")??;
                }
                check()?;
            }
            let usage = ServerUsage::start(self.pid, self.ticks_per_s)?;
            let t0 = Instant::now();
            change(round as u64 + 1).await?;
            let change_ms = t0.elapsed().as_secs_f64() * 1000.0;
            let (latencies, max) = collect(&mut arrivals, self.n, t0, self.system).await?;
            let (cpu, rss) = usage.finish()?;
            if round < self.warmup {
                continue;
            }
            all.merge(&latencies);
            max_ms = max_ms.max(max);
            cpu_s += cpu;
            rss_mib = f64::max(rss_mib, rss);
            acked.push(change_ms);
        }
        acked.sort_by(f64::total_cmp);
        let change_ms = acked.get(acked.len() / 2).copied().unwrap_or(0.0);
        let cpu_per_change = cpu_s / self.changes as f64;
        Ok(Measured {
            latencies: all,
            max_ms,
            change_ms,
            cpu_s: cpu_per_change,
            rss_mib,
        })
    }
}

/// The rows as a Markdown table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| system | watchers | connections | p50 ms | p99 ms | max ms | CPU s | RSS MiB | change acked ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |\n",
            o.system,
            o.watchers,
            o.connections,
            o.measured.latencies.quantile_ms(0.5),
            o.measured.latencies.quantile_ms(0.99),
            o.measured.max_ms,
            o.measured.cpu_s,
            o.measured.rss_mib,
            o.measured.change_ms
        ));
    }
    s
}

/// What the server process had used when the change was sent, to subtract at the end.
struct ServerUsage {
    pid: String,
    ticks_before: u64,
    ticks_per_s: u64,
}

impl ServerUsage {
    fn start(pid: i32, ticks_per_s: u64) -> anyhow::Result<Self> {
        let pid = pid.to_string();
        let ticks_before = procfs::cpu_ticks(&pid)?;
        Ok(Self {
            pid,
            ticks_before,
            ticks_per_s,
        })
    }

    /// (CPU seconds since `start`, RSS MiB now).
    fn finish(&self) -> anyhow::Result<(f64, f64)> {
        let ticks = procfs::cpu_ticks(&self.pid)?.saturating_sub(self.ticks_before);
        let rss = procfs::memory(&self.pid)?.rss_mib();
        Ok((ticks as f64 / self.ticks_per_s as f64, rss))
    }
}

/// Waits for `n` arrival times on `arrivals` and turns them into latencies from `t0`.
async fn collect(
    arrivals: &mut mpsc::UnboundedReceiver<Instant>,
    n: usize,
    t0: Instant,
    system: &str,
) -> anyhow::Result<(Latencies, f64)> {
    let mut latencies = Latencies::default();
    let mut max = Duration::ZERO;
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    for seen in 0..n {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some(at)) => {
                let d = at.saturating_duration_since(t0);
                max = max.max(d);
                latencies.record(d);
            }
            Ok(None) => {
                bail!("{system}: only {seen} of {n} watchers saw the change (a watch ended)")
            }
            Err(_) => bail!(
                "{system}: only {seen} of {n} watchers saw the change within {DELIVERY_TIMEOUT:?}"
            ),
        }
    }
    Ok((latencies, max.as_secs_f64() * 1000.0))
}
