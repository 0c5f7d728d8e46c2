//! The check a fenced write makes in the same step as it lands: is this lease, with this
//! token, a live holder of the resource now?

use super::LockTable;
use crate::effect::Effects;
use crate::error::{FenceError, WriterError};
use crate::ids::{FenceToken, LeaseId};
use crate::resource::validate_resource;
use crate::time::Now;
use crate::view::HolderView;

impl LockTable {
    /// Checks that `lease`, presenting `token`, is a live holder of `resource` at `now`: what a
    /// fenced write (a config revision) checks in the same step — same critical section, same
    /// durable batch — as it appends, so nothing can come between the check and the write.
    ///
    /// Unlike [`check_fence`](Self::check_fence), which knows only a token, it names the
    /// lease, so a refusal says why this writer lost the lock: broken (by whom, why), ended
    /// (released, expired, reclaimed), never granted — each as a renew would be told — or a
    /// token that is not the current holder's, with the current holders.
    pub fn check_writer(
        &mut self,
        resource: &str,
        lease: LeaseId,
        token: FenceToken,
        now: Now,
        fx: &mut Effects,
    ) -> Result<HolderView, WriterError> {
        validate_resource(resource).map_err(|e| WriterError::Stale {
            fence: FenceError::Invalid(e),
            holders: Vec::new(),
        })?;
        // Whatever ran out by now has ended: an expired lease must not write.
        self.advance(now, fx);
        let Some(l) = self.leases.get(&lease) else {
            return Err(WriterError::Lease(self.ended_error(lease)));
        };
        if l.token == token && &*l.resource == resource {
            return Ok(self.holder_view(l, now));
        }
        let holders: Vec<HolderView> = self
            .resources
            .get(resource)
            .map(|r| r.holders.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|id| self.leases.get(id))
            .map(|h| self.holder_view(h, now))
            .collect();
        let newest = holders
            .iter()
            .map(|h| h.token)
            .max()
            .unwrap_or(FenceToken(0));
        Err(WriterError::Stale {
            fence: FenceError::StaleToken {
                resource: resource.to_owned(),
                presented: token,
                newest,
            },
            holders,
        })
    }
}
