//! `GET /v1/events`: durable audit records as server-sent events, optionally for one resource.
//! Each event's `event:` is the record's label (`granted`, `expired`, `broke`, …), its `id:` the
//! audit sequence number and its `data:` the record as JSON. A client that falls behind by more
//! than the buffer gets a `lagged` comment saying how many it missed (read them from /v1/audit).
//! Streams end when the server begins to shut down, so graceful shutdown never waits on them.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::engine::Engine;

/// `GET /v1/events` query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only this resource's records.
    resource: Option<String>,
}

/// The event stream of `engine`'s durable audit records, for one resource or all.
pub(crate) fn stream(
    engine: &Engine,
    q: EventsQuery,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let rx = engine.subscribe();
    let closing = engine.closing();
    let state = (rx, q.resource, closing);
    let events = stream::unfold(state, |(mut rx, filter, mut closing)| async move {
        loop {
            if *closing.borrow() {
                return None;
            }
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = closing.changed() => return None,
            };
            match received {
                Ok(record) => {
                    if filter.as_deref().is_some_and(|r| r != record.resource) {
                        continue;
                    }
                    let data = serde_json::to_string(&*record).unwrap_or_default();
                    let event = Event::default()
                        .event(record.label())
                        .id(record.seq.to_string())
                        .data(data);
                    return Some((Ok(event), (rx, filter, closing)));
                }
                Err(RecvError::Lagged(n)) => {
                    let event = Event::default().comment(format!(
                        "lagged: missed {n} events; read them from /v1/audit"
                    ));
                    return Some((Ok(event), (rx, filter, closing)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
