//! Forwarding to the leader: in cluster mode every server accepts every request, and a server
//! that is not the leader passes it through to the one that is.
//!
//! Only the leader runs a lock table, so there is no in-memory authority two servers could
//! disagree about; the leader's writes are fenced in etcd by its election (see `cluster`).
//! Bodies are buffered (they are at most 64 KiB); responses are streamed, so long polls and the
//! event stream pass through unchanged.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use locksmith_api::{ErrorBody, ErrorCode};

use crate::http::MAX_BODY_BYTES;
use crate::request::ApiError;

/// Headers worth forwarding in each direction (hop-by-hop headers are not). `authorization`
/// goes to the leader as it came, so the leader authenticates the request (a follower does
/// not); `www-authenticate` comes back with a 401.
const FORWARDED: [&str; 6] = [
    "content-type",
    "accept",
    "fleet-lock-protocol",
    "cache-control",
    "authorization",
    "www-authenticate",
];

/// Where requests go when this server is not the leader.
#[derive(Debug, Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    leader: Arc<RwLock<Option<String>>>,
    /// The largest body forwarded: the largest any route accepts (a config's content routes
    /// take more than the others; see `domains::configs::routes::body_limit`).
    max_body: usize,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// A forwarder with no known leader yet.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self {
            http,
            leader: Arc::new(RwLock::new(None)),
            max_body: MAX_BODY_BYTES,
        }
    }

    /// The same forwarder, passing bodies up to `max_body` bytes.
    pub fn with_max_body(self, max_body: usize) -> Self {
        Self {
            max_body: max_body.max(MAX_BODY_BYTES),
            ..self
        }
    }

    /// A forwarder that reaches a leader's `https://` URL trusting what `tls` says (the
    /// servers' CA); `http://` leaders as [`Forwarder::new`]. Reads the files now.
    pub fn with_tls(
        tls: &locksmith_client::TlsOptions,
    ) -> Result<Self, locksmith_client::tls::TlsSetupError> {
        let config = tls.client_config()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .use_preconfigured_tls(rustls::ClientConfig::clone(&config))
            .build()
            .map_err(|e| locksmith_client::tls::TlsSetupError::Refused(e.to_string()))?;
        Ok(Self {
            http,
            leader: Arc::new(RwLock::new(None)),
            max_body: MAX_BODY_BYTES,
        })
    }

    /// Sets (or clears) the leader's base URL.
    pub fn set_leader(&self, url: Option<String>) {
        *self.leader.write().unwrap_or_else(|p| p.into_inner()) = url;
    }

    /// The leader's base URL, if known.
    pub fn leader(&self) -> Option<String> {
        self.leader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Passes `req` to the leader and its answer back.
    pub async fn forward(&self, req: Request) -> Response {
        let Some(leader) = self.leader() else {
            return no_leader("an election is in progress");
        };
        let (parts, body) = req.into_parts();
        let bytes: Bytes = match axum::body::to_bytes(body, self.max_body).await {
            Ok(b) => b,
            Err(_) => {
                return ApiError::from(ErrorBody::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body is larger than {} bytes", self.max_body),
                ))
                .into_response();
            }
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut rb = self
            .http
            .request(parts.method.clone(), format!("{leader}{path}"))
            .body(bytes);
        for name in FORWARDED {
            if let Some(v) = parts.headers.get(name) {
                rb = rb.header(name, v.clone());
            }
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return no_leader(&format!("the leader at {leader} is unreachable: {e}")),
        };
        let mut out = Response::builder().status(resp.status());
        for name in FORWARDED {
            if let Some(v) = resp.headers().get(name) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(v.as_bytes()),
                ) {
                    out = out.header(n, v);
                }
            }
        }
        out.body(Body::from_stream(resp.bytes_stream()))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
    }
}

/// `no_leader` (503), saying `why` and to retry.
pub(crate) fn no_leader(why: &str) -> Response {
    ApiError::from(ErrorBody::new(
        ErrorCode::NoLeader,
        format!("no Locksmith leader is serving right now ({why}); retry in a moment"),
    ))
    .into_response()
}
