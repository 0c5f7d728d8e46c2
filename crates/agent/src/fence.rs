//! The local fence check: which desired revisions an endpoint may apply.
//!
//! The server fences every write to a config with the lock `configs/NAME`. The agent keeps its
//! own record so that a revision that slipped past (a replayed message, a stale server, a ghost
//! holder's draft) is refused on the endpoint before anything is touched. The rule is stated in
//! the crate docs; [`FenceState::check`] is its only implementation.

use serde::{Deserialize, Serialize};

/// What the agent knows about one config's fencing, persisted in its state file.
///
/// Zero means "none": no revision applied, no fence told. Locksmith's fencing tokens start at 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceState {
    /// The revision applied now (0: none yet).
    pub applied_rev: u64,
    /// The highest fencing token any applied revision was written under. Never goes down.
    pub applied_token: u64,
    /// The newest fence of `configs/NAME` the server has told the agent of. Never goes down.
    pub told_fence: u64,
    /// The desired revision that came with `told_fence` when it was first told: the newest
    /// revision the server knew of when that fence was current.
    pub told_fence_rev: u64,
}

/// Why a desired revision was refused. Its `Display` is the `lock mismatch` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Written under an older token than a revision already applied.
    #[error(
        "lock mismatch: {config} HOT — revision {rev} was written under token {token}, but revision {applied_rev} was applied under token {applied_token}; refusing it"
    )]
    OlderThanApplied {
        /// The config.
        config: String,
        /// The refused revision.
        rev: u64,
        /// The token it was written under.
        token: u64,
        /// The revision applied now.
        applied_rev: u64,
        /// The highest token applied.
        applied_token: u64,
    },
    /// Newer than the revision that was current when the agent learned of a newer fence, yet
    /// written under an older token: not the current holder's write.
    #[error(
        "lock mismatch: {config} HOT — revision {rev} was written under token {token}, but token {fence} holds configs/{config} (told with revision {told_rev}); refusing it"
    )]
    NotUnderFence {
        /// The config.
        config: String,
        /// The refused revision.
        rev: u64,
        /// The token it was written under.
        token: u64,
        /// The fence the agent was told of.
        fence: u64,
        /// The revision that came with that fence.
        told_rev: u64,
    },
}

impl FenceState {
    /// Folds in the fence a desired (non-shadow) revision came with. The fence only moves up; a
    /// new fence is recorded with the revision it came with, and the same fence told again with
    /// a later revision keeps the first one (the strictest: every revision after it must carry
    /// that fence or a later one). Returns whether anything changed.
    pub fn tell(&mut self, fence: u64, rev: u64) -> bool {
        if fence > self.told_fence {
            self.told_fence = fence;
            self.told_fence_rev = rev;
            true
        } else {
            false
        }
    }

    /// The rule: revision `rev` written under `token` is accepted iff
    /// `token >= applied_token` and (`rev <= told_fence_rev` or `token >= told_fence`).
    pub fn check(&self, config: &str, rev: u64, token: u64) -> Result<(), Refusal> {
        if token < self.applied_token {
            return Err(Refusal::OlderThanApplied {
                config: config.to_owned(),
                rev,
                token,
                applied_rev: self.applied_rev,
                applied_token: self.applied_token,
            });
        }
        if rev > self.told_fence_rev && token < self.told_fence {
            return Err(Refusal::NotUnderFence {
                config: config.to_owned(),
                rev,
                token,
                fence: self.told_fence,
                told_rev: self.told_fence_rev,
            });
        }
        Ok(())
    }

    /// Records an applied revision: `applied_token` only moves up.
    pub fn applied(&mut self, rev: u64, token: u64) {
        self.applied_rev = rev;
        self.applied_token = self.applied_token.max(token);
    }
}
