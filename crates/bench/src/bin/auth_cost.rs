//! What authentication costs over HTTP: the same workloads against a server with `--auth off`
//! and one with authentication on, in the same run, rounds interleaved (off, on, off, on, …) so
//! that drift of the machine hits both alike.
//!
//! - **cycles**: `--clients` clients (default 64), each on its own keep-alive connection,
//!   acquire a resource of their own and release it, as fast as they can;
//! - **renewals**: `--in-flight` (default 8) renewals of one lease each, back to back.
//!
//! Each is reported as a rate and as CPU time per operation (this process's user + system time
//! over the measured window — server and clients together, as both run here): on a shared
//! machine the rate follows the neighbours' load, the CPU per operation much less.
//!
//! With authentication on the load runs with a `client` token (made by the admin token the
//! server wrote), so every request is authenticated, its permission and prefixes checked, its
//! lease's acquirer recorded and checked, and its audit records stamped. Each server is
//! in-process on a fresh data directory, with its wire listener off.
//!
//! ```sh
//! cargo run --release -p locksmith-bench --bin auth_cost -- --seconds 5 --rounds 3
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use locksmith_server::{AuthMode, Server, ServerConfig};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each workload runs per round (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds per mode, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Clients of the cycles workload.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Renewals in flight.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args))
}

/// One workload's result: operations per second, and CPU µs per operation.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_s: f64,
    cpu_us: f64,
}

/// One mode's results per round: (cycles, renewals).
type Results = Vec<(Rate, Rate)>;

async fn run(args: Args) -> anyhow::Result<()> {
    let (mut off, mut on): (Results, Results) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for mode in [AuthMode::Off, AuthMode::On] {
            let rates = round_of(&args, mode).await?;
            println!(
                "round {} auth {:>3}: {:>8.0} cycles/s ({:>5.1} µs CPU each)  {:>8.0} renewals/s \
                 ({:>5.1} µs CPU each)",
                round + 1,
                if mode == AuthMode::On { "on" } else { "off" },
                rates.0.per_s,
                rates.0.cpu_us,
                rates.1.per_s,
                rates.1.cpu_us,
            );
            match mode {
                AuthMode::Off => off.push(rates),
                AuthMode::On => on.push(rates),
            }
        }
    }
    let median = |v: &Results, pick: fn(&(Rate, Rate)) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(pick).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    type Pick = fn(&(Rate, Rate)) -> f64;
    let rows: [(&str, Pick, bool); 4] = [
        ("cycles/s", |r| r.0.per_s, true),
        ("CPU µs/cycle", |r| r.0.cpu_us, false),
        ("renewals/s", |r| r.1.per_s, true),
        ("CPU µs/renewal", |r| r.1.cpu_us, false),
    ];
    for (name, pick, higher_is_better) in rows {
        let (a, b) = (median(&off, pick), median(&on, pick));
        let cost = if higher_is_better {
            (a - b) / a
        } else {
            (b - a) / a
        };
        println!(
            "median {name:>15}: auth off {a:>8.1}  auth on {b:>8.1}  cost {:+.1} %",
            cost * 100.0
        );
    }
    Ok(())
}

/// One round against a fresh server in `mode`.
async fn round_of(args: &Args, mode: AuthMode) -> anyhow::Result<(Rate, Rate)> {
    let dir = tempfile::Builder::new()
        .prefix("locksmith-auth-cost")
        .tempdir()?;
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        wire_listen: None,
        data_dir: dir.path().to_path_buf(),
        gc_interval: Duration::from_secs(1),
        probe_interval: Duration::ZERO,
        auth: mode,
        ..ServerConfig::default()
    })
    .await?;
    let url = format!("http://{}", server.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let token = match mode {
        AuthMode::Off => None,
        AuthMode::On => Some(client_token(&url, dir.path()).await?),
    };
    let d = Duration::from_secs_f64(args.seconds);
    let cycles = cycles(&url, token.as_deref(), args.clients, d).await?;
    let renewals = renewals(&url, token.as_deref(), args.in_flight, d).await?;
    let _ = tx.send(());
    task.await??;
    Ok((cycles, renewals))
}

