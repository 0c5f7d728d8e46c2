//! `compare`: the same lock workloads against Locksmith, etcd and Redis, side by side.
//!
//! Starts everything itself on loopback, each with its own temporary data directory, and stops
//! everything it started when it ends (normally, on error, or on a panic — each is owned by a
//! guard; etcd and Redis also run under a `sh` wrapper that kills them when this process's pipe
//! to it closes, so even a `kill -9` of `compare` leaves no server behind):
//!
//! - `locksmith`: the real `locksmith server` binary as a child process (`target/release/
//!   locksmith`, beside this one), embedded store in a temporary directory (every grant and
//!   release fsynced before the reply), over the binary wire protocol (one connection per
//!   client, one request in flight at a time) — what a deployment runs, a process of its own as
//!   etcd and Redis are;
//! - `locksmith-http`: the same server process over its HTTP/JSON API;
//! - `locksmith-etcd3`: the binary in cluster mode (`locksmith server --etcd URLS`) on its own
//!   real 3-member etcd 3.4 cluster on loopback (default fsync): one Locksmith server, elected
//!   leader, whose every grant and release is an etcd transaction committed by a quorum before
//!   the reply (over HTTP: cluster mode has no wire listener);
//! - `locksmith-inproc` (only when named in `--systems`): the server in this process, on the
//!   load generator's own tokio runtime, over the wire protocol. Not what a deployment runs: a
//!   request and its answer can be carried by one runtime thread without a cross-process
//!   wake-up, so with spare cores it reads faster than any server of its own (1 client:
//!   ≈ 0.44 vs ≈ 0.95 ms a cycle on a busy host); kept to separate the server's own cost from
//!   the wake-ups;
//! - `etcd`: one `/usr/bin/etcd` member (3.4), default fsync; its lock API with leases;
//! - `redis-aof`: `/usr/bin/redis-server --appendonly yes --appendfsync always` (durable);
//! - `redis-mem`: `/usr/bin/redis-server --appendonly no` (in memory only).
//!
//! Every server stays up for the whole run (the 3 etcd members of `locksmith-etcd3` too), idle
//! while another system is measured; all share the machine's cores with the load generator.
//!
//! Rows are interleaved — for each (workload, clients) and each repetition, every system runs in
//! turn — so slow drift of the machine spreads over all systems. The table shows the median of
//! the repetitions for each (workload, clients, system), and Locksmith's ops/s divided by each
//! peer's.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use locksmith_bench::peers::{self, EtcdTarget, RedisTarget};
use locksmith_bench::server_process::{ServerProcess, locksmith_binary};
use locksmith_bench::{Row, Target, cycles, handoff, renewals};
use locksmith_etcd::testing::EtcdCluster;
use locksmith_server::{Server, ServerConfig, ServerError};

const REDIS_BIN: &str = "/usr/bin/redis-server";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    Locksmith,
    LocksmithHttp,
    LocksmithEtcd3,
    LocksmithInproc,
    Etcd,
    RedisAof,
    RedisMem,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Locksmith => "locksmith",
            System::LocksmithHttp => "locksmith-http",
            System::LocksmithEtcd3 => "locksmith-etcd3",
            System::LocksmithInproc => "locksmith-inproc",
            System::Etcd => "etcd",
            System::RedisAof => "redis-aof",
            System::RedisMem => "redis-mem",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Cycles,
    Handoff,
    Renew,
}

