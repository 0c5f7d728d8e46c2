//! The rollouts domain's state: every rollout, queued, running or ended, and the per-node
//! overrides of the desired revision the running ones made.
//!
//! Invariants:
//! - A rollout is one record (`rollouts/ro-N`) holding the planner's record and the effects of
//!   the planner's commands (overrides, a promotion still to make, the lease it holds): the
//!   planner's state and what its commands changed are written in one `PutRecord`, so a
//!   restart resumes from a state whose commands have all taken effect, and the planner
//!   (which issues a `(node, revision)` at most once from a persisted state) tells no endpoint
//!   twice.
//! - At most one rollout of a config holds its lock (`configs/NAME`) at a time; the others of
//!   that config are queued in creation order.
//! - Only the newest started rollout of a config overrides what its nodes should run
//!   ([`Rollouts::override_for`]); once it has ended its overrides count only while the
//!   config's current revision is the one that was current when it ended (a new current
//!   revision ends them without a write, as it does a shadow's).

use std::collections::BTreeMap;

use locksmith_core::{FenceToken, LeaseId, Mutation};
use locksmith_rollout::{Outcome, Rollout, RolloutSpec};
use serde::{Deserialize, Serialize};

/// The record space of rollouts, keyed by id (`ro-N`).
pub const ROLLOUTS: &str = "rollouts";

/// The lease a rollout holds `configs/NAME` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutLock {
    /// The lease.
    pub lease: LeaseId,
    /// Its fencing token: every revision the rollout writes carries it.
    pub token: FenceToken,
}

/// One rollout, as stored in `rollouts/ro-N`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRollout {
    /// `ro-N`.
    pub id: String,
    /// N: the creation order, which is also the queue's order.
    pub seq: u64,
    /// The spec as asked: `rev` is the revision the operator named.
    pub spec: RolloutSpec,
    /// When it was asked for, Unix ms.
    pub created_ms: u64,
    /// The revision rolled out: `spec.rev` re-written as a draft under the rollout's own
    /// lease when it started (so every revision sent carries its token). `None` while queued.
    pub rolled_rev: Option<u64>,
    /// The planner's record ([`Rollout::to_record`]), once started.
    pub planner: Option<serde_json::Value>,
    /// The lease it holds, while it holds one.
    pub lock: Option<RolloutLock>,
    /// The desired revision of each node it overrides.
    pub overrides: BTreeMap<String, u64>,
    /// A `PromoteDraft` the planner issued that is not done yet (the draft's revision); the
    /// lock is released only after it.
    pub promote: Option<u64>,
    /// A `ReleaseLock` the planner issued that waits for the promotion.
    pub release: bool,
    /// Cancelled while queued.
    pub cancelled: bool,
    /// How it ended, once it did.
    pub outcome: Option<Outcome>,
    /// The config's current revision when it ended (its overrides count while it stays so).
    pub ended_current: Option<Option<u64>>,
    /// When each node was first sent the rolled-out revision (the step's time), Unix ms.
    #[serde(default)]
    pub sent_ms: BTreeMap<String, u64>,
    /// When each node first reported the rolled-out revision applied, Unix ms.
    #[serde(default)]
    pub applied_ms: BTreeMap<String, u64>,
    /// Why each endpoint that failed or refused the rolled-out revision did, from its report.
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
    /// The gates the planner asked to run and that have not all answered.
    #[serde(default)]
    pub gate_run: Option<GateRun>,
    /// When it ended, Unix ms.
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// Why the draft was left a draft when the rollout succeeded (endpoints outside the
    /// selector apply the config: promoting would send it to them too).
    #[serde(default)]
    pub not_promoted: Option<String>,
}

/// A `RunGate` the planner issued: the gates of `wave`, judged over `[from_ms, until_ms]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRun {
    pub wave: usize,
    /// The gates still to answer, by name.
    pub gates: Vec<String>,
    pub from_ms: u64,
    pub until_ms: u64,
}

/// A rollout in memory: its record and its planner.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What is stored.
    pub stored: StoredRollout,
    /// The planner, once started.
    pub planner: Option<Rollout>,
}

impl Entry {
    /// Queued behind another rollout of the config (not started, not cancelled).
    pub fn queued(&self) -> bool {
        self.planner.is_none() && !self.stored.cancelled
    }

    /// Started and not ended (including a promotion or a release still to do).
    pub fn running(&self) -> bool {
        self.planner.is_some() && (self.stored.lock.is_some() || self.stored.outcome.is_none())
    }

