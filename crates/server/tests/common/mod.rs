//! A real server on 127.0.0.1:0 over a real store — the embedded one, or a real etcd started
//! on loopback ports — for the HTTP tests.
#![allow(dead_code)]

pub mod prometheus;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use locksmith_etcd::testing::EtcdCluster;
use locksmith_store::{EmbeddedStore, Store};

use locksmith_client::api::AcquireRequest;
use locksmith_client::events::EventStream;
use locksmith_client::{Client, WireClient};
use locksmith_core::{AuditRecord, Owner};
use locksmith_server::clock::ManualClock;
use locksmith_server::engine::Engine;
use locksmith_server::local::LocalClient;
use locksmith_server::{AuthMode, Server, ServerConfig};

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// redb in a temp dir.
    Embedded,
    /// A single-member etcd on loopback ports, shared by the test binary; each storage its own
    /// key prefix.
    Etcd,
}

/// Storage that outlives a server, so a test can stop one and start another on the same data.
#[derive(Debug)]
pub struct Storage {
    backend: Backend,
    dir: tempfile::TempDir,
    prefix: String,
}

fn shared_etcd() -> &'static EtcdCluster {
    static ETCD: OnceLock<EtcdCluster> = OnceLock::new();
    ETCD.get_or_init(|| EtcdCluster::start(1))
}

impl Storage {
    /// New, empty storage on `backend`.
    pub fn fresh(backend: Backend) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            backend,
            dir: tempfile::tempdir().expect("tempdir"),
            prefix: format!("/t{}-{n}/", std::process::id()),
        }
    }

    /// The data directory servers on this storage use (`admin.token` is written there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn open(&self) -> Box<dyn Store> {
        match self.backend {
            Backend::Embedded => Box::new(EmbeddedStore::open(self.dir.path()).expect("open")),
            Backend::Etcd => Box::new(
                locksmith_etcd::EtcdStore::open(&shared_etcd().endpoints(), &self.prefix, None)
                    .expect("open etcd store"),
            ),
        }
    }
}

pub struct TestServer {
    pub url: String,
    /// The wire protocol's address, when the config asked for a wire listener.
    pub wire: Option<String>,
    /// The served engine, for calls in-process.
    pub engine: Engine,
    /// What the server was bound with.
    config: ServerConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    _storage: Option<Storage>,
}

impl TestServer {
    /// A server on fresh storage of `backend`.
    pub async fn start_on(backend: Backend) -> Self {
        Self::start_on_tweaked(backend, |_| {}).await
    }

    /// A server on fresh storage of `backend`, after letting `tweak` adjust its config.
    pub async fn start_on_tweaked(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let storage = Storage::fresh(backend);
        let mut s = Self::on_tweaked(&storage, tweak).await;
        s._storage = Some(storage);
        s
    }

    /// A server on `storage` (which the caller keeps, to restart on it).
    pub async fn on(storage: &Storage) -> Self {
        Self::on_tweaked(storage, |_| {}).await
    }

    /// A server on `storage`, after letting `tweak` adjust its config.
    pub async fn on_tweaked(storage: &Storage, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = config(storage.dir.path());
        tweak(&mut config);
        let server = Server::bind_with_store(config, storage.open())
            .await
            .expect("bind");
        Self::serving(server)
    }

    pub async fn start() -> Self {
        Self::start_tweaked(|_| {}).await
    }

    /// A server in its own temp dir, after letting `tweak` adjust its config.
    pub async fn start_tweaked(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_with(dir.path(), tweak).await;
        s._dir = Some(dir);
        s
    }

    pub async fn start_in(path: &std::path::Path) -> Self {
        Self::start_with(path, |_| {}).await
    }

    /// Starts a server in `path` after letting `tweak` adjust its config.
    pub async fn start_with(path: &std::path::Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = config(path);
        tweak(&mut config);
        let server = Server::bind(config).await.expect("bind");
        Self::serving(server)
    }

    /// Serves a bound `server` (the caller keeps its storage).
    pub fn serving(server: Server) -> Self {
        let url = server.url();
        let wire = server.wire_addr().map(|a| a.to_string());
        let engine = server.engine().clone();
        let config = server.config().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async move {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        Self {
            url,
            wire,
            engine,
            config,
            stop: Some(tx),
            task: Some(task),
            _dir: None,
            _storage: None,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }

    /// The HTTP listener's `host:port`.
    pub fn addr(&self) -> &str {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, addr)| addr)
    }

    /// The lease calls on the served engine, in-process, answered as the server answers them.
    pub fn local(&self) -> LocalClient {
        LocalClient::new(self.engine.clone(), &self.config).expect("in-process client")
    }
}

/// The config of a test server on `data_dir`: listening on 127.0.0.1:0, reaping every 200 ms,
/// with authentication off — these tests are about locks; `tests/auth.rs` turns it on.
pub fn config(data_dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.to_path_buf(),
        gc_interval: Duration::from_millis(200),
        auth: AuthMode::Off,
        ..ServerConfig::default()
    }
}

/// A server with a wire listener, and a wire client of it.
pub async fn wire_server() -> (TestServer, WireClient) {
    let s =
        TestServer::start_tweaked(|c| c.wire_listen = Some("127.0.0.1:0".parse().expect("addr")))
            .await;
    let wire = WireClient::new(s.wire.clone().expect("wire listener"));
    (s, wire)
}

/// Runs the server on `clock`: every lease, wait, lock-delay and hold runs out when the test
/// advances it, and only then. The reaper's GC sweep is an hour of that clock apart, so nothing
/// but the clock's deadlines wakes it — a server that slept on the real clock instead would
/// never reach them in a test's time.
pub fn on_virtual_time(clock: &Arc<ManualClock>) -> impl FnOnce(&mut ServerConfig) + use<> {
    let clock = Arc::clone(clock);
    move |c: &mut ServerConfig| {
        c.clock = Some(clock);
        c.gc_interval = Duration::from_secs(3_600);
    }
}

/// How long a test waits for what the server does on its own once the virtual clock is past it
/// (the reaper's run, an event): far longer than that takes, far shorter than any TTL in the
/// tests — so a server that ignored the virtual clock fails in this time instead of passing
/// after the real one caught up.
pub const PROMPTLY: Duration = Duration::from_secs(5);

/// The next event on `events`, within [`PROMPTLY`].
pub async fn next_event(events: &mut EventStream) -> AuditRecord {
    tokio::time::timeout(PROMPTLY, events.next())
        .await
        .expect("the event, promptly")
        .expect("the stream reads")
        .expect("the stream is open")
}

pub fn owner(pid: u32) -> Owner {
    Owner {
        node: "node-7".into(),
        pid,
        start_time: 1000 + u64::from(pid),
        boot_id: "boot-a".into(),
        user: "orchestrator".into(),
        purpose: "test".into(),
        pid_ns: None,
    }
}

pub fn req(resource: &str, pid: u32) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        owner: owner(pid),
        ttl_ms: Some(5_000),
        wait_ms: None,
        slots: None,
        lock_delay_ms: None,
    }
}

/// A server's URL and a token to call its HTTP API with; each test file adds the calls it
/// needs in an `impl Api` of its own.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The same server, as another token.
    pub fn as_token(&self, token: &str) -> Self {
        Self::new(&self.url, token)
    }

    /// `METHOD path` with `body` as JSON: the status and the answer's JSON (`Null` if none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}
