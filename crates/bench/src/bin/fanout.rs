//! `fanout`: how long etcd watches and ZooKeeper watches take to tell N watchers of one change —
//! the fan-out a consul-template/confd fleet relies on — to set beside Locksmith's own
//! commit → applied numbers (docs/performance.md).
//!
//! Starts each server itself on loopback with a temporary data directory and stops it when it
//! ends:
//!
//! - `etcd`: one `/usr/bin/etcd` member (Debian's `etcd-server`, 3.4; default fsync) through
//!   `EtcdCluster`. N watch streams on one key, spread round-robin over `--etcd-connections`
//!   gRPC connections (HTTP/2 multiplexes the streams); each stream is one watcher and gets its
//!   own event, as N confd processes would. The put goes over a connection of its own.
//! - `zookeeper`: a standalone server from Debian's `zookeeper` package ([`ZooKeeperServer`]).
//!   N data watches (`getData` with watch) on one znode, `--zk-watches-per-session` per
//!   session (1 by default: one session per watcher, as a fleet has). ZooKeeper keeps one watch
//!   per (session, path), so with more per session the server notifies each session once and
//!   the client library fans out the rest in-process.
//!
//! Per watcher, latency is from just before the change is sent (put / setData, so it includes
//! the server's commit and fsync) to the moment its task sees the event. CPU is the server
//! process's user + system time from just before the change to the last event; RSS is its
//! `VmRSS` then. Every watcher must see the change (else the run fails), and the server must
//! report all watches registered before the change is made.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use etcd_client::{Client as EtcdClient, EventType};
use locksmith_bench::procfs;
use locksmith_bench::stats::Latencies;
use locksmith_bench::zookeeper::ZooKeeperServer;
use locksmith_etcd::testing::EtcdCluster;
use tokio::sync::{Semaphore, mpsc};
use zookeeper_client as zk;

const KEY: &str = "/locksmith-fanout/config";
/// How long every watcher gets to see the change before the run fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Watch registrations (or ZooKeeper session handshakes) in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    Etcd,
    Zookeeper,
}

#[derive(Debug, Parser)]
#[command(about = "Time for etcd and ZooKeeper watches to notify N watchers of one change")]
struct Args {
    /// Watcher counts, one row each per system.
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10_000])]
    watchers: Vec<usize>,
    /// Systems to run.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [System::Etcd, System::Zookeeper])]
    systems: Vec<System>,
    /// gRPC connections the etcd watch streams share (round-robin).
    #[arg(long, default_value_t = 100)]
    etcd_connections: usize,
    /// ZooKeeper data watches each session holds (1: one session per watcher).
    #[arg(long, default_value_t = 1)]
    zk_watches_per_session: usize,
}

/// One measured row.
struct Outcome {
    system: &'static str,
    watchers: usize,
    connections: usize,
    latencies: Latencies,
    max_ms: f64,
    change_ms: f64,
    cpu_s: f64,
    rss_mib: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.watchers.contains(&0) || args.etcd_connections == 0 || args.zk_watches_per_session == 0
    {
        bail!("--watchers, --etcd-connections and --zk-watches-per-session must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (ticks_per_s, _) = procfs::clock_ticks_per_second();
    let mut outcomes = Vec::new();
    for &system in &args.systems {
        for &n in &args.watchers {
            eprintln!("{system:?}: {n} watchers ...");
            // A fresh server per row, so no row inherits another's watches or memory.
            let outcome = match system {
                System::Etcd => {
                    let etcd = std::panic::catch_unwind(|| EtcdCluster::start(1))
                        .map_err(|_| anyhow::anyhow!("cannot start etcd (see above)"))?;
                    let pid = etcd.pid(0).context("etcd is not running")?;
                    rt.block_on(etcd_fanout(&etcd.endpoints(), pid, n, &args, ticks_per_s))?
                }
                System::Zookeeper => {
                    let server = ZooKeeperServer::start()?;
                    rt.block_on(zk_fanout(&server, n, &args, ticks_per_s))?
                }
            };
            eprintln!(
                "  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; change acknowledged after {:.1} ms",
                outcome.latencies.quantile_ms(0.5),
                outcome.latencies.quantile_ms(0.99),
                outcome.max_ms,
                outcome.change_ms
            );
            outcomes.push(outcome);
        }
    }
    print!("{}", table(&outcomes));
    Ok(())
}

fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| system | watchers | connections | p50 ms | p99 ms | max ms | CPU s | RSS MiB | change acked ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |\n",
            o.system,
            o.watchers,
            o.connections,
            o.latencies.quantile_ms(0.5),
            o.latencies.quantile_ms(0.99),
            o.max_ms,
            o.cpu_s,
            o.rss_mib,
            o.change_ms
        ));
    }
    s
}

/// What the server process had used when the change was sent, to subtract at the end.
struct ServerUsage {
    pid: String,
    ticks_before: u64,
    ticks_per_s: u64,
}

impl ServerUsage {
    fn start(pid: i32, ticks_per_s: u64) -> anyhow::Result<Self> {
        let pid = pid.to_string();
        let ticks_before = procfs::cpu_ticks(&pid)?;
        Ok(Self {
            pid,
            ticks_before,
            ticks_per_s,
        })
    }

    /// (CPU seconds since `start`, RSS MiB now).
    fn finish(&self) -> anyhow::Result<(f64, f64)> {
        let ticks = procfs::cpu_ticks(&self.pid)?.saturating_sub(self.ticks_before);
        let rss = procfs::memory(&self.pid)?.rss_mib();
        Ok((ticks as f64 / self.ticks_per_s as f64, rss))
    }
}

