//! `rollout status ID [--watch] [--all] [--json]`: the header, each wave's progress and the
//! endpoints; `--watch` follows the rollout's event stream, redrawing the waves, until it ends,
//! then lists where every endpoint landed and exits by its outcome (0 succeeded, 8 not).

use locksmith_api::rollouts::RolloutView;
use locksmith_client::{Client, ClientError};

use super::progress::WaveProgress;
use super::view::{endpoints_table, header, landing_text};
use super::{client_for, exit_of, failure, is_over, now_ms};
use crate::cli::{Global, RolloutStatusArgs};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output::{out, out_json};

pub async fn status(global: &Global, args: RolloutStatusArgs) -> anyhow::Result<Exit> {
    let id = args.id.as_str();
    let client = client_for(global, id)?;
    if args.watch {
        return watch(&client, &args).await;
    }
    let view = client
        .rollout(id)
        .await
        .map_err(|e| failure(&e, id, "list the rollouts: locksmith rollout ls --all"))?;
    if args.json {
        out_json(&view)?;
        return Ok(Exit::Ok);
    }
    out(header(&view, now_ms()).trim_end())?;
    let mut progress = WaveProgress::for_stdout();
    progress.update(&view)?;
    progress.finish();
    out(endpoints_table(&view, args.all).trim_end())?;
    Ok(Exit::Ok)
}

/// Follows the rollout to its end. The stream is opened before the rollout is read, so no
/// change between the two is missed; a view equal to the last one shown is not shown again.
async fn watch(client: &Client, args: &RolloutStatusArgs) -> anyhow::Result<Exit> {
    let id = args.id.as_str();
    let next = "list the rollouts: locksmith rollout ls --all";
    let mut stream = client
        .rollout_events(id)
        .await
        .map_err(|e| failure(&e, id, next))?;
    let mut view = client
        .rollout(id)
        .await
        .map_err(|e| failure(&e, id, next))?;
    let mut shown = Shown::new(args.json);
    shown.show(&view)?;
    while !is_over(&view) {
        match stream.next().await {
            Ok(Some(now)) => {
                view = now;
                shown.show(&view)?;
            }
            Ok(None) => {
                // The server closes the stream after the last event, and when it stops: one
                // read tells which.
                view = client
                    .rollout(id)
                    .await
                    .map_err(|e| failure(&e, id, next))?;
                shown.show(&view)?;
                if !is_over(&view) {
                    shown.finish();
                    return Err(stream_ended(id).into());
                }
            }
            // One event this CLI cannot read must not end the watch: say so and go on.
            Err(e @ ClientError::Decode { .. }) => Failure::new(
                Exit::Other,
                id,
                "unreadable rollout event",
                e,
                "skipped it; 'locksmith rollout status --json' shows the rollout",
            )
            .warn(),
            Err(e) => {
                shown.finish();
                return Err(failure(&e, id, next).into());
            }
        }
    }
    shown.finish();
    if !args.json {
        out(landing_text(&view).trim_end())?;
    }
    Ok(exit_of(&view))
}

fn stream_ended(id: &str) -> Failure {
    Failure::new(
        Exit::Unavailable,
        id,
        "the server ended the rollout's event stream before the rollout ended",
        "the server may be restarting (the rollout resumes where it was)",
        &format!("follow it again: locksmith rollout status {id} --watch"),
    )
}

/// What `--watch` prints as the rollout changes: one JSON line per change (the view shown
/// last, to skip one that did not change), or the waves.
#[derive(Debug)]
enum Shown {
    Json(Option<Box<RolloutView>>),
    Waves(WaveProgress),
}

impl Shown {
    fn new(json: bool) -> Self {
        if json {
            Shown::Json(None)
        } else {
            Shown::Waves(WaveProgress::for_stdout())
        }
    }

    fn show(&mut self, view: &RolloutView) -> anyhow::Result<()> {
        match self {
            Shown::Json(last) => {
                if last.as_deref() != Some(view) {
                    out(&serde_json::to_string(view)?)?;
                    *last = Some(Box::new(view.clone()));
                }
            }
            Shown::Waves(progress) => progress.update(view)?,
        }
        Ok(())
    }

    fn finish(&self) {
        if let Shown::Waves(progress) = self {
            progress.finish();
        }
    }
}
