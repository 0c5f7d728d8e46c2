//! # locksmith-server
//!
//! The Locksmith lock server: recovers the lock table from storage, serves the HTTP/JSON API
//! with axum, runs the reaper that reclaims expired leases, and shuts down gracefully.
//!
//! What it is not: the lock logic (that is `locksmith-core`, which this crate only drives) or the
//! storage engine (`locksmith-store`).

mod accept;
pub mod app;
pub mod clock;
#[cfg(feature = "etcd")]
pub mod cluster;
pub mod domains;
pub mod engine;
pub mod http;
pub mod local;
pub mod metrics;
mod own_node;
mod probe;
pub mod proxy;
mod reaper;
pub mod request;
pub mod routing;
mod status;
pub mod tls;
pub mod wire;

pub use accept::DEFAULT_MAX_CONNECTIONS;
pub use domains::fleetlock;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use locksmith_auth::{TOKEN_SPACE, TokenRecord, TokenTable};
use locksmith_core::{
    AuditKind, AuditRecord, LeaseChunk, LeasePreparer, Now, PreparedLeases, RestoreBuilder,
    Snapshot, TableConfig, Vantage,
};
use locksmith_store::{
    AuditQuery, Committer, EmbeddedStore, LeaseSink, Store, StoreError, StoreOptions,
};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, State};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address of the binary wire protocol's listener (see [`wire`]); `None` serves HTTP only.
    pub wire_listen: Option<SocketAddr>,
    /// Data directory of the embedded store.
    pub data_dir: PathBuf,
    /// Longest the reaper sleeps between sweeps.
    pub gc_interval: Duration,
    /// How often to check that holders on this node are alive (zero disables the probe).
    pub probe_interval: Duration,
    /// This server's node name, for the local liveness probe (default: the host name).
    pub node: Option<String>,
    /// Lock-delay for acquires that name none.
    pub default_lock_delay: Duration,
    /// FleetLock (Zincati reboot slots): prefix, group sizes, stale-after.
    pub fleetlock: fleetlock::FleetLockConfig,
    /// How long a client has to send a request head (HTTP: from the connection's start for its
    /// first request, from the head's first byte for the next ones) or its preamble (wire)
    /// before the server closes the connection; zero: no limit.
    pub header_timeout: Duration,
    /// How long a connection may sit with nothing under way and nothing sent (HTTP: between
    /// requests on a keep-alive connection; wire: no frame and no request under way) before
    /// the server closes it; zero: no limit. A response in progress — a waiting acquire, an
    /// event stream — is never idle.
    pub idle_timeout: Duration,
    /// How the embedded store is opened (audit retention, log segment size).
    pub store: StoreOptions,
    /// Most connections each listener (HTTP, wire) serves at once; one more is answered
    /// `too_many_connections` (503) and closed.
    pub max_connections: usize,
    /// The clock the engine runs on — every lease, wait, lock-delay and hold runs out on it —
    /// and the reaper sleeps on; `None`: the system clock. A
    /// [`ManualClock`](clock::ManualClock) runs the whole server on virtual time.
    pub clock: Option<Arc<dyn Clock>>,
    /// Whether requests must present a token (`--auth`; on by default).
    pub auth: AuthMode,
    /// Whether `/healthz` and `/metrics` need a token too (`--metrics-auth`).
    pub metrics_auth: bool,
    /// TLS for both listeners (`--tls-cert`, `--tls-key`; mutual TLS with `--tls-client-ca`);
    /// `None`: plain TCP. See [`tls`].
    pub tls: Option<tls::TlsConfig>,
    /// Largest config content accepted, in bytes (`--max-config-bytes`; default 1 MiB, and
    /// never more than one store record holds).
    pub max_config_bytes: usize,
    /// Prometheus' base URL (`--prometheus-url http://127.0.0.1:9090`) for rollouts' `prom:`
    /// gates; `None`: a rollout with one is refused (`gates_unavailable`).
    pub prometheus_url: Option<String>,
}

/// Whether the server authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every request but the anonymous routes presents a token; the first start creates an
    /// admin token in `DATA/admin.token`.
    #[default]
    On,
    /// For labs: nobody authenticates, every request acts as an administrator named
    /// `anonymous`. The server warns at start and `status` lists it as a problem.
    Off,
}