    /// The record to write for it now: the planner's state and its effects together.
    pub fn record(&mut self) -> Mutation {
        self.stored.planner = self
            .planner
            .as_ref()
            .and_then(|p| serde_json::from_slice(&p.to_record()).ok());
        Mutation::PutRecord {
            space: ROLLOUTS.to_owned(),
            key: self.stored.id.clone(),
            value: serde_json::to_vec(&self.stored).unwrap_or_default(),
        }
    }
}

/// A stored rollout that does not restore.
#[derive(Debug, thiserror::Error)]
#[error("rollout record {key} does not restore: {why}")]
pub struct RestoreError {
    /// Its key.
    pub key: String,
    /// Why.
    pub why: String,
}

/// Every rollout, by id.
#[derive(Debug, Default)]
pub struct Rollouts {
    entries: BTreeMap<String, Entry>,
    /// The newest started rollout of each config: the only one whose overrides count.
    newest: BTreeMap<String, String>,
    /// The highest N of `ro-N` issued.
    last_seq: u64,
    /// The last `now` a rollout step saw: planner deadlines are wall ms, the reaper sleeps on
    /// the monotonic clock, and this pair converts one to the other.
    last_now: Option<locksmith_core::Now>,
    /// The `now` of the reaper's last run: it renewed every running rollout's lease and ticked
    /// every planner whose deadline had come, so the deadlines it must wake for next are the
    /// ones named as of then.
    reaped: Option<locksmith_core::Now>,
}

impl Rollouts {
    /// None.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state from the `rollouts` space's records `(key, value)`. A record that
    /// does not restore stops the start: resuming without it could tell an endpoint twice.
    pub fn restore(records: Vec<(String, Vec<u8>)>) -> Result<Self, RestoreError> {
        let mut rollouts = Rollouts::new();
        for (key, value) in records {
            let fail = |why: String| RestoreError {
                key: key.clone(),
                why,
            };
            let stored: StoredRollout =
                serde_json::from_slice(&value).map_err(|e| fail(e.to_string()))?;
            let planner = match &stored.planner {
                Some(v) => {
                    let bytes = serde_json::to_vec(v).map_err(|e| fail(e.to_string()))?;
                    Some(Rollout::from_record(&bytes).map_err(|e| fail(e.to_string()))?)
                }
                None => None,
            };
            rollouts.insert(Entry { stored, planner });
        }
        Ok(rollouts)
    }

    /// Adds (or replaces) an entry, keeping the indexes.
    pub fn insert(&mut self, entry: Entry) {
        self.last_seq = self.last_seq.max(entry.stored.seq);
        if entry.planner.is_some() {
            let config = entry.stored.spec.config.clone();
            let newer = self
                .newest
                .get(&config)
                .and_then(|id| self.entries.get(id))
                .is_none_or(|e| e.stored.seq <= entry.stored.seq);
            if newer {
                self.newest.insert(config, entry.stored.id.clone());
            }
        }
        self.entries.insert(entry.stored.id.clone(), entry);
    }

    /// The next id, `ro-N`, and its N.
    pub fn next_id(&mut self) -> (String, u64) {
        self.last_seq += 1;
        (format!("ro-{}", self.last_seq), self.last_seq)
    }

    /// One rollout.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// One rollout, to change (re-[`insert`](Self::insert) it if it started).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }

    /// Every rollout, by id.
    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The rollout of `config` that is running (it holds, or is still to release, the lock).
    pub fn running(&self, config: &str) -> Option<&Entry> {
        self.entries
            .values()
            .find(|e| e.stored.spec.config == config && e.running())
    }

    /// The oldest queued rollout of `config`.
    pub fn next_queued(&self, config: &str) -> Option<&Entry> {
        self.entries
            .values()
            .filter(|e| e.stored.spec.config == config && e.queued())
            .min_by_key(|e| e.stored.seq)
    }

