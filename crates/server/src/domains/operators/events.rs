//! `GET /v1/events`: durable audit records as server-sent events, optionally for one resource.
//! Each event's `event:` is the record's label (`granted`, `expired`, `broke`, …), its `id:` the
//! audit sequence number and its `data:` the record as JSON. A client that falls behind by more
//! than the buffer gets a `lagged` comment saying how many it missed (read them from /v1/audit).
//! Streams end when the server begins to shut down, so graceful shutdown never waits on them,
//! and when their token stops working: it is checked on every change to the tokens and once a
//! second (expiry), so a revoked token's stream closes within a second.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use locksmith_auth::Principal;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;

/// How often a stream re-checks its token with no change to the tokens (for expiry).
const TOKEN_CHECK: Duration = Duration::from_secs(1);

/// `GET /v1/events` query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only this resource's records.
    resource: Option<String>,
}

/// What a stream carries from one event to the next.
struct Following {
    rx: tokio::sync::broadcast::Receiver<std::sync::Arc<locksmith_core::AuditRecord>>,
    filter: Option<String>,
    closing: tokio::sync::watch::Receiver<bool>,
    tokens: tokio::sync::watch::Receiver<u64>,
    check: tokio::time::Interval,
    app: App,
    who: Principal,
}

/// The event stream of the durable audit records, for one resource or all, for as long as
/// `who`'s token works.
pub(crate) fn stream(
    app: &App,
    who: Principal,
    q: EventsQuery,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let engine = &app.engine;
    let mut check = tokio::time::interval(TOKEN_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Following {
        rx: engine.subscribe(),
        filter: q.resource,
        closing: engine.closing(),
        tokens: engine.token_changes(),
        check,
        app: app.clone(),
        who,
    };
    let events = stream::unfold(state, |mut s| async move {
        loop {
            if *s.closing.borrow() || !s.app.token_live(&s.who.token) {
                return None;
            }
            let received = tokio::select! {
                r = s.rx.recv() => r,
                _ = s.closing.changed() => return None,
                // Either: look at the token again at the top of the loop.
                _ = s.tokens.changed() => continue,
                _ = s.check.tick() => continue,
            };
            match received {
                Ok(record) => {
                    if s.filter.as_deref().is_some_and(|r| r != record.resource) {
                        continue;
                    }
                    let data = serde_json::to_string(&*record).unwrap_or_default();
                    let event = Event::default()
                        .event(record.label())
                        .id(record.seq.to_string())
                        .data(data);
                    return Some((Ok(event), s));
                }
                Err(RecvError::Lagged(n)) => {
                    let event = Event::default().comment(format!(
                        "lagged: missed {n} events; read them from /v1/audit"
                    ));
                    return Some((Ok(event), s));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
