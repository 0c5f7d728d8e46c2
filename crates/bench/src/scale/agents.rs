//! Ten thousand agents heartbeating every 5 s: the server's CPU, renew errors and latency.
//!
//! Each agent is one simulated node (`agent-node-NNNNN`, its own boot id) with one process
//! holding one lease on its own resource. The agents acquire first (64 at a time), then each
//! renews its lease once per `period`, with its fencing token, the agents' phases spread
//! evenly over the period — so the server sees a steady `agents / period` renewals per second,
//! never a burst. Each agent has its own [`Client`] (one reqwest pool), and since an agent
//! sends one request at a time, each pool holds exactly one keep-alive connection: 10,000
//! agents are 10,000 connections (fewer when the open-files limit says so; then agents share
//! clients round-robin, and the table says how many connections there were).
//!
//! After one full period of warm-up (every agent has renewed once and every connection is
//! open), the measurement window starts: the server's CPU time (`utime + stime` of
//! `/proc/PID/stat`) over the window, as a share of one core; the renewals answered and their
//! latency as the agent saw it; errors (every failed renew, warm-up included). The load
//! generator's own CPU and the rest of the machine's are reported beside it, since they share
//! the same 2 cores.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use locksmith_api::AcquireRequest;
use locksmith_client::Client;
use locksmith_core::{FenceToken, LeaseId};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::{Measure, owner, thousands};
use crate::procfs::{self, CpuSample};
use crate::server_process::ServerProcess;
use crate::stats::Latencies;

const SCENARIO: &str = "agents";

/// Concurrent acquires while setting up.
const SETUP_CONCURRENCY: usize = 64;

/// File descriptors kept free for everything but the agents' connections.
const FD_RESERVE: u64 = 256;

/// How long the idle baseline (leases held, no renewals yet) is measured.
const IDLE_BASELINE: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `locksmith` binary.
    pub bin: PathBuf,
    /// How many agents.
    pub agents: usize,
    /// Heartbeat period.
    pub period: Duration,
    /// Lease TTL, ms.
    pub ttl_ms: u64,
    /// Measurement window.
    pub window: Duration,
    /// Connections to use (default: one per agent, capped by the open-files limit).
    pub connections: Option<usize>,
    /// Where the temporary data directory goes.
    pub tmp: PathBuf,
    /// Before starting, wait (at most this long) until the rest of the machine uses less than
    /// this percentage of one core.
    pub quiet: (f64, Duration),
}

