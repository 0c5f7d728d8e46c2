//! What both listeners — HTTP (`http::serve`) and the wire protocol's — do about too many
//! connections:
//!
//! - **a cap** ([`ConnectionCap`], `--max-connections`): past it a new connection is answered
//!   with a `too_many_connections` error (503) and closed, before it costs a task, buffers or a
//!   place in any queue — so a flood of clients cannot take the descriptors and memory the
//!   connections already served need;
//! - **a shortage**: when `accept` fails — the process is out of file descriptors (`EMFILE`),
//!   the system is (`ENFILE`), or out of socket memory — the listener backs off instead of
//!   spinning on a socket that stays readable, and says so in the log.
//!
//! Either is logged at most once per [`LOG_EVERY`], with how many events the line stands for,
//! so that a flood lasting minutes is a few lines, not thousands.
//!
//! On a TLS listener the refusal goes inside a TLS session — a client reads it where it reads
//! its first answer, not as a broken handshake — so a refused connection costs a handshake, on
//! the refusing side's bounded set of tasks ([`MAX_REFUSING`] at a time, each at most
//! [`REFUSAL_LINGER`]); past that it is closed at once.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::tls::Handshakes;

/// Accepts connections on `listener` (named `name` in the log) until `stop` turns true, and
/// serves each with `serve(tcp, stop)`, on a task of its own. At most `max_connections` are
/// served at once: one more is sent `refusal` (inside TLS with `tls`) and closed
/// ([`ConnectionCap`]). A failed accept is retried after a back-off ([`AcceptErrors`]). Once
/// stopped, it closes the listener and waits for every connection to finish.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_connections<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    max_connections: usize,
    refusal: Vec<u8>,
    tls: Option<Handshakes>,
    mut stop: watch::Receiver<bool>,
    mut serve: F,
) where
    F: FnMut(TcpStream, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::new(name);
    let mut cap = ConnectionCap::new(name, max_connections, refusal, tls);
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    errors.accepted();
                    let Some(permit) = cap.admit() else {
                        cap.refuse(tcp);
                        continue;
                    };
                    let served = serve(tcp, connection_stop.clone());
                    connections.spawn(async move {
                        served.await;
                        drop(permit);
                    });
                }
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => tokio::time::sleep(errors.failed(&e)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `flag` is true (or its sender is gone); holds no borrow of the flag after.
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

/// Wait before accepting again after a failure: short, so that service resumes soon after
/// descriptors free up, long enough not to spin.
const BACKOFF: Duration = Duration::from_millis(50);

/// At most one log line per listener this often while accepts keep failing.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// The failed accepts of one listener, for rate-limited logging.
#[derive(Debug)]
struct AcceptErrors {
    /// Which listener, for the log.
    listener: &'static str,
    /// When the last line was logged, while failures go on.
    logged_at: Option<Instant>,
    /// Failures since the last line.
    unlogged: u64,
    /// Failures since the last successful accept.
    streak: u64,
}

impl AcceptErrors {
    fn new(listener: &'static str) -> Self {
        Self {
            listener,
            logged_at: None,
            unlogged: 0,
            streak: 0,
        }
    }

    /// Records a failed accept, logs it if no line was logged within [`LOG_EVERY`], and returns
    /// how long to wait before accepting again.
    fn failed(&mut self, error: &io::Error) -> Duration {
        self.streak += 1;
        self.unlogged += 1;
        let due = self.logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            tracing::warn!(
                listener = self.listener,
                %error,
                failures = self.unlogged,
                "cannot accept connections; retrying every {} ms (this line is repeated at most \
                 every {} s) — raise the open-file limit or close idle connections",
                BACKOFF.as_millis(),
                LOG_EVERY.as_secs()
            );
            self.logged_at = Some(Instant::now());
            self.unlogged = 0;
        }
        BACKOFF
    }

    /// Records a successful accept; after failures, says that accepting works again.
    fn accepted(&mut self) {
        if self.streak > 0 {
            tracing::info!(
                listener = self.listener,
                failures = self.streak,
                "accepting connections again"
            );
            *self = Self::new(self.listener);
        }
    }
}

/// The default `--max-connections` of each listener: room for the 10,000-agent scale run
/// (one keep-alive connection per agent) with half as many again to spare, well under the
/// open-file limit a server raises itself to (its hard limit, usually 524,288 or more).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// How many refused connections may be saying goodbye at once (see
/// [`ConnectionCap::refuse`]); past it a refused connection is answered with what fits in its
/// socket's buffer and closed at once.
const MAX_REFUSING: usize = 64;

