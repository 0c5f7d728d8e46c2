//! `scale`: the two scale targets of issue 5, measured against the real `locksmith server`
//! binary (built with `cargo build --release`), which this starts and stops itself:
//!
//! - `held`: 1,000,000 held leases in one server — RSS ≤ 1 GiB, restart-to-serving ≤ 2 s
//!   (after a clean stop, after `kill -9` of the idle server, and after `kill -9` under a
//!   write load);
//! - `agents`: 10,000 agents, each renewing its lease every 5 s over its own keep-alive
//!   connection — the server's CPU over a 30 s window, renew errors (must be 0), renew latency.
//!
//! Prints one Markdown table with every measurement, its target and pass/FAIL. Every server
//! it starts runs under a guard that kills it when this process ends, however it ends (see
//! `locksmith_bench::server_process`). `--leases`, `--agents` and `--window-secs` make a small
//! run quick, e.g. `scale --leases 20000 --agents 500 --window-secs 5`.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use locksmith_bench::scale::{self, Measure, agents, held};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// 1M held leases: RSS and restart-to-serving.
    Held,
    /// 10k heartbeating agents: server CPU, renew errors and latency.
    Agents,
}

#[derive(Debug, Parser)]
#[command(
    about = "Issue 5's scale targets against the real server binary: 1M held leases \
                   (RSS, restart time) and 10k heartbeating agents (server CPU)"
)]
struct Args {
    /// Which scenarios to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Part::Held, Part::Agents])]
    run: Vec<Part>,
    /// The `locksmith` binary; default: the one next to this binary (target/release).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Directory for the temporary data directories (default: the system temp dir).
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Before each timed step, wait until everything else on the machine uses less than this
    /// percentage of one core (a build next door would skew every number).
    #[arg(long, default_value_t = 15.0)]
    quiet_pct: f64,
    /// ... but for at most this many seconds; then measure anyway (and say so).
    #[arg(long, default_value_t = 900)]
    quiet_wait_secs: u64,

    /// held: how many leases.
    #[arg(long, default_value_t = 1_000_000)]
    leases: u64,
    /// held: fill through the HTTP API of the running server, or offline through the store.
    #[arg(long, value_enum, default_value_t = held::Fill::Http)]
    fill: held::Fill,
    /// held: concurrent clients for `--fill http`.
    #[arg(long, default_value_t = 64)]
    fill_clients: usize,
    /// held: the leases' TTL, seconds (long enough that none expires during the run).
    #[arg(long, default_value_t = 3600)]
    lease_ttl_secs: u64,
    /// held: RSS target, MiB.
    #[arg(long, default_value_t = 1024.0)]
    rss_target_mib: f64,
    /// held: restart-to-serving target, seconds.
    #[arg(long, default_value_t = 2.0)]
    restart_target_secs: f64,
    /// held: keep the data directory and server logs (their path is printed first).
    #[arg(long)]
    keep: bool,

    /// agents: how many agents (one lease and one connection each).
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// agents: heartbeat period, seconds.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_secs: f64,
    /// agents: lease TTL, seconds.
    #[arg(long, default_value_t = 15)]
    agent_ttl_secs: u64,
    /// agents: measurement window, seconds (after one heartbeat period of warm-up).
    #[arg(long, default_value_t = 30.0)]
    window_secs: f64,
    /// agents: keep-alive connections (default: one per agent, capped by the open-files limit).
    #[arg(long)]
    connections: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (name, v) in [
        ("--heartbeat-secs", args.heartbeat_secs),
        ("--window-secs", args.window_secs),
        ("--restart-target-secs", args.restart_target_secs),
    ] {
        if !v.is_finite() || v <= 0.0 {
            bail!("{name} must be a positive number of seconds");
        }
    }
    let bin = locksmith_bench::server_process::locksmith_binary(args.bin.clone())?;
    let tmp = args.tmp.clone().unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let started = Instant::now();
    // On Ctrl-C or SIGTERM, stop: the server guards then kill what they started.
    let rows = rt.block_on(async {
        tokio::select! {
            r = run(&args, bin, tmp) => r,
            r = interrupted() => r,
        }
    })?;
    // Agents' idle pool connections are not worth waiting for.
    rt.shutdown_background();
    let mut out = std::io::stdout().lock();
    write!(out, "{}", scale::markdown(&rows))?;
    writeln!(
        out,
        "\n(total run time {:.0} s)",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

async fn run(args: &Args, bin: PathBuf, tmp: PathBuf) -> anyhow::Result<Vec<Measure>> {
    let quiet = (args.quiet_pct, Duration::from_secs(args.quiet_wait_secs));
    let mut rows = Vec::new();
    for part in &args.run {
        match part {
            Part::Held => {
                let config = held::Config {
                    bin: bin.clone(),
                    leases: args.leases,
                    fill: args.fill,
                    fill_clients: args.fill_clients,
                    ttl_ms: args.lease_ttl_secs * 1000,
                    rss_target_mib: args.rss_target_mib,
                    restart_target: Duration::from_secs_f64(args.restart_target_secs),
                    tmp: tmp.clone(),
                    quiet,
                    keep: args.keep,
                };
                rows.extend(held::run(&config).await?);
            }
            Part::Agents => {
                let config = agents::Config {
                    bin: bin.clone(),
                    agents: args.agents,
                    period: Duration::from_secs_f64(args.heartbeat_secs),
                    ttl_ms: args.agent_ttl_secs * 1000,
                    window: Duration::from_secs_f64(args.window_secs),
                    connections: args.connections,
                    tmp: tmp.clone(),
                    quiet,
                };
                rows.extend(agents::run(&config).await?);
            }
        }
    }
    Ok(rows)
}

/// Resolves (with an error) on SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Result<Vec<Measure>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    bail!("interrupted: stopping every server this run started")
}