#[derive(Debug, Parser)]
#[command(about = "Locksmith vs etcd vs Redis on the same lock workloads (medians of --reps runs)")]
struct Args {
    /// Repetitions of every (workload, clients, system) run; the table shows medians.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Systems to run, in table order.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [System::Locksmith, System::LocksmithHttp, System::LocksmithEtcd3,
                              System::Etcd,
                              System::RedisAof, System::RedisMem])]
    systems: Vec<System>,
    /// Workloads to run.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Workload::Cycles, Workload::Handoff, Workload::Renew])]
    workloads: Vec<Workload>,
    /// Client counts for the acquire+release cycle workload.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    cycle_clients: Vec<usize>,
    /// Client counts for the contended handoff workload.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 16, 64])]
    handoff_clients: Vec<usize>,
    /// Client counts for the renewal workload.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize])]
    renew_clients: Vec<usize>,
    /// Renewals each renew client keeps in flight on its one connection (one lease each), one
    /// row per value: 1 is one round trip at a time; more is pipelined the same way for every
    /// system (the wire protocol and Redis pipeline on the connection, etcd multiplexes its
    /// keep-alive streams over HTTP/2, HTTP/1.1 opens more connections).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8])]
    renew_in_flight: Vec<usize>,
    /// Redis handoff: sleep between `SET NX` attempts while the lock is held, ms.
    #[arg(long, default_value_t = 1)]
    redis_retry_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.reps == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        bail!("--reps and --seconds must be positive");
    }
    if args.systems.is_empty() || args.workloads.is_empty() {
        bail!("nothing to run: --systems and --workloads must not be empty");
    }
    // Servers first (synchronously); the runtime is dropped before them, so every client
    // connection is closed by the time they stop.
    let etcd = if args.systems.contains(&System::Etcd) {
        eprintln!("starting etcd ...");
        Some(start_etcd(1)?)
    } else {
        None
    };
    let etcd3 = if args.systems.contains(&System::LocksmithEtcd3) {
        eprintln!("starting a 3-member etcd cluster for locksmith-etcd3 ...");
        Some(start_etcd(3)?)
    } else {
        None
    };
    let redis_aof = if args.systems.contains(&System::RedisAof) {
        eprintln!("starting redis (appendfsync always) ...");
        Some(RedisServer::start(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])?)
    } else {
        None
    };
    let redis_mem = if args.systems.contains(&System::RedisMem) {
        eprintln!("starting redis (in memory) ...");
        Some(RedisServer::start(&["--appendonly", "no"])?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let peers = Peers {
        etcd: etcd.as_ref().map(|c| c.endpoints()),
        etcd3: etcd3.as_ref().map(|c| c.endpoints()),
        redis_aof: redis_aof.as_ref().map(RedisServer::url),
        redis_mem: redis_mem.as_ref().map(RedisServer::url),
    };
    // On Ctrl-C or SIGTERM, stop cleanly: the guards below (and Locksmith's) then run.
    let result = rt.block_on(async {
        tokio::select! {
            r = run(&args, &peers) => r,
            r = interrupted() => r,
        }
    });
    drop(rt);
    drop((etcd, etcd3, redis_aof, redis_mem));
    result
}

/// Resolves (with an error) on SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    bail!("interrupted: stopping every server this run started")
}

/// Where the peers listen.
#[derive(Debug)]
struct Peers {
    etcd: Option<Vec<String>>,
    /// The 3-member cluster under `locksmith-etcd3`.
    etcd3: Option<Vec<String>>,
    redis_aof: Option<String>,
    redis_mem: Option<String>,
}

fn start_etcd(members: usize) -> anyhow::Result<EtcdCluster> {
    // `EtcdCluster` is a test helper and panics (with etcd's log) when etcd does not come up.
    std::panic::catch_unwind(|| EtcdCluster::start(members))
        .map_err(|_| anyhow::anyhow!("cannot start etcd (see the message above)"))
}

/// A Redis server on a free loopback port with its own temp dir, killed on drop.
#[derive(Debug)]
struct RedisServer {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    // Last: removed after Redis has stopped (see `Drop`).
    _dir: tempfile::TempDir,
}

/// Starts the server in the background and waits for a line (or EOF: this process is gone,
/// however it ended) on stdin, then kills it and removes its directory.
const WRAPPER: &str = r#"
"$@" </dev/null >/dev/null 2>&1 &
pid=$!
read -r _ || true
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
[ -n "$LOCKSMITH_REDIS_DIR" ] && rm -rf "$LOCKSMITH_REDIS_DIR"
exit 0
"#;

