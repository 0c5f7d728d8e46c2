//! Read-only views of the table, and the "may this resource be granted now?" question.

use std::sync::Arc;

use super::{Lease, LockTable, Resource};
use crate::error::AcquireError;
use crate::hold::{HoldState, HoldView};
use crate::time::Now;
use crate::view::{HolderView, LockState, ResourceView, WaiterView};

/// The resources of a table by how much attention they need: see [`LockTable::census`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Resources that are HOT with no waiter, no hold and no lock-delay: nothing to report.
    pub hot: u64,
    /// Every other resource's view, sorted by name.
    pub notable: Vec<ResourceView>,
}

impl LockTable {
    /// One resource's view (FREE if nobody holds, waits for, or froze it).
    pub fn resource(&self, resource: &str, now: Now) -> ResourceView {
        match self.resources.get(resource) {
            Some(res) => self.resource_view(resource, res, now),
            None => ResourceView {
                resource: resource.to_string(),
                state: LockState::Free,
                slots: 1,
                holders: Vec::new(),
                waiters: Vec::new(),
                holds: Vec::new(),
                delay_left_ms: 0,
            },
        }
    }

    /// Every held, awaited, frozen or delayed resource, sorted by name.
    pub fn resources(&self, now: Now) -> Vec<ResourceView> {
        let mut names: Vec<&Arc<str>> = self.resources.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| self.resources.get(n).map(|r| self.resource_view(n, r, now)))
            .collect()
    }

    /// One page of [`resources`](Self::resources): the resources whose names start with
    /// `prefix` and sort after `after` (all, if `None`) — and, with `node`, that have a holder
    /// on that node (under any boot id) — at most `limit` of them, sorted by name, and whether
    /// more follow. Costs one pass over the resource names (with `node`: over that node's
    /// leases, through the node index) and a heap of `limit`, and builds only the page's views
    /// — what keeps a listing of a million locks from holding the table for seconds: a client
    /// pages through with the last name of each page.
    pub fn resources_page(
        &self,
        now: Now,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        node: Option<&str>,
    ) -> (Vec<ResourceView>, bool) {
        let matches = |name: &str| name.starts_with(prefix) && after.is_none_or(|a| name > a);
        let names = match node {
            None => smallest(
                self.resources.keys().map(|n| &**n).filter(|n| matches(n)),
                limit,
            ),
            Some(node) => {
                let held_there = self
                    .nodes
                    .get(node)
                    .into_iter()
                    .flat_map(|boots| boots.values())
                    .flat_map(|boot| boot.leases.iter())
                    .filter_map(|id| self.leases.get(id))
                    .map(|lease| &*lease.resource)
                    .filter(|n| matches(n));
                // A semaphore can have several of its holders on one node.
                let mut names: Vec<&str> = held_there.collect();
                names.sort_unstable();
                names.dedup();
                names.truncate(limit.saturating_add(1));
                names
            }
        };
        let more = names.len() > limit;
        let page = names
            .into_iter()
            .take(limit)
            .filter_map(|n| self.resources.get(n).map(|r| self.resource_view(n, r, now)))
            .collect();
        (page, more)
    }

    /// What a status report needs, without a view of every resource: how many resources are
    /// plainly HOT, and the views of all the others (STALE, FROZEN, DELAYED, or with waiters),
    /// sorted by name. A plainly HOT resource costs a look at its holders and builds nothing,
    /// so a million held leases are counted in one pass without copying a name.
    pub fn census(&self, now: Now) -> Census {
        let mut census = Census::default();
        let mut notable: Vec<(&Arc<str>, &Resource)> = Vec::new();
        for (name, res) in &self.resources {
            let plain = res.is_plain()
                && !res.holders.is_empty()
                && res
                    .holders
                    .iter()
                    .filter_map(|id| self.leases.get(id))
                    .all(|l| !is_stale(l, now));
            if plain {
                census.hot += 1;
            } else {
                notable.push((name, res));
            }
        }
        notable.sort_by(|a, b| a.0.cmp(b.0));
        census.notable = notable
            .into_iter()
            .map(|(name, res)| self.resource_view(name, res, now))
            .collect();
        census
    }

    /// Every hold, active or pending, oldest first.
    pub fn holds(&self, now: Now) -> Vec<HoldView> {
        let mut ids: Vec<_> = self.holds.keys().copied().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.hold_view(id, now))
            .collect()
    }

    /// Why a grant on `res` must wait right now, if it must: a hold in force, or a lock-delay.
    pub(super) fn blocked(&self, name: &str, res: &Resource, now: Now) -> Option<AcquireError> {
        let active: Vec<HoldView> = res
            .holds()
            .iter()
            .filter_map(|id| self.hold_view(*id, now))
            .filter(|h| h.state == HoldState::Active)
            .collect();
        if !active.is_empty() {
            return Some(AcquireError::Frozen {
                resource: name.to_string(),
                holds: active,
            });
        }
        match res.delay() {
            Some((until, _)) if until > now.mono => Some(AcquireError::LockDelay {
                resource: name.to_string(),
                left_ms: until.ms_since(now.mono),
            }),
            _ => None,
        }
    }

    pub(super) fn hold_view(&self, id: crate::hold::HoldId, now: Now) -> Option<HoldView> {
        self.holds.get(&id).map(|h| HoldView {
            record: h.record.clone(),
            state: h.state,
            ends_in_ms: h.deadline.ms_since(now.mono),
        })
    }

    pub(super) fn holder_view(&self, l: &Lease, now: Now) -> HolderView {
        HolderView {
            lease: l.id,
            token: l.token,
            owner: l.owner(),
            granted_at_ms: l.granted_at_ms,
            last_heartbeat_ms: l.renewed_wall_ms,
            ttl_ms: l.ttl_ms,
            ttl_left_ms: l.deadline.ms_since(now.mono),
            stale: is_stale(l, now),
        }
    }

    fn resource_view(&self, name: &str, res: &Resource, now: Now) -> ResourceView {
        let holders: Vec<HolderView> = res
            .holders
            .iter()
            .filter_map(|id| self.leases.get(id))
            .map(|l| self.holder_view(l, now))
            .collect();
        let holds: Vec<HoldView> = res
            .holds()
            .iter()
            .filter_map(|id| self.hold_view(*id, now))
            .collect();
        let delay_left_ms = res
            .delay()
            .map(|(until, _)| until.ms_since(now.mono))
            .unwrap_or(0);
        let state = if holds.iter().any(|h| h.state == HoldState::Active) {
            LockState::Frozen
        } else if holders.iter().any(|h| h.stale) {
            LockState::Stale
        } else if !holders.is_empty() {
            LockState::Hot
        } else if delay_left_ms > 0 {
            LockState::Delayed
        } else {
            LockState::Free
        };
        ResourceView {
            resource: name.to_string(),
            state,
            slots: res.slots.max(1),
            holders,
            waiters: res
                .queue()
                .iter()
                .map(|w| WaiterView {
                    owner: w.owner.clone(),
                    waiting_since_ms: w.since_wall_ms,
                })
                .collect(),
            holds,
            delay_left_ms,
        }
    }
}

/// Whether a holder is stale: its heartbeat is overdue by more than half its TTL.
fn is_stale(l: &Lease, now: Now) -> bool {
    now.mono.ms_since(l.renewed) > l.ttl_ms / 2
}

/// The `limit + 1` smallest of `names`, sorted (the extra one says "more follow"): a max-heap
/// of that size over one pass.
fn smallest<'a>(names: impl Iterator<Item = &'a str>, limit: usize) -> Vec<&'a str> {
    let keep = limit.saturating_add(1);
    let mut heap: std::collections::BinaryHeap<&str> = std::collections::BinaryHeap::new();
    for name in names {
        if heap.len() < keep {
            heap.push(name);
        } else if heap.peek().is_some_and(|largest| name < *largest) {
            heap.pop();
            heap.push(name);
        }
    }
    heap.into_sorted_vec()
}