impl ServerConfig {
    /// The clock to run an engine on: [`ServerConfig::clock`], or the system clock starting
    /// now.
    pub(crate) fn engine_clock(&self) -> Arc<dyn Clock> {
        self.clock.clone().unwrap_or_else(SystemClock::shared)
    }
}

/// The default [`ServerConfig::header_timeout`]: long enough for any client on a slow link to
/// send a few hundred bytes, short enough that stalled connections cannot pile up.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`ServerConfig::idle_timeout`]: longer than clients keep idle pooled
/// connections (reqwest: 90 s), so a client rarely finds its connection closed under it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The connection timeouts of [`ServerConfig`], as the listeners use them (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// See [`ServerConfig::header_timeout`].
    pub(crate) header: Option<Duration>,
    /// See [`ServerConfig::idle_timeout`].
    pub(crate) idle: Option<Duration>,
}

impl Timeouts {
    pub(crate) fn of(config: &ServerConfig) -> Self {
        let limit = |d: Duration| (!d.is_zero()).then_some(d);
        Self {
            header: limit(config.header_timeout),
            idle: limit(config.idle_timeout),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            wire_listen: None,
            data_dir: PathBuf::from("./locksmith-data"),
            gc_interval: Duration::from_secs(1),
            probe_interval: Duration::from_millis(250),
            node: None,
            default_lock_delay: Duration::ZERO,
            fleetlock: fleetlock::FleetLockConfig::default(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            store: StoreOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            clock: None,
            auth: AuthMode::On,
            metrics_auth: false,
            tls: None,
            max_config_bytes: locksmith_config::DEFAULT_MAX_BYTES,
            prometheus_url: None,
        }
    }
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Storage could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(String),
    /// Cluster mode: etcd could not be reached or the election failed.
    #[error("cluster: {0}")]
    Cluster(String),
    /// This node's identity could not be read.
    #[error(transparent)]
    Host(#[from] locksmith_host::IdentityError),
    /// A setting is not valid; the server does not start with it.
    #[error(transparent)]
    Settings(#[from] fleetlock::InvalidFleetLock),
    /// The first admin token could not be made (see `domains::tokens::bootstrap`).
    #[error("cannot make the first admin token: {0}")]
    Bootstrap(String),
    /// The TLS certificate, key or client CA cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] locksmith_client::tls::TlsSetupError),
}

/// A bound, recovered server, ready to serve.
#[derive(Debug)]
pub struct Server {
    engine: Engine,
    listener: TcpListener,
    wire: Option<TcpListener>,
    config: ServerConfig,
    identity: NodeIdentity,
    settings: std::sync::Arc<app::Settings>,
    tls: Option<tls::Tls>,
}

impl Server {
    /// Opens the embedded store, recovers the lock table and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        // Settings first: a server that would refuse them does not touch the store.
        app::Settings::of(&config)?;
        load_tls(&config)?;
        let (dir, options) = (config.data_dir.clone(), config.store);
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open_with(&dir, options))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??;
        Self::bind_with_store(config, Box::new(store)).await
    }

    /// Like [`Server::bind`], over any [`Store`].
    pub async fn bind_with_store(
        config: ServerConfig,
        store: Box<dyn Store>,
    ) -> Result<Server, ServerError> {
        let settings = std::sync::Arc::new(app::Settings::of(&config)?);
        let tls = load_tls(&config)?;
        let identity = NodeIdentity::of(&config)?;
        let engine = recover(store, &identity, config.engine_clock()).await?;
        start_auth(&engine, &config).await?;
        let listener = bind_listener(config.listen).await?;
        let wire = match config.wire_listen {
            Some(addr) => Some(bind_listener(addr).await?),
            None => None,
        };
        Ok(Server {
            engine,
            listener,
            wire,
            config,
            identity,
            settings,
            tls,
        })
    }

    /// Whether both listeners speak TLS (so the server's URL is `https://`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The server's base URL: `http://` or `https://` and the address bound.
    pub fn url(&self) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The address the wire protocol's listener actually bound, if it has one.
    pub fn wire_addr(&self) -> Option<SocketAddr> {
        self.wire.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The engine, for in-process embedding and tests.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration it was bound with (e.g. for a [`LocalClient`](local::LocalClient) on
    /// its engine that answers as it does).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Every (method, path) the HTTP router serves, paths in axum's syntax
    /// (`/v1/locks/{*resource}`): the route table, which `/v1/openapi.json` describes.
    pub fn routes(&self) -> Vec<(&'static str, String)> {
        routing::endpoints(&domains::routes(&self.settings))
    }

    /// Every (method, path, permission) of the route table: what each route needs (see
    /// [`routing`]).
    pub fn route_permissions(&self) -> Vec<(&'static str, String, locksmith_auth::Permission)> {
        routing::permissions(&domains::routes(&self.settings))
    }

    /// Serves until `shutdown` resolves, then stops gracefully: queued waiters are answered,
    /// in-flight requests finish, the reaper stops, and the store is closed after its last batch.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            engine,
            listener,
            wire,
            config,
            identity,
            settings,
            tls,
        } = self;
        log_tls(&config);
        let tasks = EngineTasks::start(&engine, &config, &identity);
        let app = app::App::new(engine.clone(), settings, &identity);
        let router = router(app.clone());
        // One stop signal for both listeners, raised once waiters have been answered.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let waiters = engine.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: answering waiters, finishing in-flight requests");
            waiters.shut_down_waiters();
            let _ = stop_tx.send(true);
        });
        let timeouts = Timeouts::of(&config);
        let max = config.max_connections;
        let wire = wire.map(|l| {
            let serve = wire::serve(l, app, timeouts, max, tls.clone(), stop_rx.clone());
            tokio::spawn(serve)
        });
        http::serve(listener, router, timeouts, max, tls, stop_rx).await;
        if let Some(wire) = wire {
            let _ = wire.await;
        }
        tasks.stop().await;
        let closer = engine.clone();
        let closed = tokio::task::spawn_blocking(move || closer.close())
            .await
            .map_err(|e| ServerError::Serve(e.to_string()))?;
        closed?;
        tracing::info!("store closed cleanly");
        Ok(())
    }
}

