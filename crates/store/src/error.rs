//! Storage errors. All of them but [`StoreError::Invalid`] are fatal for the write path: after
//! one, the committer refuses further writes instead of guessing what reached the disk.

use locksmith_core::InvalidRequest;
use thiserror::Error;

/// A storage failure.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The data directory could not be opened or created.
    #[error("cannot open store at {path}: {reason}")]
    Open {
        /// The path tried.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// The data directory's filesystem has too little free space for the store to start.
    #[error("{}", no_space(path, *needed, *available, *segment, *replay))]
    NoSpace {
        /// The data directory.
        path: String,
        /// Bytes the store needs free to start.
        needed: u64,
        /// Bytes free.
        available: u64,
        /// The size of one log segment.
        segment: u64,
        /// Of `needed`, the estimate for copying the log left by the last run into the
        /// database (0 when there is none).
        replay: u64,
    },
    /// A read or write failed.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// Stored bytes could not be decoded (corruption or a newer format).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// An earlier commit failed, so this batch was refused without writing any of it; the
    /// store refuses writes until the server restarts. Holds the first failure's cause (see
    /// [`StoreError::cause`]), never another `Failed`'s text.
    #[error("storage is failed after an earlier error ({0}); restart the server to recover")]
    Failed(String),
    /// The commit of this very batch failed part-way: it may or may not be durable, and the
    /// store refuses writes until the server restarts (which reads what survived). Holds the
    /// failure's cause.
    #[error(
        "storage failed while writing this change ({0}), so whether it was saved is unknown; \
         the store refuses writes until the server restarts"
    )]
    Unknown(String),
    /// The committer has shut down.
    #[error("storage is shut down")]
    Closed,
    /// The batch holds a record outside the limits of `locksmith_core::keyspace`; it was
    /// refused before any of it was written, and the store goes on working (the one error that
    /// latches nothing). A domain validates its records first, so this is a bug in the caller.
    #[error("storage refused a record: {0}")]
    Invalid(InvalidRequest),
}

impl StoreError {
    /// What went wrong in the first place: the cause a [`Failed`](StoreError::Failed) or
    /// [`Unknown`](StoreError::Unknown) carries, or this error's own text. What a latched
    /// failure keeps, so that refusals do not nest one another's messages.
    pub fn cause(&self) -> String {
        match self {
            StoreError::Failed(cause) | StoreError::Unknown(cause) => cause.clone(),
            other => other.to_string(),
        }
    }
}

fn no_space(path: &str, needed: u64, available: u64, segment: u64, replay: u64) -> String {
    if replay > 0 {
        format!(
            "not enough free space in {path}: {} free, and the store needs about {} to start: \
             about {} to copy the write-ahead log left by the last run into the database, and \
             room for two {} log segments once the old log is deleted",
            mib(available),
            mib(needed),
            mib(replay),
            mib(segment)
        )
    } else {
        format!(
            "not enough free space in {path}: {} free, and the store needs {} to start (its \
             write-ahead log is two segments of {} each, created at full size)",
            mib(available),
            mib(needed),
            mib(segment)
        )
    }
}

/// `bytes` in MiB, to one decimal place (rounded up) when not whole.
fn mib(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        let tenths = (bytes.saturating_mul(10)).div_ceil(MIB);
        format!("{}.{} MiB", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug pinned: the committer latched a store's `Failed` text as the cause of its own, and
    /// the HTTP answer read "storage is failed after an earlier error (storage is failed after
    /// an earlier error (…)))".
    #[test]
    fn a_refusal_after_a_refusal_names_the_first_cause_once() {
        let first = StoreError::Io("append to the log: No space left on device".into());
        let refused = StoreError::Failed(first.cause());
        let again = StoreError::Failed(refused.cause());
        let text = again.to_string();
        assert_eq!(text.matches("storage is failed").count(), 1, "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        assert_eq!(
            StoreError::Unknown(again.cause()).cause(),
            first.to_string()
        );
    }

    #[test]
    fn space_is_said_in_mib() {
        assert_eq!(mib(32 * 1024 * 1024), "32 MiB");
        assert_eq!(mib(3 * 1024 * 1024 + 1), "3.1 MiB");
        assert_eq!(mib(0), "0 MiB");
        let e = StoreError::NoSpace {
            path: "/data".into(),
            needed: 32 << 20,
            available: 5 << 20,
            segment: 16 << 20,
            replay: 0,
        };
        let text = e.to_string();
        assert!(text.contains("/data"), "{text}");
        assert!(text.contains("5 MiB free"), "{text}");
        assert!(text.contains("needs 32 MiB"), "{text}");
    }
}
