//! A resource's entry in the table, kept small because a server may hold a million of them.
//!
//! The entries live inline in the table's resource map, whose bucket array is about twice as
//! long as the number of entries; every byte of an entry is paid for twice, and at a restart
//! every page of that array is touched (and zeroed by the kernel) once. So an entry carries
//! only what nearly every held resource needs — its size and its holders, a single holder
//! inline — and everything a plainly held resource never has (a wait queue, holds, a lock-delay)
//! sits behind one optional box, created when first needed and dropped when empty again.

use std::collections::VecDeque;

use super::Waiter;
use crate::hold::HoldId;
use crate::ids::LeaseId;
use crate::time::Mono;

/// The leases holding a resource, in grant order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Holders {
    /// Nobody (the resource is only awaited, frozen or delayed).
    #[default]
    None,
    /// One holder: an exclusive lock, or a semaphore with one slot taken — nearly every resource.
    One(LeaseId),
    /// Two or more (a semaphore), oldest grant first.
    // Boxed, unlike the usual advice: it keeps this enum, and so every resource entry, at 16
    // bytes instead of 24 for a case few resources ever reach.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<LeaseId>>),
}

impl Holders {
    pub(super) fn as_slice(&self) -> &[LeaseId] {
        match self {
            Holders::None => &[],
            Holders::One(id) => std::slice::from_ref(id),
            Holders::Many(ids) => ids,
        }
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, LeaseId> {
        self.as_slice().iter()
    }

    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Holders::None)
    }

    /// Adds the newest holder.
    pub(super) fn push(&mut self, id: LeaseId) {
        *self = match std::mem::take(self) {
            Holders::None => Holders::One(id),
            Holders::One(first) => Holders::Many(Box::new(vec![first, id])),
            Holders::Many(mut ids) => {
                ids.push(id);
                Holders::Many(ids)
            }
        };
    }

    /// Adds a holder at its place in grant order, given each holder's rank in that order: what
    /// a restore does with a lease that comes after a newer one of the same resource.
    pub(super) fn insert_by<K: Ord>(&mut self, id: LeaseId, rank: impl Fn(LeaseId) -> K) {
        self.push(id);
        if let Holders::Many(ids) = self {
            ids.sort_by_key(|h| rank(*h));
        }
    }

    /// Removes `id` if it holds; the order of the others is kept.
    pub(super) fn remove(&mut self, id: LeaseId) {
        match self {
            Holders::One(only) if *only == id => *self = Holders::None,
            Holders::Many(ids) => {
                ids.retain(|h| *h != id);
                match ids.as_slice() {
                    [] => *self = Holders::None,
                    [only] => *self = Holders::One(*only),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// What a plainly held resource does not have: a wait queue, holds, a lock-delay.
#[derive(Debug, Clone, Default)]
pub(super) struct Busy {
    /// Waiters, served first in, first out.
    pub(super) queue: VecDeque<Waiter>,
    /// Holds placed on this resource, active or pending.
    pub(super) holds: Vec<HoldId>,
    /// Lock-delay: no grants before this instant; the timer is keyed by the failed lease.
    pub(super) delay: Option<(Mono, LeaseId)>,
}

impl Busy {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.holds.is_empty() && self.delay.is_none()
    }
}

/// An empty queue to lend out for a resource that has none.
static NO_QUEUE: VecDeque<Waiter> = VecDeque::new();

/// A held, awaited, frozen or delayed resource.
#[derive(Debug, Clone, Default)]
pub(super) struct Resource {
    /// The slot count: that of its holders, or while none, of the last grant.
    pub(super) slots: u32,
    pub(super) holders: Holders,
    /// `None` whenever the queue and the holds are empty and no lock-delay runs (see
    /// [`Resource::tidy`]); only ever read through the accessors below, which treat an empty
    /// box and none alike.
    busy: Option<Box<Busy>>,
}

impl Resource {
    pub(super) fn queue(&self) -> &VecDeque<Waiter> {
        self.busy.as_ref().map_or(&NO_QUEUE, |b| &b.queue)
    }

    pub(super) fn holds(&self) -> &[HoldId] {
        self.busy.as_ref().map_or(&[], |b| &b.holds)
    }

    pub(super) fn delay(&self) -> Option<(Mono, LeaseId)> {
        self.busy.as_ref().and_then(|b| b.delay)
    }

    /// The queue, holds and lock-delay, to change; created if missing. Call [`Resource::tidy`]
    /// after taking something out.
    pub(super) fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }

    /// The queue, holds and lock-delay, to change, if there are any (nothing is created).
    pub(super) fn busy_if_any(&mut self) -> Option<&mut Busy> {
        self.busy.as_deref_mut()
    }

    /// Drops the box once its queue and holds are empty and no lock-delay runs.
    pub(super) fn tidy(&mut self) {
        if self.busy.as_ref().is_some_and(|b| b.is_empty()) {
            self.busy = None;
        }
    }

    /// Nobody holds it, waits for it, froze it or delays it: the entry can go.
    pub(super) fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.busy.as_ref().is_none_or(|b| b.is_empty())
    }

    /// No queue, no holds, no lock-delay.
    pub(super) fn is_plain(&self) -> bool {
        self.busy.as_ref().is_none_or(|b| b.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_stays_small() {
        assert_eq!(std::mem::size_of::<Holders>(), 16);
        assert!(std::mem::size_of::<Resource>() <= 32);
    }

    #[test]
    fn holders_keep_grant_order_through_growth_and_removal() {
        let mut h = Holders::default();
        assert!(h.is_empty());
        for id in [3, 5, 9] {
            h.push(LeaseId(id));
        }
        assert_eq!(h.as_slice(), &[LeaseId(3), LeaseId(5), LeaseId(9)]);
        h.remove(LeaseId(5));
        assert_eq!(h.as_slice(), &[LeaseId(3), LeaseId(9)]);
        h.remove(LeaseId(3));
        assert_eq!(h, Holders::One(LeaseId(9)));
        h.remove(LeaseId(4));
        assert_eq!(h.len(), 1);
        h.remove(LeaseId(9));
        assert_eq!(h, Holders::None);
        h.insert_by(LeaseId(8), |id| id);
        h.insert_by(LeaseId(2), |id| id);
        assert_eq!(h.as_slice(), &[LeaseId(2), LeaseId(8)]);
    }

    #[test]
    fn an_emptied_busy_part_is_dropped() {
        let mut r = Resource::default();
        assert!(r.is_idle());
        r.busy().holds.push(HoldId(1));
        assert!(!r.is_idle() && !r.is_plain());
        r.busy().holds.clear();
        r.tidy();
        assert!(r.busy.is_none() && r.is_idle());
    }
}
