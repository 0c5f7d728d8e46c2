//! A lease guard: heartbeats at TTL/3 in the background and reports the loss of the lease.
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

use std::time::{Duration, Instant};

use locksmith_api::{ErrorCode, LeaseView};
use locksmith_core::EndCause;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;

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

/// Holds a lease and keeps it alive until released or dropped.
#[derive(Debug)]
pub struct LeaseGuard {
    client: Client,
    lease: LeaseView,
    lost: watch::Receiver<Option<LeaseLost>>,
    task: JoinHandle<()>,
}

impl LeaseGuard {
    /// Starts heartbeating `lease` at a third of its TTL.
    pub fn start(client: Client, lease: LeaseView) -> Self {
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

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn heartbeat(client: Client, lease: LeaseView, tx: watch::Sender<Option<LeaseLost>>) {
    let ttl = Duration::from_millis(lease.ttl_ms);
    let period = ttl / 3;
    // Measured from when the last successful renewal was *sent*: the server renewed no earlier
    // than that, so `last_ok + ttl` is never later than the server's own deadline.
    let mut last_ok = Instant::now();
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let sent = Instant::now();
        let renewed = tokio::time::timeout(period, client.renew(lease.lease, Some(lease.token)))
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Transport {
                    server: client.base().to_string(),
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
    use super::*;
    use locksmith_api::ErrorBody;

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
}
