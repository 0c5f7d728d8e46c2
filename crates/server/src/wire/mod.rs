//! The binary wire protocol's listener: acquire, renew, release and fence checks over framed,
//! pipelined TCP (the framing is `locksmith_api::frame`).
//!
//! One task per connection reads frames, starts each request at once, and writes the answers as
//! they complete, several per write when they are ready together. The requests go to the same
//! request functions as the HTTP routes (`crate::domains::leases::ops`), so they have the same
//! defaults, checks and error bodies.
//!
//! The connection never stops reading because of what its acquires wait for: a queued acquire
//! may wait as long as it asked, so a connection may have up to [`MAX_ACQUIRES`] of them under
//! way, and one more is refused at once (`too_many_requests`) — renewals, withdraws and the
//! connection's close are read and carried out whatever is queued. Other requests end within a
//! commit; past [`MAX_IN_FLIGHT`] of them the connection reads no more until some finish.
//!
//! A withdraw (op 5) names an acquire sent earlier on the connection; if it is not answered yet
//! it is dropped — out of the queue, a grant that raced with it released — and gets no answer:
//! the withdraw's answer says which happened. Frames are carried out in order, so the answer is
//! never both.
//!
//! Closing the connection withdraws the acquires still waiting in a queue; every other request
//! already received is carried out. A connection that has sent nothing for the idle timeout and
//! has nothing under way is closed (see [`Timeouts`]), as is one that does not send its preamble
//! within the header timeout. On shutdown the listener stops accepting, each connection stops
//! reading, answers what it has under way (queued acquires are answered `shutting_down` by the
//! engine), and closes.
//!
//! At most `max_connections` connections are served at once. One more is sent the server's
//! preamble and then, under request id 0 (the id of answers about the connection itself), an
//! error frame `too_many_connections` (status 503), and closed — so a client that opens with
//! the preamble, as every client does, reads a clear error where it reads its first answer.
//!
//! Authentication (`auth`): with it on, the first frame after the preamble names the
//! connection's token (op 6); a connection whose token is revoked or expires is closed within a
//! second — what is under way is answered (queued acquires are withdrawn and answered 401), then
//! a 401 under id 0 says why.
//! With TLS (`--tls-cert`) the listener speaks only TLS: each connection's handshake comes
//! first (`crate::tls`), then the same preamble and frames inside the session. A client that
//! opens without TLS is sent the preamble and an error frame saying so, under request id 0.
//! With mutual TLS the connection's [`PeerIdentity`] — the node its certificate names — goes
//! with each of its requests.
//!
//! What it is not: the HTTP API (`crate::http`), which serves everything, including the
//! operations this protocol also carries. Both call the same request functions
//! (`crate::domains::leases::ops`).

mod auth;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::{FutureExt, future::BoxFuture};
use locksmith_api::frame::{self, Frame, LeaseOp, Op, PREAMBLE, Withdraw, Withdrawn};
use locksmith_api::{AcquireRequest, ErrorBody, ErrorCode, FenceCheckRequest};
use locksmith_auth::{Permission, Principal};
use serde::Serialize;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::Timeouts;
use crate::accept::{serve_connections, stopped, too_many_connections};
use crate::app::App;
use crate::domains::leases::ops;
use crate::request::{ApiError, decode as parse, forbidden};
use crate::tls::{Handshakes, PeerIdentity, Tls};

use self::auth::{Authenticating, Standing};

/// Most acquires one connection may have under way (queued ones included); one more is refused
/// at once with `too_many_requests`, and the connection goes on reading.
pub const MAX_ACQUIRES: usize = 1024;

/// Most other requests (renew, release, fence check: each ends within a commit) one connection
/// may have under way; past it the connection reads no more until some finish.
pub const MAX_IN_FLIGHT: usize = 1024;

/// What the server answers a client that does not open with [`PREAMBLE`] — usually an HTTP
/// client pointed at the wire port — before it closes the connection.
const NOT_WIRE_ANSWER: &str = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: ";

/// Accepts connections, at most `max_connections` at once, until `stop` turns true, then waits
/// for every connection to finish.
/// With `tls`, every connection is a TLS session (see `crate::tls`).
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    timeouts: Timeouts,
    max_connections: usize,
    tls: Option<Tls>,
    stop: watch::Receiver<bool>,
) {
    let refusal = refusal(max_connections);
    let handshakes = tls.map(|tls| tls.handshakes("wire", not_tls()));
    serve_connections(
        listener,
        "wire",
        max_connections,
        refusal,
        handshakes.clone(),
        stop,
        |tcp, stop| connection(tcp, app.clone(), timeouts, handshakes.clone(), stop),
    )
    .await;
}

