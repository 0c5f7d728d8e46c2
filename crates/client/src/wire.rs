//! [`WireClient`]: acquire, renew, release and fence checks over Locksmith's binary wire
//! protocol (framing in `locksmith_api::frame`), the lighter path beside HTTP.
//!
//! One client is one TCP connection, shared by every clone and every task: calls from many tasks
//! are pipelined on it (answers come back in whatever order the server finishes them and are
//! matched by request id); one reader task delivers the answers. A call alone on the connection
//! writes its frame itself, at once, when the socket can take it (no hand-off to another
//! task). A call made while others are under way queues its frame for the flusher task, which
//! runs after the tasks already woken in the same turn of the runtime: when one read delivers
//! several answers and each caller sends its next request, those requests leave in one write
//! and reach the server in one read (pipelined renewals: ≈ 1.6× the rate, see
//! `docs/journal/2026-12-03-where-the-time-goes.md`). If the connection breaks, the calls under
//! way fail with [`ClientError::Transport`] (whether the server carried them out is unknown, as
//! with any connection lost mid-call) and the next call opens a new connection. So does the next
//! call on a connection that sat idle for a minute: the server closes idle connections (its
//! `--idle-timeout`), and a call sent just as it does would be lost.
//!
//! An acquire whose caller stopped waiting — its future dropped, or the call timed out — leaves
//! no ghost: the client sends a withdraw for it at once (wire op 5), so it leaves the server's
//! queue without being granted; a grant that raced with the withdraw is released by the server.
//! Should the acquire's answer come first (or the server predate the withdraw), a grant in it is
//! released by the reader task, fenced by its token. Either way the next waiter gets the lock
//! after a round trip or two instead of after the lease's TTL. Closing the connection —
//! dropping every clone of the client — withdraws the acquires still queued.
//!
//! With a token ([`WireClient::with_token`]) every connection authenticates right after the
//! preamble (wire op 6) and waits for the server's answer before any call goes out, so a token
//! the server refuses fails the call with the server's `unauthenticated` (or `forbidden`)
//! error, not a transport error; a reconnection authenticates again. When the server closes a
//! connection because its token stopped working (revoked, expired), it says so under request
//! id 0 after answering what it had read: every call still waiting on that connection gets
//! that `unauthenticated` error (the server never read them), and the next call reconnects —
//! and is refused, unless the token works again.
//! Over TLS ([`WireClient::with_tls`]) the connection is a TLS session (tokio-rustls) that
//! carries the same preamble and frames. Its writes all go through the flusher task, which
//! owns the session's sending side: a TLS session cannot take bytes without blocking the way
//! a socket's `try_write` does, and one writer keeps its records in order.
//!
//! What it is not: the whole API (holds, breaks, audit, status stay on HTTP: [`crate::Client`])
//! or a lease keeper (a [`crate::LeaseGuard`] runs over it: it implements [`crate::LeaseApi`]).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use locksmith_api::frame::{self, Auth, LeaseOp, Op, PREAMBLE, Withdraw, Withdrawn};
use locksmith_api::{
    AcquireRequest, FenceCheckRequest, FenceCheckResponse, LeaseView, ReleaseResponse,
};
use locksmith_core::{FenceToken, LeaseId};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use locksmith_api::ErrorCode;

use crate::client::decode_answer;
use crate::error::ClientError;
use crate::tls::{TlsOptions, server_name, tls_failure};

/// The request id of the auth frame a connection opens with: the first id.
const AUTH_ID: u64 = 1;
/// Longest wait for a connection (and the server's preamble).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Extra time allowed beyond a request's own wait before the client gives up on the server.
const WAIT_SLACK: Duration = Duration::from_secs(10);
/// Timeout for calls that do not wait in a queue.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that has had nothing under way for this long is not reused: the next call opens
/// a new one. The server closes connections idle for its `--idle-timeout` (default 5 min); a
/// call sent just as it does would be lost with the connection, so the client lets go well
/// before (keep the server's idle timeout above this).
const REUSE_IDLE_FOR: Duration = Duration::from_secs(60);