impl RedisServer {
    fn start(mode: &[&str]) -> anyhow::Result<Self> {
        if !Path::new(REDIS_BIN).exists() {
            bail!(
                "{REDIS_BIN} is missing: apt-get install redis-server (scripts/bench-compare does)"
            );
        }
        let mut last = anyhow::anyhow!("not started");
        // A port picked as free may be taken before Redis binds it: try again with another.
        for _ in 0..3 {
            match Self::try_start(mode) {
                Ok(server) => return Ok(server),
                Err(e) => {
                    eprintln!("redis start failed: {e:#}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn try_start(mode: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("locksmith-compare-redis")
            .tempdir()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let log = dir.path().join("redis.log");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("locksmith-redis-wrapper")
            .arg(REDIS_BIN)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            // No RDB snapshots in either mode: a background save forking mid-run would be noise.
            .args(["--save", "", "--daemonize", "no"])
            .args(mode)
            .env("LOCKSMITH_REDIS_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut wrapper = command.spawn().context("run /bin/sh to start redis")?;
        let stdin = wrapper.stdin.take();
        let server = Self {
            wrapper,
            stdin,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.ping() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("redis on port {port} did not answer PING within 10 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        let _ = BufReader::new(&mut s).read_line(&mut line);
        line.starts_with("+PONG")
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper kill Redis and wait for it.
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
        // `dir` is dropped (removed) after this, once Redis has stopped.
    }
}

/// The server in this process (embedded store, on the load generator's runtime): stopped on
/// drop (the shutdown sender goes away).
#[derive(Debug)]
struct InProcess {
    url: String,
    wire: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
    // Last: removed after the server has stopped.
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Embedded store in a temporary directory.
    async fn start() -> anyhow::Result<Self> {
        let dir = temp_dir()?;
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse()?,
            wire_listen: Some("127.0.0.1:0".parse()?),
            data_dir: dir.path().to_path_buf(),
            gc_interval: Duration::from_secs(1),
            auth: locksmith_server::AuthMode::Off,
            ..ServerConfig::default()
        };
        let server = Server::bind(config).await?;
        let url = format!("http://{}", server.local_addr());
        let wire = server
            .wire_addr()
            .context("the in-process server has no wire listener")?
            .to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            url,
            wire,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        })
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

fn temp_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("locksmith-compare")
        .tempdir()?)
}

/// One (workload, clients) row of the plan.
#[derive(Debug, Clone, Copy)]
struct Plan {
    workload: Workload,
    clients: usize,
    /// Renewals each client keeps in flight (1 for the other workloads).
    in_flight: usize,
}

async fn run(args: &Args, peers: &Peers) -> anyhow::Result<()> {
    let wants = |systems: &[System]| systems.iter().any(|s| args.systems.contains(s));
    let locksmith = if wants(&[System::Locksmith, System::LocksmithHttp]) {
        eprintln!("starting the locksmith server binary ...");
        Some(LocksmithProcess::start(&[], STARTS_WITHIN).await?)
    } else {
        None
    };
    let locksmith_etcd3 = match &peers.etcd3 {
        Some(endpoints) if wants(&[System::LocksmithEtcd3]) => {
            eprintln!(
                "starting the locksmith server binary in cluster mode on the 3-member etcd cluster ..."
            );
            let urls = endpoints.join(",");
            Some(LocksmithProcess::start(&["--etcd", &urls], ELECTED_WITHIN).await?)
        }
        _ => None,
    };
    let inproc = if wants(&[System::LocksmithInproc]) {
        Some(InProcess::start().await?)
    } else {
        None
    };
    let servers = Servers {
        locksmith: locksmith.as_ref(),
        locksmith_etcd3: locksmith_etcd3.as_ref(),
        inproc: inproc.as_ref(),
    };
    let machine = locksmith_bench::procfs::MachineNote::start();
    let mut plan = Vec::new();
    for &workload in &args.workloads {
        let counts = match workload {
            Workload::Cycles => &args.cycle_clients,
            Workload::Handoff => &args.handoff_clients,
            Workload::Renew => &args.renew_clients,
        };
        let depths: &[usize] = match workload {
            Workload::Renew => &args.renew_in_flight,
            Workload::Cycles | Workload::Handoff => &[1],
        };
        for &clients in counts {
            plan.extend(depths.iter().map(|&in_flight| Plan {
                workload,
                clients,
                in_flight,
            }));
        }
    }
    let d = Duration::from_secs_f64(args.seconds);
    let retry = Duration::from_millis(args.redis_retry_ms);
    let pid = std::process::id();
    let total = plan.len() * args.reps * args.systems.len();
    eprintln!(
        "{total} runs of {:.1} s: about {:.0} s",
        args.seconds,
        total as f64 * (args.seconds + 0.3)
    );
    // results[row][system] = one Row per repetition
    let mut results: Vec<Vec<Vec<Row>>> = vec![vec![Vec::new(); args.systems.len()]; plan.len()];
    for (p, row) in plan.iter().enumerate() {
        for rep in 0..args.reps {
            for (s, &system) in args.systems.iter().enumerate() {
                let prefix = format!("cmp-{pid}-{p}-{rep}");
                let r = run_one(system, *row, d, prefix, retry, &servers, peers)
                    .await
                    .with_context(|| {
                        format!(
                            "{:?} with {} clients on {}",
                            row.workload,
                            row.clients,
                            system.name()
                        )
                    })?;
                eprintln!(
                    "{:>7} C={:<3} rep {}/{} {:<15} {:>8.0} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms  viol {} err {}",
                    r.workload,
                    r.clients,
                    rep + 1,
                    args.reps,
                    system.name(),
                    r.ops_per_sec,
                    r.p50_ms,
                    r.p99_ms,
                    r.violations,
                    r.errors
                );
                results[p][s].push(r);
            }
            // Let the servers settle (compaction of the previous run's keys, fsync backlog).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let Some(server) = inproc {
        server.shutdown().await?;
    }
    let table = markdown(args, &plan, &results);
    let mut out = std::io::stdout().lock();
    write!(out, "{table}\n{}\n", machine.describe())?;
    Ok(())
}

/// The Locksmith servers of this run.
#[derive(Debug, Clone, Copy)]
struct Servers<'a> {
    locksmith: Option<&'a LocksmithProcess>,
    locksmith_etcd3: Option<&'a LocksmithProcess>,
    inproc: Option<&'a InProcess>,
}

/// The real `locksmith server` binary as a child process (killed on drop; see
/// `locksmith_bench::server_process`), with its address and wire address.
#[derive(Debug)]
struct LocksmithProcess {
    url: String,
    /// None in cluster mode (HTTP only).
    wire: Option<String>,
    _server: ServerProcess,
    // Last: removed after the server is gone.
    _dir: tempfile::TempDir,
}

/// How long the server binary may take to start on an empty data directory.
const STARTS_WITHIN: Duration = Duration::from_secs(30);
/// How long a cluster-mode server may take to win its election and serve.
const ELECTED_WITHIN: Duration = Duration::from_secs(30);

impl LocksmithProcess {
    /// `locksmith server EXTRA…` on an empty data directory; returns once `/healthz` answers
    /// 200 (in cluster mode: once it has won the election).
    async fn start(extra: &[&str], within: Duration) -> anyhow::Result<Self> {
        let bin = locksmith_binary(None)?;
        let dir = temp_dir()?;
        let data = dir.path().join("data");
        let log = dir.path().join("server");
        let (server, _) = ServerProcess::start(&bin, &data, &log, extra, within)
            .await
            .with_context(|| {
                format!(
                    "start {} (build it with `cargo build --release -p locksmith --features etcd`, as scripts/bench-compare does)",
                    bin.display()
                )
            })?;
        Ok(Self {
            url: server.url(),
            wire: server.wire_addr().map(|a| a.to_string()),
            _server: server,
            _dir: dir,
        })
    }
}

async fn run_one(
    system: System,
    row: Plan,
    d: Duration,
    prefix: String,
    retry: Duration,
    servers: &Servers<'_>,
    peers: &Peers,
) -> anyhow::Result<Row> {
    let c = row.clients;
    match system {
        System::Locksmith
        | System::LocksmithHttp
        | System::LocksmithEtcd3
        | System::LocksmithInproc => {
            let not_running = || format!("{} is not running", system.name());
            let (url, wire) = match system {
                System::LocksmithInproc => {
                    let server = servers.inproc.with_context(not_running)?;
                    (server.url.clone(), Some(server.wire.clone()))
                }
                System::LocksmithEtcd3 => {
                    let server = servers.locksmith_etcd3.with_context(not_running)?;
                    (server.url.clone(), None)
                }
                System::Locksmith => {
                    let server = servers.locksmith.with_context(not_running)?;
                    let wire = server.wire.clone().context("no wire listener")?;
                    (server.url.clone(), Some(wire))
                }
                // locksmith-http: the same server process, over HTTP.
                _ => {
                    let server = servers.locksmith.with_context(not_running)?;
                    (server.url.clone(), None)
                }
            };
            let t = Target {
                url,
                wire,
                prefix,
                token: None,
                tls: None,
            };
            match row.workload {
                Workload::Cycles => cycles(&t, c, d).await,
                Workload::Handoff => handoff(&t, c, d).await,
                Workload::Renew => renewals(&t, c, row.in_flight, d).await,
            }
        }
        System::Etcd => {
            let endpoints = peers.etcd.clone().context("etcd is not running")?;
            let t = EtcdTarget {
                endpoints,
                prefix: format!("/{prefix}"),
            };
            match row.workload {
                Workload::Cycles => peers::etcd_cycles(&t, c, d).await,
                Workload::Handoff => peers::etcd_handoff(&t, c, d).await,
                Workload::Renew => peers::etcd_renewals(&t, c, row.in_flight, d).await,
            }
        }
        System::RedisAof | System::RedisMem => {
            let url = if system == System::RedisAof {
                peers.redis_aof.clone()
            } else {
                peers.redis_mem.clone()
            }
            .context("redis is not running")?;
            let t = RedisTarget { url, prefix, retry };
            match row.workload {
                Workload::Cycles => peers::redis_cycles(&t, c, d).await,
                Workload::Handoff => peers::redis_handoff(&t, c, d).await,
                Workload::Renew => peers::redis_renewals(&t, c, row.in_flight, d).await,
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn markdown(args: &Args, plan: &[Plan], results: &[Vec<Vec<Row>>]) -> String {
    let mut s = format!(
        "Medians of {} runs of {:.1} s each. ops/s: cycles/s, handoffs/s or renewals/s; \
         p50/p99: per cycle, wait to hold, or per renewal; handoff: from one holder leaving its \
         critical section (just before its release) to the next one entering; FIFO: runs where no \
         grant overtook a client asking ≥ 1 ms longer (total overtakes).\n\n",
        args.reps, args.seconds
    );
    s.push_str(
        "| workload | clients | system | ops/s | p50 ms | p99 ms | handoff p50/p99 ms \
         | Locksmith ÷ system (ops/s) | FIFO runs (overtakes) | per-client min/max | violations | errors |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|\n",
    );
    let locksmith_col = args.systems.iter().position(|&s| s == System::Locksmith);
    for (p, row) in plan.iter().enumerate() {
        let ops = |s: usize| median(results[p][s].iter().map(|r| r.ops_per_sec).collect());
        let ours = locksmith_col.map(ops);
        for (si, system) in args.systems.iter().enumerate() {
            let reps = &results[p][si];
            let theirs = ops(si);
            let ratio = match ours {
                Some(o) if theirs > 0.0 => format!("{:.2}", o / theirs),
                _ => "-".into(),
            };
            // Fairness of the median run (by ops/s).
            let mut by_ops: Vec<&Row> = reps.iter().collect();
            by_ops.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            let mid = by_ops.get(by_ops.len() / 2);
            let fifo = if row.workload == Workload::Handoff {
                let yes = reps.iter().filter(|r| r.fifo == Some(true)).count();
                let overtakes: u64 = reps.iter().filter_map(|r| r.overtakes).sum();
                format!("{yes}/{} ({overtakes})", reps.len())
            } else {
                "-".into()
            };
            let min_max = mid
                .and_then(|r| r.per_client_min_max)
                .map_or("-".into(), |(a, b)| format!("{a}/{b}"));
            let gaps: Vec<(f64, f64)> = reps.iter().filter_map(|r| r.handoff_ms).collect();
            let handoff = if gaps.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{:.3}/{:.3}",
                    median(gaps.iter().map(|g| g.0).collect()),
                    median(gaps.iter().map(|g| g.1).collect())
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} |",
                reps.first().map_or("?", |r| r.workload.as_str()),
                row.clients,
                system.name(),
                theirs,
                median(reps.iter().map(|r| r.p50_ms).collect()),
                median(reps.iter().map(|r| r.p99_ms).collect()),
                handoff,
                ratio,
                fifo,
                min_max,
                reps.iter().map(|r| r.violations).sum::<u64>(),
                reps.iter().map(|r| r.errors).sum::<u64>(),
            );
        }
    }
    s
}
