//! The typed client: one method per endpoint.

use std::net::IpAddr;
use std::time::Duration;

use locksmith_api::{
    AcquireRequest, AuditQuery, AuditResponse, BreakRequest, BreakResponse, CreateTokenRequest,
    CreatedToken, ErrorBody, ErrorCode, FenceCheckRequest, FenceCheckResponse, HealthResponse,
    HoldRequest, HoldsResponse, LOCKS_MAX_LIMIT, LeaseOpRequest, LeaseView, LivenessReport,
    LivenessResponse, LockResponse, LocksQuery, LocksResponse, OperatorRequest, ReleaseResponse,
    StatusResponse, TokenView, TokensResponse,
};
use locksmith_core::{FenceToken, HoldId, HoldView, LeaseId};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ClientError;
use crate::tls::{TlsOptions, tls_failure};

/// A handle to one Locksmith server. Cheap to clone: clones share a connection pool.
///
/// With a token ([`Client::with_token`]) every request carries `Authorization: Bearer <token>`;
/// the header is marked sensitive, so neither `Debug` nor an HTTP/2 header table shows it.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    /// `base`, parsed once: each request's URL is this with its path replaced, which skips
    /// re-parsing (and IDNA-normalising) the host on every call.
    base_url: reqwest::Url,
    pub(crate) http: reqwest::Client,
    /// `Bearer <token>`, sent with every request.
    bearer: Option<HeaderValue>,
}

