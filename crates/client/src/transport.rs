//! [`LeaseApi`]: the calls a lease holder makes — acquire, renew, release, fence check — as one
//! trait, so that a [`LeaseGuard`](crate::LeaseGuard), or any code generic over it, runs over
//! HTTP ([`Client`]), the binary wire protocol ([`WireClient`]), or the server's in-process
//! transport (`locksmith_server::local::LocalClient`, on which the fleet simulator runs
//! thousands of agents without a socket).
//!
//! Every implementation answers alike: the same typed answers, and a refusal as
//! [`ClientError::Api`] with the same [`ErrorBody`](locksmith_api::ErrorBody) (stable code, HTTP
//! status) the HTTP API sends — so a caller's handling of `lease_expired`, `broken`, … does
//! not depend on the transport.

use std::future::Future;

use locksmith_api::{AcquireRequest, FenceCheckResponse, LeaseView, ReleaseResponse};
use locksmith_core::{FenceToken, LeaseId};

use crate::client::Client;
use crate::error::ClientError;
use crate::wire::WireClient;

/// The lease calls, over some transport. The futures are `Send`, so a caller may spawn them.
pub trait LeaseApi: Send + Sync {
    /// Where the calls go, for messages: a URL, a `host:port`, or an in-process name.
    fn endpoint(&self) -> &str;

    /// Acquires a lock (waiting up to `req.wait_ms` in the server's FIFO queue). A caller that
    /// stops waiting (drops the future) leaves no queued acquire and no lease behind on the
    /// wire and in-process transports; over HTTP the server notices when the connection closes.
    fn acquire(
        &self,
        req: &AcquireRequest,
    ) -> impl Future<Output = Result<LeaseView, ClientError>> + Send;

    /// Renews a lease; with `token`, also checks it is the lease's token.
    fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> impl Future<Output = Result<LeaseView, ClientError>> + Send;

    /// Releases a lease (idempotent: `already_released` says someone else did); with `token`,
    /// also checks it is the lease's token.
    fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> impl Future<Output = Result<ReleaseResponse, ClientError>> + Send;

    /// Checks that `token` is a live holder's token on `resource`.
    fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> impl Future<Output = Result<FenceCheckResponse, ClientError>> + Send;
}

impl LeaseApi for Client {
    fn endpoint(&self) -> &str {
        self.base()
    }

    fn acquire(
        &self,
        req: &AcquireRequest,
    ) -> impl Future<Output = Result<LeaseView, ClientError>> + Send {
        Client::acquire(self, req)
    }

    fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> impl Future<Output = Result<LeaseView, ClientError>> + Send {
        Client::renew(self, lease, token)
    }

    fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> impl Future<Output = Result<ReleaseResponse, ClientError>> + Send {
        Client::release(self, lease, token)
    }

    fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> impl Future<Output = Result<FenceCheckResponse, ClientError>> + Send {
        Client::check_fence(self, resource, token)
    }
}

impl LeaseApi for WireClient {
    fn endpoint(&self) -> &str {
        self.addr()
    }

    fn acquire(
        &self,
        req: &AcquireRequest,
    ) -> impl Future<Output = Result<LeaseView, ClientError>> + Send {
        WireClient::acquire(self, req)
    }

    fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> impl Future<Output = Result<LeaseView, ClientError>> + Send {
        WireClient::renew(self, lease, token)
    }

    fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> impl Future<Output = Result<ReleaseResponse, ClientError>> + Send {
        WireClient::release(self, lease, token)
    }

    fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> impl Future<Output = Result<FenceCheckResponse, ClientError>> + Send {
        WireClient::check_fence(self, resource, token)
    }
}
