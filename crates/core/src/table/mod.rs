//! The lock table: leases, owners, fencing, FIFO queues and semaphores, as a plain state machine.
//!
//! Every operation takes `now` and an effect sink, and returns its outcome. Before doing anything
//! else an operation first runs the clock forward ([`LockTable::advance`]), so a lease whose TTL
//! has run out is gone by the time the operation looks at it whether or not the driver's reaper
//! has woken yet: a renewal after the deadline fails with `LeaseExpired`, never "wins" a race
//! with the reclaim.
//!
//! Invariants (checked by the property tests against a simple model):
//! - a resource never has more holders than slots (one for an exclusive lock) — except after a
//!   trusted caller shrank it ([`LockTable::resize`]): the holders above the new size keep their
//!   leases, and nobody new is granted until the holders are fewer than the new size;
//! - fencing tokens strictly increase across all grants and are never reused;
//! - waiters are served strictly first-in first-out per resource (no barging: a new acquirer
//!   never overtakes a queued one);
//! - a non-empty queue implies at least one holder, a hold in force, or a lock-delay (a free,
//!   unblocked slot is handed to the queue at once);
//! - no grant is made while a hold is in force on the resource or its lock-delay runs;
//! - a re-acquire by a holder returns its own lease only when it asks for the slot count and
//!   TTL that lease was granted with (else `SlotsMismatch` / `TtlMismatch`, and nothing changes);
//! - a renew or release of an ended lease is told why it ended (a release of a released lease
//!   succeeds as `already`), across restarts too when the table is given the durable audit log
//!   ([`LockTable::remember_ended`]), for the newest [`TableConfig::ended_memory`] ends;
//! - every change to durable state emits its audit record in the same batch.
//!
//! Audit records leave the table unnumbered (`seq` 0) and stamped with `now`'s wall time: the
//! driver numbers them as it seals the batch, from one sequence that every domain's records
//! share (the server's engine step), so the table keeps no audit counter of its own.

mod ghosts;
mod holds;
mod origins;
mod resize;
mod resources;
mod restore;
mod views;
mod writer;

pub use ghosts::{
    BreakOutcome, DeadProcess, LivenessReport, Reclaimed, Vantage, validate_reporter,
};
pub use holds::PlaceHold;
pub use restore::{LeasePreparer, PreparedLeases, RestoreBuilder};
pub use views::Census;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::audit::{AuditKind, AuditRecord};
use crate::effect::{Effect, Effects};
use crate::error::{
    AcquireError, BrokenInvariant, EndCause, FenceError, InvalidRequest, LeaseError,
};
use crate::hold::{HoldId, HoldRecord, HoldState};
use crate::ids::{FenceToken, LeaseId, WaiterId};
use crate::owner::Owner;
use crate::record::{LeaseRecord, Mutation};
use crate::resource::validate_resource;
use crate::time::{Mono, Now};
use crate::view::{HolderView, LeaseView};
use origins::{NodeLeases, Origin};
use resources::Resource;

/// Limits the table enforces on requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Shortest lease TTL accepted, ms.
    pub min_ttl_ms: u64,
    /// Longest lease TTL accepted, ms.
    pub max_ttl_ms: u64,
    /// Longest wait accepted, ms.
    pub max_wait_ms: u64,
    /// Largest semaphore accepted.
    pub max_slots: u32,
    /// How many ended leases to remember, so a late renew/release is told why its lease ended.
    pub ended_memory: usize,
    /// Longest hold or lock-delay accepted, ms.
    pub max_hold_ms: u64,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            min_ttl_ms: 1_000,
            max_ttl_ms: 24 * 3600 * 1000,
            max_wait_ms: 24 * 3600 * 1000,
            max_slots: 10_000,
            ended_memory: 65_536,
            max_hold_ms: 24 * 3600 * 1000,
        }
    }
}

/// What a grant needs, whether to a new acquirer or a queued waiter.
#[derive(Debug)]
struct Grant {
    resource: String,
    owner: Owner,
    ttl_ms: u64,
    slots: u32,
    lock_delay_ms: u64,
}