/// Waits for `n` arrival times on `arrivals` and turns them into latencies from `t0`.
async fn collect(
    arrivals: &mut mpsc::UnboundedReceiver<Instant>,
    n: usize,
    t0: Instant,
    system: &str,
) -> anyhow::Result<(Latencies, f64)> {
    let mut latencies = Latencies::default();
    let mut max = Duration::ZERO;
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    for seen in 0..n {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some(at)) => {
                let d = at.saturating_duration_since(t0);
                max = max.max(d);
                latencies.record(d);
            }
            Ok(None) => {
                bail!("{system}: only {seen} of {n} watchers saw the change (a watch ended)")
            }
            Err(_) => bail!(
                "{system}: only {seen} of {n} watchers saw the change within {DELIVERY_TIMEOUT:?}"
            ),
        }
    }
    Ok((latencies, max.as_secs_f64() * 1000.0))
}

async fn etcd_fanout(
    endpoints: &[String],
    pid: i32,
    n: usize,
    args: &Args,
    ticks_per_s: u64,
) -> anyhow::Result<Outcome> {
    let connections = args.etcd_connections.min(n);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(EtcdClient::connect(endpoints, None).await?);
    }
    let mut writer = EtcdClient::connect(endpoints, None).await?;
    writer.put(KEY, "0", None).await?;
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    let (arrived_tx, mut arrivals) = mpsc::unbounded_channel::<Instant>();
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    for i in 0..n {
        let mut client = clients[i % connections].clone();
        let (ready_tx, arrived_tx, permits) =
            (ready_tx.clone(), arrived_tx.clone(), permits.clone());
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            // `watch` returns once the request is sent; the first message confirms the watch.
            let stream = async {
                let mut stream = client.watch(KEY, None).await?;
                match stream.message().await? {
                    Some(r) if r.created() => Ok(stream),
                    other => bail!("etcd watch not created: {other:?}"),
                }
            }
            .await;
            drop(permit);
            let mut stream = match stream {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Ok(Some(r)) = stream.message().await {
                if r.events().iter().any(|e| e.event_type() == EventType::Put) {
                    let _ = arrived_tx.send(Instant::now());
                    break;
                }
            }
            // Keep the stream open until every watcher is done, so no cancel traffic overlaps
            // the fan-out being measured.
            arrived_tx.closed().await;
        });
    }
    drop((ready_tx, arrived_tx));
    for _ in 0..n {
        ready.recv().await.context("a watcher task ended")??;
    }
    let usage = ServerUsage::start(pid, ticks_per_s)?;
    let t0 = Instant::now();
    writer.put(KEY, "1", None).await?;
    let change_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let (latencies, max_ms) = collect(&mut arrivals, n, t0, "etcd").await?;
    let (cpu_s, rss_mib) = usage.finish()?;
    drop(arrivals);
    Ok(Outcome {
        system: "etcd",
        watchers: n,
        connections,
        latencies,
        max_ms,
        change_ms,
        cpu_s,
        rss_mib,
    })
}

async fn zk_fanout(
    server: &ZooKeeperServer,
    n: usize,
    args: &Args,
    ticks_per_s: u64,
) -> anyhow::Result<Outcome> {
    let per_session = args.zk_watches_per_session;
    let sessions = n.div_ceil(per_session);
    let connect = server.connect_string();
    let connector = || zk::Client::connector().with_session_timeout(Duration::from_secs(30));
    let writer = connector().connect(&connect).await?;
    let znode = "/locksmith-fanout";
    writer
        .create(
            znode,
            b"0",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
        )
        .await?;
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    let (arrived_tx, mut arrivals) = mpsc::unbounded_channel::<Instant>();
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    for s in 0..sessions {
        let watches = per_session.min(n - s * per_session);
        let (ready_tx, arrived_tx, permits) =
            (ready_tx.clone(), arrived_tx.clone(), permits.clone());
        let (connect, connector) = (connect.clone(), connector());
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let set_up = async {
                let client = connector.connect(&connect).await?;
                let mut watchers = Vec::with_capacity(watches);
                for _ in 0..watches {
                    let (_, _, watcher) = client.get_and_watch_data(znode).await?;
                    watchers.push(watcher);
                }
                anyhow::Ok((client, watchers))
            }
            .await;
            drop(permit);
            let (client, watchers) = match set_up {
                Ok(w) => w,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            for watcher in watchers {
                let arrived_tx = arrived_tx.clone();
                tokio::spawn(async move {
                    let event = watcher.changed().await;
                    if event.event_type == zk::EventType::NodeDataChanged {
                        let _ = arrived_tx.send(Instant::now());
                    }
                });
            }
            let _ = ready_tx.send(Ok(()));
            // Keep the session until every watcher is done.
            arrived_tx.closed().await;
            drop(client);
        });
    }
    drop((ready_tx, arrived_tx));
    for _ in 0..sessions {
        ready.recv().await.context("a session task ended")??;
    }
    let registered = server.total_watches()?;
    if registered != sessions as u64 {
        bail!("zookeeper holds {registered} watches, expected one per session ({sessions})");
    }
    let usage = ServerUsage::start(server.pid(), ticks_per_s)?;
    let t0 = Instant::now();
    writer.set_data(znode, b"1", None).await?;
    let change_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let (latencies, max_ms) = collect(&mut arrivals, n, t0, "zookeeper").await?;
    let (cpu_s, rss_mib) = usage.finish()?;
    drop(arrivals);
    Ok(Outcome {
        system: "zookeeper",
        watchers: n,
        connections: sessions,
        latencies,
        max_ms,
        change_ms,
        cpu_s,
        rss_mib,
    })
}
