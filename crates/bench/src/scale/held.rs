//! A million held leases in one server: fill, then measure restart-to-serving and RSS.
//!
//! Sequence: fill the data directory with `leases` leases (through the HTTP API of a running
//! server, or offline through the store — see [`Fill`]); start the server on it and time
//! `exec` → `/healthz` 200; read `VmRSS`/`VmHWM` at once; check the lease count (`/healthz`)
//! and the HOT count (`/v1/status`); then `kill -9` it (idle) and time a second restart the
//! same way; then put a write load on it (64 clients acquiring and releasing), `kill -9` it in
//! the middle of that, and time a third restart — a crash that leaves logged batches for
//! recovery to replay. Before each timed step the machine must be quiet, and a restart during
//! which something else used more than a quarter of a core is redone (at most 3 attempts; the
//! table says when): a restart is single-threaded CPU work, and a build next door on 2 cores
//! would otherwise be measured with it.
//!
//! The leases look like a fleet's: 100 per simulated node (`scale-node-NNNNN`, its own boot
//! id), each on its own resource `fleet/scale-node-NNNNN/config-NN.conf`, with a TTL long
//! enough (default 1 h) that none expires during the run. None is on the server's own node, so
//! its liveness probe checks none of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::ValueEnum;
use locksmith_api::AcquireRequest;
use locksmith_client::Client;
use locksmith_core::{AuditKind, AuditRecord, FenceToken, LeaseId, LeaseRecord, Mutation, Owner};
use locksmith_store::{EmbeddedStore, Store};

use super::{Measure, owner, thousands};
use crate::procfs::{self, CpuSample, CpuUsage, Memory};
use crate::server_process::{ServerProcess, Startup};

const SCENARIO: &str = "held leases";

/// Leases per simulated node.
const PER_NODE: u64 = 100;

/// Grants per store commit when filling offline.
const STORE_BATCH: u64 = 10_000;

/// How the data directory is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fill {
    /// Through the real server's HTTP API (`POST /v1/acquire`), many concurrent clients: the
    /// real write path, every grant durable before its reply.
    Http,
    /// Offline, through the store API: the same mutations the lock table emits for a grant
    /// (`FenceHighWater`, `PutLease`, `AppendAudit(Granted)`), committed in batches.
    Store,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `locksmith` binary.
    pub bin: PathBuf,
    /// How many leases.
    pub leases: u64,
    /// How to fill.
    pub fill: Fill,
    /// Concurrent clients for [`Fill::Http`].
    pub fill_clients: usize,
    /// The leases' TTL, ms.
    pub ttl_ms: u64,
    /// RSS target, MiB.
    pub rss_target_mib: f64,
    /// Restart-to-serving target.
    pub restart_target: Duration,
    /// Where the temporary data directory goes.
    pub tmp: PathBuf,
    /// Before each timed step, wait (at most this long) until the rest of the machine uses
    /// less than this percentage of one core.
    pub quiet: (f64, Duration),
    /// Keep the data directory and the server logs afterwards.
    pub keep: bool,
}

/// The resource and owner of lease number `i` (0-based).
pub fn lease_shape(i: u64) -> (String, Owner) {
    let node_no = i / PER_NODE;
    let node = format!("scale-node-{node_no:05}");
    let slot = i % PER_NODE;
    let resource = format!("fleet/{node}/config-{slot:02}.conf");
    let owner = owner(
        &node,
        node_no,
        1_000 + slot as u32,
        "scale: hold a config lock",
    );
    (resource, owner)
}

