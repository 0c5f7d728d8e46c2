//! `locksmith agent`, `locksmith fleet …` and `locksmith config shadow`, as clap types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::parse_duration;

/// `locksmith agent`: the endpoint agent.
#[derive(Debug, Args)]
#[command(after_help = AGENT_HELP)]
pub struct AgentArgs {
    /// Labels fleet selectors match, comma-separated: role=drone,site=hangar-2.
    #[arg(long, value_name = "K=V,…")]
    pub labels: Option<String>,

    /// Where the agent keeps its state file and last-known-good copies (they survive restarts
    /// and reboots) [default: /var/lib/locksmith-agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// A config to apply and its target file: NAME=PATH (repeatable).
    #[arg(
        long = "config",
        value_name = "NAME=PATH",
        conflicts_with = "agent_file"
    )]
    pub configs: Vec<String>,

    /// Checks the staged file ($LOCKSMITH_FILE) before it replaces the target (`sh -c`).
    #[arg(long, value_name = "CMD", requires = "configs")]
    pub validate: Option<String>,

    /// Makes the service read the new file, e.g. `systemctl reload aimd`.
    #[arg(long, value_name = "CMD", requires = "configs")]
    pub reload: Option<String>,

    /// Confirms the service is healthy on the new file; failing restores last-known-good.
    #[arg(long, value_name = "CMD", requires = "configs")]
    pub health: Option<String>,

    /// Run the health hook again on the applied revision this often and report its result
    /// (fresh `metric` lines for rollout gates); a failing check is reported `failed` but
    /// rolls nothing back (0: off) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub health_interval: Option<Duration>,

    /// Each hook is killed (its whole process group) after this long [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hook_timeout: Option<Duration>,

    /// While this file exists no apply starts (e.g. a robot mid-task): reported `deferred`.
    #[arg(long, value_name = "FILE")]
    pub apply_lock: Option<PathBuf>,

    /// How often this node's lock holders are checked; dead ones are reported so their locks
    /// are freed (0: never) [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub probe_interval: Option<Duration>,

    /// How often the agent tells the server it is alive [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,

    /// The longest wait between two attempts to reach the server (the first is ~250 ms, each
    /// failure doubles it; half of each wait is random, so a fleet does not come back in
    /// lockstep).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub reconnect_max: Duration,

    /// Read the configs, hooks and settings from an agent file (TOML; see docs/agent.md); the
    /// flags above, when given, override its settings.
    #[arg(long, value_name = "FILE")]
    pub agent_file: Option<PathBuf>,
}

const AGENT_HELP: &str = "\
The agent authenticates with a `node` token bound to --node (the usual token discovery: \
--token-file, $LOCKSMITH_TOKEN, $LOCKSMITH_TOKEN_FILE), registers, keeps one stream of desired \
revisions open (reconnecting with backoff), and applies each config atomically: verify, stage \
beside the target, validate, rename, reload, health — restoring last-known-good on any failure. \
A revision not written under the config lock's current holder is refused with a `lock \
mismatch` line. It runs until SIGTERM or Ctrl-C.";

/// `locksmith fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// List endpoints: node, labels, online, last seen, each config's revision and state.
    #[command(visible_alias = "list")]
    Ls(FleetLsArgs),
    /// One endpoint in detail: every config's desired and applied revision and last report.
    Show(FleetShowArgs),
    /// Run thousands of simulated agents (the real agent core, in memory) against the server
    /// until Ctrl-C or SIGTERM (then exit 0), printing a status line every few seconds. Needs
    /// an admin token: it makes one node token per agent.
    Simulate(FleetSimulateArgs),
}

/// `locksmith fleet simulate`.
#[derive(Debug, Args)]
pub struct FleetSimulateArgs {
    /// How many agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,

    /// The chance an agent's health hook fails (for every revision after its first).
    #[arg(long, default_value_t = 0.0, value_name = "0..1")]
    pub fail_rate: f64,

    /// The chance an agent drops its stream now and then (5–20 s) and comes back.
    #[arg(long, default_value_t = 0.0, value_name = "0..1")]
    pub offline_rate: f64,

    /// The chance an agent's hooks take longer (0.5–3 s per apply).
    #[arg(long, default_value_t = 0.0, value_name = "0..1")]
    pub slow_rate: f64,

    /// The chance an agent reboots now and then (every 20–60 s; a new boot id).
    #[arg(long, default_value_t = 0.0, value_name = "0..1")]
    pub reboot_rate: f64,

    /// Draws which agents fail, go offline, are slow or reboot: the same seed, the same agents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// A config every agent applies (repeatable) [default: every config on the server].
    #[arg(long = "config", value_name = "NAME")]
    pub configs: Vec<String>,

    /// Node names are PREFIX-00000, PREFIX-00001, …
    #[arg(long, default_value = "sim")]
    pub prefix: String,

    /// How often to print the status line.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub every: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct FleetLsArgs {
    /// Only endpoints whose labels match every pair: role=drone,site=hangar-2.
    #[arg(long, value_name = "K=V,…", default_value = "")]
    pub selector: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FleetShowArgs {
    /// The node.
    pub node: String,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `locksmith config shadow NAME --rev N`.
#[derive(Debug, Args)]
pub struct ConfigShadowArgs {
    /// The config.
    pub name: String,

    /// The revision (usually a draft) to send as a shadow.
    #[arg(long, value_name = "N")]
    pub rev: u64,

    /// Endpoints whose labels match every pair: role=drone,site=hangar-2 [default: every
    /// endpoint that applies the config].
    #[arg(
        long = "select",
        value_name = "K=V,…",
        default_value = "",
        conflicts_with = "nodes"
    )]
    pub selector: String,

    /// Or these nodes, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub nodes: Vec<String>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
