//! Resizing a semaphore: a trusted caller (the server's FleetLock front end, whose operator can
//! change a reboot group's slot count at runtime) sets the resource's slot count, and the change
//! takes effect at once — unlike a public acquire, which is refused with `SlotsMismatch` when it
//! names another size than the holders'.
//!
//! - Growing hands the new free slots to the queue at once (first come, first served).
//! - Shrinking revokes nobody: holders above the new size keep their leases, and nobody new is
//!   granted until the holders are fewer than the new size.
//! - Queued waiters wait for the new size from now on (a waiter of another size would block the
//!   head of the queue with a slot free).
//!
//! Nothing is persisted: every stored lease carries the slot count it was granted under, and
//! [`LockTable::restore`] takes the resource's size from its newest lease; a trusted caller
//! re-applies its size after a restart (the FleetLock front end does on every request). Live
//! leases report the new size in their views.

use super::LockTable;
use crate::effect::Effects;
use crate::error::InvalidRequest;
use crate::resource::validate_resource;
use crate::time::Now;

impl LockTable {
    /// Sets `resource`'s slot count to `slots` (trusted callers only: the API has no route to
    /// it). Existing holders keep their leases even above the new size; new grants are made
    /// only while the holders are fewer than `slots`; growing hands free slots to the queue at
    /// once (those grants come out as [`crate::Effect::Granted`]).
    ///
    /// Returns the size the resource had — that of its holders, or while nobody holds it, that
    /// of its queue — or `None` if it was neither held nor awaited (then there is nothing to
    /// resize: the next grant sets the size).
    pub fn resize(
        &mut self,
        resource: &str,
        slots: u32,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Option<u32>, InvalidRequest> {
        validate_resource(resource)?;
        let max = self.config.max_slots;
        if slots == 0 || slots > max {
            return Err(InvalidRequest::new(
                "slots",
                format!("must be between 1 and {max} (got {slots})"),
            ));
        }
        self.advance(now, fx);
        Ok(self.apply_size(resource, slots, now, fx))
    }

    /// [`LockTable::resize`] without validation or advancing the clock (callers did both).
    pub(super) fn apply_size(
        &mut self,
        resource: &str,
        slots: u32,
        now: Now,
        fx: &mut Effects,
    ) -> Option<u32> {
        let res = self.resources.get_mut(resource)?;
        let before = if !res.holders.is_empty() {
            Some(res.slots)
        } else {
            res.queue().front().map(|w| w.slots)
        };
        res.slots = slots;
        if let Some(busy) = res.busy_if_any() {
            for w in busy.queue.iter_mut() {
                w.slots = slots;
            }
        }
        for id in res.holders.iter() {
            if let Some(lease) = self.leases.get_mut(id) {
                lease.slots = slots;
            }
        }
        if before.is_some_and(|b| b != slots) {
            // Growing frees slots; a shrink frees none, and `wake` grants only while the holders
            // are fewer than the size, so calling it is safe either way.
            self.wake(resource, now, fx);
        }
        before
    }
}