/// A `client` token made with the admin token the server wrote.
async fn client_token(url: &str, dir: &std::path::Path) -> anyhow::Result<String> {
    let admin = std::fs::read_to_string(dir.join("admin.token"))?;
    let made: Value = reqwest::Client::new()
        .post(format!("{url}/v1/tokens"))
        .bearer_auth(admin.trim())
        .json(&json!({"name": "bench", "role": "client"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    made["token"]
        .as_str()
        .map(str::to_owned)
        .context("no secret in the answer")
}

/// A client with one keep-alive connection.
fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()?)
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.post(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    Ok(req.send().await?.error_for_status()?.json().await?)
}

fn acquire_body(resource: &str, pid: u32) -> Value {
    json!({
        "resource": resource,
        "owner": {"node": "bench-node", "pid": pid, "start_time": 1, "boot_id": "bench-boot",
                  "user": "bench", "purpose": "auth cost"},
        "ttl_ms": 30_000,
    })
}

/// This process's CPU time so far (user + system), µs, from `/proc/self/stat` (in clock
/// ticks, usually 10 ms: over a window of seconds, well under a percent).
fn cpu_us() -> f64 {
    let ticks = locksmith_bench::procfs::cpu_ticks("self").unwrap_or(0);
    ticks as f64 * 1e6 / locksmith_bench::procfs::clock_ticks_per_second().0 as f64
}

/// Spawns `n` tasks running `work(i)` in a loop; counts completions in `d` after a warm-up.
async fn measure<F, Fut>(n: usize, d: Duration, work: F) -> anyhow::Result<Rate>
where
    F: Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(work(i, Arc::clone(&stop), Arc::clone(&done))))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start, before, cpu) = (Instant::now(), done.load(Ordering::Relaxed), cpu_us());
    tokio::time::sleep(d).await;
    let counted = done.load(Ordering::Relaxed) - before;
    let rate = Rate {
        per_s: counted as f64 / start.elapsed().as_secs_f64(),
        cpu_us: (cpu_us() - cpu) / counted.max(1) as f64,
    };
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(rate)
}

async fn cycles(url: &str, token: Option<&str>, n: usize, d: Duration) -> anyhow::Result<Rate> {
    let (url, token) = (url.to_owned(), token.map(str::to_owned));
    measure(n, d, move |i, stop, done| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let http = http()?;
            let resource = format!("cycle/{i}");
            while !stop.load(Ordering::Relaxed) {
                let lease = post(
                    &http,
                    format!("{url}/v1/acquire"),
                    token.as_deref(),
                    Some(acquire_body(&resource, i as u32 + 1)),
                )
                .await?;
                let id = lease["lease"].as_u64().context("lease id")?;
                post(
                    &http,
                    format!("{url}/v1/leases/{id}/release"),
                    token.as_deref(),
                    Some(json!({"token": lease["token"]})),
                )
                .await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

async fn renewals(url: &str, token: Option<&str>, n: usize, d: Duration) -> anyhow::Result<Rate> {
    let (url, token) = (url.to_owned(), token.map(str::to_owned));
    measure(n, d, move |i, stop, done| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let http = http()?;
            let lease = post(
                &http,
                format!("{url}/v1/acquire"),
                token.as_deref(),
                Some(acquire_body(&format!("renew/{i}"), 10_000 + i as u32)),
            )
            .await?;
            let id = lease["lease"].as_u64().context("lease id")?;
            let renew = format!("{url}/v1/leases/{id}/renew");
            let body = json!({"token": lease["token"]});
            while !stop.load(Ordering::Relaxed) {
                post(&http, renew.clone(), token.as_deref(), Some(body.clone())).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}
