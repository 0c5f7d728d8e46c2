//! [`LocalClient`]: the lease calls of [`LeaseApi`] made in-process, straight on an [`Engine`]
//! — no socket, no serialization. A [`LeaseGuard`](locksmith_client::LeaseGuard), or any
//! code generic over [`LeaseApi`], runs on it as it runs over HTTP or the wire protocol: the
//! fleet simulator runs thousands of agents on one engine this way.
//!
//! The answers are the API's: a refusal is the [`ClientError::Api`] the HTTP client would get,
//! with the same [`ErrorBody`](locksmith_api::ErrorBody) and status, because it is built by the
//! server's one error mapping ([`ApiError`]'s conversions). Acquires take the API's defaults
//! (TTL, one slot, no wait) and the engine's table rules; what only the listeners check is
//! skipped — an owner naming the serving machine's own node under another boot id is refused
//! by HTTP and the wire protocol, which know that machine, not here (a simulation's nodes are
//! not the machine it runs on).

use std::time::Duration;

use locksmith_api::{
    AcquireRequest, DEFAULT_TTL_MS, FenceCheckResponse, LeaseView, ReleaseResponse,
};
use locksmith_client::{ClientError, LeaseApi};
use locksmith_core::{Acquire, FenceToken, LeaseId, Trusted};

use crate::domains::leases::ops::valid_lease;
use crate::engine::Engine;
use crate::request::ApiError;

/// What [`LocalClient::endpoint`] names in messages.
const ENDPOINT: &str = "in-process engine";

/// The lease calls on an in-process [`Engine`]. Cheap to clone: clones share the engine.
#[derive(Debug, Clone)]
pub struct LocalClient {
    engine: Engine,
    default_lock_delay_ms: u64,
}

impl LocalClient {
    /// Calls on `engine`, with no lock-delay for acquires that name none (the server's
    /// default, `--lock-delay 0`).
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            default_lock_delay_ms: 0,
        }
    }

    /// The lock-delay for acquires that name none, as the server's `--lock-delay` sets it.
    pub fn with_default_lock_delay(mut self, delay: Duration) -> Self {
        self.default_lock_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The engine the calls go to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// A refusal as the HTTP client reports it: the API error body, with its status.
fn refused(e: impl Into<ApiError>) -> ClientError {
    let ApiError(body) = e.into();
    ClientError::Api {
        status: body.error.http_status(),
        body,
    }
}

impl LeaseApi for LocalClient {
    fn endpoint(&self) -> &str {
        ENDPOINT
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseView, ClientError> {
        let acquire = Acquire {
            resource: req.resource.clone(),
            owner: req.owner.clone(),
            ttl_ms: req.ttl_ms.unwrap_or(DEFAULT_TTL_MS),
            slots: req.slots.unwrap_or(1),
            wait_ms: req.wait_ms.unwrap_or(0),
            lock_delay_ms: req.lock_delay_ms.unwrap_or(self.default_lock_delay_ms),
            trusted: Trusted::NONE,
        };
        let refused_at = |e| refused(ApiError::engine_at(e, self.engine.clock().now().wall_ms));
        self.engine.acquire(acquire).await.map_err(refused_at)
    }

    async fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<LeaseView, ClientError> {
        let lease = valid_lease(lease).map_err(refused)?;
        self.engine.renew(lease, token).await.map_err(refused)
    }

    async fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<ReleaseResponse, ClientError> {
        let lease = valid_lease(lease).map_err(refused)?;
        let released = self.engine.release(lease, token).await.map_err(refused)?;
        Ok(ReleaseResponse {
            lease,
            resource: released.resource,
            already_released: released.already,
        })
    }

    async fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<FenceCheckResponse, ClientError> {
        let holder = self
            .engine
            .check_fence(resource, token)
            .await
            .map_err(refused)?;
        Ok(FenceCheckResponse {
            resource: resource.to_string(),
            holder,
        })
    }
}
