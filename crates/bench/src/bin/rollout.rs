//! `rollout`: a rollout to a fleet of real agent processes — N `locksmith agent` processes
//! (100 by default) against a real `locksmith server` (auth off). Each round writes a new
//! revision as a draft and rolls it out (`--canary 5 --waves 25%,50%,100%`, zero bake, no
//! hold), then reads the rollout's own per-wave commit → applied latency (from the step that
//! set an endpoint's desired revision to its `applied` report reaching the server) and the
//! server's CPU over the round.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use locksmith_api::agents::ApplyState;
use locksmith_api::configs::{Content, Fence, Format, WriteConfigRequest};
use locksmith_api::rollouts::{RolloutPhase, RolloutView, StartRolloutRequest};
use locksmith_bench::procfs;
use locksmith_bench::server_process::{ServerProcess, locksmith_binary};
use locksmith_bench::workload::request;

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

/// The agents, killed on drop.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

/// Writes revision content `n` of [`CONFIG`] (a draft with `draft`) under a lock taken for
/// it; its revision number.
async fn write(client: &locksmith_client::Client, n: usize, draft: bool) -> anyhow::Result<u64> {
    let lease = client
        .acquire(&request(format!("configs/{CONFIG}"), 0, Some(30_000)))
        .await
        .context("acquire")?;
    let written = client
        .write_config(
            CONFIG,
            &WriteConfigRequest {
                fence: Fence {
                    lease: lease.lease.0,
                    token: lease.token.0,
                },
                format: Format::Conf,
                content: Content {
                    content: Some(format!("round = {n}\nthreshold = 0.{n}\n")),
                    content_base64: None,
                },
                message: format!("round {n}"),
                draft,
            },
        )
        .await
        .context("write")?;
    client.release(lease.lease, None).await.context("release")?;
    Ok(written.meta.rev)
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
    let dir = tempfile::Builder::new()
        .prefix("locksmith-rollout")
        .tempdir()?;
    let (server, _) = ServerProcess::start(
        &bin,
        &dir.path().join("data"),
        &dir.path().join("server"),
        &["--wire-listen", "off"],
        Duration::from_secs(60),
    )
    .await?;
    let url = server.url();
    let client = locksmith_client::Client::new(&url)?;
    let http = reqwest::Client::new();
    let first = write(&client, 1, false).await?;
    let mut fleet = Fleet(Vec::new());
    for i in 0..args.agents {
        let home = dir.path().join(format!("agent-{i:03}"));
        std::fs::create_dir_all(&home)?;
        let target = home.join(CONFIG);
        let child = Command::new(&bin)
            .args([
                "--server",
                &url,
                "--node",
                &format!("bench-{i:03}"),
                "agent",
            ])
            .arg("--config")
            .arg(format!("{CONFIG}={}", target.display()))
            .arg("--state-dir")
            .arg(home.join("state"))
            .args(["--labels", "role=bench"])
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("agent.log"))?)
            .spawn()
            .context("start an agent")?;
        fleet.0.push(child);
    }
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
        let rev = write(&client, round + 2, true).await?;
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