/// What a TLS wire listener answers a client that opened without TLS: the preamble, then an
/// error under request id 0 — what a plain client reads where it reads its first answer.
fn not_tls() -> Vec<u8> {
    let mut out = PREAMBLE.to_vec();
    encode::<()>(
        &mut out,
        0,
        Err(ApiError::from(ErrorBody::new(
            ErrorCode::InvalidRequest,
            "this wire-protocol port speaks only TLS (the server runs with --tls-cert): \
             connect with TLS, trusting the server's CA (--ca-file)",
        ))),
    );
    out
}

/// What a connection over the cap is sent: the preamble, then the refusal under request id 0.
fn refusal(max_connections: usize) -> Vec<u8> {
    let mut out = PREAMBLE.to_vec();
    encode::<()>(
        &mut out,
        0,
        Err(ApiError::from(too_many_connections(
            "wire-protocol",
            max_connections,
        ))),
    );
    out
}

/// Serves one connection (after its TLS handshake, with `handshakes`); I/O errors just end it
/// (the peer went away).
async fn connection(
    tcp: TcpStream,
    app: App,
    timeouts: Timeouts,
    handshakes: Option<Handshakes>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "wire: cannot set TCP_NODELAY");
    }
    let ended = match handshakes {
        None => {
            let (read, write) = tcp.into_split();
            let peer = Arc::new(PeerIdentity::default());
            run_connection(read, write, peer, app, timeouts, stop).await
        }
        Some(handshakes) => {
            let Some((session, peer)) = handshakes.accept(tcp, timeouts.header, &mut stop).await
            else {
                return;
            };
            let (read, write) = tokio::io::split(session);
            run_connection(read, write, Arc::new(peer), app, timeouts, stop).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "wire: connection ended");
    }
}

