//! The command line, as clap types. Parsing only: what each command does lives in `cmd/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use locksmith_api::Role;

use crate::credentials::{Secret, parse_secret};
use crate::exit::EXIT_CODES_HELP;
use crate::output::{Column, parse_column};

mod agent;
mod config;
mod rollout;
pub use agent::*;
pub use config::*;
pub use rollout::*;

/// Ghost-proof locks for fleets: a lock server and its command-line client.
#[derive(Debug, Parser)]
#[command(name = "locksmith", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct Global {
    /// Base URL of the Locksmith server.
    #[arg(
        long,
        global = true,
        env = "LOCKSMITH_SERVER",
        default_value = "http://127.0.0.1:7400",
        value_name = "URL",
        value_parser = parse_server
    )]
    pub server: String,

    /// This node's name: recorded as the lock owner's node, and the node whose holders `why`,
    /// `locks` and `status` check for liveness [default: this host's name].
    #[arg(long, global = true, env = "LOCKSMITH_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// Who you are, for holds, acknowledgements, breaks and liveness reports (audited), when
    /// the server runs with --auth off; with authentication on the server records the token's
    /// name instead [default: USER@NODE].
    #[arg(long, global = true, env = "LOCKSMITH_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,

    /// The API token (`lsm_…`) to send. Other users can see a command line (`ps`): prefer
    /// --token-file or $LOCKSMITH_TOKEN [default: --token-file, then $LOCKSMITH_TOKEN, then
    /// $LOCKSMITH_TOKEN_FILE, then ./locksmith-data/admin.token when readable].
    #[arg(long, global = true, value_name = "SECRET", value_parser = parse_secret,
          conflicts_with = "token_file")]
    pub token: Option<Secret>,

    /// A file holding the API token (as `token create` printed it; the quick start's is
    /// DATA/admin.token). Also $LOCKSMITH_TOKEN_FILE, after $LOCKSMITH_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// TLS to an https:// server.
    #[command(flatten)]
    pub tls: ClientTls,
}

