//! Which token acquired each lease, so that only that token — or one that may operate — renews
//! or releases it: a lease id is no secret (it equals the lease's fencing token, and listings
//! show both), so knowing it must not be enough to end someone else's lease.
//!
//! Kept in memory, beside the lock table, for leases acquired by an authenticated request
//! since this server (or, in cluster mode, this leader) started. A lease granted before — or by
//! FleetLock, or with authentication off — has no known acquirer until a token renews it: the
//! first token to renew it (within its prefixes and node) becomes its acquirer. Its holder
//! renews every third of its TTL, so after a restart the holder is almost always that token;
//! what is not pinned until then is only bound by the token's prefixes and node.
//!
//! Invariants: an entry exists only for a live lease (removed on the lease's `Ended` effect) or
//! a queued waiter (removed when its wait is granted, times out or is withdrawn).

use std::collections::HashMap;
use std::sync::Arc;

use locksmith_core::{Effect, LeaseId, WaiterId};

use super::Actor;

/// The acquirers of live leases and queued waiters.
#[derive(Debug, Default)]
pub struct Acquirers {
    leases: HashMap<LeaseId, Arc<Actor>>,
    waiters: HashMap<WaiterId, Arc<Actor>>,
}

impl Acquirers {
    /// Who acquired `lease`, if known.
    pub fn of(&self, lease: LeaseId) -> Option<&Arc<Actor>> {
        self.leases.get(&lease)
    }

    /// `lease` was granted to `by` (at once, or given back to the process that held it).
    pub fn granted(&mut self, lease: LeaseId, by: Arc<Actor>) {
        self.leases.insert(lease, by);
    }

    /// `waiter`, queued for `by`.
    pub fn queued(&mut self, waiter: WaiterId, by: Arc<Actor>) {
        self.waiters.insert(waiter, by);
    }

    /// `waiter` was withdrawn.
    pub fn withdrawn(&mut self, waiter: WaiterId) {
        self.waiters.remove(&waiter);
    }

    /// How many leases have a known acquirer.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True when no lease has a known acquirer.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Follows what a step's effects did to leases and waiters: a waiter granted passes its
    /// acquirer to its lease, a wait that ran out is forgotten, an ended lease too. Returns the
    /// leases granted from a queue with their acquirer (whose grant records name the waiter's
    /// principal, not the caller's whose step granted them).
    pub fn settle(&mut self, fx: &[Effect]) -> Vec<(LeaseId, Arc<Actor>)> {
        let mut from_queue = Vec::new();
        if self.leases.is_empty() && self.waiters.is_empty() {
            return from_queue;
        }
        for effect in fx {
            match effect {
                Effect::Granted { waiter, lease } => {
                    if let Some(by) = self.waiters.remove(waiter) {
                        self.leases.insert(lease.lease, Arc::clone(&by));
                        from_queue.push((lease.lease, by));
                    }
                }
                Effect::WaitTimedOut { waiter, .. } => {
                    self.waiters.remove(waiter);
                }
                Effect::Ended { lease, .. } => {
                    self.leases.remove(lease);
                }
                Effect::Persist(_) => {}
            }
        }
        from_queue
    }
}