/// Serves one connection, read from `read_half` and written to `write_half`, on behalf of
/// `peer`.
async fn run_connection<R, W>(
    read_half: R,
    mut write_half: W,
    peer: Arc<PeerIdentity>,
    app: App,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(read_half);
    // A peer that does not complete its preamble within the header timeout is dropped, and
    // never holds up a shutdown.
    let preamble = async {
        match timeouts.header {
            Some(within) => tokio::time::timeout(within, reader.preamble()).await.ok(),
            None => Some(reader.preamble().await),
        }
    };
    let greeted = tokio::select! {
        greeted = preamble => match greeted {
            Some(greeted) => greeted?,
            None => return Ok(()),
        },
        _ = stopped(&mut stop) => return Ok(()),
    };
    if !greeted {
        let body = serde_json::to_string(&ErrorBody::new(
            ErrorCode::InvalidRequest,
            "this is the Locksmith wire-protocol port, which expects the LOCKSMITH/1 preamble; \
             the HTTP API is on the server's --listen address",
        ))
        .unwrap_or_default();
        let answer = format!("{NOT_WIRE_ANSWER}{}\r\n\r\n{body}", body.len());
        write_half.write_all(answer.as_bytes()).await?;
        return write_half.shutdown().await;
    }
    write_half.write_all(PREAMBLE).await?;
    // A TLS session keeps what it was given until flushed; a socket's flush does nothing.
    write_half.flush().await?;

    // Turns true when the peer stops sending, or the connection closes for want of a working
    // token (then `closing` says why first): its queued acquires are withdrawn.
    let (gone_tx, gone) = watch::channel(false);
    let closing: Arc<OnceLock<ApiError>> = Arc::default();
    // Who the connection acts as (see `auth`).
    let mut standing = Standing::new(&app, peer);
    let mut under_way = UnderWay {
        closing: closing.clone(),
        ..UnderWay::default()
    };
    // Stops reading and withdraws the queued acquires, answering them `why`; `why` goes out
    // under id 0 once everything under way is answered.
    let close = |why: ApiError, reading: &mut bool| {
        let _ = closing.set(why);
        *reading = false;
        let _ = gone_tx.send(true);
    };
    let mut out = Vec::with_capacity(4096);
    let mut reading = true;
    // The idle timer is lazy: activity only moves `active_at`, and the timer, once due, looks
    // whether the connection really was idle for the whole timeout (no timer reset per frame).
    let mut active_at = Instant::now();
    let idle_timer = tokio::time::sleep(timeouts.idle.unwrap_or(Duration::MAX / 4));
    tokio::pin!(idle_timer);
    while reading || !under_way.in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(answer) = under_way.in_flight.next(), if !under_way.in_flight.is_empty() => {
                under_way.done(answer, &mut out);
            }
            read = reader.next(), if reading && under_way.others < MAX_IN_FLIGHT => match read {
                Ok(Some(frame)) => {
                    if let Err(why) = under_way.start(&app, &mut standing, frame, &gone, &mut out) {
                        close(why, &mut reading);
                    }
                }
                Ok(None) => {
                    reading = false;
                    let _ = gone_tx.send(true);
                }
                Err(e) => {
                    bad_frame(&mut out, &e);
                    reading = false;
                    let _ = gone_tx.send(true);
                }
            },
            _ = stopped(&mut stop), if reading => reading = false,
            why = standing.stopped_working(), if reading => {
                tracing::debug!("wire: closing a connection whose token stopped working");
                close(why, &mut reading);
            }
            () = &mut idle_timer, if reading && timeouts.idle.is_some() => {
                let idle = timeouts.idle.unwrap_or_default();
                let now = Instant::now();
                if under_way.in_flight.is_empty() && now >= active_at + idle {
                    tracing::debug!(?idle, "wire: closing a connection idle for so long");
                    reading = false;
                    let _ = gone_tx.send(true);
                } else {
                    // Not idle (requests under way count as activity): look again later.
                    let next = if under_way.in_flight.is_empty() {
                        active_at + idle
                    } else {
                        now + idle
                    };
                    idle_timer.as_mut().reset(next);
                    continue;
                }
            }
        }
        active_at = Instant::now();
        // Everything else already done, and frames already buffered, go out in the same write.
        while let Some(Some(answer)) = under_way.in_flight.next().now_or_never() {
            under_way.done(answer, &mut out);
        }
        while reading && under_way.others < MAX_IN_FLIGHT {
            match reader.buffered() {
                Ok(Some(frame)) => {
                    if let Err(why) = under_way.start(&app, &mut standing, frame, &gone, &mut out) {
                        close(why, &mut reading);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    bad_frame(&mut out, &e);
                    reading = false;
                    let _ = gone_tx.send(true);
                }
            }
        }
        if !out.is_empty() {
            write_half.write_all(&out).await?;
            write_half.flush().await?;
            out.clear();
        }
    }
    if let Some(why) = closing.get() {
        // The last word, about the connection itself: a client fails every call still waiting
        // (and its next ones) with it.
        encode::<()>(&mut out, 0, Err(copy(why)));
        write_half.write_all(&out).await?;
    }
    write_half.shutdown().await
}

/// Answers a read that failed (a bad length, or the peer gone mid-frame) under id 0: the stream
/// cannot be trusted past it, so the connection closes after what is under way.
fn bad_frame(out: &mut Vec<u8>, e: &io::Error) {
    let body = ErrorBody::new(ErrorCode::InvalidRequest, format!("bad frame: {e}"));
    encode::<()>(out, 0, Err(ApiError::from(body)));
}

/// The requests of one connection under way, and how to withdraw its acquires.
#[derive(Default)]
struct UnderWay {
    /// Each resolves to its request id if it is an acquire, and its encoded answer (none for
    /// an acquire withdrawn).
    in_flight: FuturesUnordered<BoxFuture<'static, (Option<u64>, Vec<u8>)>>,
    /// The acquires not answered yet, by request id: sending withdraws one.
    acquires: HashMap<u64, oneshot::Sender<()>>,
    /// How many acquires are in `in_flight` (withdrawn ones until their future ends).
    acquiring: usize,
    /// How many other requests are in `in_flight`.
    others: usize,
    /// Why the connection is closing, once it is for want of a working token: what its queued
    /// acquires are answered.
    closing: Arc<OnceLock<ApiError>>,
}

