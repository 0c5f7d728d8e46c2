//! A lease guard: heartbeats at TTL/3 in the background and reports the loss of the lease.
//!
//! It runs over any [`LeaseApi`]: HTTP ([`Client`], the default), the wire protocol
//! ([`WireClient`](crate::WireClient)), or an in-process engine. Its timing is tokio's, so on a
//! paused runtime (`tokio::time::pause`) it heartbeats on virtual time, as a simulation needs.
//!
//! A lease is lost when the server says it ended (expired, released elsewhere, reclaimed), or
//! when no renewal has succeeded for a whole TTL (the server must be assumed to have reclaimed
//! it, even if it is merely unreachable). Either way the holder must stop writing at once.
//!
//! # What the caller must do
//!
//! The guard keeps the lease alive from *this* process. The lease's owner is whatever process
//! the acquire named; when that process dies (even by `kill -9`), heartbeats stop, and a server
//! on the same node reclaims the lock within one probe interval — another node's within a TTL.
//! Whatever the protected work runs in must therefore not outlive the guard's process:
//!
//! - Do the work in this process, or in processes that die with it. `PR_SET_PDEATHSIG` alone
//!   is not enough: it fires when the *thread* that forked exits (an async runtime forks from
//!   any worker), and it does not reach grandchildren. `locksmith run` starts a supervisor that
//!   owns the lease (acquire with its pid), adopts everything the command starts (a child
//!   subreaper), and kills all of it when a socket from the guard's process reads end-of-file —
//!   which the kernel guarantees when that process dies, even by SIGKILL.
//! - Check [`LeaseGuard::lost`] (or [`LeaseGuard::is_lost`]) before each protected write, stop
//!   the work the moment it resolves, and pass the lease's fencing token with every write, so
//!   that a write the loss raced with is refused by the resource itself.
//! - End with [`LeaseGuard::release`], and treat its [`ReleaseError::Lost`] like a loss: the
//!   lease ended before the work did (expired, broken, or released by someone else), so the last
//!   writes were not protected.

use std::sync::Arc;
use std::time::Duration;

use locksmith_api::{ErrorCode, LeaseView};
use locksmith_core::EndCause;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::ClientError;
use crate::transport::LeaseApi;

/// Why a lease was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseLost {
    /// The server says the lease ended; the message says why.
    Ended(String),
    /// No renewal succeeded within the TTL; the last error says why.
    Unreachable(String),
    /// An operator broke the lease (the safe bypass): who, and why.
    Broken {
        /// The operator.
        by: String,
        /// Their reason.
        reason: String,
    },
}

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseLost::Ended(m) => write!(f, "{m}"),
            LeaseLost::Unreachable(m) => {
                write!(f, "no heartbeat got through for a whole TTL ({m})")
            }
            LeaseLost::Broken { by, reason } => write!(f, "lease BROKEN by {by}: {reason}"),
        }
    }
}

/// Why [`LeaseGuard::release`] did not end the lease as the guard's own release.
#[derive(Debug, Clone, Error)]
pub enum ReleaseError {
    /// The lease had ended before this release (expired, reclaimed, broken, or released by
    /// someone else): the work since was not protected by the lock.
    #[error("{0}")]
    Lost(LeaseLost),
    /// The release could not be made (server unreachable or unavailable, or refused for another
    /// reason); the server reclaims the lease when its TTL runs out.
    #[error(transparent)]
    Failed(ClientError),
}

/// Holds a lease and keeps it alive until released or dropped, over the transport `T`.
#[derive(Debug)]
pub struct LeaseGuard<T = Client> {
    client: Arc<T>,
    lease: LeaseView,
    lost: watch::Receiver<Option<LeaseLost>>,
    task: JoinHandle<()>,
}