    /// Ids of every running rollout.
    pub fn running_ids(&self) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.running())
            .map(|e| e.stored.id.clone())
            .collect()
    }

    /// Remembers `now` (see [`next_deadline`](Self::next_deadline)).
    pub fn seen(&mut self, now: locksmith_core::Now) {
        self.last_now = Some(now);
    }

    /// The reaper ran at `now`: it renewed the running rollouts' leases and ticked the due
    /// planners ([`next_deadline`](Self::next_deadline), [`renewal_due`](Self::renewal_due)).
    pub fn reaped(&mut self, now: locksmith_core::Now) {
        self.reaped = Some(now);
    }

    /// When the running rollouts' leases on their configs must be renewed again, renewing them
    /// every `every_ms`: the reaper wakes for it, so a rollout keeps its lock through a quiet
    /// bake or wait however far apart the GC sweeps are (an hour, on virtual time). `None`
    /// while no running rollout holds a lease.
    pub fn renewal_due(&self, every_ms: u64) -> Option<locksmith_core::Mono> {
        if !self
            .entries
            .values()
            .any(|e| e.running() && e.stored.lock.is_some())
        {
            return None;
        }
        // From the last renewal: a lease granted since then runs out later than the ones it
        // renewed. (The reaper runs at boot, so there is one.)
        let from = self.reaped.or(self.last_now)?;
        Some(from.mono.plus_ms(every_ms))
    }

    /// When the next running planner's deadline comes, on the monotonic clock.
    pub fn next_deadline(&self) -> Option<locksmith_core::Mono> {
        let now = self.last_now?;
        // A passed deadline with work left stays named (the planner's `next_deadline`), so a
        // bake that ended since the last step is due, not the deadline after it.
        self.entries
            .values()
            .filter(|e| e.running())
            .filter_map(|e| e.planner.as_ref()?.next_deadline(now.wall_ms))
            .min()
            .map(|at| now.mono.plus_ms(at.saturating_sub(now.wall_ms)))
    }

    /// The revision a rollout makes `node` run of `config` instead of its current one, given
    /// the config's current revision now.
    pub fn override_for(&self, config: &str, node: &str, current: Option<u64>) -> Option<u64> {
        self.override_of(config, node, current).map(|(_, rev)| rev)
    }

    /// [`override_for`](Self::override_for), with the id of the rollout it comes from.
    pub fn override_of(
        &self,
        config: &str,
        node: &str,
        current: Option<u64>,
    ) -> Option<(&str, u64)> {
        let id = self.newest.get(config)?;
        let entry = self.entries.get(id)?;
        let rev = *entry.stored.overrides.get(node)?;
        match entry.stored.ended_current {
            Some(at_end) if at_end != current => None,
            _ => Some((id.as_str(), rev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, seq: u64, config: &str, started: bool) -> Entry {
        let spec = RolloutSpec::new(config, 1, "alice");
        let planner = started.then(|| {
            let endpoints = [locksmith_rollout::Endpoint {
                node: "n1".into(),
                labels: BTreeMap::new(),
                online: true,
                applied_rev: 0,
                last_known_good: 0,
            }];
            Rollout::new(spec.clone(), &endpoints).expect("a rollout")
        });
        Entry {
            stored: StoredRollout {
                id: id.into(),
                seq,
                spec,
                created_ms: 0,
                rolled_rev: started.then_some(2),
                planner: None,
                lock: None,
                overrides: BTreeMap::from([("n1".to_owned(), 2)]),
                promote: None,
                release: false,
                cancelled: false,
                outcome: None,
                ended_current: None,
                sent_ms: BTreeMap::new(),
                applied_ms: BTreeMap::new(),
                errors: BTreeMap::new(),
                gate_run: None,
                ended_ms: None,
                not_promoted: None,
            },
            planner,
        }
    }

    #[test]
    fn a_record_restores_the_planner_and_its_overrides() {
        let mut e = entry("ro-1", 1, "app", true);
        let Mutation::PutRecord { key, value, .. } = e.record() else {
            panic!("a record")
        };
        let restored = Rollouts::restore(vec![(key, value)]).expect("restores");
        let back = restored.get("ro-1").expect("there");
        assert_eq!(back.planner, e.planner);
        assert_eq!(restored.override_for("app", "n1", Some(1)), Some(2));
        assert_eq!(restored.override_for("app", "n2", Some(1)), None);
    }

    #[test]
    fn an_ended_rollouts_overrides_lapse_with_a_new_current_revision() {
        let mut rollouts = Rollouts::new();
        let mut e = entry("ro-1", 1, "app", true);
        e.stored.ended_current = Some(Some(1));
        rollouts.insert(e);
        assert_eq!(rollouts.override_for("app", "n1", Some(1)), Some(2));
        assert_eq!(rollouts.override_for("app", "n1", Some(3)), None);
    }

    #[test]
    fn only_the_newest_started_rollout_overrides_and_the_queue_is_in_order() {
        let mut rollouts = Rollouts::new();
        rollouts.insert(entry("ro-1", 1, "app", true));
        let mut newer = entry("ro-2", 2, "app", true);
        newer.stored.overrides.clear();
        rollouts.insert(newer);
        rollouts.insert(entry("ro-4", 4, "app", false));
        rollouts.insert(entry("ro-3", 3, "app", false));
        assert_eq!(rollouts.override_for("app", "n1", Some(1)), None);
        assert_eq!(
            rollouts.next_queued("app").map(|e| e.stored.id.as_str()),
            Some("ro-3")
        );
        assert_eq!(rollouts.next_id().0, "ro-5");
    }
}