/// Authentication at start: with `--auth off`, a warning; with it on, the first admin token if
/// the store has none (see `domains::tokens::bootstrap`).
pub(crate) async fn start_auth(engine: &Engine, config: &ServerConfig) -> Result<(), ServerError> {
    if config.auth == AuthMode::Off {
        tracing::warn!(
            "authentication is OFF (--auth off): anyone who reaches this server's ports may \
             take, break and hold any lock and read everything, as an administrator named \
             'anonymous'; for labs only — restart without --auth off"
        );
        return Ok(());
    }
    domains::tokens::bootstrap::admin_token(engine, config.auth, &config.data_dir).await?;
    Ok(())
}

/// This server's node name, boot id and PID namespace (for the local probe and the boot
/// watchdog).
#[derive(Debug, Clone)]
pub(crate) struct NodeIdentity {
    pub(crate) node: String,
    pub(crate) boot_id: String,
    /// The PID namespace whose `/proc` this server reads; `None` when it cannot name one (or
    /// `/proc` belongs to another namespace), and then it judges no holder by pid.
    pub(crate) pid_ns: Option<String>,
}

impl NodeIdentity {
    pub(crate) fn of(config: &ServerConfig) -> Result<Self, ServerError> {
        let node = match &config.node {
            Some(n) => n.clone(),
            None => locksmith_host::hostname()?,
        };
        let pid_ns = match locksmith_host::pid_namespace() {
            Ok(ns) => ns,
            Err(e) => {
                tracing::warn!(error = %e, "no holder is probed by pid: {}", e.next_step());
                None
            }
        };
        Ok(Self {
            node,
            boot_id: locksmith_host::boot_id()?,
            pid_ns,
        })
    }

    /// Where this server's verdicts on local holders come from.
    pub(crate) fn vantage(&self) -> Vantage<'_> {
        Vantage {
            node: &self.node,
            boot_id: &self.boot_id,
            pid_ns: self.pid_ns.as_deref(),
        }
    }
}

