//! `GET /v1/agents/{node}/desired`: what a node should run, as server-sent events (`desired`,
//! data a `DesiredRevision`). On connect one event per registered config that has a desired
//! revision; then one whenever a config's desired revision changes.
//!
//! The stream watches the resources that decide what its node runs (an engine
//! [`ResourceWatch`]): the node itself (`agents/NODE`: a new registration) and each config it
//! registered (`configs/NAME`: a write, promotion, rollback, shadow, a rollout's step). A
//! durable audit record about one of them makes it ask [`desired`](super::model::desired)
//! again, through a durable read, and send what differs from what it last sent (with the
//! revision's content when it is small: the agent needs no fetch) — so a draft
//! written, or the same revision told twice, sends nothing. Records about other nodes and
//! configs do not wake it: with 10,000 agents, one agent's report wakes one stream, not
//! 10,000. While it is open the node counts as online. It ends when the server begins to shut
//! down, and when its token stops working: checked on every change to the tokens and once a
//! second, so a revoked token's stream closes within a second.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use locksmith_api::agents::{DesiredRevision, INLINE_CONTENT_MAX};
use locksmith_api::configs::Content;
use locksmith_auth::Principal;

use super::errors::agent_not_found;
use crate::app::App;
use crate::domains::configs::ops::content_of;
use crate::engine::{Engine, ResourceWatch, agent_resource, desired_key};
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
    /// Woken by records about `own` and the node's configs.
    watch: ResourceWatch,
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
    /// The last (rev, shadow, rollout) sent per config: a rollout's override of the revision
    /// the node already runs (a rollback that overtook the rolled revision on its way) is
    /// sent, so the endpoint answers it.
    sent: HashMap<String, (u64, bool, Option<String>)>,
    /// Events to send before waiting again.
    queue: VecDeque<DesiredRevision>,
    _presence: Presence,
}

impl Following {
    /// Asks for the node's desired revisions again and queues those that differ from what was
    /// sent. False if the stream must end (the node is gone, storage failed).
    async fn refresh(&mut self) -> bool {
        let desired = match self.app.engine.agent_desired(&self.node).await {
            Ok(Some((configs, desired))) => {
                if configs != self.configs {
                    let mut watched = vec![desired_key(&self.own)];
                    watched.extend(configs.iter().map(|c| desired_key(&format!("configs/{c}"))));
                    // A config newly watched counts as changed: refreshed once more.
                    self.watch.set(&watched);
                    self.configs = configs;
                }
                desired
            }
            Ok(None) | Err(_) => return false,
        };
        for mut d in desired {
            let now = (d.rev, d.shadow, d.rollout.clone());
            if self.sent.get(&d.config) != Some(&now) {
                self.sent.insert(d.config.clone(), now);
                d.content = self.inline(&d).await;
                self.queue.push_back(d);
            }
        }
        true
    }

    /// The content `d` carries: a small revision's (the engine's blob cache answers a fleet
    /// asking for the same one); none for a large one, or if it cannot be read now — the
    /// agent then fetches it, as it would have.
    async fn inline(&self, d: &DesiredRevision) -> Option<Content> {
        if d.size > INLINE_CONTENT_MAX {
            return None;
        }
        let bytes = self.app.engine.config_blob(&d.sha256).await.ok()??;
        Some(content_of(bytes))
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
    // Watching before the first read: a change between the two is seen twice, never missed.
    let own = agent_resource(&node);
    let watch = engine.watch(&[desired_key(&own)]);
    if engine.agent_desired(&node).await?.is_none() {
        return Err(ApiError::from(agent_not_found(&node)));
    }
    let mut check = tokio::time::interval(TOKEN_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Following {
        watch,
        closing: engine.closing(),
        tokens: engine.token_changes(),
        check,
        app: app.clone(),
        who,
        own,
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
            tokio::select! {
                () = s.watch.changed() => {}
                _ = s.closing.changed() => return None,
                // Either: look at the token again at the top of the loop.
                _ = s.tokens.changed() => continue,
                _ = s.check.tick() => continue,
            }
            if !s.refresh().await {
                return None;
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
