//! `configs`: what many configs with long histories cost — 1,000 configs × 100 revisions by
//! default, written over HTTP to a real `locksmith server` process (auth off): the store's size
//! on disk, the server's RSS once they are written, and the restart time (process start until
//! `/healthz` answers, the configs' records restored) with the RSS after it.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use locksmith_bench::procfs;
use locksmith_bench::server_process::{ServerProcess, locksmith_binary};

#[derive(Debug, Parser)]
#[command(about = "Store size, RSS and restart time of many configs with long histories")]
struct Args {
    /// Configs.
    #[arg(long, default_value_t = 1_000)]
    configs: usize,
    /// Revisions of each.
    #[arg(long, default_value_t = 100)]
    revisions: u64,
    /// Bytes of each revision's content (each one different).
    #[arg(long, default_value_t = 1024)]
    bytes: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// The `locksmith` binary [default: next to this one].
    #[arg(long)]
    locksmith: Option<PathBuf>,
}

/// Bytes of the files under `dir`.
fn disk_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            disk_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = locksmith_binary(args.locksmith)?;
    let dir = tempfile::Builder::new()
        .prefix("locksmith-configs")
        .tempdir()?;
    let data = dir.path().join("data");
    let log = dir.path().join("server");
    let extra = ["--wire-listen", "off"];
    let within = Duration::from_secs(600);

    let (server, _) = ServerProcess::start(&bin, &data, &log, &extra, within).await?;
    let took = locksmith_bench::configs::fill(
        &server.url(),
        None,
        args.configs,
        args.revisions,
        args.bytes,
        args.writers,
    )
    .await
    .with_context(|| server.log_tail())?;
    let writes = args.configs as u64 * args.revisions;
    let filled = procfs::memory(&server.pid().to_string())?;
    let (status, stop_took) = server.stop()?;
    let size = disk_bytes(&data)?;

    let (server, startup) = ServerProcess::start(&bin, &data, &log, &extra, within).await?;
    let restarted = procfs::memory(&server.pid().to_string())?;
    let check = reqwest::get(format!("{}/v1/configs", server.url()))
        .await?
        .json::<serde_json::Value>()
        .await?;
    let listed = check["configs"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(listed == args.configs, "{listed} configs after the restart");
    server.stop()?;

    println!(
        "| configs × revisions (content) | writes/s while filling | store on disk | RSS filled | stop | restart to serving | RSS after restart |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} × {} ({} B each) | {:.0} | {:.1} MiB | {:.1} MiB | {:.2} s (exit {status}) | {:.2} s | {:.1} MiB |",
        args.configs,
        args.revisions,
        args.bytes,
        writes as f64 / took.as_secs_f64(),
        size as f64 / (1024.0 * 1024.0),
        filled.rss_mib(),
        stop_took.as_secs_f64(),
        startup.serving.as_secs_f64(),
        restarted.rss_mib(),
    );
    Ok(())
}