/// Runs the scenario.
pub async fn run(config: &Config) -> anyhow::Result<Vec<Measure>> {
    let mut dir = tempfile::Builder::new()
        .prefix("locksmith-scale-held")
        .tempdir_in(&config.tmp)?;
    // Kept afterwards with --keep (to look into a restart, e.g. under perf).
    dir.disable_cleanup(config.keep);
    if config.keep {
        eprintln!("held: data and logs in {} (kept)", dir.path().display());
    }
    let data = dir.path().join("data");
    let mut rows = Vec::new();
    let n = config.leases;

    quiet(config).await?;
    let filled = match config.fill {
        Fill::Http => Some(fill_through_http(config, &data, dir.path(), &mut rows).await?),
        Fill::Store => {
            eprintln!("held: filling the data directory through the store API ...");
            let started = Instant::now();
            let (dir_data, ttl) = (data.clone(), config.ttl_ms);
            tokio::task::spawn_blocking(move || fill_store(&dir_data, n, ttl)).await??;
            rows.push(Measure::info(
                SCENARIO,
                format!(
                    "fill offline via the store API ({} grants per commit)",
                    thousands(STORE_BATCH)
                ),
                rate(n, started.elapsed()),
            ));
            None
        }
    };

    let restarts = Restarts {
        config,
        data: &data,
        dir: dir.path(),
    };
    let server = restarts.restart(1, Down::Clean, filled, &mut rows).await?;
    count_rows(&mut rows, &server, n).await?;
    status_rows(&mut rows, &server, n).await?;
    let server = restarts
        .restart(2, Down::Kill, Some(server), &mut rows)
        .await?;
    count_rows(&mut rows, &server, n).await?;
    let server = restarts
        .restart(3, Down::KillUnderWrites, Some(server), &mut rows)
        .await?;
    // The churn clients' leases held at the kill survive it (they were durable).
    let health = Client::new(server.url())?.health().await?;
    rows.push(Measure::check(
        SCENARIO,
        format!(
            "leases in `/healthz` (the {} + churn leases held at the kill)",
            thousands(n)
        ),
        thousands(health.leases),
        format!("{} … {}", thousands(n), thousands(n + CHURN_CLIENTS as u64)),
        (n..=n + CHURN_CLIENTS as u64).contains(&health.leases),
    ));
    let (status, took) = server.stop()?;
    eprintln!(
        "held: stopped the server (exit {status}) in {:.2} s",
        took.as_secs_f64()
    );
    Ok(rows)
}

/// Starts a fresh server, fills it with the leases through `POST /v1/acquire`, and returns it
/// still running.
async fn fill_through_http(
    config: &Config,
    data: &Path,
    dir: &Path,
    rows: &mut Vec<Measure>,
) -> anyhow::Result<ServerProcess> {
    let n = config.leases;
    eprintln!("held: starting a fresh server to fill through HTTP ...");
    let (server, _, _) = start(config, data, &dir.join("fill")).await?;
    let pid = server.pid().to_string();
    let (ticks, _) = procfs::clock_ticks_per_second();
    let started = Instant::now();
    let before = CpuSample::read(&pid)?;
    let (errors, first_error) =
        fill_http(&server.url(), n, config.fill_clients, config.ttl_ms).await?;
    let took = started.elapsed();
    let cpu = before.usage(&CpuSample::read(&pid)?, ticks);
    if errors > 0 {
        bail!(
            "{errors} acquires failed while filling; the first: {}",
            first_error.unwrap_or_default()
        );
    }
    rows.push(Measure::info(
        SCENARIO,
        format!(
            "fill via HTTP `POST /v1/acquire`, {} clients",
            config.fill_clients
        ),
        rate(n, took),
    ));
    rows.push(Measure::info(
        SCENARIO,
        "CPU during the fill: server / load generator / everything else",
        format!(
            "{:.0} % / {:.0} % / {:.0} % of one core",
            cpu.server, cpu.me, cpu.others
        ),
    ));
    let health = Client::new(server.url())?.health().await?;
    if health.leases != n {
        bail!(
            "after the fill the server holds {} leases, not {n}",
            health.leases
        );
    }
    let live = procfs::memory(&pid)?;
    rows.push(Measure::info(
        SCENARIO,
        "RSS of the server that served the fill (VmRSS / VmHWM)",
        format!("{:.0} / {:.0} MiB", live.rss_mib(), live.hwm_mib()),
    ));
    Ok(server)
}

