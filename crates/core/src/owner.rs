//! Who holds a lease. A grant without a complete owner is refused: the incident's ghost was a
//! lock held by "PID 0" that nobody could explain.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::InvalidRequest;

/// The identity of a lease holder, filled in by the client (the CLI does it itself).
///
/// `(node, boot_id, pid_ns, pid, start_time)` names one process incarnation: a pid alone is
/// reused after the process dies, a node name alone survives a reboot, and node and boot id are
/// shared by every PID namespace of a machine (containers with the host's network or UTS
/// namespace, Kubernetes `hostNetwork` pods) — where the same pid names other processes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Node (host) name, e.g. `node-7`.
    pub node: String,
    /// Process id of the holder on that node.
    pub pid: u32,
    /// Process start time on that node, in clock ticks since boot (`/proc/PID/stat` field 22);
    /// together with `pid` it tells a live holder from a later process that reused the pid.
    pub start_time: u64,
    /// The node's boot id (`/proc/sys/kernel/random/boot_id`): a new value means the node
    /// rebooted and every lease held under the old one is a ghost.
    pub boot_id: String,
    /// The user the holder runs as.
    pub user: String,
    /// Why the lock is held: the command line, or free text.
    pub purpose: String,
    /// The PID namespace `pid` is numbered in, as `/proc/self/ns/pid` names it
    /// (`pid:[4026531836]`). Only a process in that same namespace can tell from `/proc` whether
    /// the holder still runs: from any other, its pid is absent or another process. A holder
    /// that records none (a client that does not send it) is never judged dead by its pid —
    /// only its TTL, an operator's break, or a new boot id of its node end its lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
}

const MAX_FIELD: usize = 255;
const MAX_PURPOSE: usize = 1024;

impl Owner {
    /// Checks every field is present and sane. An empty field or pid 0 is refused, naming the
    /// field, so that no lock is ever granted to an owner nobody could find.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        for (field, value, max) in [
            ("owner.node", &self.node, MAX_FIELD),
            ("owner.boot_id", &self.boot_id, MAX_FIELD),
            ("owner.user", &self.user, MAX_FIELD),
            ("owner.purpose", &self.purpose, MAX_PURPOSE),
        ] {
            if value.trim().is_empty() {
                return Err(InvalidRequest::new(field, "must not be empty"));
            }
            if value.len() > max {
                return Err(InvalidRequest::new(
                    field,
                    format!("must be at most {max} bytes"),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(InvalidRequest::new(
                    field,
                    "must not contain control characters",
                ));
            }
        }
        if let Some(ns) = &self.pid_ns {
            if ns.trim().is_empty() {
                return Err(InvalidRequest::new(
                    "owner.pid_ns",
                    "must not be empty (leave it out when unknown)",
                ));
            }
            if ns.len() > MAX_FIELD {
                return Err(InvalidRequest::new(
                    "owner.pid_ns",
                    format!("must be at most {MAX_FIELD} bytes"),
                ));
            }
            if ns.chars().any(char::is_control) {
                return Err(InvalidRequest::new(
                    "owner.pid_ns",
                    "must not contain control characters",
                ));
            }
        }
        if self.pid == 0 {
            return Err(InvalidRequest::new(
                "owner.pid",
                "must be the holder's real pid, not 0",
            ));
        }
        if self.start_time == 0 {
            return Err(InvalidRequest::new(
                "owner.start_time",
                "must be the holder's process start time (clock ticks since boot), not 0",
            ));
        }
        Ok(())
    }

    /// True when both name the same process incarnation (same node, boot, PID namespace, pid
    /// and start time). Used for idempotent re-acquire; user and purpose are descriptive, not
    /// identity.
    pub fn same_process(&self, other: &Owner) -> bool {
        self.pid == other.pid
            && self.start_time == other.start_time
            && self.node == other.node
            && self.boot_id == other.boot_id
            && self.pid_ns == other.pid_ns
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} (pid {})", self.user, self.node, self.pid)
    }
}
