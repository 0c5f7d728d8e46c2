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
use locksmith_bench::fanout::{Channels, Outcome, Rounds, table};
use locksmith_bench::procfs;
use locksmith_bench::zookeeper::ZooKeeperServer;
use locksmith_etcd::testing::EtcdCluster;
use tokio::sync::{Semaphore, mpsc};
use zookeeper_client as zk;

const KEY: &str = "/locksmith-fanout/config";
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
                outcome.measured.latencies.quantile_ms(0.5),
                outcome.measured.latencies.quantile_ms(0.99),
                outcome.measured.max_ms,
                outcome.measured.change_ms
            );
            outcomes.push(outcome);
        }
    }
    print!("{}", table(&outcomes));
    Ok(())
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
        changes: args.changes,
        warmup: args.warmup,
        system: "etcd",
    };
    let measured = rounds
        .run(Channels { ready, arrivals }, false, || Ok(()), change)
        .await?;
    Ok(Outcome {
        system: "etcd",
        watchers: n,
        connections,
        measured,
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
        changes: args.changes,
        warmup: args.warmup,
        system: "zookeeper",
    };
    let measured = rounds
        .run(Channels { ready, arrivals }, true, check, change)
        .await?;
    Ok(Outcome {
        system: "zookeeper",
        watchers: n,
        connections: sessions,
        measured,
    })
}
