//! `sim`: commit → applied on a simulated fleet (`locksmith_sim`: real agent cores over an
//! in-memory file system, one process, one connection per agent's desired stream) against a
//! real `locksmith server` process (auth off: the node tokens are still made, not checked).
//! For each `--agents` size: start the fleet on revision 1, then per round write a new current
//! revision and time, per agent, the revision's `at_ms` to the agent applying it (its own
//! clock: same machine), p50/p99/max; beside it the server's CPU over the round and its RSS.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use locksmith_bench::procfs;
use locksmith_bench::server_process::{fleet_server, locksmith_binary};
use locksmith_sim::ops::write_revision;
use locksmith_sim::{Fleet, FleetSpec};

#[derive(Debug, Parser)]
#[command(about = "Commit → applied on a simulated fleet of 1,000 and 10,000 agents")]
struct Args {
    /// Fleet sizes, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    agents: Vec<usize>,
    /// New revisions per size.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The `locksmith` binary [default: next to this one].
    #[arg(long)]
    locksmith: Option<PathBuf>,
}

const CONFIG: &str = "bench.conf";
/// Far longer than a round should take.
const WITHIN: Duration = Duration::from_secs(180);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_files();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

/// Soft RLIMIT_NOFILE to the hard limit (the server process inherits it).
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > WITHIN {
            bail!("not within {WITHIN:?}: {what}");
        }
        // Latency is each agent's own stamp, not this poll's: polling 10,000 agents' state
        // often only takes CPU from the fleet and the server.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = locksmith_binary(args.locksmith)?;
    let (ticks_per_s, _) = procfs::clock_ticks_per_second();
    println!("{}", procfs::MachineNote::start().describe());
    println!(
        "| agents | round | p50 ms | p99 ms | max ms | server-seen p99 ms | server CPU s | server RSS MiB | sim RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.agents {
        let (server, client, _dir) = fleet_server(&bin, "locksmith-sim").await?;
        let first = write_revision(&client, CONFIG, "round = 0\n", false)
            .await?
            .rev;
        let started = Instant::now();
        let fleet = Fleet::start_with(
            &client,
            FleetSpec {
                agents: n,
                configs: vec![CONFIG.into()],
                ..FleetSpec::default()
            },
        )
        .await?;
        let up = until("the fleet applies the first revision", || {
            fleet.applied(CONFIG, first) == n
        })
        .await?;
        eprintln!(
            "{n} agents: tokens made and agents started in {:.1} s, all on revision {first} {:.1} s later",
            (started.elapsed() - up).as_secs_f64(),
            up.as_secs_f64()
        );
        let pid = server.pid().to_string();
        for round in 1..=args.rounds {
            let cpu_before = procfs::cpu_ticks(&pid)?;
            let meta =
                write_revision(&client, CONFIG, &format!("round = {round}\n"), false).await?;
            until("the fleet applies the new revision", || {
                fleet.applied(CONFIG, meta.rev) == n
            })
            .await?;
            let cpu_s = (procfs::cpu_ticks(&pid)? - cpu_before) as f64 / ticks_per_s as f64;
            let mut own: Vec<u64> = fleet
                .agents()
                .iter()
                .map(|a| a.applied(CONFIG).1.saturating_sub(meta.at_ms))
                .collect();
            own.sort_unstable();
            let seen = server_seen(&client, meta.rev, meta.at_ms).await?;
            println!(
                "| {n} | {round} | {} | {} | {} | {} | {cpu_s:.2} | {:.0} | {:.0} |",
                percentile(&own, 0.50),
                percentile(&own, 0.99),
                own.last().copied().unwrap_or(0),
                percentile(&seen, 0.99),
                procfs::memory(&pid)?.rss_mib(),
                procfs::memory("self")?.rss_mib(),
            );
        }
        fleet.stop();
        drop(fleet);
        server.stop()?;
    }
    Ok(())
}

/// Per agent, `at_ms` to its `applied` report of `rev` reaching the server
/// (`GET /v1/fleet`'s `reported_at_ms`), sorted.
async fn server_seen(
    client: &locksmith_client::Client,
    rev: u64,
    at_ms: u64,
) -> anyhow::Result<Vec<u64>> {
    let fleet = client.fleet("").await?;
    let mut seen: Vec<u64> = fleet
        .agents
        .iter()
        .flat_map(|a| &a.configs)
        .filter(|c| c.report.as_ref().is_some_and(|r| r.applied_rev == rev))
        .filter_map(|c| c.reported_at_ms.map(|t| t.saturating_sub(at_ms)))
        .collect();
    seen.sort_unstable();
    Ok(seen)
}
