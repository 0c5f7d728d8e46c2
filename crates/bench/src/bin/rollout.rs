//! `rollout`: a rollout to a fleet of real agent processes — N `locksmith agent` processes
//! (100 by default) against a real `locksmith server` (auth off). Each round writes a new
//! revision as a draft and rolls it out (`--canary 5 --waves 25%,50%,100%`, zero bake, no
//! hold), then reads the rollout's own per-wave commit → applied latency (from the step that
//! set an endpoint's desired revision to its `applied` report reaching the server) and the
//! server's CPU over the round.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use locksmith_api::agents::ApplyState;
use locksmith_api::rollouts::{RolloutPhase, RolloutView, StartRolloutRequest};
use locksmith_bench::agent_fleet::{AgentFleet, write_revision};
use locksmith_bench::procfs;
use locksmith_bench::server_process::{fleet_server, locksmith_binary};

#[derive(Debug, Parser)]
#[command(about = "Commit → applied per wave of a rollout to a fleet of real agent processes")]
struct Args {
    /// Agent processes.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Rollouts, one revision each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
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

/// How many agents report revision `rev` applied.
async fn applied(client: &locksmith_client::Client, rev: u64) -> anyhow::Result<usize> {
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
        .count())
}

async fn rollout(http: &reqwest::Client, url: &str, rev: u64) -> anyhow::Result<RolloutView> {
    let req = StartRolloutRequest {
        config: CONFIG.into(),
        rev,
        canary: Some("5".into()),
        waves: Some("25%,50%,100%".into()),
        ..Default::default()
    };
    let resp = http
        .post(format!("{url}/v1/rollouts"))
        .json(&req)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("start: {}", resp.text().await.unwrap_or_default());
    }
    let view: RolloutView = resp.json().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: RolloutView = http
            .get(format!("{url}/v1/rollouts/{}", view.id))
            .send()
            .await?
            .json()
            .await?;
        if matches!(v.phase, RolloutPhase::Ended) && v.outcome.is_some() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("rollout {} did not end within 120 s: {}", v.id, v.summary);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = locksmith_binary(args.locksmith)?;
    let (server, client, dir) = fleet_server(&bin, "locksmith-rollout").await?;
    let url = server.url();
    let http = reqwest::Client::new();
    let first = write_revision(&client, CONFIG, 1, false).await?.rev;
    let fleet = AgentFleet::spawn(&bin, &url, dir.path(), args.agents, CONFIG)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while applied(&client, first).await? < args.agents {
        if Instant::now() > deadline {
            bail!("the agents did not all apply revision {first} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server_pid = server.pid().to_string();
    let (ticks_per_s, _) = procfs::clock_ticks_per_second();
    println!("| round | wave | endpoints | p50 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|");
    for round in 0..args.rounds {
        let rev = write_revision(&client, CONFIG, round + 2, true).await?.rev;
        let cpu_before = procfs::cpu_ticks(&server_pid)?;
        let started = Instant::now();
        let v = rollout(&http, &url, rev).await?;
        let took = started.elapsed();
        let cpu_s = (procfs::cpu_ticks(&server_pid)? - cpu_before) as f64 / ticks_per_s as f64;
        for w in &v.waves {
            if let Some(l) = w.latency {
                println!(
                    "| {} | {} ({:?}) | {} | {} | {} | {} |",
                    round + 1,
                    w.index,
                    w.kind,
                    l.count,
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms
                );
            }
        }
        if let Some(l) = v.latency {
            println!(
                "| {} | all | {} | {} | {} | {} |",
                round + 1,
                l.count,
                l.p50_ms,
                l.p99_ms,
                l.max_ms
            );
        }
        println!(
            "round {}: {:?} in {:.2} s start to end, server CPU {:.2} s",
            round + 1,
            v.outcome.as_ref().map(|o| o.kind),
            took.as_secs_f64(),
            cpu_s
        );
    }
    drop(fleet);
    server.stop()?;
    Ok(())
}