/// Loads the store, rebuilds the engine's state (every surviving lease counts as renewed now;
/// audit records are numbered on from the highest stored), starts the committer, and runs the
/// boot watchdog.
pub(crate) async fn recover(
    store: Box<dyn Store>,
    identity: &NodeIdentity,
    clock: Arc<dyn Clock>,
) -> Result<Engine, ServerError> {
    let started = clock.now();
    let (state, store) = restore_state(store, started).await?;
    tracing::info!(
        leases = state.locks.lease_count(),
        fence_high_water = state.locks.fence_high_water(),
        audit_seq = state.audit_seq,
        ended_remembered = state.locks.ended_count(),
        store = %store.describe(),
        took_ms = clock.now().mono.ms_since(started.mono),
        "recovered lock table; surviving leases count as renewed now"
    );
    let committer = Committer::spawn(store)?;
    let engine = Engine::new(state, committer, clock);
    // Boot watchdog: leases this node held under an older boot id belong to processes that
    // died with that boot — reclaim them before serving anyone.
    let (ghosts, _) = engine
        .report_liveness(identity.vantage(), "server-boot", Vec::new())
        .await?;
    if !ghosts.is_empty() {
        tracing::info!(
            ?ghosts,
            "reclaimed leases held on this node before its reboot"
        );
    }
    Ok(engine)
}

/// What [`restore_state`]'s reading thread hands its building thread, in this order.
enum Handoff {
    /// How many leases will come (a capacity hint).
    Expect(usize),
    Leases(PreparedLeases),
    /// The rest of the stored state; the last message.
    Rest(Snapshot),
}

/// How many of the newest audit records a booting server reads to remember why leases ended
/// (see [`recent_ends`]).
///
/// As many records as the table remembers ended leases while it runs
/// ([`TableConfig::ended_memory`]): of an acquire-and-release workload, about half are ends,
/// which at the fastest rate measured (16.8 k cycles/s) is the last 2 s before the crash and at
/// a few hundred a second the last several minutes: what a retried release (sent again as soon
/// as the server answers) or a broken holder's next heartbeat (within a third of its TTL) needs.
/// Measured at boot, release build, 2 vCPU VM: 80–120 ms from the embedded store, 0.2–0.3 s
/// from a local etcd (16,384 records: 25–60 ms and 50–80 ms) — against 0.8–1.7 s to restore
/// a million leases, and the embedded store's read overlaps the building of the table.
pub const BOOT_AUDIT_SCAN: usize = 65_536;

/// The newest [`BOOT_AUDIT_SCAN`] audit records that end a lease, oldest first: what the
/// restored table is told ([`LockTable::remember_ended`](locksmith_core::LockTable::remember_ended)) so that a renew or release that
/// arrives after a restart is answered as before it — `already_released` for a retried
/// release whose first answer was lost to the crash, `broken` naming who and why for a
/// broken holder — instead of "ended, cause unknown". A store that cannot answer costs only
/// that memory: the server starts anyway, and says so in its log.
fn recent_ends(store: &mut dyn Store) -> Vec<AuditRecord> {
    match store.audit(&AuditQuery::recent(BOOT_AUDIT_SCAN)) {
        Ok(mut records) => {
            records.retain(|r| matches!(r.kind, AuditKind::Ended { .. }));
            records
        }
        Err(error) => {
            tracing::warn!(
                %error,
                "cannot read the audit log at boot: leases that ended before the restart will \
                 be reported as ended for an unknown cause"
            );
            Vec::new()
        }
    }
}

