//! Read-only views of the table, and the "may this resource be granted now?" question.

use std::sync::Arc;

use super::{Lease, LockTable, Resource};
use crate::error::AcquireError;
use crate::hold::{HoldState, HoldView};
use crate::time::Now;
use crate::view::{HolderView, LockState, ResourceView, WaiterView};

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
            .holds
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
        match res.delay {
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
        let since = now.mono.ms_since(l.renewed);
        HolderView {
            lease: l.id,
            token: l.token,
            owner: l.owner.clone(),
            granted_at_ms: l.granted_at_ms,
            last_heartbeat_ms: l.renewed_wall_ms,
            ttl_ms: l.ttl_ms,
            ttl_left_ms: l.deadline.ms_since(now.mono),
            stale: since > l.ttl_ms / 2,
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
            .holds
            .iter()
            .filter_map(|id| self.hold_view(*id, now))
            .collect();
        let delay_left_ms = res
            .delay
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
                .queue
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