/// A handle to one Locksmith server's wire-protocol port. Cheap to clone: clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct WireClient {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    addr: String,
    /// The token each connection authenticates with.
    token: Option<Bearer>,
    /// How to speak TLS to the server; `None`: plain TCP.
    tls: Option<Tls>,
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so concurrent callers open one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
}

/// A token's secret; its `Debug` does not show it.
#[derive(Clone)]
struct Bearer(String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(…)")
    }
}

impl WireClient {
    /// A client for the wire port at `addr` (`host:port`, e.g. `127.0.0.1:7401`). Connects on
    /// the first call.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with(addr.into(), None, None)
    }

    /// A client for a TLS wire port (a server started with `--tls-cert`) at `addr`, trusting
    /// and showing what `tls` says. The server's certificate must name the address's host.
    /// The files are read now; connects on the first call.
    pub fn with_tls(addr: impl Into<String>, tls: &TlsOptions) -> Result<Self, ClientError> {
        let addr = addr.into();
        let name = server_name(&addr).map_err(|reason| ClientError::InvalidUrl {
            server: addr.clone(),
            reason,
        })?;
        let connector = TlsConnector::from(tls.client_config()?);
        Ok(Self::with(addr, None, Some(Tls { connector, name })))
    }

    fn with(addr: String, token: Option<Bearer>, tls: Option<Tls>) -> Self {
        Self {
            shared: Arc::new(Shared {
                addr,
                token,
                tls,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// This client, authenticating every connection it opens with `token` (a secret `lsm_…`).
    /// A connection already open (by this client or a clone) is not re-authenticated: call it
    /// before the first call, as a builder.
    pub fn with_token(self, token: &str) -> Self {
        Self::with(
            self.shared.addr.clone(),
            Some(Bearer(token.trim().to_string())),
            self.shared.tls.clone(),
        )
    }

    /// The server's wire address.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Opens the connection now, if it is not open: calls open it on demand, so this only
    /// moves the handshake (a TCP connect and the preamble exchange) out of the first call.
    /// Fails as a call would when the server cannot be reached.
    pub async fn connect(&self) -> Result<(), ClientError> {
        self.conn().await.map(drop)
    }

    /// Acquires a lock (waiting up to `req.wait_ms` in the FIFO queue).
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseView, ClientError> {
        let timeout = Duration::from_millis(req.wait_ms.unwrap_or(0)) + WAIT_SLACK;
        self.call(Op::Acquire, req, timeout).await
    }

    /// Renews a lease; with `token`, also checks it is the lease's token.
    pub async fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<LeaseView, ClientError> {
        self.call(Op::Renew, &LeaseOp { lease, token }, CALL_TIMEOUT)
            .await
    }

    /// Releases a lease (idempotent); with `token`, also checks it is the lease's token.
    pub async fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<ReleaseResponse, ClientError> {
        self.call(Op::Release, &LeaseOp { lease, token }, CALL_TIMEOUT)
            .await
    }

    /// Checks that `token` is a live holder's token on `resource`.
    pub async fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<FenceCheckResponse, ClientError> {
        let req = FenceCheckRequest {
            resource: resource.to_string(),
            token,
        };
        self.call(Op::CheckFence, &req, CALL_TIMEOUT).await
    }

    /// Sends one request and waits for its answer.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        op: Op,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let conn = self.conn().await?;
        let (id, bytes) = conn.out.frame(op, body).map_err(|e| ClientError::Decode {
            server: self.addr().to_string(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let (tx, rx) = oneshot::channel();
        let alone = conn
            .register(id, Waiter { op, tx })
            .map_err(|broken| self.broken(broken))?;
        // Alone on the connection, the request goes out now; with others under way it joins
        // the next write of the flusher (see `Out::send`).
        if let Err(e) = conn.out.send(&bytes, !alone) {
            let reason = format!("cannot send: {e}");
            conn.fail(&reason);
            return Err(self.transport(reason));
        }
        // An acquire whose caller stops waiting — this future dropped, or the timeout below —
        // is withdrawn on the server (see the module docs).
        let mut withdraw = (op == Op::Acquire).then(|| WithdrawOnDrop {
            conn: Some(conn.clone()),
            acquire: id,
        });
        let answered = tokio::time::timeout(timeout, rx).await;
        if answered.is_ok()
            && let Some(withdraw) = withdraw.as_mut()
        {
            // Answered, or the connection is gone (and with it the queued acquire).
            withdraw.conn = None;
        }
        match answered {
            Ok(Ok(Ok(answer))) => decode_answer(self.addr(), answer.status, &answer.body),
            Ok(Ok(Err(broken))) => Err(self.broken(broken)),
            Ok(Err(_)) => Err(self.transport("the connection closed".into())),
            Err(_) => {
                // An acquire's entry stays for the reader task: its withdraw (sent as
                // `withdraw` drops) has the answer remove it, or a grant that came first is
                // released. Others are forgotten.
                if op != Op::Acquire {
                    conn.pending().waiting.remove(&id);
                }
                Err(self.transport(format!("no answer within {timeout:?}")))
            }
        }
    }

    /// The live connection, opening one if there is none (or the last one broke).
    async fn conn(&self) -> Result<Arc<Conn>, ClientError> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _connecting = self.shared.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let token = self.shared.token.as_ref().map(|t| t.0.as_str());
        let conn = Arc::new(
            Conn::open(&self.shared.addr, token, self.shared.tls.as_ref())
                .await
                .map_err(|broken| self.broken(broken))?,
        );
        *lock(&self.shared.current) = Some(conn.clone());
        Ok(conn)
    }

    /// The current connection, unless it is broken or was idle too long to trust (see
    /// [`REUSE_IDLE_FOR`]).
    fn live(&self) -> Option<Arc<Conn>> {
        lock(&self.shared.current)
            .as_ref()
            .filter(|c| c.pending().usable())
            .cloned()
    }

    fn transport(&self, reason: String) -> ClientError {
        ClientError::Transport {
            server: self.shared.addr.clone(),
            reason,
        }
    }

    /// The error of a call on a connection that is `broken`.
    fn broken(&self, broken: Broken) -> ClientError {
        match broken {
            Broken::Transport(reason) => self.transport(reason),
            Broken::Tls(reason) => ClientError::Tls {
                server: self.shared.addr.clone(),
                reason,
            },
            Broken::Refused(answer) => {
                match decode_answer::<serde_json::Value>(self.addr(), answer.status, &answer.body) {
                    Err(e) => e,
                    Ok(_) => self.transport("the server refused the connection".into()),
                }
            }
        }
    }
}

/// Why a connection cannot be used.
#[derive(Debug, Clone)]
enum Broken {
    /// It could not be opened, or it failed: whether the calls under way were carried out is
    /// unknown.
    Transport(String),
    /// The server refused it — its token (the answer to the auth frame, or the error it sent
    /// under id 0 when the token stopped working). No call waiting on it was read.
    Refused(Answer),
    /// TLS failed: what it means and what to do (see `crate::tls`).
    Tls(String),
}

/// How a [`WireClient`] speaks TLS: the client configuration and the name the server's
/// certificate must have.
#[derive(Clone)]
struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An opened stream, before the preamble: plain, or a TLS session.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An answer frame, owned.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Calls waiting for their answers, or why the connection is unusable.
#[derive(Debug)]
struct Pending {
    waiting: HashMap<u64, Waiter>,
    broken: Option<Broken>,
    /// When a call was last registered or answered.
    last_active: Instant,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            broken: None,
            last_active: Instant::now(),
        }
    }
}

impl Pending {
    /// Whether a new call may go out on this connection: it is not broken, and it has not sat
    /// idle so long that the server may be closing it (see [`REUSE_IDLE_FOR`]).
    fn usable(&self) -> bool {
        self.broken.is_none()
            && (!self.waiting.is_empty() || self.last_active.elapsed() < REUSE_IDLE_FOR)
    }
}

/// One call waiting for its answer: what it asked (an acquire's grant must not be dropped
/// unanswered) and where the answer goes.
#[derive(Debug)]
struct Waiter {
    op: Op,
    tx: oneshot::Sender<Result<Answer, Broken>>,
}

/// Withdraws an acquire on the server when dropped with its connection set: the caller
/// stopped waiting. Taking the connection out disarms it (the acquire was answered).
struct WithdrawOnDrop {
    conn: Option<Arc<Conn>>,
    acquire: u64,
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.withdraw(self.acquire);
        }
    }
}