/// How the CLI speaks TLS to an `https://` server (and, in the server, how a follower trusts
/// the leader's `https://` URL in cluster mode).
#[derive(Debug, Args)]
pub struct ClientTls {
    /// PEM file of the CA certificate(s) that sign the server's certificate: trusted instead
    /// of the system's roots for https:// servers.
    #[arg(long, global = true, env = "LOCKSMITH_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// PEM file of this client's certificate, for a server that requires one
    /// (--tls-client-ca): the node it names is the only node you may act as. With --key.
    #[arg(long, global = true, env = "LOCKSMITH_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// PEM file of --cert's private key.
    #[arg(long, global = true, env = "LOCKSMITH_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// The client library's TLS options.
    pub fn options(&self) -> locksmith_client::TlsOptions {
        locksmith_client::TlsOptions {
            ca_file: self.ca_file.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// `--server`: refused as a usage error (exit 2) unless it is an http(s) URL with a host, so a
/// typo is not reported as a server that is down (exit 5).
fn parse_server(raw: &str) -> Result<String, String> {
    locksmith_client::check_base_url(raw).map(|()| raw.to_string())
}

/// One variant per command; each carries its own argument struct so that adding a command
/// (e.g. `bench`) is one variant here and one arm in `main::dispatch`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lock server (embedded storage; data in --data).
    Server(Box<ServerArgs>),
    /// Acquire a lock and print its lease id and fencing token.
    #[command(after_help = with_exit_codes(ACQUIRE_HELP))]
    Acquire(AcquireArgs),
    /// Renew a lease (a heartbeat): its TTL starts again.
    Renew(LeaseArgs),
    /// Release a lease.
    Release(LeaseArgs),
    /// List locks, like lslocks: one row per holder.
    Locks(LocksArgs),
    /// Run a command while holding a lock, like flock(1) or `consul lock`.
    #[command(after_help = with_exit_codes(RUN_HELP))]
    Run(RunArgs),
    /// Explain a lock in one screen: state, holders (alive?), queue, holds, history, next step.
    #[command(after_help = with_exit_codes(WHY_HELP))]
    Why(WhyArgs),
    /// Is everything healthy? Ends in ALL CLEAR (exit 0), or lists each problem (exit 6).
    #[command(after_help = with_exit_codes(STATUS_HELP))]
    Status(StatusArgs),
    /// Freeze a resource: no new grants for a bounded time (existing holders keep their lease).
    #[command(after_help = with_exit_codes(HOLD_HELP))]
    Hold(HoldArgs),
    /// Acknowledge a pending hold (as a different operator) so that it takes effect.
    Ack(HoldIdArgs),
    /// Lift a hold before it ends.
    Unhold(HoldIdArgs),
    /// The safe bypass: freeze, revoke the lease, advance the fence, audit.
    #[command(after_help = with_exit_codes(BREAK_HELP))]
    Break(BreakArgs),
    /// Show the audit trail: grants, ends (and why), holds, acknowledgements, breaks.
    Audit(AuditArgs),
    /// Follow events as they happen, one line each, until Ctrl-C.
    Watch(WatchArgs),
    /// Manage API tokens (admin role): create one (its secret is printed once), list, revoke.
    #[command(subcommand, after_help = with_exit_codes(TOKEN_HELP))]
    Token(TokenCommand),
    /// Versioned configs that only the holder of the lock configs/NAME writes: put, get,
    /// history, diff, rollback, drafts and promotion, schemas.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the endpoint agent: apply configs to files atomically, checked, with
    /// last-known-good; refuse a stale fence locally; report dead local lock holders.
    Agent(Box<AgentArgs>),
    /// The endpoints running `locksmith agent`: what each runs and reported.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Roll a config revision out to the fleet: canary, waves, health gates, approvals,
    /// rollback; status, ls, history, approve, pause, resume, abort, cancel.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Replay the incident end to end — a server in a temporary directory, a simulated fleet,
    /// the ghost, the refused bypass, the hold point, the audited break, a gated rollout —
    /// with each step's real command and output, ending in ALL CLEAR.
    Demo(DemoArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Internal: the process `run` starts to own the lock and supervise its command.
    #[command(name = "run-supervisor", hide = true)]
    RunSupervisor(RunSupervisorArgs),
}

/// `locksmith demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Simulated endpoints.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// No pauses between the steps.
    #[arg(long)]
    pub fast: bool,
    /// Keep the server running at the end, printing its URL, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

/// The supervisor's one argument: the descriptor of its control socket to `run`.
#[derive(Debug, Args)]
pub struct RunSupervisorArgs {
    /// The control socket's descriptor, inherited from `run`.
    pub control_fd: i32,
}

/// A command's own notes, then the exit-code table.
fn with_exit_codes(notes: &str) -> String {
    format!("{notes}\n\n{EXIT_CODES_HELP}")
}

const ACQUIRE_HELP: &str = "\
The lease is owned by the PARENT process of `locksmith acquire` (the shell or script that runs \
it), not by this short-lived command: that process renews and releases the lease later, and \
the server may reclaim the lock early once it is known dead. When the parent is a subshell \
whose output is captured (`L=$(locksmith acquire R --json | jq .lease)`, a pipeline stage), \
the shell that forked it owns the lease instead. Use --pid to name the owner yourself, e.g. \
--pid $$ for the script.";

const RUN_HELP: &str = "\
The command sees LOCKSMITH_FENCE_TOKEN (the lease's fencing token), LOCKSMITH_LEASE, \
LOCKSMITH_RESOURCE and LOCKSMITH_SERVER, and inherits the rest of the environment (an API token \
in LOCKSMITH_TOKEN or LOCKSMITH_TOKEN_FILE included). \
`run` heartbeats the lease while the command runs; if the lease is lost (expired, reclaimed, \
released by someone else, or broken by an operator: the ERROR line then names who and why), it \
stops the command and everything it started (SIGTERM, then SIGKILL after 10s) and exits 4. \
Otherwise it releases the lock once the command and whatever it left running have exited, and \
exits with the command's status (128+N if killed by signal N). The command never outlives the \
lock: it runs under a supervisor that owns the lock and, if `run` dies (even by kill -9), kills \
everything the command started before the lock is freed. SIGTERM and SIGINT sent to `run` reach \
the command and everything it started; whatever is still running 10s later is killed (SIGKILL).";

const WHY_HELP: &str = "\
When a holder runs on this node (--node or the host name) under this boot and in this PID \
namespace, `why` checks that its process is alive; if it is gone (or its pid was reused), `why` \
reports it and the server reclaims the lock at once. A holder on this node under an older boot \
id died with that boot: reported too. Holders on other nodes, or in another PID namespace of \
this one (a container sharing its host name), are left to their TTL (run `why` there to check \
them). The queue shows its first 10 waiters (--json: all). Exits 0 whatever the lock's state; \
5 if the server cannot be reached.";

const STATUS_HELP: &str = "\
`status` also checks holders on this node, like `why`: dead ones are reported (and listed as \
fixed); a report the server refuses is listed as a `dead_holder` problem.";

const TOKEN_HELP: &str = "\
Roles: reader (every read), client (reader + acquire/renew/release/fence check under its \
--prefix es), node (a client bound to one --node: it locks and reports liveness only as that \
node), operator (holds, acks, lifts, breaks), admin (tokens). The CLI sends its token from \
--token or --token-file, else $LOCKSMITH_TOKEN, else $LOCKSMITH_TOKEN_FILE, else \
./locksmith-data/admin.token (written by the server's first start with authentication on).";

const HOLD_HELP: &str = "\
With --require-ack the hold is PENDING until a different operator runs `locksmith ack ID`; \
it lapses if nobody does within --for. While a hold is in force, acquire fails FROZEN (exit 3) \
or waits with --wait.";

const BREAK_HELP: &str = "\
Never a silent delete: the resource is frozen (--freeze, default 30s; 0 for none) so nothing \
re-grabs it mid-operation, the lease is revoked, the fence advances so the old holder's writes \
bounce, and an audit record names you (--operator) and --reason. The old holder's `run` stops \
its command and exits 4.";

/// `locksmith server --auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthSwitch {
    /// Requests authenticate with a token.
    On,
    /// Nobody authenticates (labs only).
    Off,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Data directory of the embedded store.
    #[arg(long, default_value = "./locksmith-data", value_name = "DIR")]
    pub data: PathBuf,

    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Address of the binary wire protocol (acquire/renew/release/fence check, pipelined), or
    /// `off` [default: the --listen address with port + 1, e.g. 127.0.0.1:7401; port 0 (a free
    /// one) if --listen's port is 0].
    #[arg(long, value_parser = parse_wire_listen, value_name = "ADDR|off")]
    pub wire_listen: Option<WireListen>,

    /// Whether requests must present a token. `on`: every route but /healthz, /metrics, the
    /// OpenAPI document and FleetLock's protocol needs one, and the first start writes an admin
    /// token to DATA/admin.token (mode 0600). `off`: for labs only — anyone who reaches the
    /// ports may do anything; the server warns at start and `status` lists it as a problem.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub auth: AuthSwitch,

    /// Let only token holders (any role) read /healthz and /metrics.
    #[arg(long)]
    pub metrics_auth: bool,

    /// Largest config content the server stores, in bytes (1 to 16777216: one store record).
    /// Larger content is refused with config_too_large; on etcd, run etcd with
    /// --max-request-bytes above it.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = parse_max_config_bytes, value_name = "BYTES")]
    pub max_config_bytes: usize,

    /// Prometheus' base URL, for rollout gates like --gate 'prom:QUERY < 0.01' (queried at the
    /// end of each wave's bake). Without it such a rollout is refused with gates_unavailable.
    #[arg(long, value_parser = parse_prometheus_url, value_name = "URL")]
    pub prometheus_url: Option<String>,

    /// Before serving, verify the checksum of every page of the embedded store's database file
    /// (a start after a clean stop skips this; one after a crash has redb verify what it
    /// repairs). Reads the whole file: about 1.5 s per GB.
    #[arg(long)]
    pub verify_store: bool,

    /// How often expired leases are reclaimed.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub gc_interval: Duration,

    /// Size of each write-ahead log segment, in bytes (at least 65536; the log takes two on
    /// disk). For tests, which reach a segment switch sooner with small ones.
    #[arg(long, hide = true, default_value_t = locksmith_store::EmbeddedStore::SEGMENT_BYTES, value_name = "BYTES")]
    pub log_segment_bytes: u64,

    /// How often the server checks that holders on its own node (--node) are alive; 0 disables.
    #[arg(long, default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
    pub probe_interval: Duration,

    /// Lock-delay for acquires that name none: after a holder fails (expires, dies, is broken)
    /// nobody gets the lock for this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub lock_delay: Duration,

    /// Close a connection whose request head (HTTP) or preamble (wire) is not complete this long
    /// after it connected — or, for a later request, after the head's first byte; 0: no limit.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub header_timeout: Duration,

    /// Close a connection that has nothing under way and sends nothing for this long (HTTP:
    /// between requests; wire: no frame); a waiting acquire or an event stream is never idle;
    /// 0: no limit. Keep it above a minute: clients reuse a connection idle for up to that.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Most connections each listener (HTTP, wire) serves at once; one more is answered with
    /// the error too_many_connections (503) and closed. Each connection takes a file
    /// descriptor: keep it below the open-file limit.
    #[arg(long, default_value_t = locksmith_server::DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections, value_name = "N")]
    pub max_connections: usize,

    /// FleetLock (Zincati reboot slots): URL path prefix of <PREFIX>/v1/pre-reboot and
    /// <PREFIX>/v1/steady-state; Zincati's base_url is http://HOST:PORT<PREFIX>/.
    #[arg(long, default_value = "/fleetlock", value_name = "PATH")]
    pub fleetlock_prefix: String,

    /// FleetLock: how many nodes of a reboot group may reboot at once (the semaphore
    /// reboot/<group>). Change a group's at runtime with PUT /v1/fleetlock/groups/<group>.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub fleetlock_slots: u32,

    /// FleetLock: one group's slots, instead of --fleetlock-slots (repeatable).
    #[arg(long = "fleetlock-group-slots", value_parser = parse_group_slots, value_name = "GROUP=N")]
    pub fleetlock_group_slots: Vec<GroupSlots>,

    /// Cluster mode: serve from this etcd cluster (comma-separated client URLs) instead of the
    /// embedded store; several servers may share it (one leads, the others forward to it).
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub etcd: Vec<String>,

    /// Cluster mode: key prefix in etcd.
    #[arg(long, default_value = "/locksmith/", value_name = "PREFIX")]
    pub etcd_prefix: String,

    /// Cluster mode: the URL other servers forward to while this one leads
    /// [default: http://<listen address>, https:// with --tls-cert].
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,

    /// Cluster mode: election lease TTL — how long a dead leader leaves the cluster leaderless.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub election_ttl: Duration,

    /// FleetLock: reclaim a reboot slot whose holder has not asked again for this long
    /// [default: never — FleetLock clients send no heartbeats; free a lost one with `break`].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub fleetlock_stale_after: Option<Duration>,

    // --- TLS (issue 17): the server's side. ---
    #[command(flatten)]
    pub tls: ServerTls,
}

/// `locksmith server`'s TLS: its listeners', and etcd's in cluster mode.
#[derive(Debug, Args)]
pub struct ServerTls {
    /// PEM file of the server's certificate (chain, leaf first): both listeners (HTTP and
    /// wire) then speak only TLS, and the server's URL is https://. With --tls-key.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of --tls-cert's private key.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: PEM file of the CA that signs client certificates. Every client must show
    /// one, and the node it names (first DNS name, else common name) is the only node it may
    /// act as (acquire as owner.node, report liveness for). Not in cluster mode.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Cluster mode: PEM file of the CA that signs etcd's certificates, for https:// --etcd
    /// URLs [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub etcd_ca_file: Option<PathBuf>,

    /// Cluster mode: PEM file of this server's client certificate, for an etcd run with
    /// --client-cert-auth. With --etcd-key.
    #[arg(long, requires = "etcd_key", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,

    /// Cluster mode: PEM file of --etcd-cert's private key.
    #[arg(long, requires = "etcd_cert", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
}

impl ServerTls {
    /// The listeners' TLS, if --tls-cert is given.
    pub fn listeners(&self) -> Option<locksmith_server::tls::TlsConfig> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(locksmith_server::tls::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            // clap requires both or neither.
            _ => None,
        }
    }

    /// Whether any etcd TLS file is given.
    pub fn etcd_files(&self) -> bool {
        self.etcd_ca_file.is_some() || self.etcd_cert.is_some() || self.etcd_key.is_some()
    }
}

/// `--max-connections N`: at least 1.
fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a number of connections: {e}")),
    }
}

