//! Storage errors. All of them are fatal for the write path: after one, the committer refuses
//! further writes instead of guessing what reached the disk.

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
    /// A read or write failed.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// Stored bytes could not be decoded (corruption or a newer format).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// An earlier commit failed; the store refuses writes until the server restarts.
    #[error("storage is failed after an earlier error ({0}); restart the server to recover")]
    Failed(String),
    /// The committer has shut down.
    #[error("storage is shut down")]
    Closed,
}
