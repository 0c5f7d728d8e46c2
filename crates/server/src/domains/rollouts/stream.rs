//! `GET /v1/rollouts/{id}/events`: a rollout as server-sent events (`rollout`, data a
//! `RolloutView`): one on connect, then one whenever the view changes; the stream ends after
//! the event that shows it ended (or was cancelled).
//!
//! It follows the durable audit records (as `/v1/events` does): a record about the config
//! (`configs/NAME`: the rollout's own events) or about an agent (`agents/NODE`: a report)
//! makes it read the view again — at most every [`COALESCE`], so a thousand reports in a
//! burst cost a few reads — and send it if it differs from the last one sent. It closes when
//! the server shuts down and when the token stops working.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use locksmith_api::rollouts::{RolloutPhase, RolloutView};
use locksmith_auth::Principal;
use tokio::sync::broadcast::error::RecvError;

use super::ops;
use crate::app::App;
use crate::domains::agents::stream::KEEP_ALIVE;
use crate::request::ApiError;

/// The longest a change waits before it is sent; also the token re-check interval.
const COALESCE: Duration = Duration::from_millis(100);

fn event(view: &RolloutView) -> Event {
    Event::default()
        .event("rollout")
        .data(serde_json::to_string(view).unwrap_or_default())
}

fn ended(view: &RolloutView) -> bool {
    matches!(view.phase, RolloutPhase::Ended | RolloutPhase::Cancelled)
}

struct Following {
    app: App,
    who: Principal,
    id: String,
    resource: String,
    rx: tokio::sync::broadcast::Receiver<std::sync::Arc<locksmith_core::AuditRecord>>,
    closing: tokio::sync::watch::Receiver<bool>,
    last: Option<RolloutView>,
    first: Option<RolloutView>,
    done: bool,
}

/// The event stream of rollout `id`, for as long as `who`'s token works.
pub async fn open(
    app: &App,
    who: Principal,
    id: String,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    // Subscribed before the first read: a change between the two is seen twice, never missed.
    let rx = app.engine.subscribe();
    let first = ops::get(app, &id).await?;
    let state = Following {
        app: app.clone(),
        who,
        resource: format!("configs/{}", first.config),
        id,
        rx,
        closing: app.engine.closing(),
        last: None,
        first: Some(first),
        done: false,
    };
    let events = stream::unfold(state, |mut s| async move {
        if let Some(first) = s.first.take() {
            s.done = ended(&first);
            let e = event(&first);
            s.last = Some(first);
            return Some((Ok(e), s));
        }
        if s.done {
            return None;
        }
        loop {
            if *s.closing.borrow() || !s.app.token_live(&s.who.token) {
                return None;
            }
            let mut changed = false;
            // Wait for a record that concerns the rollout, then gather what else came within
            // COALESCE.
            let deadline = tokio::time::sleep(COALESCE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    r = s.rx.recv() => match r {
                        Ok(record) => {
                            changed |= record.resource == s.resource
                                || record.resource.starts_with("agents/");
                        }
                        Err(RecvError::Lagged(_)) => changed = true,
                        Err(RecvError::Closed) => return None,
                    },
                    _ = s.closing.changed() => return None,
                    _ = &mut deadline => break,
                }
            }
            if !changed {
                continue;
            }
            let Ok(view) = ops::get(&s.app, &s.id).await else {
                return None;
            };
            if s.last.as_ref() == Some(&view) {
                continue;
            }
            s.done = ended(&view);
            let e = event(&view);
            s.last = Some(view);
            return Some((Ok(e), s));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