/// Shared counters of the agents.
#[derive(Debug, Default)]
struct Tally {
    /// Latencies of the renewals sent inside the window (one shared recorder: a histogram per
    /// agent would cost ~200 KB each).
    latencies: Mutex<Latencies>,
    in_window: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Runs the scenario.
pub async fn run(config: &Config) -> anyhow::Result<Vec<Measure>> {
    let n = config.agents;
    if n == 0 || config.period.is_zero() || config.window.is_zero() {
        bail!("--agents, --heartbeat-secs and --window-secs must be positive");
    }
    let mut rows = Vec::new();
    let (ticks_per_s, measured) = procfs::clock_ticks_per_second();
    let limit = procfs::open_files_limit()?;
    let cap = limit.map_or(usize::MAX, |l| l.saturating_sub(FD_RESERVE) as usize);
    let connections = config.connections.unwrap_or(n).min(n).min(cap).max(1);
    if connections < config.connections.unwrap_or(n).min(n) {
        eprintln!(
            "agents: the open-files limit ({}) allows {connections} connections, not one per agent",
            limit.map_or("unlimited".into(), |l| l.to_string())
        );
    }

    let (quiet_pct, quiet_within) = config.quiet;
    let (busy, quiet) = procfs::wait_quiet(quiet_pct, quiet_within).await?;
    if !quiet {
        eprintln!("agents: the machine is still busy ({busy:.0} % of one core); measuring anyway");
    }
    let dir = tempfile::Builder::new()
        .prefix("locksmith-scale-agents")
        .tempdir_in(&config.tmp)?;
    let (server, _) = ServerProcess::start(
        &config.bin,
        &dir.path().join("data"),
        &dir.path().join("server"),
        &[],
        Duration::from_secs(60),
    )
    .await?;
    let pid = server.pid().to_string();
    let idle_memory = procfs::memory(&pid)?;
    let clients = (0..connections)
        .map(|_| Client::new(server.url()))
        .collect::<Result<Vec<_>, _>>()?;

    eprintln!("agents: {n} agents acquire their leases over {connections} connections ...");
    let setup_started = Instant::now();
    let leases = acquire_all(&clients, n, config.ttl_ms).await?;
    let setup = setup_started.elapsed();
    rows.push(Measure::info(
        SCENARIO,
        "agents / keep-alive connections (one `Client` each)",
        format!(
            "{} / {}",
            thousands(n as u64),
            thousands(connections as u64)
        ),
    ));
    rows.push(Measure::info(
        SCENARIO,
        "setup: acquires, 64 at a time",
        format!(
            "{} in {:.1} s ({:.0}/s)",
            thousands(n as u64),
            setup.as_secs_f64(),
            n as f64 / setup.as_secs_f64()
        ),
    ));

    // Idle baseline: the leases are held, nobody renews yet (the reaper and probe still run).
    let before = CpuSample::read(&pid)?;
    tokio::time::sleep(IDLE_BASELINE).await;
    let idle = before.usage(&CpuSample::read(&pid)?, ticks_per_s).server;
    rows.push(Measure::info(
        SCENARIO,
        format!(
            "server CPU, {} leases held, no renewals ({} s)",
            thousands(n as u64),
            IDLE_BASELINE.as_secs()
        ),
        format!("{idle:.1} % of one core"),
    ));

    // Every agent's first renewal within the first period; the window after a full period.
    let start = Instant::now() + Duration::from_millis(200);
    let window_start = start + config.period;
    let window_end = window_start + config.window;
    let tally = Arc::new(Tally::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for (i, (lease, token)) in leases.into_iter().enumerate() {
        let phase = config.period.mul_f64(i as f64 / n as f64);
        let agent = Agent {
            client: clients[i % connections].clone(),
            lease,
            token,
            first: start + phase,
            period: config.period,
            window: (window_start, window_end),
            tally: tally.clone(),
            stop: stop_rx.clone(),
        };
        tasks.push(tokio::spawn(agent.run()));
    }
    drop(clients);

    tokio::time::sleep_until(window_start.into()).await;
    let generator_memory = procfs::memory("self")?;
    let begin = CpuSample::read(&pid)?;
    tokio::time::sleep(config.window / 2).await;
    let sockets = procfs::socket_count(&pid)?;
    tokio::time::sleep_until(window_end.into()).await;
    let end = CpuSample::read(&pid)?;
    let server_memory = procfs::memory(&pid)?;
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await?;
    }
    let health = Client::new(server.url())?.health().await?;
    let (status, took) = server.stop()?;
    eprintln!(
        "agents: stopped the server (exit {status}) in {:.2} s",
        took.as_secs_f64()
    );

    let cpu = begin.usage(&end, ticks_per_s);
    let secs = cpu.secs;
    let renewed = tally.in_window.load(Ordering::Relaxed);
    let target_rate = n as f64 / config.period.as_secs_f64();
    let rate = renewed as f64 / secs;
    let errors = tally.errors.load(Ordering::Relaxed);
    let latencies = tally.latencies.lock().unwrap_or_else(|p| p.into_inner());
    rows.push(Measure::info(
        SCENARIO,
        "server sockets mid-window (listener + connections, /proc/PID/fd)",
        thousands(sockets as u64),
    ));
    rows.push(Measure::check(
        SCENARIO,
        format!("renewals answered in the {:.0} s window", secs),
        format!("{} ({rate:.0}/s)", thousands(renewed)),
        format!("{target_rate:.0}/s"),
        rate >= 0.99 * target_rate,
    ));
    rows.push(Measure::check(
        SCENARIO,
        "renew errors (warm-up and window)",
        thousands(errors),
        "0",
        errors == 0,
    ));
    if let Some(first) = tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        eprintln!("agents: first renew error: {first}");
    }
    rows.push(Measure::info(
        SCENARIO,
        "renew latency p50 / p99 / max (as the agent saw it)",
        format!(
            "{:.2} / {:.2} / {:.2} ms",
            latencies.quantile_ms(0.5),
            latencies.quantile_ms(0.99),
            latencies.quantile_ms(1.0)
        ),
    ));
    rows.push(Measure::info(
        SCENARIO,
        format!(
            "**server CPU over the window** (utime+stime, CLK_TCK {ticks_per_s}{})",
            if measured { "" } else { " assumed" }
        ),
        format!("{:.1} % of one core", cpu.server),
    ));
    rows.push(Measure::info(
        SCENARIO,
        "server CPU per renewal",
        format!(
            "{:.0} µs",
            cpu.server / 100.0 * secs * 1e6 / renewed.max(1) as f64
        ),
    ));
    rows.push(Measure::info(
        SCENARIO,
        "load generator CPU / everything else on the machine (same window)",
        format!("{:.1} % / {:.1} % of one core", cpu.me, cpu.others),
    ));
    rows.push(Measure::info(
        SCENARIO,
        "server VmRSS: fresh / at the end of the window (VmHWM)",
        format!(
            "{:.0} / {:.0} ({:.0}) MiB",
            idle_memory.rss_mib(),
            server_memory.rss_mib(),
            server_memory.hwm_mib()
        ),
    ));
    rows.push(Measure::info(
        SCENARIO,
        "server RSS growth per agent (its connection and its lease)",
        format!(
            "{:.1} KiB",
            server_memory.rss_kib.saturating_sub(idle_memory.rss_kib) as f64 / n as f64
        ),
    ));
    rows.push(Measure::info(
        SCENARIO,
        "load generator VmRSS",
        format!("{:.0} MiB", generator_memory.rss_mib()),
    ));
    rows.push(Measure::check(
        SCENARIO,
        "leases still held after the window (`/healthz`)",
        thousands(health.leases),
        thousands(n as u64),
        health.leases == n as u64,
    ));
    Ok(rows)
}

