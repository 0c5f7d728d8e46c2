//! What the server knows first-hand about its own node: its boot id, and (through its own
//! `/proc`) whether a process there is alive. A claim about this node that contradicts either is
//! refused, whoever sends it — authentication or not, the server does not take a client's word
//! over its own eyes:
//!
//! - an acquire whose owner names this node under another boot id would reclaim every lease of
//!   the node as a ghost of an older boot ([`NodeIdentity::check_boot`]);
//! - a liveness report that a holder on this node is dead, while this server sees the holder's
//!   process alive, would free a live holder's lock ([`NodeIdentity::vet_report`]).
//!
//! Claims about other nodes are left to the table's own rules (a report is accepted only from
//! the holder's node and boot, about its exact process).

use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_core::{DeadProcess, Owner, Vantage};
use locksmith_host::Liveness;

use crate::NodeIdentity;
use crate::engine::Engine;
use crate::request::ApiError;

impl NodeIdentity {
    /// Refuses a claim that `node` — when it is this server's node — runs under another boot id
    /// than this server's. Boot ids are machine-wide (every container and PID namespace of a
    /// machine reads the same one), so nothing on this machine can truly send another: the
    /// claim is forged, or comes from another machine that took this one's node name.
    /// `field` names the offending field in the answer (`owner.boot_id`, `boot_id`).
    pub(crate) fn check_boot(
        &self,
        field: &str,
        node: &str,
        boot_id: &str,
    ) -> Result<(), ApiError> {
        if node != self.node || boot_id == self.boot_id {
            return Ok(());
        }
        // The boot id is no secret: any process on this node reads it, and `GET /v1/locks`
        // shows it on every local holder. Naming it helps whoever misconfigured a node name.
        Err(ApiError::from(ErrorBody::invalid(
            field,
            format!(
                "{boot_id:?} is not the boot id of node {node}, which is this server's own node \
                 and runs under boot id {}: a request naming it under another boot id would end \
                 its live leases as ghosts of a reboot, so it is refused. A process on {node} \
                 sends /proc/sys/kernel/random/boot_id; a client on another machine must use \
                 that machine's own node name (--node)",
                self.boot_id
            ),
        )))
    }

    /// Whether this server can judge, from its own `/proc`, if `owner`'s process is alive: the
    /// owner runs on this node, under its current boot, in a process this server can look up
    /// by pid. This is the one place that decides it.
    /// An owner in another PID namespace than this server's (or with none recorded) is not
    /// judged here: its pid names another process in this server's `/proc`.
    pub(crate) fn sees_processes_of(&self, owner: &Owner) -> bool {
        owner.node == self.node
            && owner.boot_id == self.boot_id
            && self.pid_ns.is_some()
            && owner.pid_ns == self.pid_ns
    }

    /// Takes out of a liveness report from `from` (its boot id already through
    /// [`check_boot`](Self::check_boot)) the entries that call a holder dead whose process this
    /// server sees alive, each refused with `holder_alive`; returns what is left to apply, and
    /// the refusals. Entries this server cannot judge (a report from another node, a holder on
    /// another node or boot, another process than the holder's, a lease already ended, `/proc`
    /// unreadable) are left to the table's own checks.
    pub(crate) async fn vet_report(
        &self,
        engine: &Engine,
        from: Vantage<'_>,
        dead: Vec<DeadProcess>,
    ) -> (Vec<DeadProcess>, Vec<ErrorBody>) {
        if from.node != self.node {
            // From another node: the table refuses every entry about this one (`not_same_node`).
            return (dead, Vec::new());
        }
        let mut judged: Vec<(DeadProcess, bool)> = Vec::with_capacity(dead.len());
        for d in dead {
            // About the holder's exact process (another one is the table's `wrong_process`). A
            // lease that cannot be read (storage failed) is not judged here: applying the
            // report fails the same way.
            let mine = engine.lease(d.lease).await.ok().flatten().is_some_and(|l| {
                self.sees_processes_of(&l.owner)
                    && (l.owner.pid, l.owner.start_time) == (d.pid, d.start_time)
            });
            judged.push((d, mine));
        }
        if !judged.iter().any(|(_, mine)| *mine) {
            return (judged.into_iter().map(|(d, _)| d).collect(), Vec::new());
        }
        // `/proc` reads are cheap but blocking: keep them off the async workers (as the probe).
        let checked = tokio::task::spawn_blocking(move || {
            judged
                .into_iter()
                .map(|(d, mine)| {
                    let alive =
                        mine && locksmith_host::liveness(d.pid, d.start_time) == Liveness::Alive;
                    (d, alive)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(checked) = checked else {
            // The check itself panicked: apply nothing rather than free a holder unchecked.
            return (Vec::new(), Vec::new());
        };
        let mut apply = Vec::new();
        let mut refused = Vec::new();
        for (d, alive) in checked {
            if alive {
                refused.push(holder_alive(&d, &self.node));
            } else {
                apply.push(d);
            }
        }
        (apply, refused)
    }
}

/// The refusal of a report that a live local holder is dead.
fn holder_alive(d: &DeadProcess, node: &str) -> ErrorBody {
    ErrorBody {
        lease: Some(d.lease),
        ..ErrorBody::new(
            ErrorCode::HolderAlive,
            format!(
                "lease {}: its holder, pid {} (started at {}), runs on {node} — this server's \
                 own node — and the server sees it alive; the lease is not reclaimed. If the \
                 reporter sees it gone, it looks from another PID namespace: run the check \
                 where the holder runs",
                d.lease, d.pid, d.start_time
            ),
        )
    }
}
