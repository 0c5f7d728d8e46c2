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
    /// Measured changes per row (the table merges their latencies; CPU is per change).
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Unmeasured changes first (a fresh JVM or etcd runs its first fan-out cold).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
}

/// One measured row: `changes` changes, each seen by every watcher.
struct Outcome {
    system: &'static str,
    watchers: usize,
    connections: usize,
    /// Every watcher's latency for every measured change.
    latencies: Latencies,
    max_ms: f64,
    /// The median over the measured changes of the time until the writer's change was
    /// acknowledged.
    change_ms: f64,
    /// Server CPU per change.
    cpu_s: f64,
    rss_mib: f64,
}

/// Measures `changes` changes after `warmup` unmeasured ones. Before a change, it waits for
/// every watcher's readiness on `ready` (before the first only, unless watches must be re-armed
/// after each change) and runs `check`; `change` makes one and returns when the server
/// acknowledged it.
struct Rounds<'a> {
    pid: i32,
    ticks_per_s: u64,
    n: usize,
    args: &'a Args,
    system: &'static str,
}

/// What the watcher tasks report: each one's readiness (or setup error), each event's arrival.
struct Channels {
    ready: mpsc::UnboundedReceiver<anyhow::Result<()>>,
    arrivals: mpsc::UnboundedReceiver<Instant>,
}

impl Rounds<'_> {
    async fn run<C>(
        &self,
        channels: Channels,
        rearm: bool,
        check: impl Fn() -> anyhow::Result<()>,
        mut change: impl FnMut(u64) -> C,
    ) -> anyhow::Result<(Latencies, f64, f64, f64, f64)>
    where
        C: std::future::Future<Output = anyhow::Result<()>>,
    {
        let Channels {
            mut ready,
            mut arrivals,
        } = channels;
        let mut all = Latencies::default();
        let (mut max_ms, mut cpu_s, mut rss_mib) = (0.0f64, 0.0, 0.0);
        let mut acked = Vec::new();
        for round in 0..self.args.warmup + self.args.changes {
            if round == 0 || rearm {
                for _ in 0..self.n {
                    ready.recv().await.context("a watcher task ended")??;
                }
                check()?;
            }
            let usage = ServerUsage::start(self.pid, self.ticks_per_s)?;
            let t0 = Instant::now();
            change(round as u64 + 1).await?;
            let change_ms = t0.elapsed().as_secs_f64() * 1000.0;
            let (latencies, max) = collect(&mut arrivals, self.n, t0, self.system).await?;
            let (cpu, rss) = usage.finish()?;
            if round < self.args.warmup {
                continue;
            }
            all.merge(&latencies);
            max_ms = max_ms.max(max);
            cpu_s += cpu;
            rss_mib = f64::max(rss_mib, rss);
            acked.push(change_ms);
        }
        acked.sort_by(f64::total_cmp);
        let change_ms = acked.get(acked.len() / 2).copied().unwrap_or(0.0);
        let cpu_per_change = cpu_s / self.args.changes as f64;
        Ok((all, max_ms, change_ms, cpu_per_change, rss_mib))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.watchers.contains(&0)
        || args.etcd_connections == 0
        || args.zk_watches_per_session == 0
        || args.changes == 0
    {
        bail!(
            "--watchers, --etcd-connections, --zk-watches-per-session and --changes must be positive"
        );
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
    let (ready_tx, ready) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    let (arrived_tx, arrivals) = mpsc::unbounded_channel::<Instant>();
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
            // One stream for every change, as a confd process keeps it; ends when the run
            // drops its receiver (or etcd ends the stream: then the run misses this watcher).
            while let Ok(Some(r)) = stream.message().await {
                let puts = r
                    .events()
                    .iter()
                    .filter(|e| e.event_type() == EventType::Put);
                for _ in puts {
                    if arrived_tx.send(Instant::now()).is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop((ready_tx, arrived_tx));
    let change = |v: u64| {
        let mut writer = writer.clone();
        async move {
            writer.put(KEY, v.to_string(), None).await?;
            anyhow::Ok(())
        }
    };
    let rounds = Rounds {
        pid,
        ticks_per_s,
        n,
        args,
        system: "etcd",
    };
    let (latencies, max_ms, change_ms, cpu_s, rss_mib) = rounds
        .run(Channels { ready, arrivals }, false, || Ok(()), change)
        .await?;
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
    let (ready_tx, ready) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    let (arrived_tx, arrivals) = mpsc::unbounded_channel::<Instant>();
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    for s in 0..sessions {
        let watches = per_session.min(n - s * per_session);
        let (ready_tx, arrived_tx, permits) =
            (ready_tx.clone(), arrived_tx.clone(), permits.clone());
        let (connect, connector) = (connect.clone(), connector());
        tokio::spawn(async move {
            let client = {
                let _permit = permits.acquire_owned().await;
                match connector.connect(&connect).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                }
            };
            for _ in 0..watches {
                let (client, ready_tx, arrived_tx) =
                    (client.clone(), ready_tx.clone(), arrived_tx.clone());
                tokio::spawn(async move {
                    // A data watch fires once: re-arm it after every change, as a client must.
                    loop {
                        let watcher = match client.get_and_watch_data(znode).await {
                            Ok((_, _, w)) => w,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.into()));
                                return;
                            }
                        };
                        if ready_tx.send(Ok(())).is_err() {
                            return;
                        }
                        let event = watcher.changed().await;
                        if event.event_type != zk::EventType::NodeDataChanged
                            || arrived_tx.send(Instant::now()).is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
    }
    drop((ready_tx, arrived_tx));
    let check = || {
        let registered = server.total_watches()?;
        if registered != sessions as u64 {
            bail!("zookeeper holds {registered} watches, expected one per session ({sessions})");
        }
        Ok(())
    };
    let change = |v: u64| {
        let writer = writer.clone();
        async move {
            writer
                .set_data(znode, v.to_string().as_bytes(), None)
                .await?;
            anyhow::Ok(())
        }
    };
    let rounds = Rounds {
        pid: server.pid(),
        ticks_per_s,
        n,
        args,
        system: "zookeeper",
    };
    let (latencies, max_ms, change_ms, cpu_s, rss_mib) = rounds
        .run(Channels { ready, arrivals }, true, check, change)
        .await?;
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