/// A TTL so long that a lease holding it never expires in practice (100 years), for holders that
/// cannot heartbeat (FleetLock clients). Only a [`Trusted::long_ttl`] acquire may ask for more than
/// [`TableConfig::max_ttl_ms`]. It is otherwise an ordinary TTL: persisted with the lease,
/// restored as "renewed at recovery", and the lease still ends by release, break or reclaim.
pub const NO_EXPIRY_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Powers beyond a public acquire, for trusted in-process callers only (the server's FleetLock
/// front end). The wire request (`AcquireRequest`) has no such field, so every acquire that
/// arrives over the API gets [`Trusted::NONE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trusted {
    /// `slots` is the resource's size by the caller's authority: the semaphore is resized to it
    /// (see [`LockTable::resize`]) before the acquire is decided, instead of the acquire being
    /// refused with [`AcquireError::SlotsMismatch`].
    pub resize: bool,
    /// `ttl_ms` may be anything up to [`NO_EXPIRY_TTL_MS`] (holders that cannot heartbeat). It
    /// is then the server's setting rather than the holder's choice, so a re-acquire whose TTL
    /// differs from its lease's (the setting changed since the grant) returns the lease as it
    /// is instead of being refused with [`AcquireError::TtlMismatch`].
    pub long_ttl: bool,
    /// The owner is not a process on a host — its node is a client id and its boot id a fixed
    /// label — so the acquire is not taken as news of the node's boot: it reclaims none of the
    /// node's other leases as ghosts of an older boot.
    pub synthetic_owner: bool,
}

impl Trusted {
    /// No powers: a public acquire.
    pub const NONE: Trusted = Trusted {
        resize: false,
        long_ttl: false,
        synthetic_owner: false,
    };
}

/// An acquire request as the table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquire {
    /// The resource to lock.
    pub resource: String,
    /// Who asks.
    pub owner: Owner,
    /// Lease TTL, ms.
    pub ttl_ms: u64,
    /// Slot count: 1 for an exclusive lock, N for an N-slot semaphore.
    pub slots: u32,
    /// How long to wait in the queue, ms; 0 fails at once if no slot is free.
    pub wait_ms: u64,
    /// Lock-delay if this holder fails (expiry, ghost reclaim, break), ms; 0 for none.
    pub lock_delay_ms: u64,
    /// What a trusted in-process caller may do beyond a public acquire; [`Trusted::NONE`] for
    /// everything that comes over the API.
    pub trusted: Trusted,
}

/// The outcome of an acquire that was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// Granted now (or the caller already held it: see [`LeaseView::reacquired`]).
    Granted(LeaseView),
    /// Queued: the driver will see [`Effect::Granted`] or [`Effect::WaitTimedOut`] for it.
    Queued(WaiterId),
}

/// What happened to a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The resource that was freed.
    pub resource: String,
    /// The released lease's token.
    pub token: FenceToken,
    /// True when the lease had already been released before (release is idempotent).
    pub already: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Lease(LeaseId),
    Waiter(WaiterId),
    Hold(HoldId),
    /// A resource's lock-delay ends; keyed by the lease whose failure started it.
    Delay(LeaseId),
}

/// The table's hash maps. Its keys are lease, waiter and hold ids the table issues itself, and
/// resource and node names; foldhash is several times faster than the standard SipHash on them
/// (it matters at boot, where a million leases are indexed) and still seeded per map, so a
/// client choosing resource names cannot predict collisions.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<T> = HashSet<T, foldhash::fast::RandomState>;

/// A live lease. Boxed in the table, and kept to 120 bytes: a server may hold a million.
#[derive(Debug)]
struct Lease {
    id: LeaseId,
    token: FenceToken,
    /// The resource's key in [`LockTable::resources`], shared rather than copied.
    resource: Arc<str>,
    /// The owner's node, boot id and user, shared with the owner's other leases there (see
    /// [`origins`]); the rest of the owner follows.
    origin: Arc<Origin>,
    purpose: Box<str>,
    pid: u32,
    slots: u32,
    start_time: u64,
    ttl_ms: u64,
    granted_at_ms: u64,
    renewed_wall_ms: u64,
    renewed: Mono,
    deadline: Mono,
    lock_delay_ms: u64,
}

