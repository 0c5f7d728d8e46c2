//! `locksmith-bench`: measures a Locksmith server. With no `--server`, it starts one in-process
//! on 127.0.0.1:0 with the embedded store in a temporary directory (on the same disk as the
//! working directory's temp dir), so every grant pays a real fsync — with authentication on,
//! as the server's default, its clients sending the admin token it makes; `--auth off,on`
//! starts one of each and runs every row against both in turn, in the same run, to measure
//! what authentication costs.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use locksmith_bench::{Target, cycles, fence_checks, handoff, renewals, stats};
use locksmith_server::{Server, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark a Locksmith server: cycles/s, handoffs/s, renewals/s, latency percentiles"
)]
struct Args {
    /// Server to load; default: start one in-process on 127.0.0.1:0 with a temp data dir.
    #[arg(long)]
    server: Option<String>,
    /// The API token the clients send to --server (also $LOCKSMITH_TOKEN); the in-process
    /// server's clients send the admin token it makes.
    #[arg(
        long,
        env = "LOCKSMITH_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    token: Option<String>,
    /// A file holding the API token for --server (e.g. the server's DATA/admin.token).
    #[arg(long, conflicts_with = "token", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The in-process server's authentication: `on` (the server's default), `off`, or both
    /// (`off,on`: a server of each, every row run against each in turn, labelled).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Auth::On])]
    auth: Vec<Auth>,
    /// Send the load over the binary wire protocol: to this address with --server, to the
    /// in-process server's wire port without (`--wire` alone).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "ADDR")]
    wire: Option<String>,
    /// Seconds per row.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Client counts for the acquire+release cycle workload.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    cycle_clients: Vec<usize>,
    /// Client counts for the contended handoff workload.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 16, 64])]
    handoff_clients: Vec<usize>,
    /// Client counts for the renewal workload.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize])]
    renew_clients: Vec<usize>,
    /// Renewals each renew client keeps in flight on its one connection (one lease each): 1 is
    /// one round trip at a time; more pipelines them (the wire protocol answers as they complete).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
    renew_in_flight: Vec<usize>,
    /// Client counts for the fence-check workload (run only when asked for: `--workloads fence`).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    fence_clients: Vec<usize>,
    /// Client counts for the config put workload (run only when asked for: `--workloads
    /// cycles,configs` puts its rows beside the lock cycle's).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    config_clients: Vec<usize>,
    /// Which workloads to run (e.g. `--workloads cycles` for a profile of one row).
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Workload::Cycles, Workload::Handoff, Workload::Renew])]
    workloads: Vec<Workload>,
    /// Print JSON rows instead of a Markdown table.
    #[arg(long)]
    json: bool,
    /// TLS: the in-process server's listeners speak TLS with a certificate made for the run
    /// (the clients trust its CA); with --server, trust the CA in --ca-file.
    #[arg(long)]
    tls: bool,
    /// With --server and --tls: the CA that signs the server's certificate [default: the
    /// system's roots].
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Auth {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Cycles,
    Handoff,
    Renew,
    Fence,
    Configs,
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
    let dir = tempfile::Builder::new()
        .prefix("locksmith-bench")
        .tempdir()?;
    let prefix = format!("bench-{}", std::process::id());
    // A CA and a server certificate made for the run (`--tls` without `--server`).
    let pki = (args.tls && args.server.is_none())
        .then(|| locksmith_etcd::testing::TestPki::new("locksmith-bench CA"));
    let tls = args.tls.then(|| locksmith_client::TlsOptions {
        ca_file: match &pki {
            Some(pki) => Some(pki.ca_file().to_path_buf()),
            None => args.ca_file.clone(),
        },
        ..locksmith_client::TlsOptions::default()
    });
    // One target per server measured: `--server`, or an in-process server per `--auth` mode.
    let mut targets: Vec<(Option<Auth>, Target)> = Vec::new();
    let mut stops = Vec::new();
    match &args.server {
        Some(url) => {
            let token = match &args.token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("read --token-file {}", path.display()))?
                        .trim()
                        .to_string(),
                ),
                None => args.token.clone(),
            };
            let target = Target {
                url: url.clone(),
                wire: args.wire.clone().filter(|w| !w.is_empty()),
                prefix: prefix.clone(),
                token,
                tls: tls.clone(),
            };
            targets.push((None, target));
        }
        None => {
            for (i, &auth) in args.auth.iter().enumerate() {
                let data = dir.path().join(format!("server-{i}"));
                let server = Server::bind(ServerConfig {
                    listen: "127.0.0.1:0".parse()?,
                    wire_listen: Some("127.0.0.1:0".parse()?),
                    data_dir: data.clone(),
                    gc_interval: Duration::from_secs(1),
                    auth: match auth {
                        Auth::On => locksmith_server::AuthMode::On,
                        Auth::Off => locksmith_server::AuthMode::Off,
                    },
                    tls: pki.as_ref().map(|pki| {
                        let cert = pki.server();
                        locksmith_server::tls::TlsConfig {
                            cert: cert.cert,
                            key: cert.key,
                            client_ca: None,
                        }
                    }),
                    ..ServerConfig::default()
                })
                .await?;
                // With authentication on, the first start wrote the admin token here.
                let token = match auth {
                    Auth::On => Some(
                        std::fs::read_to_string(data.join("admin.token"))
                            .context("read the in-process server's admin.token")?
                            .trim()
                            .to_string(),
                    ),
                    Auth::Off => None,
                };
                let target = Target {
                    url: server.url(),
                    wire: args
                        .wire
                        .as_ref()
                        .and(server.wire_addr())
                        .map(|a| a.to_string()),
                    prefix: prefix.clone(),
                    token,
                    tls: tls.clone(),
                };
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(server.serve(async move {
                    let _ = rx.await;
                }));
                stops.push((tx, task));
                targets.push((Some(auth), target));
            }
        }
    }
    let labelled = targets.len() > 1;
    let d = Duration::from_secs_f64(args.seconds);
    let mut rows = Vec::new();
    let runs = |w: Workload| args.workloads.contains(&w);
    // Each row against every target in turn, so that what drifts during the run (the disk,
    // the machine's other load) falls on both alike.
    for &c in args.cycle_clients.iter().filter(|_| runs(Workload::Cycles)) {
        for (auth, target) in &targets {
            rows.push(label(cycles(target, c, d).await?, *auth, labelled));
        }
    }
    for &c in args
        .handoff_clients
        .iter()
        .filter(|_| runs(Workload::Handoff))
    {
        for (auth, target) in &targets {
            rows.push(label(handoff(target, c, d).await?, *auth, labelled));
        }
    }
    for &c in args.renew_clients.iter().filter(|_| runs(Workload::Renew)) {
        for &n in &args.renew_in_flight {
            for (auth, target) in &targets {
                rows.push(label(renewals(target, c, n, d).await?, *auth, labelled));
            }
        }
    }
    for &c in args.fence_clients.iter().filter(|_| runs(Workload::Fence)) {
        for (auth, target) in &targets {
            rows.push(label(fence_checks(target, c, d).await?, *auth, labelled));
        }
    }
    for &c in args
        .config_clients
        .iter()
        .filter(|_| runs(Workload::Configs))
    {
        for (auth, target) in &targets {
            let row = locksmith_bench::configs::config_puts(target, c, d).await?;
            rows.push(label(row, *auth, labelled));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        write!(out, "{}", stats::markdown(&rows))?;
    }
    for (tx, task) in stops {
        let _ = tx.send(());
        task.await??;
    }
    Ok(())
}

/// `row`, its workload named with the server's authentication when rows of both are shown.
fn label(mut row: stats::Row, auth: Option<Auth>, labelled: bool) -> stats::Row {
    if labelled && let Some(auth) = auth {
        let mode = match auth {
            Auth::On => "auth on",
            Auth::Off => "auth off",
        };
        row.workload = format!("{} ({mode})", row.workload);
    }
    row
}
