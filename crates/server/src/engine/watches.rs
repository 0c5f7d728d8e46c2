//! Watches on resources: "wake me when a durable audit record about one of these resources is
//! published", indexed by resource name.
//!
//! The event broadcast wakes every subscriber for every record. That is right for
//! `/v1/events`, whose few clients want everything, and wrong for the desired streams: one per
//! agent, each concerned with its own node and its few configs. With 10,000 agents, every
//! agent's `applied` report woke all 10,000 streams — 10⁸ wake-ups for one rollout wave, and
//! the streams that fell behind the broadcast buffer re-read their state. A watch is woken only
//! by records about the resources it names: a report wakes one stream, a new revision of a
//! config wakes the streams of the agents that apply it.
//!
//! Besides its resource, a record wakes the watches on the *desired keys* it concerns
//! ([`desired_key`]): what the agents' desired streams watch, narrower than the resource — an
//! agent's report is on `agents/NODE` but changes nobody's desired revision, and a rollout's
//! `rollout_desired` record is on `configs/NAME` but changes only the nodes it names.
//!
//! A watch is a [`Notify`] with one waiter: a record published while nobody waits leaves a
//! permit, so nothing published after [`Engine::watch`] returns is missed — a watcher registers
//! first and reads the state second, and sees a change between the two at least once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use locksmith_core::{AuditKind, AuditRecord};
use tokio::sync::Notify;

use super::{Engine, lock};

/// The key a desired stream watches for `resource` (`agents/NODE` or `configs/NAME`).
pub fn desired_key(resource: &str) -> String {
    format!("desired:{resource}")
}

/// The desired keys `record` wakes: `desired:RESOURCE`, except for records that change no
/// node's desired revision, and `rollout_desired`, which wakes the nodes it names.
fn desired_keys(record: &AuditRecord, keys: &mut Vec<String>) {
    let AuditKind::Domain(event) = &record.kind else {
        // The lock table's records: a grant or release on `configs/NAME` changes its fence.
        keys.push(desired_key(&record.resource));
        return;
    };
    match event.kind.as_str() {
        // Reports: what a node runs, not what it should.
        "agent_applied"
        | "agent_failed"
        | "agent_refused"
        | "agent_deferred"
        | "agent_shadow_ok"
        | "agent_shadow_failed" => {}
        // A rollout's bookkeeping.
        "rollout_progress" | "rollout_hold_point" => {}
        "rollout_desired" => {
            let nodes = event.detail.get("nodes").and_then(|n| n.as_array());
            for node in nodes.into_iter().flatten() {
                // `[node, rev]` pairs.
                if let Some(node) = node.get(0).and_then(|n| n.as_str()) {
                    keys.push(desired_key(&super::agent_resource(node)));
                }
            }
        }
        _ => keys.push(desired_key(&record.resource)),
    }
}

/// The watches by resource name.
#[derive(Debug, Default)]
pub(super) struct Watches {
    inner: Mutex<Index>,
}

#[derive(Debug, Default)]
struct Index {
    next: u64,
    by_resource: HashMap<String, HashMap<u64, Arc<Notify>>>,
}

impl Watches {
    /// Wakes the watches on `record`'s resource and on the desired keys it concerns. Called
    /// as each durable record is published: a few map lookups when nobody watches them.
    pub(super) fn published(&self, record: &AuditRecord) {
        let mut keys = vec![record.resource.clone()];
        desired_keys(record, &mut keys);
        let index = lock(&self.inner);
        for key in &keys {
            if let Some(watchers) = index.by_resource.get(key) {
                for notify in watchers.values() {
                    notify.notify_one();
                }
            }
        }
    }

    /// How many watches name `resource` (for tests and metrics).
    pub(super) fn watching(&self, resource: &str) -> usize {
        lock(&self.inner)
            .by_resource
            .get(resource)
            .map_or(0, HashMap::len)
    }

    fn add(&self, id: u64, resource: &str, notify: &Arc<Notify>) {
        lock(&self.inner)
            .by_resource
            .entry(resource.to_owned())
            .or_default()
            .insert(id, Arc::clone(notify));
    }