/// The part of a grant the reader task needs to release one nobody waits for.
#[derive(Debug, Deserialize)]
struct Granted {
    lease: LeaseId,
    token: FenceToken,
}

/// One open connection: the sending side (written by callers and the reader task, finished by
/// the flusher task when the socket is full) and the calls waiting for answers (delivered by the
/// reader task).
#[derive(Debug)]
struct Conn {
    out: Arc<Out>,
    pending: Arc<Mutex<Pending>>,
    tasks: [AbortHandle; 2],
}

/// The sending side of a connection.
#[derive(Debug)]
struct Out {
    /// The socket, written by callers and the flusher; `None` over TLS, where only the
    /// flusher writes (it owns the session's sending side).
    write: Option<OwnedWriteHalf>,
    /// Bytes the socket did not take yet, in order; the flusher writes them out.
    unsent: Mutex<Vec<u8>>,
    flush: Notify,
    /// Over TLS: a call alone on the connection queued its frame, so the flusher writes at
    /// once instead of waiting a turn for others to join it.
    alone: AtomicBool,
    next_id: AtomicU64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Conn {
    /// Connects (inside a TLS session with `tls`), exchanges preambles and, with `token`,
    /// authenticates (waiting for the server's answer, so that a refused token is the calls'
    /// error, not a broken connection).
    async fn open(addr: &str, token: Option<&str>, tls: Option<&Tls>) -> Result<Conn, Broken> {
        let handshake = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut stream = match tls {
                None => Stream::Plain(tcp),
                Some(tls) => Stream::Tls(Box::new(
                    tls.connector.connect(tls.name.clone(), tcp).await?,
                )),
            };
            let mut rest = Vec::new();
            let refused = match &mut stream {
                Stream::Plain(tcp) => greet(tcp, token, &mut rest).await?,
                Stream::Tls(session) => greet(session, token, &mut rest).await?,
            };
            Ok::<_, io::Error>((stream, rest, refused))
        };
        let (stream, rest, refused) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                return Err(match tls_failure(&e) {
                    Some(reason) => Broken::Tls(reason),
                    None => Broken::Transport(e.to_string()),
                });
            }
            Err(_) => {
                return Err(Broken::Transport(format!(
                    "no connection within {CONNECT_TIMEOUT:?}"
                )));
            }
        };
        if let Some(refused) = refused {
            return Err(refused);
        }
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (out, reader, flusher) = match stream {
            Stream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                let out = Arc::new(Out::new(Some(write)));
                let reader = tokio::spawn(read_answers(read, rest, out.clone(), pending.clone()));
                let flusher = tokio::spawn(flush_unsent(out.clone(), pending.clone()));
                (out, reader, flusher)
            }
            Stream::Tls(session) => {
                let (read, write) = tokio::io::split(*session);
                let out = Arc::new(Out::new(None));
                let reader = tokio::spawn(read_answers(read, rest, out.clone(), pending.clone()));
                let flusher = tokio::spawn(flush_tls(out.clone(), pending.clone(), write));
                (out, reader, flusher)
            }
        };
        Ok(Conn {
            out,
            pending,
            tasks: [reader.abort_handle(), flusher.abort_handle()],
        })
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.pending)
    }

    fn fail(&self, reason: &str) {
        fail(&self.pending, Broken::Transport(reason.to_string()));
    }

    /// Registers the waiter of a request about to be sent under `id`, unless the connection is
    /// broken (then why). Returns whether the request is alone on the connection: nothing
    /// else under way.
    fn register(&self, id: u64, waiter: Waiter) -> Result<bool, Broken> {
        let mut pending = self.pending();
        if let Some(reason) = &pending.broken {
            return Err(reason.clone());
        }
        let alone = pending.waiting.is_empty();
        pending.waiting.insert(id, waiter);
        pending.last_active = Instant::now();
        Ok(alone)
    }

    /// Asks the server to withdraw the acquire sent under `acquire`. Nobody waits for the
    /// answer: the reader task forgets the acquire if it was withdrawn, and otherwise the
    /// acquire's own answer comes (a grant is then released, as for a server without
    /// withdraw, which answers it `not_found`).
    fn withdraw(&self, acquire: u64) {
        let Ok((id, bytes)) = self.out.frame(Op::Withdraw, &Withdraw { request: acquire }) else {
            return;
        };
        let (tx, _) = oneshot::channel();
        let waiter = Waiter {
            op: Op::Withdraw,
            tx,
        };
        if self.register(id, waiter).is_err() {
            return;
        }
        if let Err(e) = self.out.send(&bytes, false) {
            tracing::debug!(error = %e, "cannot send a withdraw; the acquire's answer is handled");
        }
    }
}

