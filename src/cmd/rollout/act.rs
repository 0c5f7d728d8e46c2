//! The operator actions on a rollout: approve, pause, resume, abort, cancel. Each prints the
//! rollout's new state in one line (abort: where every endpoint is left); the server records
//! the token's principal as who acted, and its refusals say why and what to do.

use locksmith_api::rollouts::RolloutView;
use locksmith_client::ClientError;

use super::view::{landing_text, state_cell};
use super::{client_for, failure};
use crate::cli::{Global, RolloutAbortArgs, RolloutIdArgs};
use crate::exit::Exit;
use crate::output::{out, out_json};

pub async fn approve(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let view = client_for(global, &args.id)?
        .approve_rollout(&args.id)
        .await;
    report(view, &args, "approved")
}

pub async fn pause(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let view = client_for(global, &args.id)?.pause_rollout(&args.id).await;
    report(view, &args, "paused")
}

pub async fn resume(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let view = client_for(global, &args.id)?.resume_rollout(&args.id).await;
    report(view, &args, "resumed")
}

pub async fn cancel(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let view = client_for(global, &args.id)?.cancel_rollout(&args.id).await;
    report(view, &args, "cancelled")
}

/// Prints the landing list: every endpoint and the revision it is left on.
pub async fn abort(global: &Global, args: RolloutAbortArgs) -> anyhow::Result<Exit> {
    let id = args.id.as_str();
    let view = client_for(global, id)?
        .abort_rollout(id, args.rollback)
        .await
        .map_err(|e| failure(&e, id))?;
    if args.json {
        out_json(&view)?;
    } else {
        out(landing_text(&view).trim_end())?;
    }
    Ok(Exit::Ok)
}

/// `ro-4: approved — running: applying wave 1 of 3`, or the rollout as JSON.
fn report(
    view: Result<RolloutView, ClientError>,
    args: &RolloutIdArgs,
    done: &str,
) -> anyhow::Result<Exit> {
    let view = view.map_err(|e| failure(&e, &args.id))?;
    if args.json {
        out_json(&view)?;
    } else {
        out(&action_line(&view, done))?;
    }
    Ok(Exit::Ok)
}

fn action_line(view: &RolloutView, done: &str) -> String {
    format!(
        "{}: {done} — {}: {}",
        view.id,
        state_cell(view),
        view.summary
    )
}