impl<T: LeaseApi + 'static> LeaseGuard<T> {
    /// Starts heartbeating `lease` (granted through `client`'s server) at a third of its TTL.
    pub fn start(client: T, lease: LeaseView) -> Self {
        let client = Arc::new(client);
        let (tx, lost) = watch::channel(None);
        let task = tokio::spawn(heartbeat(client.clone(), lease.clone(), tx));
        Self {
            client,
            lease,
            lost,
            task,
        }
    }

    /// The lease held.
    pub fn lease(&self) -> &LeaseView {
        &self.lease
    }

    /// Resolves when the lease is lost (never, while it is held).
    pub async fn lost(&self) -> LeaseLost {
        let mut rx = self.lost.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // The heartbeat task ended without a verdict: only happens on release.
                std::future::pending::<()>().await;
            }
        }
    }

    /// True once the lease is known lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Stops heartbeating and releases the lease.
    ///
    /// The guard releases its lease once, so a server answering "already released" means
    /// someone else released it (e.g. `locksmith release ID` from another shell) while the
    /// caller thought it held the lock: that is [`ReleaseError::Lost`], like an expiry or a
    /// break, never a success.
    pub async fn release(self) -> Result<(), ReleaseError> {
        self.task.abort();
        let known = self.lost.borrow().clone();
        let answer = self
            .client
            .release(self.lease.lease, Some(self.lease.token))
            .await;
        match (answer, known) {
            (Ok(r), None) if !r.already_released => Ok(()),
            (Ok(_), None) => Err(ReleaseError::Lost(LeaseLost::Ended(format!(
                "lease {} on {} was released by someone else before its holder released it",
                self.lease.lease, self.lease.resource
            )))),
            // The heartbeat already knew: that verdict says why (the release's answer may not).
            (_, Some(lost)) => Err(ReleaseError::Lost(lost)),
            (Err(e), None) if is_final(&e) => Err(ReleaseError::Lost(lost_for(&e))),
            (Err(e), None) => Err(ReleaseError::Failed(e)),
        }
    }
}

impl<T> Drop for LeaseGuard<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn heartbeat<T: LeaseApi>(
    client: Arc<T>,
    lease: LeaseView,
    tx: watch::Sender<Option<LeaseLost>>,
) {
    let ttl = Duration::from_millis(lease.ttl_ms);
    let period = ttl / 3;
    // Measured from when the last successful renewal was *sent*: the server renewed no earlier
    // than that, so `last_ok + ttl` is never later than the server's own deadline.
    let mut last_ok = Instant::now();
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let sent = Instant::now();
        let renewed = tokio::time::timeout(period, client.renew(lease.lease, Some(lease.token)))
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Transport {
                    server: client.endpoint().to_string(),
                    reason: format!("renewal took longer than {period:?}"),
                })
            });
        match renewed {
            Ok(_) => last_ok = sent,
            Err(e) if is_final(&e) => {
                let _ = tx.send(Some(lost_for(&e)));
                return;
            }
            Err(e) => {
                if last_ok.elapsed() >= ttl {
                    let _ = tx.send(Some(LeaseLost::Unreachable(e.to_string())));
                    return;
                }
                tracing::warn!(lease = %lease.lease, error = %e, "heartbeat failed; retrying");
            }
        }
    }
}

/// A server verdict that the lease is gone (as opposed to a transient failure).
fn is_final(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            ErrorCode::LeaseExpired
                | ErrorCode::NotHolder
                | ErrorCode::StaleToken
                | ErrorCode::Broken
        )
    )
}