/// How long a refused connection is given to read its answer: the server waits this long at
/// most for the client to close, reading and dropping what it sends meanwhile. Closing at once
/// with its request unread would make the kernel send a reset, which may reach the client
/// before the answer does and destroy it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The message of a `too_many_connections` refusal by `listener` (`HTTP`, `wire-protocol`) at
/// `max` connections.
pub(crate) fn too_many_connections(listener: &str, max: usize) -> locksmith_api::ErrorBody {
    locksmith_api::ErrorBody::new(
        locksmith_api::ErrorCode::TooManyConnections,
        format!(
            "this server already serves {max} {listener} connections, its --max-connections; \
             this one was closed unserved — retry shortly, or have the server's operator raise \
             --max-connections"
        ),
    )
}

/// The connections one listener may serve at once.
#[derive(Debug)]
struct ConnectionCap {
    /// Which listener, for the log.
    listener: &'static str,
    /// The cap.
    max: usize,
    /// One permit per connection served; each connection's task holds its own.
    permits: Arc<Semaphore>,
    /// What a connection over the cap is sent before it is closed.
    answer: Arc<[u8]>,
    /// The listener's TLS: the answer then goes inside a session.
    tls: Option<Handshakes>,
    /// The refused connections still saying goodbye.
    refusing: JoinSet<()>,
    /// When the last line about refusals was logged, while refusals go on.
    logged_at: Option<Instant>,
    /// Refusals since the last line.
    unlogged: u64,
}

impl ConnectionCap {
    /// A cap of `max` connections (at least 1) for `listener`; a connection over it is sent
    /// `answer` (an error its client understands; inside TLS with `tls`) and closed.
    fn new(listener: &'static str, max: usize, answer: Vec<u8>, tls: Option<Handshakes>) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            listener,
            max,
            permits: Arc::new(Semaphore::new(max)),
            answer: answer.into(),
            tls,
            refusing: JoinSet::new(),
            logged_at: None,
            unlogged: 0,
        }
    }

    /// A place for a new connection, held until the connection ends; `None` at the cap.
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Answers a connection over the cap with the cap's answer and closes it. The answer fits in a fresh socket's send buffer, so it is written at once;
    /// then the connection lingers for up to [`REFUSAL_LINGER`] (at most [`MAX_REFUSING`] of
    /// them at a time), so that the client reads the answer rather than a reset.
    fn refuse(&mut self, tcp: TcpStream) {
        self.unlogged += 1;
        if self.logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                listener = self.listener,
                refused = self.unlogged,
                max_connections = self.max,
                "refusing connections: this listener already serves its --max-connections \
                 ({}; this line is repeated at most every {} s) — raise --max-connections if the \
                 clients are expected",
                self.max,
                LOG_EVERY.as_secs()
            );
            self.logged_at = Some(Instant::now());
            self.unlogged = 0;
        }
        while self.refusing.try_join_next().is_some() {}
        if let Some(tls) = &self.tls {
            if self.refusing.len() < MAX_REFUSING {
                let (tls, answer) = (tls.clone(), Arc::clone(&self.answer));
                self.refusing
                    .spawn(async move { tls.refuse(tcp, &answer, REFUSAL_LINGER).await });
            }
            return;
        }
        let written = tcp.try_write(&self.answer).unwrap_or(0);
        if written < self.answer.len() || self.refusing.len() >= MAX_REFUSING {
            // Nowhere to linger (or the answer did not fit): close now.
            return;
        }
        self.refusing.spawn(linger(tcp));
    }
}

/// Closes a refused connection's sending side, then reads and drops what the client still
/// sends until it closes, or [`REFUSAL_LINGER`] has passed.
pub(crate) async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut sink = [0u8; 4096];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// An error about one connection only (it went away before it was accepted): accept the next.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_shortage_is_logged_once_per_interval_and_its_end_once() {
        let mut errors = AcceptErrors::new("test");
        let emfile = io::Error::from_raw_os_error(24);
        for _ in 0..500 {
            assert_eq!(errors.failed(&emfile), BACKOFF);
        }
        // One line for the first; the other 499 wait for the next interval.
        assert_eq!(errors.unlogged, 499);
        assert_eq!(errors.streak, 500);
        errors.accepted();
        assert_eq!((errors.streak, errors.unlogged), (0, 0));
        assert!(errors.logged_at.is_none());
    }
}