/// How the server goes down before a timed restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// SIGTERM: graceful shutdown, the store closed cleanly.
    Clean,
    /// SIGKILL while idle.
    Kill,
    /// SIGKILL in the middle of a write load.
    KillUnderWrites,
}

impl Down {
    fn label(self) -> &'static str {
        match self {
            Down::Clean => "after a clean stop",
            Down::Kill => "after kill -9",
            Down::KillUnderWrites => "after kill -9 under writes",
        }
    }
}

/// A restart is redone (at most this many attempts in all) while the rest of the machine used
/// more than [`DISTURBED_PCT`] of one core during it: on 2 cores a build next door doubles it.
const ATTEMPTS: usize = 3;

/// See [`ATTEMPTS`].
const DISTURBED_PCT: f64 = 25.0;

/// The timed restarts of one data directory.
struct Restarts<'a> {
    config: &'a Config,
    data: &'a Path,
    dir: &'a Path,
}

impl Restarts<'_> {
    /// Takes `server` (if any) down as `down` says, starts it again, and reports the restart's
    /// time, CPU and memory; returns the restarted server.
    async fn restart(
        &self,
        no: usize,
        down: Down,
        mut server: Option<ServerProcess>,
        rows: &mut Vec<Measure>,
    ) -> anyhow::Result<ServerProcess> {
        let mut disturbed = Vec::new();
        for attempt in 1..=ATTEMPTS {
            let mut churned = None;
            match (server.take(), down) {
                (Some(s), Down::Clean) => {
                    let (status, took) = s.stop()?;
                    if attempt == 1 && no == 1 {
                        rows.push(Measure::info(
                            SCENARIO,
                            "graceful stop after the fill (SIGTERM → exit)",
                            format!("{:.2} s, exit {status}", took.as_secs_f64()),
                        ));
                    }
                }
                (Some(s), Down::Kill) => s.kill()?,
                (Some(s), Down::KillUnderWrites) => {
                    eprintln!("held: write load, then kill -9 under it ...");
                    churned = Some(churn_then_kill(s).await?);
                }
                (None, _) => {}
            }
            if attempt == 1 && no == 1 {
                rows.push(Measure::info(
                    SCENARIO,
                    "data directory size",
                    format!(
                        "{:.0} MiB",
                        procfs::dir_bytes(self.data)? as f64 / (1024.0 * 1024.0)
                    ),
                ));
            }
            quiet(self.config).await?;
            eprintln!(
                "held: restart {no} ({}), attempt {attempt} ...",
                down.label()
            );
            let log = self.dir.join(format!("restart{no}-{attempt}"));
            let (s, startup, cpu) = start(self.config, self.data, &log).await?;
            let memory = procfs::memory(&s.pid().to_string())?;
            if cpu.others > DISTURBED_PCT && attempt < ATTEMPTS {
                eprintln!(
                    "held: disturbed: {:.0} % of one core used elsewhere meanwhile; again",
                    cpu.others
                );
                disturbed.push(format!("{:.2} s", startup.serving.as_secs_f64()));
                server = Some(s);
                continue;
            }
            if let Some(cycles) = churned {
                rows.push(Measure::info(
                    SCENARIO,
                    format!(
                        "write load before that kill -9: {CHURN_CLIENTS} clients acquiring + releasing"
                    ),
                    format!("{} cycles in {:.0} s", thousands(cycles), CHURN.as_secs_f64()),
                ));
            }
            let mut which = format!("restart {no} ({})", down.label());
            if !disturbed.is_empty() {
                which.push_str(&format!(
                    " [attempt {attempt}; disturbed before: {}]",
                    disturbed.join(", ")
                ));
            }
            restart_rows(self.config, rows, &which, startup, cpu, memory);
            return Ok(s);
        }
        bail!("no restart attempt was made")
    }
}