/// The preamble exchange that opens every connection (inside the TLS session, over TLS), with
/// the auth frame right after ours when there is a `token`; then, with a token, its answer:
/// `None` if it authenticated, else the refusal. Bytes read past that answer are left in
/// `rest`, for the reader task.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    token: Option<&str>,
    rest: &mut Vec<u8>,
) -> io::Result<Option<Broken>> {
    let mut hello = PREAMBLE.to_vec();
    if let Some(token) = token {
        let auth = Auth {
            token: token.to_string(),
        };
        frame::encode(&mut hello, AUTH_ID, Op::Auth as u16, &auth)?;
    }
    stream.write_all(&hello).await?;
    stream.flush().await?;
    let mut theirs = [0u8; PREAMBLE.len()];
    stream.read_exact(&mut theirs).await?;
    if &theirs != PREAMBLE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not a Locksmith wire-protocol port (it answered {:?}); \
                 is this the HTTP --listen address instead of the wire one?",
                String::from_utf8_lossy(&theirs)
            ),
        ));
    }
    match token {
        Some(_) => authenticated(stream, rest).await,
        None => Ok(None),
    }
}

impl Out {
    fn new(write: Option<OwnedWriteHalf>) -> Self {
        Out {
            write,
            unsent: Mutex::new(Vec::new()),
            flush: Notify::new(),
            alone: AtomicBool::new(false),
            // Past the auth frame's.
            next_id: AtomicU64::new(AUTH_ID + 1),
        }
    }

