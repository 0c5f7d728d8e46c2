//! The operator actions on a rollout: approve, pause, resume, abort, cancel. Each prints the
//! rollout's new state in one line (abort: where every endpoint is left); the server records
//! the token's principal as who acted.

use locksmith_api::rollouts::RolloutView;
use locksmith_client::ClientError;

use super::view::{landing_text, state_cell};
use super::{client_for, failure};
use crate::cli::{Global, RolloutAbortArgs, RolloutIdArgs};
use crate::exit::Exit;
use crate::output::{out, out_json};

pub async fn approve(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let next = format!(
        "see who approved and how many it needs: locksmith rollout status {}",
        args.id
    );
    let client = client_for(global, &args.id)?;
    let view = client.approve_rollout(&args.id).await;
    report(view, &args.id, &next, args.json, "approved")
}

pub async fn pause(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let next = format!("see where it stands: locksmith rollout status {}", args.id);
    let client = client_for(global, &args.id)?;
    let view = client.pause_rollout(&args.id).await;
    report(view, &args.id, &next, args.json, "paused")
}

pub async fn resume(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let next = format!("see where it stands: locksmith rollout status {}", args.id);
    let client = client_for(global, &args.id)?;
    let view = client.resume_rollout(&args.id).await;
    report(view, &args.id, &next, args.json, "resumed")
}

pub async fn cancel(global: &Global, args: RolloutIdArgs) -> anyhow::Result<Exit> {
    let next = format!(
        "a rollout that started is ended with: locksmith rollout abort {}",
        args.id
    );
    let client = client_for(global, &args.id)?;
    let view = client.cancel_rollout(&args.id).await;
    report(view, &args.id, &next, args.json, "cancelled")
}

pub async fn abort(global: &Global, args: RolloutAbortArgs) -> anyhow::Result<Exit> {
    let id = args.id.as_str();
    let view = client_for(global, id)?
        .abort_rollout(id, args.rollback)
        .await
        .map_err(|e| {
            failure(
                &e,
                id,
                &format!("see where it stands: locksmith rollout status {id}"),
            )
        })?;
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
    id: &str,
    next: &str,
    json: bool,
    done: &str,
) -> anyhow::Result<Exit> {
    let view = view.map_err(|e| failure(&e, id, next))?;
    if json {
        out_json(&view)?;
    } else {
        out(&format!(
            "{}: {done} — {}: {}",
            view.id,
            state_cell(&view),
            view.summary
        ))?;
    }
    Ok(Exit::Ok)
}
