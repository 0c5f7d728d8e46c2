//! `GET /v1/agents/{node}/desired`: what a node should run, as server-sent events (`desired`,
//! data a `DesiredRevision`). On connect one event per registered config that has a desired
//! revision; then one whenever a config's desired revision changes.
//!
//! The stream follows the durable audit records (as `/v1/events` does): a record about one of
//! the node's configs (`configs/NAME`: a write, promotion, rollback, shadow) or about the node
//! itself (`agents/NODE`: a new registration) makes it ask [`desired`](super::model::desired)
//! again, through a durable read, and send what differs from what it last sent — so a draft
//! written, or the same revision told twice, sends nothing. A client that fell behind the
//! buffer is simply recomputed. While it is open the node counts as online. It ends when the
//! server begins to shut down, and when its token stops working: checked on every change to
//! the tokens and once a second, so a revoked token's stream closes within a second.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use locksmith_api::agents::DesiredRevision;
use locksmith_auth::Principal;
use locksmith_core::AuditRecord;
use tokio::sync::broadcast::error::RecvError;

use super::errors::agent_not_found;
use crate::app::App;
use crate::engine::{Engine, agent_resource};
use crate::request::ApiError;

/// How often a stream re-checks its token with no change to the tokens (for expiry).
const TOKEN_CHECK: Duration = Duration::from_secs(1);
/// Keep-alive comments, so proxies and the agent see a live connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Counts the stream as the node's presence while it lives.
struct Presence {
    engine: Engine,
    node: String,
}

impl Presence {
    fn open(engine: Engine, node: String) -> Self {
        engine.agent_stream(&node, true);
        Self { engine, node }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.engine.agent_stream(&self.node, false);
    }
}

/// What a stream carries from one event to the next.
struct Following {
    rx: tokio::sync::broadcast::Receiver<Arc<AuditRecord>>,
    closing: tokio::sync::watch::Receiver<bool>,
    tokens: tokio::sync::watch::Receiver<u64>,
    check: tokio::time::Interval,
    app: App,
    who: Principal,
    node: String,
    /// `agents/NODE`.
    own: String,
    /// The configs the node registered, as of the last refresh.
    configs: Vec<String>,
    /// The last (rev, shadow) sent per config.
    sent: HashMap<String, (u64, bool)>,
    /// Events to send before waiting again.
    queue: VecDeque<DesiredRevision>,
    _presence: Presence,
}

impl Following {
    /// Whether `record` may change what the node should run.
    fn concerns(&self, record: &AuditRecord) -> bool {
        record.resource == self.own
            || record
                .resource
                .strip_prefix("configs/")
                .is_some_and(|name| self.configs.iter().any(|c| c == name))
    }

    /// Asks for the node's desired revisions again and queues those that differ from what was
    /// sent. False if the stream must end (the node is gone, storage failed).
    async fn refresh(&mut self) -> bool {
        let desired = match self.app.engine.agent_desired(&self.node).await {
            Ok(Some((configs, desired))) => {
                self.configs = configs;
                desired
            }
            Ok(None) | Err(_) => return false,
        };
        for d in desired {
            let now = (d.rev, d.shadow);
            if self.sent.get(&d.config) != Some(&now) {
                self.sent.insert(d.config.clone(), now);
                self.queue.push_back(d);
            }
        }
        true
    }
}

fn event(d: &DesiredRevision) -> Event {
    Event::default()
        .event("desired")
        .data(serde_json::to_string(d).unwrap_or_default())
}

/// The desired stream of `node`, for as long as `who`'s token works; 404 `agent_not_found` if
/// the node has not registered.
pub async fn open(
    app: &App,
    who: Principal,
    node: String,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    let engine = &app.engine;
    // Subscribed before the first read: a change between the two is seen twice, never missed.
    let rx = engine.subscribe();
    if engine.agent_desired(&node).await?.is_none() {
        return Err(ApiError::from(agent_not_found(&node)));
    }
    let mut check = tokio::time::interval(TOKEN_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Following {
        rx,
        closing: engine.closing(),
        tokens: engine.token_changes(),
        check,
        app: app.clone(),
        who,
        own: agent_resource(&node),
        _presence: Presence::open(engine.clone(), node.clone()),
        node,
        configs: Vec::new(),
        sent: HashMap::new(),
        queue: VecDeque::new(),
    };
    if !state.refresh().await {
        return Err(ApiError::from(agent_not_found(&state.node)));
    }
    let events = stream::unfold(state, |mut s| async move {
        loop {
            if *s.closing.borrow() || !s.app.token_live(&s.who.token) {
                return None;
            }
            if let Some(d) = s.queue.pop_front() {
                return Some((Ok(event(&d)), s));
            }
            let received = tokio::select! {
                r = s.rx.recv() => r,
                _ = s.closing.changed() => return None,
                // Either: look at the token again at the top of the loop.
                _ = s.tokens.changed() => continue,
                _ = s.check.tick() => continue,
            };
            let refresh = match received {
                Ok(record) => s.concerns(&record),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return None,
            };
            if refresh && !s.refresh().await {
                return None;
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
