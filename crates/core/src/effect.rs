//! What the table asks its driver to do after an operation.

use crate::error::{AcquireError, EndCause};
use crate::ids::{FenceToken, LeaseId, WaiterId};
use crate::owner::Owner;
use crate::record::Mutation;
use crate::view::LeaseView;

/// A decision the driver must carry out. Effects come out in order; `Persist` effects must be made
/// durable, in that order, before any reply or [`Effect::Granted`] delivery produced by the same
/// operation is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Make this change durable.
    Persist(Mutation),
    /// A queued waiter was granted: deliver this lease to it (after persisting).
    Granted {
        /// The waiter that now holds the lease.
        waiter: WaiterId,
        /// Its lease.
        lease: LeaseView,
    },
    /// A queued waiter's wait ran out: answer it with this error.
    WaitTimedOut {
        /// The waiter.
        waiter: WaiterId,
        /// The error to answer with (HOT, naming the holders).
        error: AcquireError,
    },
    /// A lease ended (for metrics, audit and events).
    Ended {
        /// The lease.
        lease: LeaseId,
        /// Its resource.
        resource: String,
        /// Its holder.
        owner: Owner,
        /// Its token.
        token: FenceToken,
        /// Why it ended.
        cause: EndCause,
    },
}

/// The effects of one or more operations, in order.
pub type Effects = Vec<Effect>;
