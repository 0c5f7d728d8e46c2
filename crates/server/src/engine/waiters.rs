//! Callers of an acquire the driver keeps track of: queued waiters, and grants on their way to
//! disk. Either may go away (a client disconnects, a wire request is withdrawn); neither may
//! then leave a lease that nobody knows of until its TTL.

use locksmith_core::{AcquireError, LeaseView, WaiterId};
use locksmith_store::StoreError;
use tokio::sync::oneshot;

use super::{Engine, EngineError, lock};

/// How a queued waiter's wait ends.
pub(super) type WaitResult = Result<LeaseView, WaitEnd>;

#[derive(Debug)]
pub(super) enum WaitEnd {
    Refused(AcquireError),
    ShuttingDown,
    /// Storage failed while it waited: no grant can become durable any more.
    Storage(StoreError),
}

/// A queued acquire. Dropping it before the wait ends (the client disconnected) withdraws the
/// wait; a grant that raced with the withdrawal is released, never left to expire.
pub(super) struct WaitGuard {
    pub(super) engine: Engine,
    pub(super) waiter: WaiterId,
    pub(super) rx: Option<oneshot::Receiver<WaitResult>>,
}

impl WaitGuard {
    pub(super) async fn wait(mut self) -> Result<LeaseView, EngineError<AcquireError>> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(EngineError::ShuttingDown);
        };
        let outcome = rx.await;
        self.rx = None;
        match outcome {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(WaitEnd::Refused(e))) => Err(EngineError::Refused(e)),
            Ok(Err(WaitEnd::Storage(e))) => Err(EngineError::Storage(e)),
            Ok(Err(WaitEnd::ShuttingDown)) | Err(_) => Err(EngineError::ShuttingDown),
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let inner = &self.engine.inner;
        {
            let mut state = lock(&inner.state);
            state.locks.cancel_wait(self.waiter);
            state.acquirers.withdrawn(self.waiter);
            lock(&inner.waiters).remove(&self.waiter);
        }
        // After close() no grant can arrive; one that already did is released.
        rx.close();
        if let Ok(Ok(lease)) = rx.try_recv() {
            self.engine
                .release_abandoned(lease, "the waiter went away as its grant arrived");
        }
    }
}

/// An acquire granted at once, until its grant is durable and the caller has it. Dropped armed
/// (the caller went away mid-commit), it releases the lease, fenced by its token: the release
/// commits after the grant, so the lock goes to the next waiter instead of lingering a TTL.
/// It borrows the grant, so that the common case — the caller stays — copies nothing.
pub(super) struct GrantGuard<'a> {
    pub(super) engine: &'a Engine,
    pub(super) lease: Option<&'a LeaseView>,
}

impl GrantGuard<'_> {
    /// The grant is durable and goes to the caller (or the commit failed): nothing to release.
    pub(super) fn disarm(mut self) {
        self.lease = None;
    }
}

impl Drop for GrantGuard<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.engine.release_abandoned(
                lease.clone(),
                "the caller went away before its grant was durable",
            );
        }
    }
}