/// `/v1/status` on the full table: its HOT count, how long it took, how long it kept another
/// holder's renewal waiting, and what it did to the server's memory.
async fn status_rows(
    rows: &mut Vec<Measure>,
    server: &ServerProcess,
    n: u64,
) -> anyhow::Result<()> {
    // While `/v1/status` runs, one holder keeps renewing (lease 1, granted first): how long
    // does the listing keep everyone else waiting?
    let client = Client::new(server.url())?;
    let (status, status_took, worst, renewals) = while_renewing(server, client.status()).await?;
    rows.push(Measure::info(
        SCENARIO,
        "longest renew of another lease while `GET /v1/status` ran",
        format!(
            "{:.2} s ({renewals} renewals, one every 5 ms when not stalled)",
            worst.as_secs_f64()
        ),
    ));
    rows.push(Measure::check(
        SCENARIO,
        format!(
            "HOT resources in `GET /v1/status` (answered in {:.2} s)",
            status_took.as_secs_f64()
        ),
        thousands(status.counts.hot),
        thousands(n),
        status.counts.hot == n,
    ));
    let after = procfs::memory(&server.pid().to_string())?;
    rows.push(Measure::info(
        SCENARIO,
        "RSS after that `/v1/status` (VmRSS / VmHWM)",
        format!("{:.0} / {:.0} MiB", after.rss_mib(), after.hwm_mib()),
    ));
    locks_page_rows(rows, server, n).await
}

/// One default page of `GET /v1/locks` (1,000 of the `n`, from the middle of the names)
/// while another holder keeps renewing: what an operator's listing costs everyone else.
async fn locks_page_rows(
    rows: &mut Vec<Measure>,
    server: &ServerProcess,
    n: u64,
) -> anyhow::Result<()> {
    // After the middle lease's resource: the names sort in lease order.
    let middle = n / 2;
    let left = usize::try_from(n.saturating_sub(middle + 1)).unwrap_or(usize::MAX);
    let expect_locks = left.min(locksmith_api::LOCKS_DEFAULT_LIMIT);
    let expect_next = left > locksmith_api::LOCKS_DEFAULT_LIMIT;
    let query = locksmith_api::LocksQuery {
        prefix: Some("fleet/".to_string()),
        after: Some(lease_shape(middle).0),
        ..locksmith_api::LocksQuery::default()
    };
    let client = Client::new(server.url())?;
    let (page, took, worst, renewals) = while_renewing(server, client.locks_page(&query)).await?;
    rows.push(Measure::check(
        SCENARIO,
        format!(
            "`GET /v1/locks` page (default limit, `after` mid-table): answered in {:.3} s",
            took.as_secs_f64()
        ),
        format!(
            "{} locks, next {}",
            page.locks.len(),
            if page.next.is_some() { "set" } else { "absent" }
        ),
        format!(
            "{expect_locks} locks, next {}",
            if expect_next { "set" } else { "absent" }
        ),
        page.locks.len() == expect_locks && page.next.is_some() == expect_next,
    ));
    rows.push(Measure::info(
        SCENARIO,
        "longest renew of another lease while that page was built",
        format!(
            "{:.3} s ({renewals} renewals, one every 5 ms when not stalled)",
            worst.as_secs_f64()
        ),
    ));
    Ok(())
}

/// Runs `request` while another holder renews every 5 ms: its answer, how long it took, and
/// the slowest renewal meanwhile and how many there were.
async fn while_renewing<T, E>(
    server: &ServerProcess,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<(T, Duration, Duration, u64)>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let (stop_probe, probe) = renew_probe(server.url())?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let answer = request.await;
    let took = started.elapsed();
    let _ = stop_probe.send(true);
    let (worst, renewals) = probe.await??;
    Ok((answer?, took, worst, renewals))
}

/// The renew probe's task: the slowest renewal and how many there were.
type Probe = tokio::task::JoinHandle<anyhow::Result<(Duration, u64)>>;

/// Renews lease 1 every 5 ms until told to stop (send `true`).
fn renew_probe(url: String) -> anyhow::Result<(tokio::sync::watch::Sender<bool>, Probe)> {
    let client = Client::new(url)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let (mut worst, mut count) = (Duration::ZERO, 0u64);
        while !*rx.borrow() {
            let sent = Instant::now();
            client
                .renew(LeaseId(1), None)
                .await
                .context("renew lease 1 during /v1/status")?;
            worst = worst.max(sent.elapsed());
            count += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((worst, count))
    });
    Ok((tx, task))
}

