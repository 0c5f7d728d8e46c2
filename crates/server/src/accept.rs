//! Accepting connections through a shortage: when `accept` fails — the process is out of file
//! descriptors (`EMFILE`), the system is (`ENFILE`), or out of socket memory — the listener
//! backs off instead of spinning on a socket that stays readable, and says so in the log: at
//! most once per [`LOG_EVERY`], with how many failures the line stands for, so that a shortage
//! lasting minutes is a few lines, not thousands. Both listeners use it: HTTP (`http::serve`)
//! and the wire protocol's.

use std::io;
use std::time::{Duration, Instant};

/// Wait before accepting again after a failure: short, so that service resumes soon after
/// descriptors free up, long enough not to spin.
const BACKOFF: Duration = Duration::from_millis(50);

/// At most one log line per listener this often while accepts keep failing.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The failed accepts of one listener, for rate-limited logging.
#[derive(Debug)]
pub(crate) struct AcceptErrors {
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
    pub(crate) fn new(listener: &'static str) -> Self {
        Self {
            listener,
            logged_at: None,
            unlogged: 0,
            streak: 0,
        }
    }

    /// Records a failed accept, logs it if no line was logged within [`LOG_EVERY`], and returns
    /// how long to wait before accepting again.
    pub(crate) fn failed(&mut self, error: &io::Error) -> Duration {
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
    pub(crate) fn accepted(&mut self) {
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

/// An error about one connection only (it went away before it was accepted): accept the next.
pub(crate) fn is_connection_error(error: &io::Error) -> bool {
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