/// How a final verdict reads: a break names its operator and reason, whether the server answered
/// `broken` or (once it no longer remembers the break in detail) `lease_expired` with that cause.
fn lost_for(e: &ClientError) -> LeaseLost {
    if let Some(body) = e.body() {
        if let Some(EndCause::Broken { by, reason }) = &body.cause {
            return LeaseLost::Broken {
                by: by.clone(),
                reason: reason.clone(),
            };
        }
        if body.error == ErrorCode::Broken {
            return LeaseLost::Broken {
                by: body.by.clone().unwrap_or_else(|| "an operator".into()),
                reason: body.reason.clone().unwrap_or_default(),
            };
        }
    }
    LeaseLost::Ended(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use locksmith_api::{AcquireRequest, ErrorBody, FenceCheckResponse, ReleaseResponse};
    use locksmith_core::{FenceToken, LeaseId, Owner};

    fn api(body: ErrorBody) -> ClientError {
        ClientError::Api {
            status: body.error.http_status(),
            body: Box::new(body),
        }
    }

    #[test]
    fn a_break_is_final_and_names_the_operator_and_reason() {
        let broken = api(ErrorBody {
            by: Some("alice@ops".into()),
            reason: Some("clearing a stale lock".into()),
            ..ErrorBody::new(ErrorCode::Broken, "x")
        });
        assert!(is_final(&broken));
        let lost = lost_for(&broken);
        assert_eq!(
            lost,
            LeaseLost::Broken {
                by: "alice@ops".into(),
                reason: "clearing a stale lock".into()
            }
        );
        assert_eq!(
            lost.to_string(),
            "lease BROKEN by alice@ops: clearing a stale lock"
        );

        let expired_by_break = api(ErrorBody {
            cause: Some(EndCause::Broken {
                by: "bob".into(),
                reason: "r".into(),
            }),
            ..ErrorBody::new(ErrorCode::LeaseExpired, "x")
        });
        assert!(matches!(lost_for(&expired_by_break), LeaseLost::Broken { by, .. } if by == "bob"));

        let expired = api(ErrorBody::new(ErrorCode::LeaseExpired, "it expired"));
        assert_eq!(lost_for(&expired), LeaseLost::Ended("it expired".into()));
    }

    /// How the scripted server answers renewals.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Renewals {
        Granted,
        Unreachable,
        Expired,
    }

    /// A transport whose answers the test scripts: no server, no socket, no clock of its own.
    #[derive(Debug)]
    struct Scripted {
        renewals: Mutex<Renewals>,
        renewed: AtomicU32,
        lease: LeaseView,
    }

    impl Scripted {
        fn new(renewals: Renewals) -> Self {
            Self {
                renewals: Mutex::new(renewals),
                renewed: AtomicU32::new(0),
                lease: lease(),
            }
        }
    }

    fn lease() -> LeaseView {
        LeaseView {
            lease: LeaseId(7),
            token: FenceToken(7),
            resource: "res".into(),
            ttl_ms: 3_000,
            slots: 1,
            owner: Owner {
                node: "node-1".into(),
                pid: 4121,
                start_time: 1,
                boot_id: "boot-a".into(),
                user: "tester".into(),
                purpose: "p".into(),
                pid_ns: None,
            },
            granted_at_ms: 0,
            reacquired: false,
        }
    }

    impl LeaseApi for Scripted {
        fn endpoint(&self) -> &str {
            "scripted"
        }

        async fn acquire(&self, _req: &AcquireRequest) -> Result<LeaseView, ClientError> {
            Ok(self.lease.clone())
        }

        async fn renew(
            &self,
            _lease: LeaseId,
            _token: Option<FenceToken>,
        ) -> Result<LeaseView, ClientError> {
            let mode = *self.renewals.lock().unwrap_or_else(|e| e.into_inner());
            match mode {
                Renewals::Granted => {
                    self.renewed.fetch_add(1, Ordering::SeqCst);
                    Ok(self.lease.clone())
                }
                Renewals::Unreachable => Err(ClientError::Transport {
                    server: "scripted".into(),
                    reason: "connection refused".into(),
                }),
                Renewals::Expired => Err(api(ErrorBody::new(
                    ErrorCode::LeaseExpired,
                    "lease 7 on res expired",
                ))),
            }
        }

        async fn release(
            &self,
            lease: LeaseId,
            _token: Option<FenceToken>,
        ) -> Result<ReleaseResponse, ClientError> {
            Ok(ReleaseResponse {
                lease,
                resource: "res".into(),
                already_released: false,
            })
        }

        async fn check_fence(
            &self,
            _resource: &str,
            _token: FenceToken,
        ) -> Result<FenceCheckResponse, ClientError> {
            Err(api(ErrorBody::new(ErrorCode::StaleToken, "unused")))
        }
    }

    /// A guard runs over any transport, on tokio's clock: three TTLs of virtual time pass in no
    /// real time, renewed every third of a TTL.
    #[tokio::test(start_paused = true)]
    async fn a_guard_over_any_transport_keeps_its_lease_on_virtual_time() {
        let guard = LeaseGuard::start(Scripted::new(Renewals::Granted), lease());
        tokio::time::sleep(Duration::from_millis(3 * 3_000 + 500)).await;
        assert!(!guard.is_lost());
        assert_eq!(guard.client.renewed.load(Ordering::SeqCst), 9);
        guard.release().await.expect("released as its own");
    }

    /// Bug pinned: the guard measured "no renewal for a whole TTL" on the real clock
    /// (`std::time::Instant`) while it slept on tokio's, so on virtual time (a simulation on a
    /// paused runtime) an unreachable server was never reported: the holder wrote on unfenced.
    #[tokio::test(start_paused = true)]
    async fn an_unreachable_server_is_reported_after_one_ttl_of_virtual_time() {
        let started = Instant::now();
        let guard = LeaseGuard::start(Scripted::new(Renewals::Unreachable), lease());
        let lost = tokio::time::timeout(Duration::from_secs(60), guard.lost())
            .await
            .expect("lost within a minute of virtual time");
        assert!(
            matches!(lost, LeaseLost::Unreachable(ref m) if m.contains("connection refused")),
            "{lost:?}"
        );
        // Renewals at 1 s, 2 s, 3 s: the third fails a whole TTL after the grant.
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_the_server_ended_is_reported_lost_at_the_next_renewal() {
        let transport = Scripted::new(Renewals::Granted);
        let guard = LeaseGuard::start(transport, lease());
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(!guard.is_lost());
        *guard
            .client
            .renewals
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Renewals::Expired;
        let lost = guard.lost().await;
        assert_eq!(lost, LeaseLost::Ended("lease 7 on res expired".into()));
        assert!(matches!(guard.release().await, Err(ReleaseError::Lost(_))));
    }
}