/// `--fleetlock-group-slots GROUP=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSlots {
    /// The reboot group.
    pub group: String,
    /// Its slot count.
    pub slots: u32,
}

/// `--wire-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireListen {
    /// Serve the wire protocol here.
    At(SocketAddr),
    /// HTTP only.
    Off,
}

impl WireListen {
    /// The wire address for a server listening for HTTP on `listen`, given the flag's value.
    pub fn resolve(flag: Option<WireListen>, listen: SocketAddr) -> Option<SocketAddr> {
        match flag {
            Some(WireListen::At(addr)) => Some(addr),
            Some(WireListen::Off) => None,
            None => {
                let port = match listen.port() {
                    0 => 0,
                    p => p.checked_add(1)?,
                };
                Some(SocketAddr::new(listen.ip(), port))
            }
        }
    }
}

/// Parses `--wire-listen`: `off`, or an address such as `127.0.0.1:7401`.
pub fn parse_wire_listen(s: &str) -> Result<WireListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(WireListen::Off);
    }
    s.parse::<SocketAddr>()
        .map(WireListen::At)
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:7401, or off"))
}

/// Parses `GROUP=N`: a FleetLock group name and a slot count of at least 1.
pub fn parse_group_slots(s: &str) -> Result<GroupSlots, String> {
    let (group, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not GROUP=N (e.g. workers=2)"))?;
    let group = group.trim();
    locksmith_server::fleetlock::validate_group(group)
        .map_err(|e| format!("group {group:?}: {e}"))?;
    let slots = n
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{n:?} is not a slot count (a whole number, at least 1)"))?;
    Ok(GroupSlots {
        group: group.to_string(),
        slots,
    })
}

/// Options shared by the commands that acquire a lock.
#[derive(Debug, Args)]
pub struct LockOptions {
    /// Lease TTL: the lock is reclaimed if no heartbeat arrives within it.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Duration,

    /// Slot count: 1 for an exclusive lock, N for an N-slot semaphore.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub slots: u32,

    /// Why the lock is held [default: the owner's command line].
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,

    /// If this holder fails (expires, dies, is broken), nobody gets the lock for this long
    /// [default: the server's --lock-delay].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub lock_delay: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// Resource to lock, e.g. configs/aim_lock_config.conf.
    pub resource: String,

    #[command(flatten)]
    pub lock: LockOptions,

    /// How long to wait in the queue while the lock is HOT (0: fail at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub wait: Duration,

    /// Owner process id [default: the parent process, see below].
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Print the lease as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Lease id, as printed by `acquire`.
    pub lease: u64,

    /// The fencing token (`acquire` prints it): when given, the server also checks it is the
    /// lease's. (Not --token: that is the API token.)
    #[arg(long = "fence-token", value_name = "T")]
    pub fence_token: Option<u64>,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LocksArgs {
    /// Show only this resource (a FREE resource shows one FREE row).
    pub resource: Option<String>,

    /// Show only the resources whose names start with this, e.g. `--prefix fleet/drones/`.
    #[arg(long, conflicts_with = "resource", value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Print the server's JSON.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,

    /// Columns to show, comma-separated and case-insensitive, e.g. `-o resource,state,pid`.
    /// Known: RESOURCE, STATE, OWNER, NODE, PID, TOKEN, AGE, TTL-LEFT, LAST-HEARTBEAT, WAITERS,
    /// SLOTS (the default set), LEASE, PURPOSE, HOLD (hold ids; `(pending)` awaits an ack).
    #[arg(
        long,
        short = 'o',
        value_name = "COLS",
        value_delimiter = ',',
        value_parser = parse_column
    )]
    pub output: Option<Vec<Column>>,

    /// Do not check (and report) dead holders on this node before listing.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The resource to explain.
    pub resource: String,

    /// Print the explanation as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The resource to freeze.
    pub resource: String,

    /// How long the hold stays in force (once acknowledged, with --require-ack).
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// Why: recorded in the audit trail and shown to everyone who is refused.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,

    /// Take effect only once a different operator runs `locksmith ack ID`.
    #[arg(long)]
    pub require_ack: bool,

    /// Print the hold as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HoldIdArgs {
    /// The hold id, as printed by `hold` (or listed by `locks -o resource,hold`).
    pub hold: u64,

    /// Print the hold as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BreakArgs {
    /// The resource whose lock to break.
    pub resource: String,

    /// Why: recorded in the audit trail and told to the holder whose lease is revoked.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,

    /// Break only this lease (e.g. one slot of a semaphore) [default: every holder].
    #[arg(long, value_name = "ID")]
    pub lease: Option<u64>,

    /// Freeze the resource this long after the break, so nothing re-grabs it mid-operation
    /// (0: no freeze).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub freeze: Duration,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this resource.
    #[arg(long, value_name = "RESOURCE")]
    pub resource: Option<String>,

    /// Only records since then: a duration ago (`10m`, `2h`) or a time (RFC 3339, e.g.
    /// `2026-11-23T03:00:00Z`).
    #[arg(long, value_parser = parse_since, value_name = "WHEN")]
    pub since: Option<Since>,

    /// At most the newest N records [default: the server's, 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Print the records as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only events about this resource.
    pub resource: Option<String>,

    /// Print each event as one line of JSON.
    #[arg(long)]
    pub json: bool,
}