#[derive(Debug, Clone)]
struct Waiter {
    id: WaiterId,
    owner: Owner,
    ttl_ms: u64,
    slots: u32,
    lock_delay_ms: u64,
    since_wall_ms: u64,
    deadline: Mono,
}

#[derive(Debug, Clone)]
struct Hold {
    record: HoldRecord,
    state: HoldState,
    /// When it ends (active) or lapses unacknowledged (pending).
    deadline: Mono,
}

impl Lease {
    /// The owner, as the API shows it.
    fn owner(&self) -> Owner {
        Owner {
            node: self.origin.node.to_string(),
            pid: self.pid,
            start_time: self.start_time,
            boot_id: self.origin.boot_id.to_string(),
            user: self.origin.user.to_string(),
            purpose: self.purpose.to_string(),
            pid_ns: self.origin.pid_ns.as_deref().map(str::to_string),
        }
    }

    /// See [`Owner::same_process`].
    fn same_process(&self, owner: &Owner) -> bool {
        self.pid == owner.pid
            && self.start_time == owner.start_time
            && *self.origin.node == *owner.node
            && *self.origin.boot_id == *owner.boot_id
            && self.origin.pid_ns.as_deref() == owner.pid_ns.as_deref()
    }
}

/// Ended leases remembered so that late callers learn why (bounded, oldest forgotten first).
#[derive(Debug, Default)]
struct EndedLog {
    causes: Map<LeaseId, (Arc<str>, EndCause)>,
    order: VecDeque<LeaseId>,
}

impl EndedLog {
    fn record(&mut self, lease: LeaseId, resource: Arc<str>, cause: EndCause, cap: usize) {
        if cap == 0 {
            return;
        }
        while self.order.len() >= cap {
            if let Some(old) = self.order.pop_front() {
                self.causes.remove(&old);
            }
        }
        self.causes.insert(lease, (resource, cause));
        self.order.push_back(lease);
    }
}

/// The lock table. See the module docs for its invariants.
#[derive(Debug)]
pub struct LockTable {
    config: TableConfig,
    /// The last fencing token / lease id issued; the next grant gets `last_seq + 1`.
    last_seq: u64,
    /// Boxed, like the resources below: a map keeps up to twice as many slots as entries, and
    /// an empty slot then costs a pointer instead of a whole lease.
    leases: Map<LeaseId, Box<Lease>>,
    /// Every held, awaited, frozen or delayed resource. The key is the one copy of the name:
    /// its leases share it. Entries are inline and small (see [`resources`]).
    resources: Map<Arc<str>, Resource>,
    waiters: Map<WaiterId, String>,
    last_waiter: u64,
    timers: BTreeSet<(Mono, Timer)>,
    ended: EndedLog,
    holds: Map<HoldId, Hold>,
    /// Live leases by node and boot id; also where their owners' shared parts live (see
    /// [`origins`]).
    nodes: Map<Arc<str>, NodeLeases>,
    /// Lock-delay timers: failed lease → the resource whose delay it started.
    delays: Map<LeaseId, Arc<str>>,
}