impl UnderWay {
    /// Starts a request as the connection's principal; a withdraw or an auth frame is carried
    /// out (and answered) here, in frame order. `Err`: the connection must close, for the
    /// reason given (it is not authenticated).
    fn start(
        &mut self,
        app: &App,
        standing: &mut Standing,
        req: Request,
        gone: &watch::Receiver<bool>,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let op = Op::from_code(req.code);
        if op == Some(Op::Auth) {
            return match standing.authenticate(app, &req.body) {
                Authenticating::Done(answer) => {
                    encode(out, req.id, Ok(answer));
                    Ok(())
                }
                Authenticating::Refused(refused) => {
                    encode::<()>(out, req.id, Err(refused));
                    Ok(())
                }
                Authenticating::Closing(refused) => {
                    encode::<()>(out, req.id, Err(copy(&refused)));
                    Err(refused)
                }
            };
        }
        let Some(who) = standing.principal().cloned() else {
            let refused = Standing::not_authenticated();
            encode::<()>(out, req.id, Err(copy(&refused)));
            return Err(refused);
        };
        match op {
            Some(Op::Withdraw) => {
                let answer = parse::<Withdraw>(&req.body).map(|w| Withdrawn {
                    request: w.request,
                    // Still in `acquires`: not answered yet, so its future has not finished, and
                    // it sees this before anything else when next polled (see `request`).
                    withdrawn: self
                        .acquires
                        .remove(&w.request)
                        .is_some_and(|tx| tx.send(()).is_ok()),
                });
                encode(out, req.id, answer);
            }
            Some(Op::Acquire) if self.acquiring >= MAX_ACQUIRES => {
                encode::<()>(out, req.id, Err(too_many_acquires()));
            }
            Some(Op::Acquire) => {
                let (tx, withdrawn) = oneshot::channel();
                self.acquires.insert(req.id, tx);
                self.acquiring += 1;
                self.in_flight.push(request(
                    app,
                    who,
                    req,
                    gone,
                    Some(withdrawn),
                    self.closing.clone(),
                ));
            }
            _ => {
                self.others += 1;
                self.in_flight
                    .push(request(app, who, req, gone, None, self.closing.clone()));
            }
        }
        Ok(())
    }

    /// Takes a finished request's answer.
    fn done(&mut self, (acquire, answer): (Option<u64>, Vec<u8>), out: &mut Vec<u8>) {
        match acquire {
            Some(id) => {
                self.acquires.remove(&id);
                self.acquiring -= 1;
            }
            None => self.others -= 1,
        }
        out.extend(answer);
    }
}

/// The refusal of an acquire past [`MAX_ACQUIRES`] on one connection.
fn too_many_acquires() -> ApiError {
    ApiError::from(ErrorBody::new(
        ErrorCode::TooManyRequests,
        format!(
            "this connection already has {MAX_ACQUIRES} acquires under way (the wire \
             protocol's limit per connection); this one was not queued — wait for some to be \
             answered or withdraw some, or open another connection"
        ),
    ))
}

/// A decoded request, owned, so its handler can outlive the read buffer.
struct Request {
    id: u64,
    code: u16,
    body: Vec<u8>,
}

impl From<Frame<'_>> for Request {
    fn from(f: Frame<'_>) -> Self {
        Self {
            id: f.id,
            code: f.code,
            body: f.body.to_vec(),
        }
    }
}