/// Concurrent clients of the write load before the third restart.
const CHURN_CLIENTS: usize = 64;

/// How long the write load runs before the kill.
const CHURN: Duration = Duration::from_secs(3);

/// Runs `CHURN_CLIENTS` clients acquiring and releasing their own resources (on a node of
/// their own) for `CHURN`, kills the server with SIGKILL while they run, and returns how many
/// cycles completed. Each client stops at its first error (the server is gone).
async fn churn_then_kill(server: ServerProcess) -> anyhow::Result<u64> {
    let cycles = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for k in 0..CHURN_CLIENTS {
        let client = Client::new(server.url())?;
        let cycles = cycles.clone();
        let node_no = 900_000 + k as u64;
        let node = format!("scale-churn-{k:02}");
        let req = AcquireRequest {
            resource: format!("churn/{node}"),
            owner: owner(&node, node_no, 5_000 + k as u32, "scale: churn"),
            ttl_ms: Some(60_000),
            wait_ms: None,
            slots: None,
            lock_delay_ms: None,
        };
        tasks.push(tokio::spawn(async move {
            while let Ok(lease) = client.acquire(&req).await {
                if client
                    .release(lease.lease, Some(lease.token))
                    .await
                    .is_err()
                {
                    break;
                }
                cycles.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(CHURN).await;
    server.kill()?;
    for t in tasks {
        t.await?;
    }
    Ok(cycles.load(Ordering::Relaxed))
}

/// `1,000,000 in 131.2 s (7622/s)`.
fn rate(n: u64, took: Duration) -> String {
    format!(
        "{} in {:.1} s ({:.0}/s)",
        thousands(n),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    )
}

/// Starts the server on `data`; also returns the CPU used from spawn to serving.
async fn start(
    config: &Config,
    data: &Path,
    log: &Path,
) -> anyhow::Result<(ServerProcess, Startup, CpuUsage)> {
    let (ticks, _) = procfs::clock_ticks_per_second();
    let before = CpuSample::without_server()?;
    // Generous: a slow restart is a result to report, not an error.
    let (server, startup) =
        ServerProcess::start(&config.bin, data, log, &[], Duration::from_secs(600)).await?;
    let cpu = before.usage(&CpuSample::read(&server.pid().to_string())?, ticks);
    Ok((server, startup, cpu))
}

/// Waits for the machine to be quiet before a timed step (see [`procfs::wait_quiet`]).
async fn quiet(config: &Config) -> anyhow::Result<()> {
    let (pct, within) = config.quiet;
    let (busy, quiet) = procfs::wait_quiet(pct, within).await?;
    if !quiet {
        eprintln!(
            "held: the machine is still busy ({busy:.0} % of one core) after {within:?}; \
             measuring anyway"
        );
    }
    Ok(())
}

fn restart_rows(
    config: &Config,
    rows: &mut Vec<Measure>,
    which: &str,
    startup: Startup,
    cpu: CpuUsage,
    memory: Memory,
) {
    let target = config.restart_target.as_secs_f64();
    rows.push(Measure::check(
        SCENARIO,
        format!("{which}: exec → `/healthz` 200"),
        format!(
            "{:.2} s (announced at {:.2} s)",
            startup.serving.as_secs_f64(),
            startup.announced.as_secs_f64()
        ),
        format!("≤ {target:.1} s"),
        startup.serving.as_secs_f64() <= target,
    ));
    rows.push(Measure::info(
        SCENARIO,
        format!("{which}: CPU meanwhile: server / everything else"),
        format!(
            "{:.2} s / {:.0} % of one core",
            cpu.server / 100.0 * cpu.secs,
            cpu.others
        ),
    ));
    rows.push(Measure::check(
        SCENARIO,
        format!("{which}: VmRSS once serving"),
        format!("{:.0} MiB", memory.rss_mib()),
        format!("≤ {:.0} MiB", config.rss_target_mib),
        memory.rss_mib() <= config.rss_target_mib,
    ));
    rows.push(Measure::check(
        SCENARIO,
        format!("{which}: VmHWM (peak during recovery)"),
        format!("{:.0} MiB", memory.hwm_mib()),
        format!("≤ {:.0} MiB", config.rss_target_mib),
        memory.hwm_mib() <= config.rss_target_mib,
    ));
}

async fn count_rows(rows: &mut Vec<Measure>, server: &ServerProcess, n: u64) -> anyhow::Result<()> {
    let health = Client::new(server.url())?.health().await?;
    rows.push(Measure::check(
        SCENARIO,
        format!(
            "leases in `/healthz` (fence high-water {})",
            thousands(health.fence_high_water)
        ),
        thousands(health.leases),
        thousands(n),
        health.leases == n && health.fence_high_water >= n,
    ));
    Ok(())
}

/// Acquires leases `0..n` through `clients` concurrent clients (each its own connection).
/// Returns the number of failed acquires and the first failure.
async fn fill_http(
    url: &str,
    n: u64,
    clients: usize,
    ttl_ms: u64,
) -> anyhow::Result<(u64, Option<String>)> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let client = Client::new(url)?;
        let (next, done, errors, first_error) = (
            next.clone(),
            done.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (resource, owner) = lease_shape(i);
                let req = AcquireRequest {
                    resource,
                    owner,
                    ttl_ms: Some(ttl_ms),
                    wait_ms: None,
                    slots: None,
                    lock_delay_ms: None,
                };
                match client.acquire(&req).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if last.0.elapsed() >= Duration::from_secs(10) {
            let d = done.load(Ordering::Relaxed);
            eprintln!(
                "held: {:>9} / {} leases after {:>5.0} s ({:.0}/s over the last {:.0} s)",
                thousands(d),
                thousands(n),
                started.elapsed().as_secs_f64(),
                (d - last.1) as f64 / last.0.elapsed().as_secs_f64(),
                last.0.elapsed().as_secs_f64()
            );
            last = (Instant::now(), d);
        }
    }
    for t in tasks {
        t.await?;
    }
    let first = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok((errors.load(Ordering::Relaxed), first))
}

/// Writes leases `0..n` straight into the embedded store in `data`, exactly as the lock table
/// would have for `n` grants: per grant a `FenceHighWater`, a `PutLease` and its `Granted`
/// audit record, with lease id = fencing token = the next number in the sequence.
fn fill_store(data: &Path, n: u64, ttl_ms: u64) -> anyhow::Result<()> {
    let mut store = EmbeddedStore::open(data).context("open the store")?;
    let snapshot = store.load().context("load the store")?;
    let mut seq = snapshot.fence_high_water;
    let mut audit_seq = snapshot.audit_seq;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut i = 0;
    while i < n {
        let end = (i + STORE_BATCH).min(n);
        let mut batch = Vec::with_capacity(3 * (end - i) as usize);
        for k in i..end {
            let (resource, owner) = lease_shape(k);
            seq += 1;
            audit_seq += 1;
            let (lease, token) = (LeaseId(seq), FenceToken(seq));
            batch.push(Mutation::FenceHighWater(seq));
            batch.push(Mutation::PutLease(LeaseRecord {
                lease,
                resource: resource.clone(),
                owner: owner.clone(),
                token,
                ttl_ms,
                slots: 1,
                granted_at_ms: now_ms,
                lock_delay_ms: 0,
            }));
            batch.push(Mutation::AppendAudit(AuditRecord {
                seq: audit_seq,
                at_ms: now_ms,
                lease: Some(lease),
                token: Some(token),
                owner: Some(owner),
                ..AuditRecord::new(&resource, AuditKind::Granted)
            }));
        }
        store
            .commit(&batch)
            .with_context(|| format!("commit grants {i}..{end}"))?;
        i = end;
        if i % 100_000 == 0 {
            eprintln!("held: {} / {} leases stored", thousands(i), thousands(n));
        }
    }
    Ok(())
}