/// Reads the store and builds the state from it at the same time, on two threads. At a million
/// leases a restart is all CPU, so it is cut in two halves of about the same cost: on one
/// thread the store reads and decodes the leases, and a [`LeasePreparer`] makes table leases
/// of them (their allocations and first touches of fresh memory); they go through a short
/// channel, a few thousand at a time, to the other thread, where a [`RestoreBuilder`] indexes
/// them as they come. Every lease counts as renewed at `now`. Then the reading thread reads
/// the newest lease ends from the audit log ([`recent_ends`]) while the building thread
/// finishes, and the table is told them. The audit sequence goes on from the store's highest.
async fn restore_state(
    mut store: Box<dyn Store>,
    now: Now,
) -> Result<(State, Box<dyn Store>), ServerError> {
    /// Chunks between the two threads: enough that neither waits for the other's hiccups,
    /// few enough that they stay in cache.
    const IN_FLIGHT: usize = 4;
    let (handoff, handed) = std::sync::mpsc::sync_channel::<Handoff>(IN_FLIGHT);
    let mut builder = RestoreBuilder::new(TableConfig::default(), now);
    let preparer = builder.preparer();
    let build = tokio::task::spawn_blocking(move || {
        for message in handed {
            match message {
                Handoff::Expect(leases) => builder.reserve(leases),
                Handoff::Leases(leases) => builder.prepared(leases),
                Handoff::Rest(rest) => return Some(builder.finish(rest)),
            }
        }
        // The reader stopped before the end; its error says why.
        None
    });
    let load = tokio::task::spawn_blocking(move || {
        let mut sink = Handover { handoff, preparer };
        let loaded = store.load_streaming(&mut sink).and_then(|rest| {
            let audit_seq = rest.audit_seq;
            sink.handoff
                .send(Handoff::Rest(rest))
                .map(|()| audit_seq)
                .map_err(|_| builder_gone())
        });
        // `load` is done: the audit log may be read now (the `Store` contract).
        let ends = match loaded {
            Ok(_) => recent_ends(&mut *store),
            Err(_) => Vec::new(),
        };
        (loaded, ends, store)
    });
    let (loaded, ends, store) = load.await.map_err(|e| StoreError::Io(e.to_string()))?;
    // A panic while building is the error to report, rather than the reader's "builder gone".
    let built = build.await.map_err(|e| StoreError::Io(e.to_string()))?;
    let audit_seq = loaded?;
    let mut table = built.ok_or_else(builder_gone)?;
    table.remember_ended(&ends);
    let (tokens, configs, agents, rollouts, store) = tokio::task::spawn_blocking(move || {
        let mut store = store;
        let tokens = restore_tokens(&mut *store);
        let configs = restore_configs(&mut *store);
        let agents = restore_agents(&mut *store);
        let rollouts = restore_rollouts(&mut *store);
        (tokens, configs, agents, rollouts, store)
    })
    .await
    .map_err(|e| StoreError::Io(e.to_string()))?;
    Ok((
        State::new(table, audit_seq)
            .with_tokens(tokens?)
            .with_configs(configs?)
            .with_agents(agents?)
            .with_rollouts(rollouts?),
        store,
    ))
}

