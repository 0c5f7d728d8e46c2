//! Real etcd for tests (feature `testing`): [`EtcdCluster`] runs one `etcd` process per member
//! on free loopback ports, and [`EtcdHarness`] runs the store conformance suite against it.
//!
//! Everything listens on 127.0.0.1 only. Each etcd runs under a tiny `sh` wrapper that holds a
//! pipe from the test process: when the test process goes away by any means — even `kill -9`,
//! when no destructor runs — the pipe closes, and the wrapper kills its etcd and removes its
//! data directory. So a crashed or timed-out test run leaves no etcd behind.
//!
//! These helpers panic, with the member's log attached, when etcd cannot be started: they are
//! for tests.
//!
//! [`EtcdCluster::start_tls`] starts members that serve clients over TLS only (`https://`
//! endpoints) and require a client certificate; [`TestPki`] makes the certificates.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use locksmith_store::conformance::Harness;
use locksmith_store::{Store, StoreOptions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::keys::Keys;
use crate::{EtcdOptions, EtcdStore};

pub use crate::test_pki::{CertFiles, TestPki};

/// Where the etcd binary is expected (Debian's `etcd-server` package); the environment
/// variable `LOCKSMITH_ETCD_BIN` overrides it.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// The `--max-txn-ops` test clusters run with, and what [`EtcdHarness`] tells its stores.
/// etcd's default of 128 is far too small for one job of a busy lock table; production
/// clusters need a large value too (see the crate docs).
pub const TEST_MAX_TXN_OPS: usize = 100_000;

/// The `--max-request-bytes` test clusters run with (10 MiB; etcd's default is 1.5 MiB).
pub const TEST_MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

/// How long a start or restart may take before it fails.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// The wrapper: starts etcd in the background, prints its pid, and waits for a line on stdin
/// (or EOF). Then it kills etcd and, unless the line was `keep`, removes the member's
/// directory (and the cluster's, once empty).
const WRAPPER: &str = r#"
"$@" >>"$LOCKSMITH_ETCD_DIR/etcd.log" 2>&1 </dev/null &
pid=$!
echo "$pid"
read -r command || command=""
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ "$command" != keep ] && [ -n "$LOCKSMITH_ETCD_DIR" ]; then
  rm -rf "$LOCKSMITH_ETCD_DIR"
  rmdir "$(dirname "$LOCKSMITH_ETCD_DIR")" 2>/dev/null
fi
exit 0
"#;

/// A real etcd cluster of one or more members on loopback ports, killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Mutex<Vec<Member>>,
    initial_cluster: String,
    token: String,
    extra_args: Vec<String>,
    tls: Option<EtcdServerTls>,
    bin: PathBuf,
    // Last: removed after every member has stopped (see `Drop`).
    dir: TempDir,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// With TLS: the plain-HTTP port of `/health` (`--listen-metrics-urls`), since the client
    /// port then speaks only TLS.
    metrics_port: Option<u16>,
    dir: PathBuf,
    process: Option<Process>,
}

impl Member {
    /// The port that answers `GET /health` in plain HTTP.
    fn health_port(&self) -> u16 {
        self.metrics_port.unwrap_or(self.client_port)
    }
}

/// How the members of a TLS cluster serve their clients: the certificate and key they show,
/// and the CA whose certificates they require of every client (etcd's `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdServerTls {
    /// The members' certificate (it must name `127.0.0.1`).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA that signs client certificates.
    pub client_ca: PathBuf,
}

#[derive(Debug)]
struct Process {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    etcd: Pid,
}

impl Process {
    /// Kills etcd with SIGKILL and waits for the wrapper, which keeps the member's data if
    /// `keep`.
    fn kill(mut self, keep: bool) {
        let _ = kill(self.etcd, Signal::SIGKILL);
        if let Some(mut stdin) = self.stdin.take() {
            if keep {
                let _ = stdin.write_all(b"keep\n");
            }
            drop(stdin);
        }
        let _ = self.wrapper.wait();
    }
}

impl EtcdCluster {
    /// Starts a cluster of `members` members and waits until every one is healthy. Panics if
    /// etcd is not installed or does not come up within 20 s.
    pub fn start(members: usize) -> Self {
        Self::start_with_args(members, &[])
    }

    /// [`start`](Self::start), with extra etcd flags after the defaults (a later flag wins,
    /// e.g. `["--max-txn-ops", "128"]` to get etcd's own default back).
    pub fn start_with_args(members: usize, extra_args: &[&str]) -> Self {
        Self::start_inner(members, extra_args, None)
    }

    /// [`start`](Self::start), with members that serve clients only over TLS — `https://`
    /// [`endpoints`](Self::endpoints) — and require a client certificate signed by
    /// `tls.client_ca`.
    pub fn start_tls(members: usize, tls: EtcdServerTls) -> Self {
        Self::start_inner(members, &[], Some(tls))
    }