/// The start of an `audit --since` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Duration),
    /// This wall-clock time.
    At(std::time::SystemTime),
}

impl Since {
    /// The window's start as Unix ms, given the current wall clock.
    pub fn unix_ms(self, now_ms: u64) -> u64 {
        match self {
            Since::Ago(d) => {
                now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            Since::At(t) => t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }
}

/// Parses `--since`: a duration ago (`10m`, `90s`, `30`) or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<Since, String> {
    if let Ok(d) = parse_duration(s) {
        return Ok(Since::Ago(d));
    }
    humantime::parse_rfc3339_weak(s.trim())
        .map(Since::At)
        .map_err(|_| {
            format!("{s:?} is neither a duration (10m, 2h) nor a time (2026-11-23T03:00:00Z)")
        })
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Resource to lock.
    pub resource: String,

    /// Fail at once if the lock is HOT (do not wait).
    #[arg(short = 'n', long = "nonblock", conflicts_with = "wait")]
    pub no_wait: bool,

    /// Wait up to SECS for the lock [default: 24h, the server's maximum].
    #[arg(short = 'w', long = "wait", value_parser = parse_duration, value_name = "SECS")]
    pub wait: Option<Duration>,

    #[command(flatten)]
    pub lock: LockOptions,

    /// The command to run and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `locksmith token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print its secret — the only time anyone sees it.
    Create(TokenCreateArgs),
    /// List every token, revoked ones included (never a secret).
    #[command(visible_alias = "list")]
    Ls(TokenLsArgs),
    /// Revoke a token: it stops working at once; its event streams and wire connections close
    /// within a second.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
The token's node is the global --node flag, given on the command line (LOCKSMITH_NODE is not \
taken for it): required for --role node, refused for the other roles.")]
pub struct TokenCreateArgs {
    /// Who will hold it (a person, a service, a node's agent): the operator name of every
    /// hold, acknowledgement and break made with it.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// What it may do: reader, client, node, operator or admin.
    #[arg(long, value_parser = parse_role, value_name = "ROLE")]
    pub role: Role,

    /// A resource prefix a client or node token may lock (repeatable) [default: every
    /// resource].
    #[arg(long = "prefix", value_name = "P")]
    pub prefixes: Vec<String>,

    /// How long it works, e.g. 30d, 12h [default: until revoked].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Option<Duration>,

    /// Print the server's answer (with the secret, as `token`) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenLsArgs {
    /// Print the tokens as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id, as `token ls` lists it (e.g. tok-3).
    pub id: String,

    /// Print the revoked token as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--role`.
fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s.trim()).ok_or_else(|| {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("{s:?} is not a role; roles: {}", known.join(", "))
    })
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    pub shell: clap_complete::Shell,
}

/// Parses a duration: `15s`, `90s`, `2m`, `1h 30m`, `500ms`; a plain number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| format!("{s:?} is not a number of seconds"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 15s, 90s, 2m or 30"))
}