/// Calls `each` with every record of `space`, in key order, reading a page at a time.
fn each_record(
    store: &mut dyn Store,
    space: &str,
    mut each: impl FnMut(&str, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    const PAGE: usize = 1_000;
    let mut after: Option<String> = None;
    loop {
        let page = store.records(space, "", after.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        for (key, value) in page {
            each(&key, &value)?;
            after = Some(key);
        }
        if !full {
            return Ok(());
        }
    }
}

/// Every stored token (the `tokens` record space). A record that does not decode is skipped
/// with a warning: it authenticates nobody, and every other token still works.
fn restore_tokens(store: &mut dyn Store) -> Result<TokenTable, StoreError> {
    let mut tokens = TokenTable::new();
    each_record(store, TOKEN_SPACE, |key, value| {
        match TokenRecord::from_bytes(value) {
            Some(record) => tokens.restore(record),
            None => {
                tracing::warn!(token = %key, "a stored token does not decode; it authenticates nobody")
            }
        }
        Ok(())
    })?;
    Ok(tokens)
}

/// Every config's head, revisions and schema, from their record spaces (blobs are not read:
/// content is read on demand). Unlike a token, a config record that does not restore stops the
/// start: serving a history with a hole in it — or letting the next write reuse a revision
/// number — would be worse than not serving (the error names the record).
fn restore_configs(store: &mut dyn Store) -> Result<locksmith_config::Configs, StoreError> {
    use locksmith_config::store::{HEADS, REVISIONS, SCHEMAS};
    let mut restorer = locksmith_config::Restorer::new();
    for space in [HEADS, REVISIONS, SCHEMAS] {
        each_record(store, space, |key, value| {
            restorer
                .record(space, key, value)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })?;
    }
    restorer
        .finish()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Every rollout (the `rollouts` record space). A record that does not restore stops the
/// start: resuming a rollout without its state could tell an endpoint twice.
fn restore_rollouts(
    store: &mut dyn Store,
) -> Result<domains::rollouts::model::Rollouts, StoreError> {
    use domains::rollouts::model::{ROLLOUTS, Rollouts};
    let mut records = Vec::new();
    each_record(store, ROLLOUTS, |key, value| {
        records.push((key.to_owned(), value.to_vec()));
        Ok(())
    })?;
    Rollouts::restore(records).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Every registration and last report of the agents (the `agents` and `agent_reports` record
/// spaces). A record that does not decode is skipped with a warning, like a token's: that
/// agent's next registration or report writes it again.
fn restore_agents(store: &mut dyn Store) -> Result<domains::agents::model::Agents, StoreError> {
    use domains::agents::model::{AGENTS, Agents, REPORTS, Registration, StoredReport};
    let mut regs = Vec::new();
    let mut reports = Vec::new();
    let skipped = |space: &str, key: &str| {
        tracing::warn!(space, key = %key, "a stored agent record does not decode; skipped");
    };
    each_record(store, AGENTS, |key, value| {
        match serde_json::from_slice::<Registration>(value) {
            Ok(reg) => regs.push(reg),
            Err(_) => skipped(AGENTS, key),
        }
        Ok(())
    })?;
    each_record(store, REPORTS, |key, value| {
        let node = key.split_once('/').map(|(n, _)| n.to_owned());
        match (node, serde_json::from_slice::<StoredReport>(value)) {
            (Some(node), Ok(report)) => reports.push((node, report)),
            _ => skipped(REPORTS, key),
        }
        Ok(())
    })?;
    Ok(Agents::restore(regs, reports))
}

/// The store's side of [`restore_state`]'s channel.
struct Handover {
    handoff: std::sync::mpsc::SyncSender<Handoff>,
    preparer: LeasePreparer,
}

impl LeaseSink for Handover {
    fn expect(&mut self, leases: usize) {
        // If the builder is gone, the next chunk's send says so.
        let _ = self.handoff.send(Handoff::Expect(leases));
    }

    fn leases(&mut self, chunk: &mut LeaseChunk) -> Result<(), StoreError> {
        let prepared = self.preparer.prepare(chunk);
        self.handoff
            .send(Handoff::Leases(prepared))
            .map_err(|_| builder_gone())
    }
}

fn builder_gone() -> StoreError {
    StoreError::Io("recovery stopped: the lock table builder is gone".to_owned())
}

/// The TLS of `config`, loaded (the files read and checked); `None` without TLS.
pub(crate) fn load_tls(config: &ServerConfig) -> Result<Option<tls::Tls>, ServerError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    Ok(Some(tls::Tls::load(tls)?))
}

/// Says in the log what TLS the listeners speak.
pub(crate) fn log_tls(config: &ServerConfig) {
    if let Some(tls) = &config.tls {
        tracing::info!(
            cert = %tls.cert.display(),
            client_ca = ?tls.client_ca,
            "the listeners speak only TLS{}",
            if tls.client_ca.is_some() {
                "; clients must show a certificate signed by --tls-client-ca, whose name is \
                 the node they act for"
            } else {
                ""
            }
        );
    }
}

pub(crate) async fn bind_listener(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Bind {
            addr,
            reason: e.to_string(),
        })
}

/// The HTTP router of `app`: every domain's routes (see `domains::routes`).
pub(crate) fn router(app: app::App) -> axum::Router {
    let routes = domains::routes(&app.settings);
    http::router(app, routes)
}

/// The background tasks that run beside an engine: the reaper, the rollouts driver and the
/// local probe.
pub(crate) struct EngineTasks {
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl EngineTasks {
    pub(crate) fn start(engine: &Engine, config: &ServerConfig, identity: &NodeIdentity) -> Self {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut handles = vec![
            tokio::spawn(reaper::run(
                engine.clone(),
                config.gc_interval,
                stop_rx.clone(),
            )),
            tokio::spawn(domains::rollouts::driver::run(
                engine.clone(),
                config.prometheus_url.clone(),
                stop_rx.clone(),
            )),
        ];
        match &identity.pid_ns {
            _ if config.probe_interval.is_zero() => {}
            Some(pid_ns) => handles.push(tokio::spawn(probe::run(
                engine.clone(),
                probe::Local {
                    node: identity.node.clone(),
                    boot_id: identity.boot_id.clone(),
                    pid_ns: pid_ns.clone(),
                },
                config.probe_interval,
                stop_rx,
            ))),
            None => tracing::warn!(
                "the local probe is off: this server cannot name the PID namespace its /proc \
                 shows, so no holder's pid means anything to it"
            ),
        }
        Self { stop, handles }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

#[cfg(test)]
mod recover_tests {
    use super::*;
    use locksmith_core::{FenceToken, LeaseId, LeaseRecord, LockTable, Mutation, Owner};

    /// Holds `leases` leases; its streaming load fails after `fail_after` chunks, if set.
    struct Stored {
        leases: u64,
        fail_after: Option<usize>,
    }

    fn record(i: u64) -> LeaseRecord {
        LeaseRecord {
            lease: LeaseId(i),
            resource: format!("fleet/node-{}/config-{}.conf", i / 100, i % 100),
            owner: Owner {
                node: format!("node-{}", i / 100),
                pid: 1_000 + (i % 100) as u32,
                start_time: 7,
                boot_id: format!("boot-{}", i / 100),
                user: "svc".to_owned(),
                purpose: "recover test".to_owned(),
                pid_ns: None,
            },
            token: FenceToken(i),
            ttl_ms: 60_000,
            slots: 1,
            granted_at_ms: 1_700_000_000_000,
            lock_delay_ms: 0,
        }
    }

    impl Store for Stored {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot {
                leases: (1..=self.leases).map(record).collect(),
                fence_high_water: self.leases + 5,
                audit_seq: 3,
                ..Snapshot::default()
            })
        }

        fn load_streaming(&mut self, sink: &mut dyn LeaseSink) -> Result<Snapshot, StoreError> {
            let Some(fail_after) = self.fail_after else {
                let mut snapshot = self.load()?;
                let leases = std::mem::take(&mut snapshot.leases);
                sink.expect(leases.len());
                let mut chunk = LeaseChunk::default();
                for part in leases.chunks(1_000) {
                    part.iter().for_each(|r| chunk.push(r.into()));
                    sink.leases(&mut chunk)?;
                    chunk.clear();
                }
                return Ok(snapshot);
            };
            for i in 0..fail_after {
                let mut chunk = LeaseChunk::default();
                chunk.push((&record(i as u64 + 1)).into());
                sink.leases(&mut chunk)?;
            }
            Err(StoreError::Corrupt("damaged after some chunks".to_owned()))
        }

        fn commit(&mut self, _batch: &[Mutation]) -> Result<(), StoreError> {
            Ok(())
        }

        fn audit(
            &mut self,
            _query: &locksmith_store::AuditQuery,
        ) -> Result<Vec<locksmith_core::AuditRecord>, StoreError> {
            Ok(Vec::new())
        }

        fn records(
            &mut self,
            _space: &str,
            _prefix: &str,
            _after: Option<&str>,
            _limit: usize,
        ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }

        fn describe(&self) -> String {
            "test".to_owned()
        }
    }

    #[tokio::test]
    async fn the_table_built_while_the_store_streams_is_the_table_restore_builds() {
        let leases = 10_500;
        let now = Now::at(5, 1_700_000_001_000);
        let store = Box::new(Stored {
            leases,
            fail_after: None,
        });
        let (state, _store) = restore_state(store, now).await.expect("restore");
        let table = state.locks;
        assert_eq!(state.audit_seq, 3, "numbered on from the stored audit seq");
        let whole = LockTable::restore(
            TableConfig::default(),
            Stored {
                leases,
                fail_after: None,
            }
            .load()
            .expect("load"),
            now,
        );
        assert_eq!(table.lease_count(), 10_500);
        assert_eq!(table.fence_high_water(), whole.fence_high_water());
        assert_eq!(table.next_deadline(), whole.next_deadline());
        assert_eq!(table.resources(now), whole.resources(now));
    }

    #[tokio::test]
    async fn a_store_failing_mid_stream_fails_recovery_with_its_error() {
        let store = Box::new(Stored {
            leases: 0,
            fail_after: Some(6),
        });
        match restore_state(store, Now::default()).await {
            Err(ServerError::Store(StoreError::Corrupt(reason))) => {
                assert!(reason.contains("damaged"), "{reason}");
            }
            other => panic!("expected the store's error, got {:?}", other.map(|_| ())),
        }
    }
}