    fn start_inner(members: usize, extra_args: &[&str], tls: Option<EtcdServerTls>) -> Self {
        assert!(members >= 1, "an etcd cluster needs at least one member");
        let bin =
            std::env::var_os("LOCKSMITH_ETCD_BIN").map_or_else(|| ETCD_BIN.into(), PathBuf::from);
        assert!(
            bin.exists(),
            "etcd is not installed: {} is missing. Install it with `apt-get install etcd-server` \
             (scripts/test does), or point LOCKSMITH_ETCD_BIN at an etcd 3.4+ binary.",
            bin.display()
        );
        let extra_args: Vec<String> = extra_args.iter().map(|&arg| arg.to_owned()).collect();
        let mut last_error = String::new();
        // A port picked as free may be taken before etcd binds it; try again with new ports.
        for attempt in 1..=3 {
            match Self::try_start(members, &bin, &extra_args, tls.as_ref()) {
                Ok(cluster) => return cluster,
                Err(error) => {
                    eprintln!("etcd cluster start attempt {attempt} failed: {error}");
                    last_error = error;
                }
            }
        }
        panic!("cannot start an etcd cluster of {members}: {last_error}");
    }

    fn try_start(
        members: usize,
        bin: &std::path::Path,
        extra_args: &[String],
        tls: Option<&EtcdServerTls>,
    ) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("locksmith-etcd-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let per_member = if tls.is_some() { 3 } else { 2 };
        let ports = free_ports(per_member * members)?;
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[per_member * i],
                peer_port: ports[per_member * i + 1],
                metrics_port: tls.map(|_| ports[per_member * i + 2]),
                dir: dir.path().join(format!("m{i}")),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let cluster = Self {
            members: Mutex::new(members),
            initial_cluster,
            token: format!("locksmith-test-{}-{nanos:x}", std::process::id()),
            extra_args: extra_args.to_vec(),
            tls: tls.cloned(),
            bin: bin.to_path_buf(),
            dir,
        };
        {
            let mut members = cluster.lock();
            for member in members.iter_mut() {
                std::fs::create_dir_all(&member.dir)
                    .map_err(|e| format!("cannot create {}: {e}", member.dir.display()))?;
                member.process = Some(cluster.spawn(member)?);
            }
        }
        cluster.wait_healthy(HEALTHY_WITHIN)?;
        Ok(cluster)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, member: &Member) -> Result<Process, String> {
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), member.client_port);
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("locksmith-etcd-wrapper")
            .arg(&self.bin)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(member.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(url(member.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(url(member.peer_port))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--max-txn-ops")
            .arg(TEST_MAX_TXN_OPS.to_string())
            .arg("--max-request-bytes")
            .arg(TEST_MAX_REQUEST_BYTES.to_string())
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .args(self.tls_args(member))
            .args(&self.extra_args)
            .env("LOCKSMITH_ETCD_DIR", &member.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // etcd reads its flags from ETCD_* variables too; none of the caller's may leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let mut wrapper = command
            .spawn()
            .map_err(|e| format!("cannot run /bin/sh to start etcd: {e}"))?;
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = wrapper.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let etcd = line
            .trim()
            .parse::<i32>()
            .map(Pid::from_raw)
            .map_err(|_| format!("the etcd wrapper printed {line:?} instead of a pid"))?;
        Ok(Process {
            wrapper,
            stdin,
            etcd,
        })
    }

    /// The etcd flags of a TLS member: its certificate, the client CA, and a plain port for
    /// `/health`.
    fn tls_args(&self, member: &Member) -> Vec<std::ffi::OsString> {
        let (Some(tls), Some(metrics)) = (&self.tls, member.metrics_port) else {
            return Vec::new();
        };
        vec![
            "--cert-file".into(),
            tls.cert.clone().into(),
            "--key-file".into(),
            tls.key.clone().into(),
            "--trusted-ca-file".into(),
            tls.client_ca.clone().into(),
            "--client-cert-auth".into(),
            "--listen-metrics-urls".into(),
            format!("http://127.0.0.1:{metrics}").into(),
        ]
    }

    /// `https` for a TLS cluster, else `http`.
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client URL of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = self.scheme();
        self.lock()
            .iter()
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme(),
            self.lock()[i].client_port
        )
    }

    /// The pid of member `i`'s etcd process while it runs: what a benchmark reads its CPU time
    /// and memory from (`/proc/PID`).
    pub fn pid(&self, i: usize) -> Option<i32> {
        self.lock()
            .get(i)
            .and_then(|m| m.process.as_ref())
            .map(|p| p.etcd.as_raw())
    }

    /// How many members the cluster has.
    pub fn members(&self) -> usize {
        self.lock().len()
    }

    /// Kills member `i` with SIGKILL (`kill -9`), keeping its data.
    pub fn kill_member(&self, i: usize) {
        if let Some(process) = self.lock()[i].process.take() {
            process.kill(true);
        }
    }

    /// Starts member `i` again on its data (killing it first if it runs) and waits until it is
    /// healthy — which needs a quorum of the cluster to be up.
    pub fn restart_member(&self, i: usize) {
        self.kill_member(i);
        {
            let mut members = self.lock();
            let process = self
                .spawn(&members[i])
                .unwrap_or_else(|e| panic!("cannot restart etcd member {i}: {e}"));
            members[i].process = Some(process);
        }
        let port = self.lock()[i].health_port();
        if let Err(error) = wait_until(HEALTHY_WITHIN, || healthy(port)) {
            panic!(
                "etcd member {i} is not healthy after a restart ({error}); its log ends:\n{}",
                self.log_tail(i)
            );
        }
    }

    /// Kills every member with SIGKILL, keeping the data.
    pub fn stop_all(&self) {
        for i in 0..self.members() {
            self.kill_member(i);
        }
    }

    /// Starts every stopped member again on its data and waits until all are healthy.
    pub fn restart_all(&self) {
        {
            let mut members = self.lock();
            for (i, member) in members.iter_mut().enumerate() {
                if member.process.is_none() {
                    let process = self
                        .spawn(member)
                        .unwrap_or_else(|e| panic!("cannot restart etcd member {i}: {e}"));
                    member.process = Some(process);
                }
            }
        }
        if let Err(error) = self.wait_healthy(HEALTHY_WITHIN) {
            panic!("{error}");
        }
    }

    /// Waits until every running member answers `/health` with `true`.
    pub fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let running: Vec<(usize, u16)> = self
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, m)| m.process.is_some())
            .map(|(i, m)| (i, m.health_port()))
            .collect();
        let deadline = Instant::now() + within;
        for (i, port) in running {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(error) = wait_until(left, || healthy(port)) {
                return Err(format!(
                    "etcd member {i} (health port {port}) is not healthy ({error}); its log \
                     ends:\n{}",
                    self.log_tail(i)
                ));
            }
        }
        Ok(())
    }

    /// The last lines of member `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let path = self.lock()[i].dir.join("etcd.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The cluster's temporary directory (one subdirectory per member).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in self.lock().iter_mut() {
            if let Some(process) = member.process.take() {
                process.kill(false);
            }
        }
    }
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Whether the member on `port` answers `GET /health` with `"health":"true"` (it has a leader
/// and served a read).
fn healthy(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

fn wait_until(within: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The conformance suite's [`Harness`] over an etcd cluster: every fresh store gets its own
/// prefix under `base_prefix`, so many checks can share one cluster, even concurrently (one
/// harness per thread).
#[derive(Debug)]
pub struct EtcdHarness {
    endpoints: Vec<String>,
    base_prefix: String,
    stores: u64,
    current: Option<(String, EtcdOptions)>,
}

impl EtcdHarness {
    /// A harness whose stores live under `base_prefix` on `endpoints`.
    pub fn new(endpoints: Vec<String>, base_prefix: &str) -> Self {
        Self {
            endpoints,
            base_prefix: crate::keys::normalize_prefix(base_prefix),
            stores: 0,
            current: None,
        }
    }

    fn open(&self) -> Box<dyn Store> {
        let (prefix, options) = self
            .current
            .as_ref()
            .expect("a store is reopened after `fresh` created it");
        Box::new(
            EtcdStore::open_with(&self.endpoints, prefix, None, options.clone())
                .expect("open an etcd store"),
        )
    }
}

impl Harness for EtcdHarness {
    fn fresh_with(&mut self, options: StoreOptions) -> Box<dyn Store> {
        self.stores += 1;
        let prefix = format!("{}{}/", self.base_prefix, self.stores);
        let options = EtcdOptions {
            store: options,
            max_txn_ops: TEST_MAX_TXN_OPS,
            max_request_bytes: TEST_MAX_REQUEST_BYTES,
            ..EtcdOptions::default()
        };
        self.current = Some((prefix, options));
        self.open()
    }

    fn reopen(&mut self, store: Box<dyn Store>) -> Box<dyn Store> {
        drop(store);
        self.open()
    }

    fn reopen_with(&mut self, store: Box<dyn Store>, options: StoreOptions) -> Box<dyn Store> {
        drop(store);
        if let Some((_, current)) = self.current.as_mut() {
            current.store = options;
        }
        self.open()
    }

    fn write_raw_lease(&mut self, store: Box<dyn Store>, id: u64, bytes: &[u8]) -> Box<dyn Store> {
        drop(store);
        let (prefix, options) = self
            .current
            .as_ref()
            .expect("write_raw_lease is called after fresh");
        let raw = EtcdStore::open_with(&self.endpoints, prefix, None, options.clone())
            .expect("open an etcd store for a raw write");
        raw.put_raw(&Keys::new(prefix).lease(id), bytes)
            .expect("write a raw lease");
        drop(raw);
        self.open()
    }
}