impl LockTable {
    /// An empty table.
    pub fn new(config: TableConfig) -> Self {
        Self {
            config,
            last_seq: 0,
            leases: Map::default(),
            resources: Map::default(),
            waiters: Map::default(),
            last_waiter: 0,
            timers: BTreeSet::new(),
            ended: EndedLog::default(),
            holds: Map::default(),
            nodes: Map::default(),
            delays: Map::default(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// The last fencing token issued (0 if none).
    pub fn fence_high_water(&self) -> u64 {
        self.last_seq
    }

    /// Number of live leases.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Number of ended leases whose end is remembered (see [`TableConfig::ended_memory`]).
    pub fn ended_count(&self) -> usize {
        self.ended.causes.len()
    }

    /// Number of queued waiters.
    pub fn waiter_count(&self) -> usize {
        self.waiters.len()
    }

    /// When the driver must next call [`LockTable::advance`] (a lease or a wait runs out).
    pub fn next_deadline(&self) -> Option<Mono> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Runs the clock forward: expires every lease and wait whose deadline is at or before
    /// `now`, handing freed slots to the queue. Returns how many leases expired.
    pub fn advance(&mut self, now: Now, fx: &mut Effects) -> usize {
        let mut expired = 0;
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now.mono {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Lease(id) => {
                    if self.end_lease(id, EndCause::Expired, now, fx).is_some() {
                        expired += 1;
                    }
                }
                Timer::Waiter(id) => self.time_out_waiter(id, now, fx),
                Timer::Hold(id) => self.expire_hold(id, now, fx),
                Timer::Delay(id) => self.end_delay(id, now, fx),
            }
        }
        expired
    }

    /// Acquires `req.resource` for `req.owner`: grants at once if a slot is free and nobody is
    /// queued, returns the existing lease (renewed) if the same process already holds it with
    /// the same slot count and TTL, queues if the caller is willing to wait, and otherwise
    /// refuses with the holders' details. A different slot count is refused
    /// ([`AcquireError::SlotsMismatch`]) for holders and others alike; a holder asking with a
    /// different TTL is refused too ([`AcquireError::TtlMismatch`]): a lease's TTL is fixed
    /// when it is granted.
    pub fn acquire(
        &mut self,
        req: Acquire,
        now: Now,
        fx: &mut Effects,
    ) -> Result<AcquireOutcome, AcquireError> {
        self.validate_acquire(&req)?;
        self.advance(now, fx);
        if !req.trusted.synthetic_owner {
            self.observe_boot(&req.owner.node, &req.owner.boot_id, now, fx);
        }
        if req.trusted.resize {
            self.apply_size(&req.resource, req.slots, now, fx);
        }
        if let Some(res) = self.resources.get(req.resource.as_str()) {
            // The size the resource is held with — or, while a hold or a lock-delay keeps it
            // unheld, the size its queue waits for: a waiter of another size would block the
            // queue's head (or be stranded behind it) with a slot free. Checked before the
            // re-acquire below: a holder asking with another size is refused like anyone else,
            // not handed back a lease of a size it did not ask for.
            let size = if res.holders.is_empty() {
                res.queue().front().map(|w| w.slots)
            } else {
                Some(res.slots)
            };
            if let Some(held_slots) = size.filter(|s| *s != req.slots) {
                return Err(AcquireError::SlotsMismatch {
                    resource: req.resource,
                    held_slots,
                    asked_slots: req.slots,
                });
            }
            let mine = res.holders.iter().copied().find_map(|id| {
                self.leases
                    .get(&id)
                    .filter(|l| l.same_process(&req.owner))
                    .map(|l| (id, l.ttl_ms))
            });
            if let Some((id, held_ttl_ms)) = mine {
                // A lease keeps the TTL it was granted with; a re-acquire asking for another is
                // refused rather than answered with a lease that is not what it asked for. A
                // trusted long-TTL caller's TTL is the server's setting, not its own choice:
                // after that setting changed, its re-acquire still returns its lease.
                if held_ttl_ms != req.ttl_ms && !req.trusted.long_ttl {
                    return Err(AcquireError::TtlMismatch {
                        resource: req.resource,
                        lease: id,
                        held_ttl_ms,
                        asked_ttl_ms: req.ttl_ms,
                    });
                }
                self.touch(id, now);
                let mut view = self
                    .lease_view(id)
                    .ok_or_else(|| holder_without_lease(&req.resource, id))?;
                view.reacquired = true;
                return Ok(AcquireOutcome::Granted(view));
            }
            let blocked = self.blocked(&req.resource, res, now);
            let full = res.holders.len() >= res.slots.max(1) as usize
                || !res.queue().is_empty()
                || blocked.is_some();
            if full {
                if req.wait_ms == 0 {
                    return Err(blocked.unwrap_or_else(|| self.hot(&req.resource, now)));
                }
                return Ok(AcquireOutcome::Queued(self.enqueue(req, now)));
            }
        }
        let grant = Grant {
            resource: req.resource,
            owner: req.owner,
            ttl_ms: req.ttl_ms,
            slots: req.slots,
            lock_delay_ms: req.lock_delay_ms,
        };
        let view = self.grant(grant, now, fx);
        Ok(AcquireOutcome::Granted(view))
    }

    /// Renews a lease: its deadline moves to `now + ttl`. With `token`, also checks the caller's
    /// fencing token is this lease's. Renewals are not persisted (see [`crate::record`]).
    pub fn renew(
        &mut self,
        lease: LeaseId,
        token: Option<FenceToken>,
        now: Now,
        fx: &mut Effects,
    ) -> Result<LeaseView, LeaseError> {
        self.advance(now, fx);
        self.check_lease(lease, token)?;
        self.touch(lease, now);
        let view = self.lease_view(lease);
        Ok(view.ok_or_else(|| {
            BrokenInvariant::new(format!("lease {lease} vanished as it was renewed"))
        })?)
    }

    /// Releases a lease, handing its slot to the next waiter. Releasing a lease that was already
    /// released is a no-op success; releasing one that expired is an error, because the caller
    /// must learn it was not protected for a while.
    pub fn release(
        &mut self,
        lease: LeaseId,
        token: Option<FenceToken>,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Released, LeaseError> {
        self.advance(now, fx);
        match self.check_lease(lease, token) {
            Ok(()) => {}
            Err(LeaseError::LeaseExpired {
                resource,
                cause: EndCause::Released,
                ..
            }) => {
                return Ok(Released {
                    resource,
                    token: FenceToken(lease.0),
                    already: true,
                });
            }
            Err(e) => return Err(e),
        }
        let ended = self
            .end_lease(lease, EndCause::Released, now, fx)
            .ok_or_else(|| {
                BrokenInvariant::new(format!("lease {lease} vanished as it was released"))
            })?;
        Ok(Released {
            resource: ended.resource.to_string(),
            token: ended.token,
            already: false,
        })
    }

    /// Withdraws a queued waiter (its client gave up or disconnected). Returns false if it was
    /// not queued any more — it may already have been granted, in which case the driver must
    /// release the lease it could not deliver.
    pub fn cancel_wait(&mut self, waiter: WaiterId) -> bool {
        let Some(resource) = self.waiters.remove(&waiter) else {
            return false;
        };
        if let Some(res) = self.resources.get_mut(resource.as_str()) {
            if let Some(busy) = res.busy_if_any() {
                if let Some(pos) = busy.queue.iter().position(|w| w.id == waiter) {
                    if let Some(w) = busy.queue.remove(pos) {
                        self.timers.remove(&(w.deadline, Timer::Waiter(w.id)));
                    }
                }
            }
            res.tidy();
        }
        true
    }

    /// Checks that `token` is the token of a live lease on `resource`: the check a fenced writer
    /// (config store, endpoint agent) makes before accepting a write.
    pub fn check_fence(
        &mut self,
        resource: &str,
        token: FenceToken,
        now: Now,
        fx: &mut Effects,
    ) -> Result<HolderView, FenceError> {
        validate_resource(resource)?;
        self.advance(now, fx);
        let holders = self
            .resources
            .get(resource)
            .map(|r| r.holders.as_slice())
            .unwrap_or_default();
        let mut newest = FenceToken(0);
        for id in holders {
            if let Some(l) = self.leases.get(id) {
                if l.token == token {
                    return Ok(self.holder_view(l, now));
                }
                newest = newest.max(l.token);
            }
        }
        Err(FenceError::StaleToken {
            resource: resource.to_string(),
            presented: token,
            newest,
        })
    }

    /// A live lease's view, if it is live.
    pub fn lease(&self, lease: LeaseId) -> Option<LeaseView> {
        self.lease_view(lease)
    }

    /// A live lease's resource and its owner's node, without building its view: what a
    /// server checks a caller may touch before it renews or releases the lease.
    pub fn lease_scope(&self, lease: LeaseId) -> Option<(&str, &str)> {
        self.leases
            .get(&lease)
            .map(|l| (&*l.resource, &*l.origin.node))
    }

    /// Remembers why leases ended, from durable audit records, oldest first: what a server
    /// rebuilding its table at boot hands over from its store's audit log, so that a renew or
    /// release arriving after the restart is told what it would have been told before it — a
    /// retried release whose first answer was lost to the crash is `already` released, a broken
    /// lease's holder learns who broke it and why — instead of "ended, cause unknown".
    ///
    /// Only [`AuditKind::Ended`] records with a lease are taken; a lease that is live, or whose
    /// end is remembered already, is skipped. The memory keeps its bound
    /// ([`TableConfig::ended_memory`]): of more records than that, the newest are kept.
    /// Changes nothing durable and emits nothing.
    pub fn remember_ended<'a>(&mut self, records: impl IntoIterator<Item = &'a AuditRecord>) {
        let cap = self.config.ended_memory;
        for record in records {
            let (Some(lease), AuditKind::Ended { cause }) = (record.lease, &record.kind) else {
                continue;
            };
            if self.leases.contains_key(&lease) || self.ended.causes.contains_key(&lease) {
                continue;
            }
            let resource = self
                .resources
                .get_key_value(record.resource.as_str())
                .map_or_else(
                    || Arc::from(record.resource.as_str()),
                    |(k, _)| Arc::clone(k),
                );
            self.ended.record(lease, resource, cause.clone(), cap);
        }
    }

    // ---- internals -------------------------------------------------------------------------

    fn validate_acquire(&self, req: &Acquire) -> Result<(), InvalidRequest> {
        validate_resource(&req.resource)?;
        req.owner.validate()?;
        let c = &self.config;
        let max_ttl_ms = if req.trusted.long_ttl {
            c.max_ttl_ms.max(NO_EXPIRY_TTL_MS)
        } else {
            c.max_ttl_ms
        };
        if req.ttl_ms < c.min_ttl_ms || req.ttl_ms > max_ttl_ms {
            return Err(InvalidRequest::new(
                "ttl_ms",
                format!(
                    "must be between {} and {} ms (got {})",
                    c.min_ttl_ms, max_ttl_ms, req.ttl_ms
                ),
            ));
        }
        if req.slots == 0 || req.slots > c.max_slots {
            return Err(InvalidRequest::new(
                "slots",
                format!("must be between 1 and {} (got {})", c.max_slots, req.slots),
            ));
        }
        if req.wait_ms > c.max_wait_ms {
            return Err(InvalidRequest::new(
                "wait_ms",
                format!("must be at most {} ms (got {})", c.max_wait_ms, req.wait_ms),
            ));
        }
        if req.lock_delay_ms > c.max_hold_ms {
            return Err(InvalidRequest::new(
                "lock_delay_ms",
                format!(
                    "must be at most {} ms (got {})",
                    c.max_hold_ms, req.lock_delay_ms
                ),
            ));
        }
        Ok(())
    }

    fn check_lease(&self, lease: LeaseId, token: Option<FenceToken>) -> Result<(), LeaseError> {
        match self.leases.get(&lease) {
            Some(l) => match token {
                Some(t) if t != l.token => Err(LeaseError::StaleToken {
                    lease,
                    presented: t,
                    current: l.token,
                }),
                _ => Ok(()),
            },
            None => Err(self.ended_error(lease)),
        }
    }

    fn ended_error(&self, lease: LeaseId) -> LeaseError {
        if let Some((resource, cause)) = self.ended.causes.get(&lease) {
            if let EndCause::Broken { by, reason } = cause {
                return LeaseError::Broken {
                    lease,
                    resource: resource.to_string(),
                    by: by.clone(),
                    reason: reason.clone(),
                };
            }
            return LeaseError::LeaseExpired {
                lease,
                resource: resource.to_string(),
                cause: cause.clone(),
            };
        }
        if lease.0 != 0 && lease.0 <= self.last_seq {
            // Issued once (ids below the high-water mark were) but ended before our memory.
            return LeaseError::LeaseExpired {
                lease,
                resource: String::new(),
                cause: EndCause::Unknown,
            };
        }
        LeaseError::NotHolder { lease }
    }

    fn touch(&mut self, id: LeaseId, now: Now) {
        if let Some(l) = self.leases.get_mut(&id) {
            self.timers.remove(&(l.deadline, Timer::Lease(id)));
            l.renewed = now.mono;
            l.renewed_wall_ms = now.wall_ms;
            l.deadline = now.mono.plus_ms(l.ttl_ms);
            self.timers.insert((l.deadline, Timer::Lease(id)));
        }
    }

    fn grant(&mut self, g: Grant, now: Now, fx: &mut Effects) -> LeaseView {
        self.last_seq += 1;
        let id = LeaseId(self.last_seq);
        let token = FenceToken(self.last_seq);
        let (resource, res) = self.resource_entry(&g.resource);
        if res.holders.is_empty() {
            res.slots = g.slots;
        }
        res.holders.push(id);
        let owner = g.owner;
        let origin = self.index_lease(id, &owner);
        let lease = Lease {
            id,
            token,
            resource,
            origin,
            purpose: owner.purpose.as_str().into(),
            pid: owner.pid,
            start_time: owner.start_time,
            ttl_ms: g.ttl_ms,
            slots: g.slots,
            granted_at_ms: now.wall_ms,
            renewed_wall_ms: now.wall_ms,
            renewed: now.mono,
            deadline: now.mono.plus_ms(g.ttl_ms),
            lock_delay_ms: g.lock_delay_ms,
        };
        self.timers.insert((lease.deadline, Timer::Lease(id)));
        fx.push(Effect::Persist(Mutation::FenceHighWater(self.last_seq)));
        fx.push(Effect::Persist(Mutation::PutLease(LeaseRecord {
            lease: id,
            resource: lease.resource.to_string(),
            owner: owner.clone(),
            token,
            ttl_ms: g.ttl_ms,
            slots: g.slots,
            granted_at_ms: now.wall_ms,
            lock_delay_ms: g.lock_delay_ms,
        })));
        self.audit(
            AuditRecord {
                lease: Some(id),
                token: Some(token),
                owner: Some(owner),
                ..AuditRecord::new(&lease.resource, AuditKind::Granted)
            },
            now,
            fx,
        );
        let view = view_of(&lease, false);
        self.leases.insert(id, Box::new(lease));
        view
    }

    /// `name`'s entry, created if missing, with its key: the one copy of the name that every
    /// lease on it shares.
    fn resource_entry(&mut self, name: &str) -> (Arc<str>, &mut Resource) {
        let key = self
            .resources
            .get_key_value(name)
            .map_or_else(|| Arc::from(name), |(key, _)| Arc::clone(key));
        let res = self.resources.entry(Arc::clone(&key)).or_default();
        (key, res)
    }

    /// Appends an audit record with the wall time, unnumbered: the driver gives it its `seq`
    /// when it seals the batch (see the module docs).
    fn audit(&mut self, mut record: AuditRecord, now: Now, fx: &mut Effects) {
        record.seq = 0;
        record.at_ms = now.wall_ms;
        fx.push(Effect::Persist(Mutation::AppendAudit(record)));
    }

    fn enqueue(&mut self, req: Acquire, now: Now) -> WaiterId {
        self.last_waiter += 1;
        let id = WaiterId(self.last_waiter);
        let deadline = now.mono.plus_ms(req.wait_ms);
        self.timers.insert((deadline, Timer::Waiter(id)));
        self.waiters.insert(id, req.resource.clone());
        let (_, res) = self.resource_entry(&req.resource);
        res.busy().queue.push_back(Waiter {
            id,
            owner: req.owner,
            ttl_ms: req.ttl_ms,
            slots: req.slots,
            lock_delay_ms: req.lock_delay_ms,
            since_wall_ms: now.wall_ms,
            deadline,
        });
        id
    }

    fn time_out_waiter(&mut self, id: WaiterId, now: Now, fx: &mut Effects) {
        let Some(resource) = self.waiters.remove(&id) else {
            return;
        };
        if let Some(res) = self.resources.get_mut(resource.as_str()) {
            if let Some(busy) = res.busy_if_any() {
                busy.queue.retain(|w| w.id != id);
            }
            res.tidy();
        }
        let error = self
            .resources
            .get(resource.as_str())
            .and_then(|res| self.blocked(&resource, res, now))
            .unwrap_or_else(|| self.hot(&resource, now));
        self.drop_if_idle(&resource);
        fx.push(Effect::WaitTimedOut { waiter: id, error });
    }

    /// Ends a live lease for `cause`, persists the deletion, and hands the slot on.
    fn end_lease(
        &mut self,
        id: LeaseId,
        cause: EndCause,
        now: Now,
        fx: &mut Effects,
    ) -> Option<Lease> {
        let lease = *self.leases.remove(&id)?;
        self.timers.remove(&(lease.deadline, Timer::Lease(id)));
        self.unindex_lease(id, &lease.origin);
        // A lease never outlives its deadline: an expiry noticed late (the reaper overslept, or
        // the next request came long after) failed at the deadline, so its lock-delay runs from
        // there, not from whenever the table got round to it (and may already be over).
        let failed_at = now.mono.min(lease.deadline);
        let delay = (cause.is_failure() && lease.lock_delay_ms > 0)
            .then(|| failed_at.plus_ms(lease.lock_delay_ms))
            .filter(|until| *until > now.mono);
        if let Some(res) = self.resources.get_mut(&lease.resource) {
            res.holders.remove(id);
            if let Some(until) = delay {
                if res.delay().is_none_or(|(old, _)| old < until) {
                    if let Some((old, key)) = res.busy().delay.replace((until, id)) {
                        self.timers.remove(&(old, Timer::Delay(key)));
                        self.delays.remove(&key);
                    }
                    self.timers.insert((until, Timer::Delay(id)));
                    self.delays.insert(id, lease.resource.clone());
                }
            }
        }
        fx.push(Effect::Persist(Mutation::DeleteLease(id)));
        let owner = lease.owner();
        self.audit(
            AuditRecord {
                lease: Some(id),
                token: Some(lease.token),
                owner: Some(owner.clone()),
                ..AuditRecord::new(
                    &lease.resource,
                    AuditKind::Ended {
                        cause: cause.clone(),
                    },
                )
            },
            now,
            fx,
        );
        fx.push(Effect::Ended {
            lease: id,
            resource: lease.resource.to_string(),
            owner,
            token: lease.token,
            cause: cause.clone(),
        });
        let cap = self.config.ended_memory;
        self.ended
            .record(id, Arc::clone(&lease.resource), cause, cap);
        self.wake(&lease.resource, now, fx);
        Some(lease)
    }

    /// Hands free slots of `resource` to its queue, first come first served.
    fn wake(&mut self, resource: &str, now: Now, fx: &mut Effects) {
        loop {
            let Some(res) = self.resources.get(resource) else {
                return;
            };
            if self.blocked(resource, res, now).is_some() {
                break;
            }
            let Some(res) = self.resources.get_mut(resource) else {
                return;
            };
            let Some(front) = res.queue().front() else {
                break;
            };
            let slots = if res.holders.is_empty() {
                front.slots
            } else {
                res.slots
            };
            if front.slots != slots || res.holders.len() >= slots as usize {
                break;
            }
            let Some(w) = res.busy_if_any().and_then(|b| b.queue.pop_front()) else {
                break;
            };
            res.tidy();
            self.waiters.remove(&w.id);
            self.timers.remove(&(w.deadline, Timer::Waiter(w.id)));
            let grant = Grant {
                resource: resource.to_string(),
                owner: w.owner,
                ttl_ms: w.ttl_ms,
                slots: w.slots,
                lock_delay_ms: w.lock_delay_ms,
            };
            let lease = self.grant(grant, now, fx);
            fx.push(Effect::Granted {
                waiter: w.id,
                lease,
            });
        }
        self.drop_if_idle(resource);
    }

    fn drop_if_idle(&mut self, resource: &str) {
        if self.resources.get(resource).is_some_and(Resource::is_idle) {
            self.resources.remove(resource);
        }
    }

    fn hot(&self, resource: &str, now: Now) -> AcquireError {
        AcquireError::Hot {
            resource: resource.to_string(),
            holders: self.resource(resource, now).holders,
        }
    }

    fn lease_view(&self, id: LeaseId) -> Option<LeaseView> {
        self.leases.get(&id).map(|l| view_of(l, false))
    }
}

fn view_of(l: &Lease, reacquired: bool) -> LeaseView {
    LeaseView {
        lease: l.id,
        token: l.token,
        resource: l.resource.to_string(),
        ttl_ms: l.ttl_ms,
        slots: l.slots,
        owner: l.owner(),
        granted_at_ms: l.granted_at_ms,
        reacquired,
    }
}

/// A resource lists a holder the table has no lease for: a bug, never the caller's fault.
fn holder_without_lease(resource: &str, lease: LeaseId) -> BrokenInvariant {
    BrokenInvariant::new(format!("{resource}: holder {lease} has no lease"))
}