    /// A request frame under the connection's next id: `(id, bytes)`.
    fn frame<B: Serialize + ?Sized>(
        &self,
        op: Op,
        body: &B,
    ) -> Result<(u64, Vec<u8>), serde_json::Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(256);
        frame::encode(&mut bytes, id, op as u16, body)?;
        Ok((id, bytes))
    }

    /// Queues `bytes` on the socket: written at once if the socket takes them, else (the rest)
    /// handed to the flusher. Never blocks and never writes part of a frame out of order.
    ///
    /// With `coalesce` (other requests are under way on the connection, so more are likely to
    /// follow in the same turn of the runtime, as when one read delivers several answers and
    /// each caller sends its next request), the bytes go to the flusher even if the socket
    /// would take them: it writes everything queued in that turn with one `write`, and the
    /// server reads them with one `read`.
    ///
    /// Over TLS every frame goes to the flusher (see the module docs).
    fn send(&self, bytes: &[u8], coalesce: bool) -> io::Result<()> {
        let mut unsent = lock(&self.unsent);
        if !unsent.is_empty() {
            unsent.extend_from_slice(bytes);
            return Ok(());
        }
        let Some(write) = self.write.as_ref().filter(|_| !coalesce) else {
            unsent.extend_from_slice(bytes);
            drop(unsent);
            if !coalesce {
                self.alone.store(true, Ordering::Relaxed);
            }
            self.flush.notify_one();
            return Ok(());
        };
        let written = match write.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written < bytes.len() {
            unsent.extend_from_slice(&bytes[written..]);
            self.flush.notify_one();
        }
        Ok(())
    }

    /// Releases a lease granted to an acquire nobody waits for any more, fenced by its token;
    /// the answer comes back under an id nobody waits on and is dropped.
    fn release_abandoned(&self, grant: &[u8]) {
        let Ok(granted) = serde_json::from_slice::<Granted>(grant) else {
            tracing::warn!("an abandoned acquire's grant could not be read; its lease will expire");
            return;
        };
        let release = LeaseOp {
            lease: granted.lease,
            token: Some(granted.token),
        };
        let sent = self
            .frame(Op::Release, &release)
            .map_err(|e| e.to_string())
            .and_then(|(_, bytes)| self.send(&bytes, false).map_err(|e| e.to_string()));
        match sent {
            Ok(()) => tracing::debug!(
                lease = %granted.lease,
                "released a lease granted to an acquire nobody waits for"
            ),
            Err(e) => tracing::warn!(
                lease = %granted.lease,
                error = %e,
                "cannot release a lease granted to an acquire nobody waits for; it will expire"
            ),
        }
    }
}

