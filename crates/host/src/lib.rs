//! # locksmith-host
//!
//! What a node knows about itself and its processes, read from Linux `/proc`: its name, its boot
//! id (new on every reboot), the PID namespace pids are numbered in, a process's start time, and
//! whether a given process incarnation `(pid, start time)` is still alive. On top of that: the
//! [`Owner`](locksmith_core::Owner) a process on this node takes a lock as ([`owner`]), and the
//! verdict this node reaches on a lock's holders ([`verdict`]: alive, gone, rebooted, not
//! checkable from here). The CLI uses it to name a lock's owner and to prove local holders dead
//! (`why`, `locks`, `status`); the server's probe uses it on its own node's holders; the
//! endpoint agent will use the same verdicts.
//!
//! What it is not: portable, or a client. Everything here is Linux-only, every failure is a
//! typed error, and sending a liveness report is the caller's (over whatever transport it has).

mod ancestor;
mod error;
mod identity;
mod node;
mod ns;
mod proc;
pub mod verdict;

pub use ancestor::lasting_ancestor;
pub use error::IdentityError;
pub use identity::{MAX_PURPOSE, clean_purpose, owner, user, user_in_passwd};
pub use node::{boot_id, hostname};
pub use ns::{check_own_proc, pid_namespace};
pub use proc::{
    Liveness, command_line, liveness, parse_start_time, parse_state, process_start_time,
};
pub use verdict::{Check, Here, Reported, Verdict};