/// Acquires one lease per agent, `SETUP_CONCURRENCY` at a time; returns them in agent order.
async fn acquire_all(
    clients: &[Client],
    n: usize,
    ttl_ms: u64,
) -> anyhow::Result<Vec<(LeaseId, FenceToken)>> {
    let next = Arc::new(AtomicU64::new(0));
    let clients: Arc<[Client]> = clients.into();
    let mut workers = Vec::new();
    for _ in 0..SETUP_CONCURRENCY.min(n) {
        let (next, clients) = (next.clone(), clients.clone());
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    break;
                }
                let node = format!("agent-node-{i:05}");
                let req = AcquireRequest {
                    resource: format!("agents/{node}/apply.lock"),
                    owner: owner(&node, i as u64, 2_000 + i as u32, "agent: apply config"),
                    ttl_ms: Some(ttl_ms),
                    wait_ms: None,
                    slots: None,
                    lock_delay_ms: None,
                };
                let lease = clients[i % clients.len()]
                    .acquire(&req)
                    .await
                    .with_context(|| format!("agent {i}: acquire"))?;
                got.push((i, lease.lease, lease.token));
            }
            anyhow::Ok(got)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await??);
    }
    all.sort_by_key(|&(i, _, _)| i);
    Ok(all.into_iter().map(|(_, l, t)| (l, t)).collect())
}

/// One agent: renews its lease every period from its first tick until told to stop.
struct Agent {
    client: Client,
    lease: LeaseId,
    token: FenceToken,
    first: Instant,
    period: Duration,
    window: (Instant, Instant),
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
}

impl Agent {
    async fn run(mut self) {
        let mut tick = tokio::time::interval_at(self.first.into(), self.period);
        // A late tick (the machine was busy) shifts the schedule rather than bursting.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.wait_for(|s| *s) => return,
            }
            let sent = Instant::now();
            let result = self.client.renew(self.lease, Some(self.token)).await;
            let took = sent.elapsed();
            let in_window = sent >= self.window.0 && sent < self.window.1;
            match result {
                Ok(_) if in_window => {
                    self.tally.in_window.fetch_add(1, Ordering::Relaxed);
                    self.tally
                        .latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(took);
                }
                Ok(_) => {}
                Err(e) => {
                    self.tally.errors.fetch_add(1, Ordering::Relaxed);
                    self.tally
                        .first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(|| format!("lease {}: {e}", self.lease));
                }
            }
        }
    }
}
