//! `locksmith rollout …`: rolling a config revision out to the fleet from the command line.
//! Shared here: the client, how a refused call about a rollout reads, and the clock for ages.
//!
//! - `request`: the start flags as a `StartRolloutRequest`, checked locally by the server's
//!   own parser before any call;
//! - `start`: `rollout start` (and `--dry-run`, rendered by `plan`);
//! - `status`: `rollout status [--watch]`, rendered by `view` (header, endpoints, landings) and
//!   `progress` (one bar or plain line per wave);
//! - `list`: `rollout ls` and `rollout history`;
//! - `act`: approve, pause, resume, abort, cancel.

mod act;
mod list;
mod plan;
mod progress;
mod request;
mod start;
mod status;
mod view;

use std::time::{SystemTime, UNIX_EPOCH};

use locksmith_api::rollouts::{OutcomeKind, RolloutPhase, RolloutView};
use locksmith_client::{Client, ClientError};

use crate::cli::{Global, RolloutCommand};
use crate::exit::Exit;
use crate::failure::{Context, Failure};

pub async fn rollout(global: &Global, command: RolloutCommand) -> anyhow::Result<Exit> {
    match command {
        RolloutCommand::Start(args) => start::start(global, *args).await,
        RolloutCommand::Status(args) => status::status(global, args).await,
        RolloutCommand::Ls(args) => list::ls(global, args).await,
        RolloutCommand::History(args) => list::history(global, args).await,
        RolloutCommand::Approve(args) => act::approve(global, args).await,
        RolloutCommand::Pause(args) => act::pause(global, args).await,
        RolloutCommand::Resume(args) => act::resume(global, args).await,
        RolloutCommand::Abort(args) => act::abort(global, args).await,
        RolloutCommand::Cancel(args) => act::cancel(global, args).await,
    }
}

/// The failure context of a call about `subject` (a rollout id or a config name).
fn ctx(subject: &str) -> Context<'_> {
    Context {
        subject,
        wait_flag: "--wait",
    }
}

/// A client for `--server`.
fn client_for(global: &Global, subject: &str) -> Result<Client, Failure> {
    super::client(global, ctx(subject))
}

/// The line for a refused call about `subject`; `next` is the step to suggest when the server
/// refused the operator action itself (its message says why).
fn failure(e: &ClientError, subject: &str, next: &str) -> Failure {
    let _ = next;
    Failure::from_client(e, ctx(subject))
}

/// Refuses a config name the server would refuse, before any round trip.
fn check_config(name: &str) -> Result<(), Failure> {
    locksmith_config::validate_name(name).map_err(|e| {
        Failure::invalid(
            name,
            "config name",
            e,
            "name it like a relative path, e.g. fleet/aim_lock_config.conf",
        )
    })
}

/// Whether no event changes the rollout any more.
fn is_over(view: &RolloutView) -> bool {
    matches!(view.phase, RolloutPhase::Ended | RolloutPhase::Cancelled)
}

/// How `status --watch` exits once the rollout is over: 0 only if it succeeded.
fn exit_of(view: &RolloutView) -> Exit {
    match (view.phase, view.outcome.as_ref().map(|o| o.kind)) {
        (RolloutPhase::Ended, Some(OutcomeKind::Succeeded)) => Exit::Ok,
        (RolloutPhase::Ended | RolloutPhase::Cancelled, _) => Exit::RolloutNotSucceeded,
        (RolloutPhase::Queued | RolloutPhase::Running, _) => Exit::Ok,
    }
}

/// The local wall clock, Unix ms: only for phrasing ages.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