/// Marks the connection broken and fails every call waiting on it.
fn fail(pending: &Mutex<Pending>, broken: Broken) {
    let mut p = lock(pending);
    if p.broken.is_none() {
        p.broken = Some(broken.clone());
    }
    for (_, waiter) in p.waiting.drain() {
        let _ = waiter.tx.send(Err(broken.clone()));
    }
}

/// Reads the answer to the auth frame sent in the handshake: `None` if it authenticated, else
/// the refusal (the server closes the connection after it). Bytes read past that answer are
/// left in `rest`, for the reader task.
async fn authenticated<S: AsyncRead + Unpin>(
    tcp: &mut S,
    rest: &mut Vec<u8>,
) -> io::Result<Option<Broken>> {
    loop {
        match frame::decode(rest) {
            Ok(Some((answer, len))) => {
                let owned = Answer {
                    status: answer.code,
                    body: answer.body.to_vec(),
                };
                let refused = match (answer.id, answer.code) {
                    (AUTH_ID, frame::OK) => None,
                    (AUTH_ID, _) => Some(Broken::Refused(owned)),
                    // Id 0: about the connection itself, e.g. too_many_connections.
                    (0, code) => Some(Broken::Transport(connection_error(code, &owned.body))),
                    (id, _) => Some(Broken::Transport(format!(
                        "the server answered request {id} before the auth frame"
                    ))),
                };
                rest.drain(..len);
                return Ok(refused);
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        if tcp.read_buf(rest).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before answering the auth frame",
            ));
        }
    }
}