    fn remove(&self, id: u64, resource: &str) {
        let mut index = lock(&self.inner);
        if let Some(watchers) = index.by_resource.get_mut(resource) {
            watchers.remove(&id);
            if watchers.is_empty() {
                index.by_resource.remove(resource);
            }
        }
    }

    fn id(&self) -> u64 {
        let mut index = lock(&self.inner);
        index.next += 1;
        index.next
    }
}

/// A watch on a set of resources, from [`Engine::watch`]; unregistered when dropped.
#[derive(Debug)]
pub struct ResourceWatch {
    engine: Engine,
    id: u64,
    notify: Arc<Notify>,
    resources: Vec<String>,
}

impl ResourceWatch {
    /// Waits for a durable record about one of the resources, published since the watch was
    /// made or since the last wait returned (many records may be one wake-up).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Watches `resources` from now on instead. A resource newly watched is treated as
    /// changed (the next [`changed`](Self::changed) returns at once): a record published
    /// between the read that named it and this call was not seen.
    pub fn set(&mut self, resources: &[String]) {
        let watches = &self.engine.inner.watches;
        let mut added = false;
        for r in resources {
            if !self.resources.contains(r) {
                watches.add(self.id, r, &self.notify);
                added = true;
            }
        }
        for r in &self.resources {
            if !resources.contains(r) {
                watches.remove(self.id, r);
            }
        }
        self.resources = resources.to_vec();
        if added {
            self.notify.notify_one();
        }
    }
}

impl Drop for ResourceWatch {
    fn drop(&mut self) {
        for r in &self.resources {
            self.engine.inner.watches.remove(self.id, r);
        }
    }
}

impl Engine {
    /// A watch on `resources`: woken by each durable audit record about one of them, from now
    /// on. The records themselves are on [`subscribe`](Self::subscribe) and in the audit log;
    /// a watcher reads the state again when woken.
    pub fn watch(&self, resources: &[String]) -> ResourceWatch {
        let watches = &self.inner.watches;
        let id = watches.id();
        let notify = Arc::new(Notify::new());
        for r in resources {
            watches.add(id, r, &notify);
        }
        ResourceWatch {
            engine: self.clone(),
            id,
            notify,
            resources: resources.to_vec(),
        }
    }

    /// How many watches name `resource`.
    pub fn watching(&self, resource: &str) -> usize {
        self.inner.watches.watching(resource)
    }
}

#[cfg(test)]
mod tests {
    use locksmith_api::agents::ApplyState;
    use locksmith_core::DomainEvent;
    use serde_json::json;

    use super::*;
    use crate::engine::report_event;

    fn keys(resource: &str, kind: &str, detail: serde_json::Value) -> Vec<String> {
        let event = DomainEvent::new(kind, detail).expect("kind");
        let mut keys = Vec::new();
        desired_keys(
            &AuditRecord::new(resource, AuditKind::Domain(event)),
            &mut keys,
        );
        keys
    }

    #[test]
    fn no_report_wakes_a_desired_stream_and_a_registration_wakes_its_own() {
        for state in [
            ApplyState::Applied,
            ApplyState::Failed,
            ApplyState::Refused,
            ApplyState::Deferred,
            ApplyState::ShadowOk,
            ApplyState::ShadowFailed,
        ] {
            assert_eq!(
                keys("agents/n1", report_event(state), json!({})),
                Vec::<String>::new()
            );
        }
        assert_eq!(
            keys("agents/n1", super::super::EVENT_REGISTERED, json!({})),
            vec!["desired:agents/n1"]
        );
    }

    #[test]
    fn a_rollout_step_wakes_only_the_nodes_whose_desired_revision_it_changed() {
        assert_eq!(
            keys(
                "configs/a.conf",
                "rollout_desired",
                json!({"rollout": "r1", "nodes": [["n1", 4], ["n2", 0]]})
            ),
            vec!["desired:agents/n1", "desired:agents/n2"]
        );
        assert!(keys("configs/a.conf", "rollout_progress", json!({})).is_empty());
        // Anything else about the config may change every node's: a write, a shadow, a
        // rollout's start (the newest rollout decides the overrides).
        for kind in ["config_written", "config_shadowed", "rollout_started"] {
            assert_eq!(
                keys("configs/a.conf", kind, json!({})),
                vec!["desired:configs/a.conf"]
            );
        }
    }
}
