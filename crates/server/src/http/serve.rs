//! The HTTP listener: accepts connections and serves HTTP/1.1 on each (hyper), with the two
//! timeouts `axum::serve` lacks, so that stalled clients cannot pile up and take every file
//! descriptor:
//!
//! - **header timeout**: a connection's first request head must be complete within it of the
//!   connection's start; a later request's head, within it of the head's first byte;
//! - **idle timeout**: a keep-alive connection waiting for its next request, with nothing sent,
//!   is closed after it.
//!
//! Both run only while hyper waits for a request head: a response in progress — an acquire that
//! waits in the queue, an event stream — is never cut. They are hyper's header-read timer, fed
//! a [`Timer`] that knows whether a head has begun ([`HeadTimer`]).
//!
//! Every connection has `TCP_NODELAY`: replies and events are small writes that must leave at
//! once (with Nagle a second small write waits for the peer's delayed ACK, ~40 ms). On stop the
//! listener closes, each connection finishes its request under way and closes (hyper's graceful
//! shutdown), and [`serve`] returns once all have. A failed accept (out of file descriptors,
//! usually) is logged — at most once every 10 s, with a count of the rest — and retried shortly.
//!
//! At most `max_connections` connections are served at once: one more is answered with a
//! minimal HTTP/1.1 `503` whose body is the JSON error `too_many_connections`, and closed. The
//! accept loop, the cap and the back-off are the wire protocol's too (`crate::accept`).
//!
//! With TLS (`--tls-cert`) every connection's handshake comes first (`crate::tls`), within the
//! header timeout; a plain HTTP client is answered with a `400` whose JSON says to use
//! `https://`. Every request of the connection carries its [`PeerIdentity`] in its extensions
//! (with mutual TLS, the node its client certificate names), for the route handlers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::Timeouts;
use crate::accept::{serve_connections, stopped, too_many_connections};
use crate::tls::{Handshakes, PeerIdentity, Tls};

/// Serves `router` on `listener` (over TLS with `tls`), at most `max_connections` connections
/// at once, until `stop` turns true; then waits for every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    max_connections: usize,
    tls: Option<Tls>,
    stop: watch::Receiver<bool>,
) {
    let refusal = refusal(max_connections);
    let handshakes = tls.map(|tls| tls.handshakes("http", not_tls()));
    serve_connections(
        listener,
        "http",
        max_connections,
        refusal,
        handshakes.clone(),
        stop,
        |tcp, stop| connection(tcp, router.clone(), timeouts, handshakes.clone(), stop),
    )
    .await;
}

/// What a TLS listener answers a plain HTTP client: a whole `400` saying to use `https://`.
fn not_tls() -> Vec<u8> {
    let body = serde_json::to_string(&locksmith_api::ErrorBody::new(
        locksmith_api::ErrorCode::InvalidRequest,
        "this Locksmith server speaks only HTTPS (it runs with --tls-cert): use an https:// \
         URL, trusting the server's CA (--ca-file)",
    ))
    .unwrap_or_default();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a connection over the cap is sent: a whole HTTP/1.1 response, whatever it asked.
fn refusal(max_connections: usize) -> Vec<u8> {
    let body =
        serde_json::to_string(&too_many_connections("HTTP", max_connections)).unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one connection (after its TLS handshake, with `handshakes`) until it closes, times
/// out, or — after `stop` — finishes its request under way.
async fn connection(
    tcp: TcpStream,
    router: Router,
    timeouts: Timeouts,
    handshakes: Option<Handshakes>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
    }
    match handshakes {
        None => serve_http(tcp, None, router, timeouts, stop).await,
        Some(handshakes) => {
            if let Some((session, peer)) = handshakes.accept(tcp, timeouts.header, &mut stop).await
            {
                serve_http(session, Some(peer), router, timeouts, stop).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on `stream`; every request carries `peer` (when the connection has one).
async fn serve_http<S>(
    stream: S,
    peer: Option<PeerIdentity>,
    router: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let read = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Counted {
        inner: stream,
        read: Arc::clone(&read),
    });
    let service = TowerToHyperService::new(router.map_request(
        move |mut req: hyper::Request<Incoming>| {
            if let Some(peer) = &peer {
                req.extensions_mut().insert(peer.clone());
            }
            req.map(Body::new)
        },
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    if timeouts.header.is_some() || timeouts.idle.is_some() {
        // hyper runs this timer only while it waits for a request head; `HeadTimer` decides
        // which of the two limits applies, so the duration given here is only a placeholder.
        builder
            .timer(HeadTimer {
                timeouts,
                read,
                first: Arc::new(AtomicBool::new(true)),
            })
            .header_read_timeout(timeouts.header.or(timeouts.idle));
    } else {
        builder.header_read_timeout(None);
    }
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    // A header or idle timeout, a client gone mid-request, a malformed head.
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A connection's stream, counting the bytes read: how [`HeadWait`] tells that a request head
/// has begun.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's header-read timer for one connection. hyper starts it each time it begins waiting
/// for a request head — at the connection's start, and after each response — and drops it once
/// the head is in. Each wait is a [`HeadWait`].
#[derive(Clone)]
struct HeadTimer {
    timeouts: Timeouts,
    /// Bytes read from the connection so far.
    read: Arc<AtomicU64>,
    /// True until the connection's first wait begins.
    first: Arc<AtomicBool>,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        // Not used by an HTTP/1 server connection (only `sleep_until`), but honoured.
        Box::pin(HeadWait::fixed(Some(Instant::now() + duration)))
    }

    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        let now = Instant::now();
        if self.first.swap(false, Ordering::Relaxed) {
            // The first request: the client connected to send it, so it has the header timeout
            // from now (an idle timeout here would let silent connections pile up).
            return Box::pin(HeadWait::fixed(self.timeouts.header.map(|h| now + h)));
        }
        Box::pin(HeadWait {
            read: Arc::clone(&self.read),
            read_at_start: self.read.load(Ordering::Relaxed),
            header: self.timeouts.header,
            begun: false,
            sleep: self
                .timeouts
                .idle
                .map(|idle| Box::pin(tokio::time::sleep_until(now + idle))),
        })
    }
}

impl std::fmt::Debug for HeadTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadTimer")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// One wait for a request head: resolves when the connection has waited too long. Between
/// requests it is the idle timeout, until the next head's first byte arrives; from then on, the
/// header timeout. hyper polls it after every read that leaves the head incomplete, so the
/// first byte is seen as it arrives.
struct HeadWait {
    read: Arc<AtomicU64>,
    /// Bytes read when the wait began: more means the head has begun.
    read_at_start: u64,
    /// The header timeout, to apply once the head begins.
    header: Option<Duration>,
    /// True once the head has begun (or the deadline is fixed from the start).
    begun: bool,
    /// The deadline in force; `None`: none.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HeadWait {
    /// A wait with a fixed deadline (`None`: never).
    fn fixed(deadline: Option<Instant>) -> Self {
        Self {
            read: Arc::new(AtomicU64::new(0)),
            read_at_start: 0,
            header: None,
            begun: true,
            sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }
    }
}

impl Future for HeadWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.begun && self.read.load(Ordering::Relaxed) != self.read_at_start {
            self.begun = true;
            let deadline = self.header.map(|h| Instant::now() + h);
            self.sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        }
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl Sleep for HeadWait {}
