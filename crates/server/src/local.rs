//! [`LocalClient`]: the lease calls of [`LeaseApi`] made in-process, straight on an [`Engine`]
//! — no socket, no serialization. A [`LeaseGuard`](locksmith_client::LeaseGuard), or any
//! code generic over [`LeaseApi`], runs on it as it runs over HTTP or the wire protocol: the
//! fleet simulator runs thousands of agents on one engine this way.
//!
//! The calls are the leases' own request functions (`crate::domains::leases::ops`), the ones
//! HTTP and the wire protocol call, with the settings a server started from the same
//! [`ServerConfig`] has: the API's defaults (TTL, one slot, no wait), its `--lock-delay`, the
//! engine's table rules, and the refusal of an owner that names the serving machine's own node
//! under another boot id (a simulation's nodes are not that machine, so none of them is
//! refused for it). The answers are the API's: a refusal is the [`ClientError::Api`] the HTTP
//! client would get, with the same [`ErrorBody`](locksmith_api::ErrorBody) and status, because
//! it is built by the server's one error mapping ([`ApiError`]'s conversions).

use std::sync::Arc;

use locksmith_api::frame::LeaseOp;
use locksmith_api::{
    AcquireRequest, FenceCheckRequest, FenceCheckResponse, LeaseView, ReleaseResponse,
};
use locksmith_client::{ClientError, LeaseApi};
use locksmith_core::{FenceToken, LeaseId};

use crate::app::{App, Settings};
use crate::domains::leases::ops;
use crate::engine::Engine;
use crate::request::ApiError;
use crate::{NodeIdentity, ServerConfig, ServerError};

/// What [`LocalClient::endpoint`] names in messages.
const ENDPOINT: &str = "in-process engine";

/// The lease calls on an in-process [`Engine`]. Cheap to clone: clones share the engine.
#[derive(Debug, Clone)]
pub struct LocalClient {
    app: App,
}

impl LocalClient {
    /// Calls on `engine`, answered as a server run with `config` answers them. Fails as that
    /// server's start would: a setting that is not valid, or this machine's node name or boot
    /// id that cannot be read.
    pub fn new(engine: Engine, config: &ServerConfig) -> Result<Self, ServerError> {
        let settings = Arc::new(Settings::of(config)?);
        let own = NodeIdentity::of(config)?;
        Ok(Self {
            app: App::new(engine, settings, &own),
        })
    }

    /// The engine the calls go to.
    pub fn engine(&self) -> &Engine {
        &self.app.engine
    }
}

/// A refusal as the HTTP client reports it: the API error body, with its status.
fn refused(e: ApiError) -> ClientError {
    let ApiError(body) = e;
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
        // In-process: no connection, so no certificate binds a node.
        let peer = crate::tls::PeerIdentity::default();
        ops::acquire(&self.app, &peer, req.clone())
            .await
            .map_err(refused)
    }

    async fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<LeaseView, ClientError> {
        let op = LeaseOp { lease, token };
        ops::renew(&self.app, op).await.map_err(refused)
    }

    async fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<ReleaseResponse, ClientError> {
        let op = LeaseOp { lease, token };
        ops::release(&self.app, op).await.map_err(refused)
    }

    async fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<FenceCheckResponse, ClientError> {
        let req = FenceCheckRequest {
            resource: resource.to_owned(),
            token,
        };
        ops::check_fence(&self.app, req).await.map_err(refused)
    }
}
