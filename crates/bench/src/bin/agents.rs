//! `agents`: how fast a new current revision reaches a fleet of real agent processes — N
//! `locksmith agent` processes (100 by default) on this machine, each applying `bench.conf` to
//! a file of its own, against a real `locksmith server` process (auth off). Each round writes a
//! new revision and measures, per endpoint, the time from the revision's commit (its `at_ms`)
//! to the server receiving that endpoint's `applied` report; then one idle agent's RSS and CPU
//! over a quiet window.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use locksmith_api::agents::ApplyState;
use locksmith_bench::agent_fleet::{AgentFleet, write_revision};
use locksmith_bench::procfs;
use locksmith_bench::server_process::{fleet_server, locksmith_binary};
use locksmith_bench::stats::Latencies;

#[derive(Debug, Parser)]
#[command(about = "Commit → applied on every endpoint of a fleet of real agent processes")]
struct Args {
    /// Agent processes.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Revisions written, one round each.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds one agent is watched idle for its CPU.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// The `locksmith` binary [default: next to this one].
    #[arg(long)]
    locksmith: Option<PathBuf>,
}

const CONFIG: &str = "bench.conf";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

/// For every agent that reported revision `rev` applied, the time from `at_ms` to its report.
async fn applied(
    client: &locksmith_client::Client,
    rev: u64,
    at_ms: u64,
) -> anyhow::Result<Vec<Duration>> {
    let fleet = client.fleet("").await?;
    Ok(fleet
        .agents
        .iter()
        .flat_map(|agent| &agent.configs)
        .filter(|c| {
            c.report
                .as_ref()
                .is_some_and(|r| r.state == ApplyState::Applied && r.applied_rev == rev)
        })
        .map(|c| Duration::from_millis(c.reported_at_ms.unwrap_or(at_ms).saturating_sub(at_ms)))
        .collect())
}

/// `| label | n | p50 | p99 | max |` of `latencies`, in whole ms.
fn row(label: &str, latencies: &Latencies) -> String {
    format!(
        "| {label} | {} | {:.0} | {:.0} | {:.0} |",
        latencies.count(),
        latencies.quantile_ms(0.50),
        latencies.quantile_ms(0.99),
        latencies.quantile_ms(1.0)
    )
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = locksmith_binary(args.locksmith)?;
    let (server, client, dir) = fleet_server(&bin, "locksmith-agents").await?;
    let url = server.url();
    let at_ms = write_revision(&client, CONFIG, 1, false).await?.at_ms;

    let fleet = AgentFleet::spawn(&bin, &url, dir.path(), args.agents, CONFIG)?;
    // Every agent registered and on revision 1.
    let deadline = Instant::now() + Duration::from_secs(120);
    while applied(&client, 1, at_ms).await?.len() < args.agents {
        if Instant::now() > deadline {
            bail!("the agents did not all apply revision 1 within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let server_pid = server.pid().to_string();
    let cpu_before = procfs::cpu_ticks(&server_pid)?;
    let rounds_started = Instant::now();
    let mut all = Latencies::default();
    println!("| round | endpoints | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for round in 0..args.rounds {
        let rev = round as u64 + 2;
        let at_ms = write_revision(&client, CONFIG, round + 2, false)
            .await?
            .at_ms;
        let deadline = Instant::now() + Duration::from_secs(60);
        let took = loop {
            let took = applied(&client, rev, at_ms).await?;
            if took.len() >= args.agents {
                break took;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} applied rev {rev} within 60 s",
                    took.len(),
                    args.agents
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut latencies = Latencies::default();
        for d in took {
            latencies.record(d);
        }
        println!("{}", row(&(round + 1).to_string(), &latencies));
        all.merge(&latencies);
    }
    let (ticks_per_s, _) = procfs::clock_ticks_per_second();
    let server_cpu_s = (procfs::cpu_ticks(&server_pid)? - cpu_before) as f64 / ticks_per_s as f64;
    println!("{}", row("all", &all));
    println!(
        "server CPU over the rounds: {:.2} s in {:.1} s",
        server_cpu_s,
        rounds_started.elapsed().as_secs_f64()
    );

    // One agent, idle: no revision written while it is watched.
    let agent = fleet.first_pid().context("no agent")?.to_string();
    let before = procfs::cpu_ticks(&agent)?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_ticks = procfs::cpu_ticks(&agent)? - before;
    let memory = procfs::memory(&agent)?;
    println!(
        "one idle agent: RSS {:.1} MiB, CPU {:.3} % over {} s ({} ticks)",
        memory.rss_mib(),
        idle_ticks as f64 / ticks_per_s as f64 / args.idle_seconds as f64 * 100.0,
        args.idle_seconds,
        idle_ticks
    );
    drop(fleet);
    server.stop()?;
    Ok(())
}
