//! Why something about this node or one of its processes could not be read.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why the owner identity (or this node's own) could not be established.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// No such process on this node.
    #[error("no process {pid} on this node")]
    NoSuchProcess {
        /// The pid looked up.
        pid: u32,
    },
    /// A `/proc` file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A `/proc` file did not look as expected.
    #[error("cannot parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The host name could not be read.
    #[error("cannot read this host's name: {0}")]
    Hostname(String),
    /// `/proc` is mounted from another PID namespace than this process's: every pid read there
    /// would name some other process (a PID namespace entered without its own `/proc`, e.g.
    /// `unshare --pid --fork` without `--mount-proc`).
    #[error("/proc shows another PID namespace than this process runs in: {0}")]
    ForeignProc(String),
}

impl IdentityError {
    /// The flag that fixes this error, for the error line's next step.
    pub fn next_step(&self) -> &'static str {
        match self {
            IdentityError::NoSuchProcess { .. } => {
                "pass --pid of a live process on this node that will hold the lock"
            }
            IdentityError::Hostname(_) => "pass --node NAME or set LOCKSMITH_NODE",
            IdentityError::Read { .. } | IdentityError::Parse { .. } => {
                "the CLI needs Linux /proc to name the lock owner"
            }
            IdentityError::ForeignProc(_) => {
                "mount this PID namespace's own /proc (e.g. unshare --pid --fork --mount-proc)"
            }
        }
    }
}
