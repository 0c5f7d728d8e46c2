//! `ghosts`: measures ghost-to-free latency for each way a holder can die or be removed.
//!
//! Starts a server in-process (127.0.0.1:0, temp data dir, the default 250 ms local probe) and,
//! for each cause, repeats: make a holder, make it a ghost, and time from the moment it became a
//! ghost until the server's durable `Ended` audit event for that lease arrives on `/v1/events`.
//!
//! - `process_died/probe`: `kill -9` of a real `locksmith run RES -- sleep 600` process on this
//!   node (TTL 60 s, so the TTL cannot be what frees it); the server's own probe notices.
//! - `process_died/report`: the holder is killed and a liveness report from its node arrives
//!   at once (what `locksmith why`/`locks`/`status` send); measures the report path.
//! - `node_rebooted`: the holder's node makes first contact under a new boot id.
//! - `expired`: a 1 s lease with no heartbeat; measures time past the deadline.
//! - `broken`: an operator's break.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use locksmith_api::{AcquireRequest, BreakRequest, DeadHolder, LivenessReport};
use locksmith_bench::stats::Latencies;
use locksmith_client::Client;
use locksmith_client::events::EventStream;
use locksmith_core::{AuditKind, LeaseId, Owner};
use locksmith_server::{Server, ServerConfig};

#[derive(Debug, Parser)]
#[command(about = "Measure ghost-to-free latency (p50/p99) for each reclaim cause")]
struct Args {
    /// Trials per cause.
    #[arg(long, default_value_t = 30)]
    trials: usize,
    /// The `locksmith` binary (default: next to this one).
    #[arg(long)]
    locksmith: Option<PathBuf>,
    /// Server probe interval, ms.
    #[arg(long, default_value_t = 250)]
    probe_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn local_owner(pid: u32, purpose: &str) -> anyhow::Result<Owner> {
    Ok(Owner {
        node: locksmith_host::hostname()?,
        pid,
        start_time: locksmith_host::process_start_time(pid)?,
        boot_id: locksmith_host::boot_id()?,
        user: "bench".into(),
        purpose: purpose.into(),
        // Without it the server's probe (and any report) may not judge the holder by pid.
        pid_ns: locksmith_host::pid_namespace()?,
    })
}

fn request(resource: &str, owner: Owner, ttl_ms: u64) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        owner,
        ttl_ms: Some(ttl_ms),
        wait_ms: None,
        slots: None,
        lock_delay_ms: None,
    }
}