/// Extra time allowed beyond a request's own wait before the client gives up on the server.
const WAIT_SLACK: Duration = Duration::from_secs(10);
/// Timeout for calls that do not wait in a queue.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7400`); an `https://` server
    /// must have a certificate the system's roots trust (else see [`Client::with_tls`]).
    pub fn new(base: impl Into<String>) -> Result<Self, ClientError> {
        Self::with_tls(base, &TlsOptions::default())
    }

    /// A client for the server at `base` that speaks TLS to an `https://` server as `tls` says:
    /// the CA to trust (`--ca-file`) and the certificate to show (`--cert`, `--key`). The files
    /// are read now; for an `http://` server they are not used.
    pub fn with_tls(base: impl Into<String>, tls: &TlsOptions) -> Result<Self, ClientError> {
        Self::build(base.into(), tls, None)
    }

    /// A client for the plain-HTTP server at `base` whose connections leave from
    /// `local_address` (e.g. `127.0.0.5`). A fleet simulated on one machine spreads its agents
    /// over loopback addresses as real endpoints have one each: connections to one server
    /// port from one address share one range of ephemeral ports, and the kernel's search for a
    /// free one slows as the range fills (10,000 agents from one address spent most of their
    /// CPU there).
    pub fn bound_to(base: impl Into<String>, local_address: IpAddr) -> Result<Self, ClientError> {
        Self::build(base.into(), &TlsOptions::default(), Some(local_address))
    }

    fn build(
        base: String,
        tls: &TlsOptions,
        local_address: Option<IpAddr>,
    ) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let base_url = parse_base_url(&base).map_err(|reason| ClientError::InvalidUrl {
            server: base.clone(),
            reason,
        })?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            // Well inside the server's --idle-timeout (default 5 min): a request sent on a
            // pooled connection just as the server closes it would be lost.
            .pool_idle_timeout(Duration::from_secs(60))
            .local_address(local_address);
        if base_url.scheme() == "https" {
            // Our own rustls config, so that HTTP and the wire protocol trust the same servers
            // (see `crate::tls`); plain http:// reads no certificate file.
            let config = tls.client_config()?;
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
        }
        let http = builder.build().map_err(|e| ClientError::Transport {
            server: base.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            base,
            base_url,
            http,
            bearer: None,
        })
    }

    /// This client, sending `token` (a secret `lsm_…`) as `Authorization: Bearer` with every
    /// request. Refused only if the token has a character no HTTP header can carry (a control
    /// character, a non-ASCII one): no Locksmith token has one. The error never shows the
    /// token.
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                ClientError::InvalidToken {
                    reason: "it has a character no token has (a control or non-ASCII character)"
                        .to_string(),
                }
            })?;
        bearer.set_sensitive(true);
        self.bearer = Some(bearer);
        Ok(self)
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Acquires a lock (waiting up to `req.wait_ms` in the FIFO queue).
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseView, ClientError> {
        let timeout = Duration::from_millis(req.wait_ms.unwrap_or(0)) + WAIT_SLACK;
        self.send(self.http.post(self.url("/v1/acquire")).json(req), timeout)
            .await
    }

    /// Renews a lease; with `token`, also checks it is the lease's token.
    pub async fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<LeaseView, ClientError> {
        let url = self.url(&format!("/v1/leases/{lease}/renew"));
        self.send(
            self.http.post(url).json(&LeaseOpRequest { token }),
            CALL_TIMEOUT,
        )
        .await
    }

    /// Releases a lease (idempotent for a lease already released).
    pub async fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<ReleaseResponse, ClientError> {
        let url = self.url(&format!("/v1/leases/{lease}/release"));
        self.send(
            self.http.post(url).json(&LeaseOpRequest { token }),
            CALL_TIMEOUT,
        )
        .await
    }

    /// Lists every held or awaited resource, following the server's pages (sorted by name;
    /// `next` is `None`). Resources that come or go while it pages may be missed or listed:
    /// each page is consistent, the whole is not one snapshot.
    pub async fn locks(&self) -> Result<LocksResponse, ClientError> {
        self.locks_matching(None).await
    }

    /// [`locks`](Self::locks), only the resources whose names start with `prefix`.
    pub async fn locks_matching(&self, prefix: Option<&str>) -> Result<LocksResponse, ClientError> {
        self.locks_where(LocksQuery {
            prefix: prefix.map(str::to_string),
            ..LocksQuery::default()
        })
        .await
    }

    /// [`locks`](Self::locks), only the resources with a holder on `node`.
    pub async fn locks_on_node(&self, node: &str) -> Result<LocksResponse, ClientError> {
        self.locks_where(LocksQuery {
            node: Some(node.to_string()),
            ..LocksQuery::default()
        })
        .await
    }

    /// Every page of `query` (its `after` and `limit` are the pager's), concatenated.
    async fn locks_where(&self, mut query: LocksQuery) -> Result<LocksResponse, ClientError> {
        query.after = None;
        query.limit = Some(LOCKS_MAX_LIMIT);
        let mut all = self.locks_page(&query).await?;
        while let Some(after) = all.next.take() {
            query.after = Some(after);
            let page = self.locks_page(&query).await?;
            all.server_time_ms = page.server_time_ms;
            all.locks.extend(page.locks);
            all.next = page.next;
        }
        Ok(all)
    }

    /// One page of the held or awaited resources (`GET /v1/locks?prefix=&after=&limit=&node=`).
    pub async fn locks_page(&self, query: &LocksQuery) -> Result<LocksResponse, ClientError> {
        self.send(
            self.http.get(self.url("/v1/locks")).query(query),
            CALL_TIMEOUT,
        )
        .await
    }

    /// One resource (FREE if nobody holds it).
    pub async fn lock(&self, resource: &str) -> Result<LockResponse, ClientError> {
        let url = self.url(&format!("/v1/locks/{resource}"));
        self.send(self.http.get(url), CALL_TIMEOUT).await
    }

    /// Checks that `token` is a live holder's token on `resource`.
    pub async fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<FenceCheckResponse, ClientError> {
        let body = FenceCheckRequest {
            resource: resource.to_string(),
            token,
        };
        self.send(
            self.http.post(self.url("/v1/fence/check")).json(&body),
            CALL_TIMEOUT,
        )
        .await
    }

    /// The server's health.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.send(self.http.get(self.url("/healthz")), CALL_TIMEOUT)
            .await
    }

    /// Places a hold (freeze) on a resource.
    pub async fn hold(&self, req: &HoldRequest) -> Result<HoldView, ClientError> {
        self.post_json("/v1/holds", req).await
    }

    /// Every hold, active or pending acknowledgement.
    pub async fn holds(&self) -> Result<HoldsResponse, ClientError> {
        self.send(self.http.get(self.url("/v1/holds")), CALL_TIMEOUT)
            .await
    }

    /// Acknowledges a pending hold (as a different operator than the one who placed it).
    pub async fn ack_hold(&self, hold: HoldId, operator: &str) -> Result<HoldView, ClientError> {
        let body = OperatorRequest {
            operator: operator.to_string(),
        };
        self.post_json(&format!("/v1/holds/{hold}/ack"), &body)
            .await
    }

    /// Lifts a hold before it ends.
    pub async fn lift_hold(&self, hold: HoldId, operator: &str) -> Result<HoldView, ClientError> {
        let body = OperatorRequest {
            operator: operator.to_string(),
        };
        self.post_json(&format!("/v1/holds/{hold}/lift"), &body)
            .await
    }

    /// Breaks a lock: freeze, revoke, advance the fence, audit.
    pub async fn break_lock(&self, req: &BreakRequest) -> Result<BreakResponse, ClientError> {
        self.post_json("/v1/break", req).await
    }

    /// Reports dead local holders (and this node's current boot id).
    pub async fn report_liveness(
        &self,
        report: &LivenessReport,
    ) -> Result<LivenessResponse, ClientError> {
        self.post_json("/v1/liveness", report).await
    }

    /// Queries the audit log.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditResponse, ClientError> {
        self.send(
            self.http.get(self.url("/v1/audit")).query(query),
            CALL_TIMEOUT,
        )
        .await
    }

    /// The server's status: ALL CLEAR, or every problem with its next step.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.send(self.http.get(self.url("/v1/status")), CALL_TIMEOUT)
            .await
    }

    /// Makes a token (admin only). The answer carries its secret, this once.
    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<CreatedToken, ClientError> {
        self.post_json("/v1/tokens", req).await
    }

    /// Every token, revoked ones included (never a secret).
    pub async fn tokens(&self) -> Result<TokensResponse, ClientError> {
        self.send(self.http.get(self.url("/v1/tokens")), CALL_TIMEOUT)
            .await
    }

    /// Revokes a token (admin only): it stops working at once.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenView, ClientError> {
        let mut url = self.url("/v1/tokens");
        // As a path segment of its own, escaped: an id is whatever the user typed.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(id).push("revoke");
        }
        self.send(self.http.post(url), CALL_TIMEOUT).await
    }

    /// Opens the server-sent event stream (`resource` filters to one resource). Returns the raw
    /// response; read it with [`crate::events::EventStream`].
    pub async fn events(
        &self,
        resource: Option<&str>,
    ) -> Result<crate::events::EventStream, ClientError> {
        let mut rb = self.http.get(self.url("/v1/events"));
        if let Some(r) = resource {
            rb = rb.query(&[("resource", r)]);
        }
        let resp = self.open_stream(rb).await?;
        Ok(crate::events::EventStream::new(resp, self.base.clone()))
    }

    /// Sends a request for a server-sent event stream (no timeout: it stays open) and returns
    /// the answer, or the API error it was refused with.
    pub(crate) async fn open_stream(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .authorized(rb)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
            let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| {
                ErrorBody::new(
                    ErrorCode::Internal,
                    format!("HTTP {status} from {}", self.base),
                )
            });
            return Err(ClientError::Api {
                status,
                body: Box::new(body),
            });
        }
        Ok(resp)
    }

    pub(crate) fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base_url.clone();
        let prefix = url.path().trim_end_matches('/');
        let full = format!("{prefix}{path}");
        url.set_path(&full);
        url
    }

    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let resp = self
            .authorized(req)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        decode_answer(&self.base, status, &bytes)
    }

    /// `req` with the bearer token, if the client has one.
    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(bearer) => req.header(AUTHORIZATION, bearer.clone()),
            None => req,
        }
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if let Some(reason) = tls_failure(&e) {
            return ClientError::Tls {
                server: self.base.clone(),
                reason,
            };
        }
        ClientError::Transport {
            server: self.base.clone(),
            reason: error_chain(&e),
        }
    }

    /// Issues a raw JSON request (for tests and tools that speak other routes).
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(self.url(path)).json(body), CALL_TIMEOUT)
            .await
    }
}

/// Checks a server address the way [`Client::new`] takes it: an `http://` or `https://` URL
/// with a host (e.g. `http://127.0.0.1:7400`). The error says what is wrong, for a usage error
/// before any call (`locksmith --server notaurl` must not look like a server that is down).
pub fn check_base_url(base: &str) -> Result<(), String> {
    parse_base_url(base.trim_end_matches('/')).map(|_| ())
}

fn parse_base_url(base: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(base).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it names no host".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("it must not have a query or fragment".to_string());
    }
    Ok(url)
}

/// The typed answer of a call: the body as `T` on a 2xx status, else the server's error body
/// (or, if the server sent none, an `internal` one quoting what it sent).
pub(crate) fn decode_answer<T: DeserializeOwned>(
    server: &str,
    status: u16,
    bytes: &[u8],
) -> Result<T, ClientError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            server: server.to_string(),
            reason: e.to_string(),
        });
    }
    let body = serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| {
        ErrorBody::new(
            ErrorCode::Internal,
            format!(
                "HTTP {status} from {server}: {}",
                String::from_utf8_lossy(bytes)
            ),
        )
    });
    Err(ClientError::Api {
        status,
        body: Box::new(body),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
