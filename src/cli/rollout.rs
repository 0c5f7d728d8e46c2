//! `locksmith rollout …`: rolling a config revision out to the fleet, as clap types.
//!
//! The start flags keep the text as typed: the request carries it, and one parser
//! (`StartRolloutRequest::to_spec`, run here before any call and again by the server) says
//! what is wrong with a value, naming the flag.

use clap::{Args, Subcommand};

/// `locksmith rollout …`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Roll revision N of a config out: a canary, then waves, each gated on the endpoints'
    /// health; holds the lock configs/NAME for its whole run (a second rollout of the config
    /// queues behind it).
    #[command(after_help = START_HELP)]
    Start(Box<RolloutStartArgs>),
    /// Where a rollout stands: its waves' progress, each endpoint's state; --watch follows it
    /// to its end (exit 0 if it succeeded, 8 if not).
    #[command(after_help = STATUS_HELP)]
    Status(RolloutStatusArgs),
    /// The running and queued rollouts (--all: ended ones too), newest first.
    #[command(visible_alias = "list")]
    Ls(RolloutLsArgs),
    /// Every rollout of a config, ended ones included, newest first, with how each ended.
    History(RolloutHistoryArgs),
    /// Approve the hold point a rollout waits at (another operator than its starter).
    Approve(RolloutIdArgs),
    /// Pause a rollout where it is: nothing more is sent until `rollout resume`.
    Pause(RolloutIdArgs),
    /// Resume a paused rollout from where it paused (a bake starts over).
    Resume(RolloutIdArgs),
    /// End a rollout now and list where every endpoint is left.
    #[command(after_help = ABORT_HELP)]
    Abort(RolloutAbortArgs),
    /// Cancel a queued rollout (one that has not started).
    Cancel(RolloutIdArgs),
}

const START_HELP: &str = "\
Values are checked before anything is sent, with the server's own rules (a bad one exits 1 \
naming the flag). Waves are cumulative shares of the selected endpoints, canary included. \
--max-failures is per wave: a count, or a share of the wave rounded down; a wave fails when its \
failures are MORE than that. A silent endpoint, a gate with too few samples or without data is \
inconclusive and PAUSES the rollout: it never passes on a timeout. --urgent skips windows and \
the bake, never validation, gates, budgets or hold points. --window is \
[LABEL[=VALUE]@]HH:MM-HH:MM in UTC (repeatable). --gate is METRIC OP NUMBER over what agents \
report (`error_rate < 0.01`) or prom:QUERY OP NUMBER (the server needs --prometheus-url). \
--dry-run prints the plan (each wave's endpoints, the diff each would get, the queue it would \
wait behind) and stores nothing.";

const STATUS_HELP: &str = "\
Without --all, a rollout of more than 20 endpoints lists only those not `applied`, and counts \
the others. --watch redraws until the rollout ends, then lists every endpoint's landing \
revision; it exits 0 if the rollout succeeded and 8 if it was rolled back, frozen, aborted or \
cancelled. When stdout is not a terminal it prints one plain line per change instead of bars; \
with --json, one RolloutView per line.";

const ABORT_HELP: &str = "\
Without --rollback, endpoints confirmed on the new revision stay on it and every other touched \
endpoint goes back to its own last-known-good; with --rollback every touched endpoint goes back. \
Endpoints the rollout never reached are untouched. The lock configs/NAME is released.";

/// `rollout start`: each flag is one field of `StartRolloutRequest`, as typed.
#[derive(Debug, Args)]
pub struct RolloutStartArgs {
    /// The config, e.g. aim_lock_config.conf.
    pub config: String,

    /// The revision to roll out (a draft's too: it is promoted after the last wave passed).
    #[arg(long, value_name = "N")]
    pub rev: u64,

    /// Only endpoints with these labels [default: every endpoint applying the config].
    #[arg(long = "select", value_name = "K=V,…", default_value = "")]
    pub selector: String,

    /// The first wave: the first N selected endpoints by name, online ones first.
    #[arg(long, value_name = "N")]
    pub canary: Option<String>,

    /// The first wave: exactly these nodes.
    #[arg(long, value_name = "A,B,…")]
    pub canary_nodes: Option<String>,

    /// Cumulative shares of the selected endpoints, the last 100% [default: 100%].
    #[arg(long, value_name = "P%,…")]
    pub waves: Option<String>,

    /// Waves of P%, 2P%, … 100%.
    #[arg(long, value_name = "P%")]
    pub linear: Option<String>,

    /// Each wave F times the endpoints reached before it, e.g. 2x.
    #[arg(long, value_name = "Fx")]
    pub exponential: Option<String>,

    /// How long the gates observe a wave after its endpoints reported [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub bake: Option<String>,

    /// Failures each wave tolerates: a count, or a share rounded down [default: 0].
    #[arg(long, value_name = "N|P%")]
    pub max_failures: Option<String>,

    /// Hold for approval after the canary or after each wave.
    #[arg(long, value_name = "canary|each-wave")]
    pub hold_after: Option<String>,

    /// Distinct operators (the starter excluded) each hold point needs.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub approvals: u32,

    /// What a failed wave does [default: rollback].
    #[arg(long, value_name = "rollback|freeze|pause")]
    pub on_failure: Option<String>,

    /// An update window, UTC, per label (repeatable).
    #[arg(long = "window", value_name = "[K[=V]@]HH:MM-HH:MM")]
    pub windows: Vec<String>,

    /// How long a sent endpoint may stay silent (and gate results lag) [default: 30m].
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,

    /// Skip windows and the bake (never validation, gates, budgets or hold points).
    #[arg(long)]
    pub urgent: bool,

    /// A health gate (repeatable): `error_rate < 0.01` or `prom:QUERY < 0.01`.
    #[arg(long = "gate", value_name = "EXPR")]
    pub gates: Vec<String>,

    /// A gate (or a wave's apply state) backed by fewer samples is inconclusive [default: 1].
    #[arg(long, value_name = "N")]
    pub min_samples: Option<u32>,

    /// A gate with no data at all passes instead of pausing.
    #[arg(long)]
    pub allow_no_data: bool,

    /// Print the plan and store nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the server's answer (the rollout, or the plan) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// The rollout, e.g. ro-4.
    pub id: String,

    /// Follow it until it ends, then list where every endpoint landed.
    #[arg(long)]
    pub watch: bool,

    /// List every endpoint, applied ones too.
    #[arg(long)]
    pub all: bool,

    /// Print the rollout as JSON (with --watch: one line per change).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RolloutLsArgs {
    /// Only this config's rollouts.
    pub config: Option<String>,

    /// Ended and cancelled rollouts too.
    #[arg(long)]
    pub all: bool,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RolloutHistoryArgs {
    /// The config.
    pub config: String,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RolloutIdArgs {
    /// The rollout, e.g. ro-4.
    pub id: String,

    /// Print the rollout as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RolloutAbortArgs {
    /// The rollout, e.g. ro-4.
    pub id: String,

    /// Send every touched endpoint back to its own last-known-good, confirmed ones too.
    #[arg(long)]
    pub rollback: bool,

    /// Print the rollout as JSON.
    #[arg(long)]
    pub json: bool,
}