/// Waits for the `Ended` event of `lease`; returns when it arrived.
async fn ended(events: &mut EventStream, lease: LeaseId) -> anyhow::Result<Instant> {
    let deadline = Duration::from_secs(120);
    let found = tokio::time::timeout(deadline, async {
        loop {
            match events.next().await? {
                Some(r) if r.lease == Some(lease) && matches!(r.kind, AuditKind::Ended { .. }) => {
                    return anyhow::Ok(Instant::now());
                }
                Some(_) => {}
                None => bail!("event stream closed"),
            }
        }
    })
    .await
    .context("no Ended event within 120 s")??;
    Ok(found)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let locksmith = locksmith_bench::server_process::locksmith_binary(args.locksmith)?;
    if !locksmith.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --locksmith",
            locksmith.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("locksmith-ghosts")
        .tempdir()?;
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        probe_interval: Duration::from_millis(args.probe_ms),
        auth: locksmith_server::AuthMode::Off,
        ..ServerConfig::default()
    })
    .await?;
    let url = format!("http://{}", server.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let c = Client::new(&url)?;
    let mut rows = Vec::new();

    // 1. kill -9 of a real `locksmith run` holder; the server's probe frees it.
    let mut lat = Latencies::default();
    for i in 0..args.trials {
        let res = format!("ghost/run/{i}");
        let mut events = c.events(Some(&res)).await?;
        let mut child = Command::new(&locksmith)
            .args([
                "--server", &url, "run", &res, "--ttl", "60s", "--", "sleep", "600",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let lease = loop {
            match events.next().await? {
                Some(r) if r.kind == AuditKind::Granted => break r.lease.context("lease")?,
                Some(_) => {}
                None => bail!("stream closed"),
            }
        };
        // `sleep` (run's child) outlives a kill -9 of run: note it to clean it up after.
        let orphans = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .unwrap_or_default();
        // Each trial ends right after a probe tick; without a spread every kill would land at
        // the same phase of the probe interval. Spread kills evenly across one interval.
        let phase = i as u64 * args.probe_ms / args.trials.max(1) as u64;
        tokio::time::sleep(Duration::from_millis(phase)).await;
        let killed = Instant::now();
        child.kill()?; // SIGKILL
        child.wait()?;
        lat.record(ended(&mut events, lease).await? - killed);
        for pid in orphans.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    rows.push((
        "process_died (kill -9 of `locksmith run`, server probe)",
        lat,
    ));

    // 2. dead holder reported from its node (what `why` does).
    let mut lat = Latencies::default();
    for i in 0..args.trials {
        let res = format!("ghost/report/{i}");
        let mut events = c.events(Some(&res)).await?;
        let mut sleeper = Command::new("sleep").arg("600").spawn()?;
        let owner = local_owner(sleeper.id(), "bench report")?;
        let lease = c.acquire(&request(&res, owner.clone(), 60_000)).await?;
        sleeper.kill()?;
        sleeper.wait()?;
        let killed = Instant::now();
        c.report_liveness(&LivenessReport {
            node: owner.node.clone(),
            boot_id: owner.boot_id.clone(),
            pid_ns: owner.pid_ns.clone(),
            reported_by: "bench".into(),
            dead: vec![DeadHolder {
                lease: lease.lease,
                pid: owner.pid,
                start_time: owner.start_time,
            }],
        })
        .await?;
        lat.record(ended(&mut events, lease.lease).await? - killed);
    }
    rows.push(("process_died (liveness report from the node)", lat));

    // 3. node reboot, noticed on first contact.
    let mut lat = Latencies::default();
    for i in 0..args.trials {
        let res = format!("ghost/reboot/{i}");
        let mut events = c.events(Some(&res)).await?;
        let mut owner = local_owner(std::process::id(), "bench reboot")?;
        owner.node = format!("rebooting-node-{i}");
        owner.boot_id = "boot-1".into();
        let lease = c.acquire(&request(&res, owner.clone(), 60_000)).await?;
        owner.boot_id = "boot-2".into();
        let contact = Instant::now();
        c.acquire(&request(&format!("{res}/after"), owner, 60_000))
            .await?;
        lat.record(ended(&mut events, lease.lease).await? - contact);
    }
    rows.push(("node_rebooted (first contact under a new boot id)", lat));

    // 4. expiry: time past the deadline.
    let mut lat = Latencies::default();
    for i in 0..args.trials {
        let res = format!("ghost/expire/{i}");
        let mut events = c.events(Some(&res)).await?;
        let owner = local_owner(std::process::id(), "bench expiry")?;
        let sent = Instant::now();
        let lease = c.acquire(&request(&res, owner, 1_000)).await?;
        let deadline = sent + Duration::from_millis(1_000);
        let at = ended(&mut events, lease.lease).await?;
        lat.record(at.saturating_duration_since(deadline));
    }
    rows.push(("expired (time past the 1 s TTL deadline)", lat));

    // 5. operator break.
    let mut lat = Latencies::default();
    for i in 0..args.trials {
        let res = format!("ghost/break/{i}");
        let mut events = c.events(Some(&res)).await?;
        let owner = local_owner(std::process::id(), "bench break")?;
        let lease = c.acquire(&request(&res, owner, 60_000)).await?;
        let asked = Instant::now();
        c.break_lock(&BreakRequest {
            resource: res.clone(),
            lease: None,
            operator: "bench".into(),
            reason: "measuring".into(),
            freeze_ms: Some(0),
        })
        .await?;
        lat.record(ended(&mut events, lease.lease).await? - asked);
    }
    rows.push(("broken (operator break)", lat));

    println!("| cause | trials | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, lat) in &rows {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            lat.count(),
            lat.quantile_ms(0.5),
            lat.quantile_ms(0.99),
            lat.quantile_ms(1.0)
        );
    }
    let _ = tx.send(());
    task.await??;
    Ok(())
}