/// The reader task: delivers each answer to its call, until the connection ends. A grant whose
/// call is gone is released. `buf` holds what the handshake read past its own answers.
async fn read_answers<R: AsyncRead + Unpin>(
    mut read: R,
    mut buf: Vec<u8>,
    out: Arc<Out>,
    pending: Arc<Mutex<Pending>>,
) {
    buf.reserve(16 * 1024);
    let reason = loop {
        let mut used = 0;
        let decoded = loop {
            match frame::decode(&buf[used..]) {
                // Id 0 is no request's: an error about the connection itself (the server's
                // connection cap, a bad frame), after which the server closes it. Its message
                // is what every call under way, and the next ones, are told.
                Ok(Some((answer, _))) if answer.id == 0 && answer.code != frame::OK => {
                    // The token stopped working: the server stopped reading then, and answered
                    // everything it had read; the calls still waiting were never read, and are
                    // refused with it.
                    let refused = answer.code == ErrorCode::Unauthenticated.http_status();
                    break Err(if refused {
                        Broken::Refused(Answer {
                            status: answer.code,
                            body: answer.body.to_vec(),
                        })
                    } else {
                        Broken::Transport(connection_error(answer.code, answer.body))
                    });
                }
                Ok(Some((answer, len))) => {
                    used += len;
                    let waiter = {
                        let mut pending = lock(&pending);
                        pending.last_active = Instant::now();
                        pending.waiting.remove(&answer.id)
                    };
                    if let Some(Waiter {
                        op: Op::Withdraw, ..
                    }) = waiter
                    {
                        if let Ok(Withdrawn {
                            request,
                            withdrawn: true,
                        }) = serde_json::from_slice(answer.body)
                        {
                            // It gets no answer: forget it.
                            lock(&pending).waiting.remove(&request);
                        }
                    } else if let Some(Waiter { op, tx }) = waiter {
                        let undelivered = tx.send(Ok(Answer {
                            status: answer.code,
                            body: answer.body.to_vec(),
                        }));
                        if undelivered.is_err() && op == Op::Acquire && answer.code == frame::OK {
                            out.release_abandoned(answer.body);
                        }
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(Broken::Transport(format!("bad frame from the server: {e}"))),
            }
        };
        buf.drain(..used);
        if let Err(broken) = decoded {
            break broken;
        }
        buf.reserve(8 * 1024);
        match read.read_buf(&mut buf).await {
            Ok(0) => break Broken::Transport("the server closed the connection".to_string()),
            Ok(_) => {}
            Err(e) => break Broken::Transport(format!("read failed: {e}")),
        }
    };
    fail(&pending, reason);
}

/// The reason a connection failed, from the server's error under id 0.
fn connection_error(code: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<locksmith_api::ErrorBody>(body) {
        Ok(e) => format!("{}: {}", e.error.as_str(), e.message),
        Err(_) => format!(
            "the server closed the connection with status {code}: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

/// The flusher task: writes out what callers could not, or queued to go out together,
/// whenever there is some.
async fn flush_unsent(out: Arc<Out>, pending: Arc<Mutex<Pending>>) {
    let Some(write) = out.write.as_ref() else {
        return fail(
            &pending,
            Broken::Transport("a plain connection has no socket to write to".into()),
        );
    };
    loop {
        out.flush.notified().await;
        // Let the tasks already woken in this turn of the runtime (the callers whose answers
        // the last read delivered) queue their next requests first: one write for all.
        tokio::task::yield_now().await;
        loop {
            if let Err(e) = write.writable().await {
                return fail(&pending, Broken::Transport(format!("write failed: {e}")));
            }
            let mut bytes = lock(&out.unsent);
            if bytes.is_empty() {
                break;
            }
            match write.try_write(&bytes) {
                Ok(n) => {
                    bytes.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(bytes);
                    return fail(&pending, Broken::Transport(format!("write failed: {e}")));
                }
            }
        }
    }
}

/// The flusher task of a TLS connection: the one writer of its session. Takes everything
/// queued in a turn of the runtime and writes it as one run of records, flushed at once.
async fn flush_tls(
    out: Arc<Out>,
    pending: Arc<Mutex<Pending>>,
    mut write: WriteHalf<TlsStream<TcpStream>>,
) {
    let mut bytes = Vec::new();
    loop {
        out.flush.notified().await;
        // As in `flush_unsent`: the callers woken in this turn queue theirs first — unless the
        // frame is a call alone on the connection, which nobody will join.
        if !out.alone.swap(false, Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
        loop {
            std::mem::swap(&mut bytes, &mut *lock(&out.unsent));
            if bytes.is_empty() {
                break;
            }
            let written = async {
                write.write_all(&bytes).await?;
                write.flush().await
            };
            if let Err(e) = written.await {
                return fail(&pending, Broken::Transport(format!("write failed: {e}")));
            }
            bytes.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair on loopback: the client's `Out` (with its flusher task) and the peer.
    async fn out_and_peer() -> io::Result<(Arc<Out>, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (peer, _) = listener.accept().await?;
        let (_read, write) = client.into_split();
        let out = Arc::new(Out::new(Some(write)));
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(flush_unsent(out.clone(), pending));
        Ok((out, peer))
    }

    /// A stand-in wire server: answers every connection's preamble, keeps it open, and counts
    /// the connections.
    async fn preamble_server() -> io::Result<(String, Arc<AtomicU64>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut theirs = [0u8; PREAMBLE.len()];
                    if tcp.read_exact(&mut theirs).await.is_ok() {
                        let _ = tcp.write_all(PREAMBLE).await;
                        let mut rest = Vec::new();
                        let _ = tcp.read_to_end(&mut rest).await;
                    }
                });
            }
        });
        Ok((addr, connections))
    }

    /// Bug pinned (issue 15, item 15): the server now closes a wire connection idle for its
    /// idle timeout, and a call sent just as it does is lost with the connection (a renewal
    /// every TTL/3 of a 15-minute lease lands right on the default 5 minutes). The client does
    /// not reuse a connection idle for `REUSE_IDLE_FOR`: the next call opens a new one.
    #[tokio::test]
    async fn a_connection_idle_for_a_minute_is_replaced_not_reused() -> io::Result<()> {
        let (addr, connections) = preamble_server().await?;
        let client = WireClient::new(addr);
        let first = client.conn().await.map_err(io::Error::other)?;
        assert!(Arc::ptr_eq(
            &first,
            &client.conn().await.map_err(io::Error::other)?
        ));
        let long_ago = Instant::now()
            .checked_sub(REUSE_IDLE_FOR + Duration::from_secs(1))
            .ok_or_else(|| io::Error::other("this machine has been up for less than a minute"))?;
        // With a call under way the connection is not idle, however long ago it began.
        let (tx, _rx) = oneshot::channel();
        first
            .pending()
            .waiting
            .insert(999, Waiter { op: Op::Renew, tx });
        first.pending().last_active = long_ago;
        assert!(
            client.live().is_some(),
            "a connection with a call under way is live"
        );
        first.pending().waiting.clear();
        assert!(client.live().is_none(), "an idle one is not reused");
        let second = client.conn().await.map_err(io::Error::other)?;
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        Ok(())
    }

    /// Pipelined renewals went out one `write` per call, so the server also took one `read`
    /// per request: with several calls under way, what is sent in one turn of the runtime now
    /// leaves in one write, made by the flusher once the calling tasks have run. (On the
    /// current-thread test runtime nothing else runs until this task awaits.)
    #[tokio::test]
    async fn frames_sent_while_others_are_under_way_leave_together_after_the_turn() -> io::Result<()>
    {
        let (out, mut peer) = out_and_peer().await?;
        let mut buf = [0u8; 64];
        // Alone on the connection: written by the call itself, before it returns.
        out.send(b"alone;", false)?;
        let n = peer.try_read(&mut buf)?;
        assert_eq!(&buf[..n], b"alone;");

        for frame in [&b"one;"[..], b"two;", b"three;"] {
            out.send(frame, true)?;
        }
        // Nothing written yet: the calls only queued their frames.
        assert!(
            matches!(peer.try_read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "a frame sent with others under way went out before the turn ended"
        );
        let mut got = Vec::new();
        while got.len() < b"one;two;three;".len() {
            let n = tokio::time::timeout(CALL_TIMEOUT, peer.read(&mut buf))
                .await
                .map_err(|_| io::Error::other("the flusher wrote nothing"))??;
            assert!(n > 0, "the connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"one;two;three;");
        assert!(lock(&out.unsent).is_empty());
        Ok(())
    }
}