/// `--max-config-bytes`: 1 to [`MAX_RECORD_VALUE_LEN`](locksmith_core::keyspace::MAX_RECORD_VALUE_LEN)
/// (what one store record holds).
fn parse_max_config_bytes(s: &str) -> Result<usize, String> {
    let max = locksmith_core::keyspace::MAX_RECORD_VALUE_LEN;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a size in bytes from 1 to {max}")),
    }
}

/// `--prometheus-url`: an `http://` or `https://` URL with a host, without the trailing `/`
/// (the query path is appended to it).
fn parse_prometheus_url(s: &str) -> Result<String, String> {
    let url = s.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !rest.contains(char::is_whitespace) =>
        {
            Ok(url.to_owned())
        }
        _ => Err(format!(
            "{s:?} is not Prometheus' URL: give http://HOST:PORT (e.g. http://127.0.0.1:9090), with a path prefix if it has one"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn prometheus_urls_need_a_scheme_and_a_host_and_lose_a_trailing_slash() {
        assert_eq!(
            parse_prometheus_url("http://127.0.0.1:9090/"),
            Ok("http://127.0.0.1:9090".into())
        );
        assert_eq!(
            parse_prometheus_url("https://mon.example/prometheus"),
            Ok("https://mon.example/prometheus".into())
        );
        for bad in [
            "",
            "127.0.0.1:9090",
            "http://",
            "http:///x",
            "ftp://h",
            "http://a b",
        ] {
            assert!(parse_prometheus_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn durations_refuse_garbage() {
        for bad in ["", "abc", "-5", "15x", "1..5", "."] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert_eq!(parse_since("10m"), Ok(Since::Ago(Duration::from_secs(600))));
        let at = parse_since("1970-01-01T00:01:00Z").expect("time");
        assert_eq!(at.unix_ms(0), 60_000);
        assert_eq!(Since::Ago(Duration::from_secs(1)).unix_ms(5_000), 4_000);
        assert!(parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn hold_and_break_require_a_reason() {
        for args in [
            &["locksmith", "hold", "r", "--for", "90s"][..],
            &["locksmith", "hold", "r", "--reason", "x"][..],
            &["locksmith", "break", "r"][..],
        ] {
            let err = Cli::try_parse_from(args).expect_err("missing flag");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{args:?}"
            );
        }
        let cli = Cli::try_parse_from([
            "locksmith",
            "--operator",
            "alice",
            "hold",
            "r",
            "--for",
            "90s",
            "--reason",
            "clearing a stale lock",
            "--require-ack",
        ])
        .expect("parses");
        assert_eq!(cli.global.operator.as_deref(), Some("alice"));
        let Command::Hold(hold) = cli.command else {
            panic!("not hold: {:?}", cli.command);
        };
        assert_eq!(hold.duration, Duration::from_secs(90));
        assert!(hold.require_ack);
    }

    #[test]
    fn max_connections_is_a_positive_number_with_a_default() {
        let cli = Cli::try_parse_from(["locksmith", "server"]).expect("parse");
        let Command::Server(server) = cli.command else {
            panic!("not server");
        };
        assert_eq!(
            server.max_connections,
            locksmith_server::DEFAULT_MAX_CONNECTIONS
        );
        let cli =
            Cli::try_parse_from(["locksmith", "server", "--max-connections", "64"]).expect("parse");
        let Command::Server(server) = cli.command else {
            panic!("not server");
        };
        assert_eq!(server.max_connections, 64);
        assert!(Cli::try_parse_from(["locksmith", "server", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn fleetlock_flags_parse() {
        let cli = Cli::try_parse_from([
            "locksmith",
            "server",
            "--fleetlock-slots",
            "2",
            "--fleetlock-group-slots",
            "workers=3",
            "--fleetlock-group-slots",
            "db-1=1",
            "--fleetlock-stale-after",
            "2h",
        ])
        .expect("parses");
        let Command::Server(server) = cli.command else {
            panic!("not server: {:?}", cli.command);
        };
        assert_eq!(server.fleetlock_prefix, "/fleetlock");
        assert_eq!(server.fleetlock_slots, 2);
        assert_eq!(
            server.fleetlock_group_slots,
            [
                GroupSlots {
                    group: "workers".into(),
                    slots: 3
                },
                GroupSlots {
                    group: "db-1".into(),
                    slots: 1
                }
            ]
        );
        assert_eq!(
            server.fleetlock_stale_after,
            Some(Duration::from_secs(7200))
        );
        for bad in ["workers", "workers=0", "workers=x", "a_b=1", "=2"] {
            assert!(parse_group_slots(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let cli = Cli::try_parse_from([
            "locksmith",
            "run",
            "res",
            "-w",
            "5",
            "--ttl",
            "2s",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert_eq!(run.resource, "res");
        assert_eq!(run.wait, Some(Duration::from_secs(5)));
        assert_eq!(run.lock.ttl, Duration::from_secs(2));
        assert_eq!(run.command, ["sh", "-c", "exit 7"]);
    }

    #[test]
    fn run_refuses_both_no_wait_and_wait() {
        let err = Cli::try_parse_from(["locksmith", "run", "r", "-n", "-w", "5", "--", "true"])
            .expect_err("conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    // --- TLS (issue 17) ---
    #[test]
    fn tls_flags_come_in_pairs_and_the_client_ones_are_global() {
        let cli = Cli::try_parse_from([
            "locksmith",
            "locks",
            "--ca-file",
            "ca.pem",
            "--cert",
            "a.pem",
            "--key",
            "a.key",
        ])
        .expect("parse");
        let tls = cli.global.tls.options();
        assert_eq!(tls.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(tls.cert.as_deref(), Some(std::path::Path::new("a.pem")));
        assert_eq!(tls.key.as_deref(), Some(std::path::Path::new("a.key")));

        let cli = Cli::try_parse_from([
            "locksmith",
            "server",
            "--tls-cert",
            "s.pem",
            "--tls-key",
            "s.key",
            "--tls-client-ca",
            "ca.pem",
        ])
        .expect("parse");
        let Command::Server(server) = cli.command else {
            panic!("not server");
        };
        let listeners = server.tls.listeners().expect("TLS");
        assert_eq!(
            listeners.client_ca.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        for half in [
            &["locksmith", "server", "--tls-cert", "s.pem"][..],
            &["locksmith", "server", "--tls-key", "s.key"][..],
            &["locksmith", "server", "--tls-client-ca", "ca.pem"][..],
            &["locksmith", "server", "--etcd-cert", "e.pem"][..],
        ] {
            let err = Cli::try_parse_from(half).expect_err("half a pair");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{half:?}"
            );
        }
    }
}