/// Starts one request (an acquire with its withdraw signal) as `who`; resolves to its request
/// id if it is an acquire, and its encoded answer. Every operation of the protocol needs the
/// lease permission, as its HTTP route does. An acquire still queued when the connection
/// closes for want of a working token is answered with `closing`'s reason.
fn request(
    app: &App,
    who: Arc<Principal>,
    req: Request,
    gone: &watch::Receiver<bool>,
    withdrawn: Option<oneshot::Receiver<()>>,
    closing: Arc<OnceLock<ApiError>>,
) -> BoxFuture<'static, (Option<u64>, Vec<u8>)> {
    let (app, mut gone) = (app.clone(), gone.clone());
    async move {
        let mut out = Vec::new();
        let id = req.id;
        let acquire_id = (Op::from_code(req.code) == Some(Op::Acquire)).then_some(id);
        if let Err(missing) = who.allows(Permission::Lease) {
            encode::<()>(&mut out, id, Err(forbidden(&missing)));
            return (acquire_id, out);
        }
        match Op::from_code(req.code) {
            Some(Op::Acquire) => {
                let answer = async {
                    // Resolves once a withdraw arrives for this request, never otherwise.
                    let withdrawn = async {
                        if let Some(rx) = withdrawn
                            && rx.await.is_ok()
                        {
                            return;
                        }
                        std::future::pending().await
                    };
                    let acquire = async {
                        let req: AcquireRequest = parse(&req.body)?;
                        ops::acquire(&app, &who, req).await
                    };
                    // Dropping the engine's acquire withdraws it from the queue, and releases
                    // a grant that raced with that (or one made at once, not yet durable). A
                    // withdraw that arrived first wins, even over a request that is not valid:
                    // the withdraw's answer said it was withdrawn, so this one gets none.
                    tokio::select! {
                        biased;
                        () = withdrawn => Ok(None),
                        granted = acquire => Ok(Some(granted?)),
                        _ = stopped(&mut gone) => Err(closing.get().map(copy).unwrap_or_else(|| {
                            ApiError::from(ErrorBody::new(
                                ErrorCode::InvalidRequest,
                                "the connection was closed while the acquire waited",
                            ))
                        })),
                    }
                };
                match answer.await {
                    // Withdrawn: the withdraw's answer said so; this one gets none.
                    Ok(None) => {}
                    Ok(Some(lease)) => encode(&mut out, id, Ok(lease)),
                    Err(e) => encode::<()>(&mut out, id, Err(e)),
                }
                return (Some(id), out);
            }
            Some(Op::Renew) => {
                let answer = async { ops::renew(&app, &who, parse::<LeaseOp>(&req.body)?).await };
                encode(&mut out, id, answer.await);
            }
            Some(Op::Release) => {
                let answer = async { ops::release(&app, &who, parse::<LeaseOp>(&req.body)?).await };
                encode(&mut out, id, answer.await);
            }
            Some(Op::CheckFence) => {
                let answer = async {
                    ops::check_fence(&app, &who, parse::<FenceCheckRequest>(&req.body)?).await
                };
                encode(&mut out, id, answer.await);
            }
            None => encode::<()>(
                &mut out,
                id,
                Err(ApiError::from(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "no wire operation {}: 1 acquire, 2 renew, 3 release, 4 fence check, \
                         5 withdraw, 6 auth",
                        req.code
                    ),
                ))),
            ),
            // Carried out by the connection (`UnderWay::start`), never started here.
            Some(Op::Withdraw | Op::Auth) => {}
        }
        (None, out)
    }
    .boxed()
}

/// Another copy of `e`, for a refusal sent twice (to a request and to the connection).
fn copy(e: &ApiError) -> ApiError {
    ApiError::from(ErrorBody::clone(&e.0))
}

/// Appends the answer frame for `answer` to `out`.
fn encode<T: Serialize>(out: &mut Vec<u8>, id: u64, answer: Result<T, ApiError>) {
    let encoded = match &answer {
        Ok(body) => frame::encode(out, id, frame::OK, body),
        Err(ApiError(body)) => frame::encode(out, id, body.error.http_status(), body),
    };
    if let Err(e) = encoded {
        // Our own types always serialize; if one ever does not, still answer.
        let body = ErrorBody::new(
            ErrorCode::Internal,
            format!("cannot encode the answer: {e}"),
        );
        let _ = frame::encode(out, id, body.error.http_status(), &body);
    }
}

/// Reads frames off a stream. [`FrameReader::next`] is cancel-safe: bytes read are kept in the
/// buffer whether or not the caller's `select!` lets it finish.
struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out.
    used: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(16 * 1024),
            used: 0,
        }
    }

    /// Reads the peer's preamble: true if it is [`PREAMBLE`].
    async fn preamble(&mut self) -> io::Result<bool> {
        while self.buf.len() < PREAMBLE.len() {
            if self.fill().await? == 0 {
                return Ok(false);
            }
        }
        let ok = &self.buf[..PREAMBLE.len()] == PREAMBLE;
        self.used = PREAMBLE.len();
        Ok(ok)
    }

    /// The next frame; `None` at a clean end of stream.
    async fn next(&mut self) -> io::Result<Option<Request>> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return if self.used == self.buf.len() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed mid-frame",
                    ))
                };
            }
        }
    }

    /// A frame already in the buffer, without reading.
    fn buffered(&mut self) -> io::Result<Option<Request>> {
        match frame::decode(&self.buf[self.used..]) {
            Ok(Some((frame, len))) => {
                let req = Request::from(frame);
                self.used += len;
                Ok(Some(req))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// One read into the buffer (compacting it first); the bytes read, 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.used > 0 {
            self.buf.drain(..self.used);
            self.used = 0;
        }
        self.buf.reserve(8 * 1024);
        // `read_buf` appends what it read before returning, so cancelling it loses nothing.
        self.inner.read_buf(&mut self.buf).await
    }
}
