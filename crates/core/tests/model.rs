//! Property tests: the lock table against a simple reference model.
//!
//! Random sequences of acquires (re-acquires by a holder with its own or another TTL or slot
//! count among them), releases, renewals, cancelled waits, clock jumps (with and without an
//! explicit `advance`) and server restarts (the table rebuilt from the persisted state and told
//! the persisted audit log, so renewals and releases of leases that ended before the restart
//! are still told why) run over three resources and five processes; the third property adds
//! acquires with a lock-delay, holds (some needing a second operator's acknowledgement),
//! acknowledgements (by the placing operator under any spelling of their name, by another, of
//! holds already in force), lifts and breaks (with or without a freeze, of every holder or of
//! one named lease). After every step the table
//! must agree with the model (outcomes, effects, holders, queues, holds, lock-delays, states,
//! deadlines) and must keep the invariants in `table/mod.rs`'s module docs, checked directly on
//! its views and effects: never more holders than slots, strictly increasing tokens, FIFO queues,
//! one `PutLease` per grant and one `FenceHighWater` per id issued, no holder after its end, no
//! holder granted while a hold is in force, one audit record per grant, end and hold change, left
//! unnumbered for the driver's step to number. And the persisted mutations, replayed into maps and handed to
//! `LockTable::restore`, always give back the live holders and holds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, AuditKind, AuditRecord, BreakError, Effect, Effects,
    EndCause, FenceToken, HoldError, HoldId, HoldRecord, HoldState, HoldView, LeaseError, LeaseId,
    LeaseRecord, LockState, LockTable, Mutation, Now, Owner, PlaceHold, Snapshot, TableConfig,
    Trusted, WaiterId,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

mod common;

const RESOURCES: [&str; 3] = ["cfg/aim.conf", "cfg/safety.conf", "reboot/default"];
const OWNERS: usize = 5;
const WALL0: u64 = 1_700_000_000_000;
/// Who places holds; `ack` by them is refused, by anyone else accepted.
const PLACER: &str = "alice";
/// How the placer may spell their name when acknowledging: every one is still the placer.
const PLACER_SPELLINGS: [&str; 4] = [PLACER, "ALICE", " alice ", "Alice "];
/// Who acknowledges holds when it is not the placer.
const ACKER: &str = "bob";
const BREAKER: &str = "carol";
const BREAK_REASON: &str = "model break";

fn now(ms: u64) -> Now {
    Now::at(ms, WALL0 + ms)
}

/// Five distinct processes; two share a node (and boot) but not a pid.
fn owner(i: usize) -> Owner {
    let n = u32::try_from(i).expect("small owner index");
    Owner {
        node: format!("node-{}", n / 2),
        pid: 100 + n,
        start_time: 7_000 + u64::from(n),
        boot_id: format!("boot-{}", n / 2),
        user: "ops".to_string(),
        purpose: format!("model owner {n}"),
        pid_ns: None,
    }
}

fn broken() -> EndCause {
    EndCause::Broken {
        by: BREAKER.to_string(),
        reason: BREAK_REASON.to_string(),
    }
}

// ---- operations ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        res: usize,
        owner: usize,
        ttl_ms: u64,
        wait_ms: u64,
        /// Ask with a slot count other than the resource's usual one (to exercise SlotsMismatch).
        odd_slots: bool,
        lock_delay_ms: u64,
    },
    /// Release the `pick`-th lease ever granted (or a never-issued id).
    Release { pick: usize, wrong_token: bool },
    /// Renew the `pick`-th lease ever granted (or a never-issued id).
    Renew { pick: usize, wrong_token: bool },
    /// Cancel the `pick`-th waiter ever queued (or an unknown id).
    CancelWait { pick: usize },
    /// Move the clock; with `call_advance` the driver's reaper runs, otherwise the next
    /// operation has to notice the passed deadlines by itself.
    Time { ms: u64, call_advance: bool },
    /// The server restarts: the table is rebuilt from the persisted mutations.
    Restart,
    /// Place a hold (by [`PLACER`]).
    Hold {
        res: usize,
        duration_ms: u64,
        require_ack: bool,
    },
    /// Acknowledge the `pick`-th hold ever placed (or an unknown id), by its placer (spelt one
    /// of [`PLACER_SPELLINGS`] ways) or not.
    Ack {
        pick: usize,
        same_operator: bool,
        spelling: usize,
    },
    /// Lift the `pick`-th hold ever placed (or an unknown id).
    Lift { pick: usize },
    /// Break `res` (every holder, or only the `one`-th lease ever granted), freezing it or not.
    Break {
        res: usize,
        one: Option<usize>,
        freeze_ms: u64,
    },
}

/// Which kinds of operation a property runs.
#[derive(Debug, Clone, Copy)]
struct Mix {
    restarts: bool,
    /// Holds, acks, lifts, breaks and lock-delays.
    ghosts: bool,
}

fn op_strategy(mix: Mix) -> impl Strategy<Value = Op> {
    let ttl = prop_oneof![Just(1_000u64), Just(2_000), 1_000..5_000u64];
    let wait = prop_oneof![Just(0u64), Just(0), Just(1_000), 1..6_000u64];
    let delay = if mix.ghosts {
        prop_oneof![4 => Just(0u64), 1 => Just(1_500), 1 => 1..4_000u64].boxed()
    } else {
        Just(0u64).boxed()
    };
    let acquire = (
        0..RESOURCES.len(),
        0..OWNERS,
        ttl,
        wait,
        proptest::bool::weighted(0.1),
        delay,
    )
        .prop_map(
            |(res, owner, ttl_ms, wait_ms, odd_slots, lock_delay_ms)| Op::Acquire {
                res,
                owner,
                ttl_ms,
                wait_ms,
                odd_slots,
                lock_delay_ms,
            },
        );
    let pick = 0..64usize;
    let release = (pick.clone(), proptest::bool::weighted(0.1))
        .prop_map(|(pick, wrong_token)| Op::Release { pick, wrong_token });
    let renew = (pick.clone(), proptest::bool::weighted(0.1))
        .prop_map(|(pick, wrong_token)| Op::Renew { pick, wrong_token });
    let cancel = pick.clone().prop_map(|pick| Op::CancelWait { pick });
    let time = (
        prop_oneof![Just(0u64), Just(500), Just(1_000), 1..3_000u64],
        any::<bool>(),
    )
        .prop_map(|(ms, call_advance)| Op::Time { ms, call_advance });
    let hold = (
        0..RESOURCES.len(),
        prop_oneof![Just(1_000u64), 1_000..6_000u64],
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(res, duration_ms, require_ack)| Op::Hold {
            res,
            duration_ms,
            require_ack,
        });
    let ack = (
        pick.clone(),
        proptest::bool::weighted(0.2),
        0..PLACER_SPELLINGS.len(),
    )
        .prop_map(|(pick, same_operator, spelling)| Op::Ack {
            pick,
            same_operator,
            spelling,
        });
    let lift = pick.clone().prop_map(|pick| Op::Lift { pick });
    let brk = (
        0..RESOURCES.len(),
        proptest::option::weighted(0.3, pick),
        prop_oneof![Just(0u64), Just(1_000), 1_000..4_000u64],
    )
        .prop_map(|(res, one, freeze_ms)| Op::Break {
            res,
            one,
            freeze_ms,
        });
    let restart_weight = u32::from(mix.restarts);
    let ghost_weight = u32::from(mix.ghosts);
    prop_oneof![
        8 => acquire,
        3 => release,
        3 => renew,
        1 => cancel,
        4 => time,
        restart_weight => Just(Op::Restart),
        ghost_weight => hold,
        ghost_weight => ack,
        ghost_weight => lift,
        ghost_weight => brk,
    ]
}

// ---- the reference model ---------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MLease {
    res: usize,
    owner: usize,
    ttl: u64,
    slots: u32,
    deadline: u64,
    lock_delay: u64,
}

#[derive(Debug, Clone)]
struct MWaiter {
    id: u64,
    owner: usize,
    ttl: u64,
    slots: u32,
    lock_delay: u64,
    deadline: u64,
}

#[derive(Debug, Clone, Default)]
struct MRes {
    slots: u32,
    /// Lease ids in grant order.
    holders: Vec<u64>,
    queue: VecDeque<MWaiter>,
    /// Lock-delay: no grants before `.0`; `.1` is the failed lease that started it.
    delay: Option<(u64, u64)>,
}

#[derive(Debug, Clone)]
struct MHold {
    res: usize,
    active: bool,
    /// Acknowledged (by [`ACKER`]): only a hold placed pending can be.
    acked: bool,
    duration: u64,
    /// When it ends (active) or lapses unacknowledged (pending).
    deadline: u64,
}

/// Why a grant cannot be made now, as comparable values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Hot(Vec<u64>),
    Frozen(Vec<u64>),
    Delayed(u64),
}

/// What the driver observes, as comparable values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Ended(u64, EndCause),
    Granted { waiter: u64, lease: u64 },
    TimedOut { waiter: u64, refusal: Refusal },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Granted {
        lease: u64,
        reacquired: bool,
    },
    Queued(u64),
    Refused(Refusal),
    SlotsMismatch {
        held: u32,
        asked: u32,
    },
    TtlMismatch {
        lease: u64,
        held: u64,
        asked: u64,
    },
    Renewed(u64),
    Released {
        already: bool,
    },
    Ended(EndCause),
    NotHolder,
    StaleToken,
    Cancelled(bool),
    Hold {
        hold: u64,
        active: bool,
        ends_in: u64,
    },
    HoldNotFound,
    SameOperator,
    AlreadyAcknowledged,
    AckNotRequired,
    Lifted(u64),
    Broke {
        revoked: Vec<u64>,
        fence: u64,
        hold: Option<u64>,
    },
    NotHeld,
    Nothing,
}

/// A deliberately plain model: vectors and a queue per resource, deadlines in ms, and a scan for
/// the earliest due deadline (leases, then waiters, then holds, then lock-delays at the same
/// instant, each by id — the table's timer order).
#[derive(Debug, Clone)]
struct Model {
    now: u64,
    seq: u64,
    /// Every id issued by this step (leases, holds, break fences), in order.
    issued: Vec<u64>,
    last_waiter: u64,
    leases: BTreeMap<u64, MLease>,
    res: Vec<MRes>,
    holds: BTreeMap<u64, MHold>,
    waiter_res: HashMap<u64, usize>,
    ended: HashMap<u64, EndCause>,
}

impl Model {
    fn new() -> Self {
        Self {
            now: 0,
            seq: 0,
            issued: Vec::new(),
            last_waiter: 0,
            leases: BTreeMap::new(),
            res: vec![MRes::default(); RESOURCES.len()],
            holds: BTreeMap::new(),
            waiter_res: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    fn next_id(&mut self) -> u64 {
        self.seq += 1;
        self.issued.push(self.seq);
        self.seq
    }

    fn active_holds(&self, r: usize) -> Vec<u64> {
        self.holds
            .iter()
            .filter(|(_, h)| h.res == r && h.active)
            .map(|(id, _)| *id)
            .collect()
    }

    fn delay_left(&self, r: usize) -> u64 {
        self.res[r]
            .delay
            .map_or(0, |(until, _)| until.saturating_sub(self.now))
    }

    /// Why `r` may not be granted now (a hold in force, or its lock-delay), if so.
    fn blocked(&self, r: usize) -> Option<Refusal> {
        let active = self.active_holds(r);
        if !active.is_empty() {
            return Some(Refusal::Frozen(active));
        }
        match self.delay_left(r) {
            0 => None,
            left => Some(Refusal::Delayed(left)),
        }
    }

    fn advance(&mut self, ev: &mut Vec<Event>) {
        loop {
            let now = self.now;
            let leases = self.leases.iter().map(|(id, l)| (l.deadline, 0u8, *id));
            let waiters = self
                .res
                .iter()
                .flat_map(|r| r.queue.iter())
                .map(|w| (w.deadline, 1u8, w.id));
            let holds = self.holds.iter().map(|(id, h)| (h.deadline, 2u8, *id));
            let delays = self
                .res
                .iter()
                .filter_map(|r| r.delay)
                .map(|(until, key)| (until, 3u8, key));
            let due = leases
                .chain(waiters)
                .chain(holds)
                .chain(delays)
                .filter(|(at, ..)| *at <= now)
                .min();
            match due {
                None => return,
                Some((_, 0, id)) => self.end(id, EndCause::Expired, ev),
                Some((_, 1, id)) => {
                    let r = self
                        .waiter_res
                        .remove(&id)
                        .expect("queued waiter has a resource");
                    self.res[r].queue.retain(|w| w.id != id);
                    let refusal = self
                        .blocked(r)
                        .unwrap_or_else(|| Refusal::Hot(self.res[r].holders.clone()));
                    ev.push(Event::TimedOut {
                        waiter: id,
                        refusal,
                    });
                }
                Some((_, 2, id)) => {
                    let h = self.holds.remove(&id).expect("due hold exists");
                    self.wake(h.res, ev);
                }
                Some((_, _, key)) => {
                    let r = self
                        .res
                        .iter()
                        .position(|r| r.delay.is_some_and(|(_, k)| k == key))
                        .expect("due delay exists");
                    self.res[r].delay = None;
                    self.wake(r, ev);
                }
            }
        }
    }

    fn grant(&mut self, r: usize, owner: usize, ttl: u64, slots: u32, lock_delay: u64) -> u64 {
        let id = self.next_id();
        let res = &mut self.res[r];
        if res.holders.is_empty() {
            res.slots = slots;
        }
        res.holders.push(id);
        self.leases.insert(
            id,
            MLease {
                res: r,
                owner,
                ttl,
                slots,
                deadline: self.now + ttl,
                lock_delay,
            },
        );
        id
    }

    fn end(&mut self, id: u64, cause: EndCause, ev: &mut Vec<Event>) {
        let lease = self.leases.remove(&id).expect("ending a live lease");
        let r = lease.res;
        self.res[r].holders.retain(|h| *h != id);
        // A failed holder's lock-delay runs from when it failed: never after its deadline.
        if cause != EndCause::Released && lease.lock_delay > 0 {
            let until = self.now.min(lease.deadline) + lease.lock_delay;
            let res = &mut self.res[r];
            if until > self.now && res.delay.is_none_or(|(old, _)| old < until) {
                res.delay = Some((until, id));
            }
        }
        self.ended.insert(id, cause.clone());
        ev.push(Event::Ended(id, cause));
        self.wake(r, ev);
    }

    /// Hands free slots of `r` to its queue, first come first served, unless it is blocked.
    fn wake(&mut self, r: usize, ev: &mut Vec<Event>) {
        if self.blocked(r).is_some() {
            return;
        }
        while let Some(front) = self.res[r].queue.front() {
            let res = &self.res[r];
            let fits = res.holders.is_empty()
                || (front.slots == res.slots && res.holders.len() < res.slots as usize);
            if !fits {
                break;
            }
            let w = self.res[r].queue.pop_front().expect("front exists");
            self.waiter_res.remove(&w.id);
            let lease = self.grant(r, w.owner, w.ttl, w.slots, w.lock_delay);
            ev.push(Event::Granted {
                waiter: w.id,
                lease,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &mut self,
        r: usize,
        owner: usize,
        ttl: u64,
        slots: u32,
        wait: u64,
        lock_delay: u64,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        self.advance(ev);
        let res = &self.res[r];
        // The size it is held with, or (nobody holding it) the size its queue waits for; a
        // holder asking again with another size is refused like anyone else.
        let size = if res.holders.is_empty() {
            res.queue.front().map(|w| w.slots)
        } else {
            Some(res.slots)
        };
        if let Some(held) = size.filter(|s| *s != slots) {
            return Outcome::SlotsMismatch { held, asked: slots };
        }
        let mine = res
            .holders
            .iter()
            .copied()
            .find(|id| self.leases[id].owner == owner);
        if let Some(id) = mine {
            let l = self.leases.get_mut(&id).expect("holder is live");
            // A lease keeps its TTL: asking again with another is refused and renews nothing.
            if l.ttl != ttl {
                return Outcome::TtlMismatch {
                    lease: id,
                    held: l.ttl,
                    asked: ttl,
                };
            }
            l.deadline = self.now + l.ttl;
            return Outcome::Granted {
                lease: id,
                reacquired: true,
            };
        }
        let res = &self.res[r];
        let blocked = self.blocked(r);
        let full = (!res.holders.is_empty() && res.holders.len() >= res.slots as usize)
            || !res.queue.is_empty()
            || blocked.is_some();
        if !full {
            let lease = self.grant(r, owner, ttl, slots, lock_delay);
            return Outcome::Granted {
                lease,
                reacquired: false,
            };
        }
        if wait == 0 {
            return Outcome::Refused(blocked.unwrap_or_else(|| Refusal::Hot(res.holders.clone())));
        }
        self.last_waiter += 1;
        let id = self.last_waiter;
        self.res[r].queue.push_back(MWaiter {
            id,
            owner,
            ttl,
            slots,
            lock_delay,
            deadline: self.now + wait,
        });
        self.waiter_res.insert(id, r);
        Outcome::Queued(id)
    }

    fn ended_outcome(&self, id: u64) -> Outcome {
        match self.ended.get(&id) {
            Some(cause) => Outcome::Ended(cause.clone()),
            None if id != 0 && id <= self.seq => Outcome::Ended(EndCause::Unknown),
            None => Outcome::NotHolder,
        }
    }

    fn renew(&mut self, id: u64, wrong_token: bool, ev: &mut Vec<Event>) -> Outcome {
        self.advance(ev);
        let now = self.now;
        match self.leases.get_mut(&id) {
            Some(_) if wrong_token => Outcome::StaleToken,
            Some(l) => {
                l.deadline = now + l.ttl;
                Outcome::Renewed(id)
            }
            None => self.ended_outcome(id),
        }
    }

    fn release(&mut self, id: u64, wrong_token: bool, ev: &mut Vec<Event>) -> Outcome {
        self.advance(ev);
        if self.leases.contains_key(&id) {
            if wrong_token {
                return Outcome::StaleToken;
            }
            self.end(id, EndCause::Released, ev);
            return Outcome::Released { already: false };
        }
        match self.ended_outcome(id) {
            Outcome::Ended(EndCause::Released) => Outcome::Released { already: true },
            other => other,
        }
    }

    fn cancel(&mut self, id: u64) -> Outcome {
        let Some(r) = self.waiter_res.remove(&id) else {
            return Outcome::Cancelled(false);
        };
        self.res[r].queue.retain(|w| w.id != id);
        Outcome::Cancelled(true)
    }

    fn hold(&mut self, r: usize, duration: u64, require_ack: bool, ev: &mut Vec<Event>) -> Outcome {
        self.advance(ev);
        let id = self.next_id();
        self.holds.insert(
            id,
            MHold {
                res: r,
                active: !require_ack,
                acked: false,
                duration,
                deadline: self.now + duration,
            },
        );
        Outcome::Hold {
            hold: id,
            active: !require_ack,
            ends_in: duration,
        }
    }

    fn ack(&mut self, id: u64, same_operator: bool, ev: &mut Vec<Event>) -> Outcome {
        self.advance(ev);
        let now = self.now;
        let Some(h) = self.holds.get_mut(&id) else {
            return Outcome::HoldNotFound;
        };
        // In force already: a second acknowledgement (or one of a hold that needed none) is
        // refused and changes nothing.
        if h.active {
            return if h.acked {
                Outcome::AlreadyAcknowledged
            } else {
                Outcome::AckNotRequired
            };
        }
        if same_operator {
            return Outcome::SameOperator;
        }
        h.active = true;
        h.acked = true;
        h.deadline = now + h.duration;
        Outcome::Hold {
            hold: id,
            active: true,
            ends_in: h.deadline - now,
        }
    }

    fn lift(&mut self, id: u64, ev: &mut Vec<Event>) -> Outcome {
        self.advance(ev);
        let Some(h) = self.holds.remove(&id) else {
            return Outcome::HoldNotFound;
        };
        self.wake(h.res, ev);
        Outcome::Lifted(id)
    }

    /// Freeze (if asked), advance the fence, then end every victim: a slot freed without a
    /// freeze goes to the queue with a token above the fence.
    fn brk(&mut self, r: usize, one: Option<u64>, freeze: u64, ev: &mut Vec<Event>) -> Outcome {
        self.advance(ev);
        let victims: Vec<u64> = self.res[r]
            .holders
            .iter()
            .copied()
            .filter(|h| one.is_none_or(|id| id == *h))
            .collect();
        if victims.is_empty() {
            return Outcome::NotHeld;
        }
        let hold = (freeze > 0).then(|| {
            let id = self.next_id();
            self.holds.insert(
                id,
                MHold {
                    res: r,
                    active: true,
                    acked: false,
                    duration: freeze,
                    deadline: self.now + freeze,
                },
            );
            id
        });
        let fence = self.next_id();
        for id in &victims {
            self.end(*id, broken(), ev);
        }
        Outcome::Broke {
            revoked: victims,
            fence,
            hold,
        }
    }

    /// A restart: waiters and lock-delays are gone, waiter ids start over, every surviving lease
    /// is treated as renewed now, and holds keep their wall-clock deadlines (the wall clock runs
    /// in step with the monotonic one here). Why each lease ended is remembered: the restarted
    /// table is given the durable audit log.
    fn restart(&mut self) {
        for res in &mut self.res {
            res.queue.clear();
            res.delay = None;
        }
        self.waiter_res.clear();
        self.last_waiter = 0;
        let now = self.now;
        for l in self.leases.values_mut() {
            l.deadline = now + l.ttl;
        }
    }

    /// The state an operator would see for `r`.
    fn state(&self, r: usize) -> LockState {
        let res = &self.res[r];
        let stale = res.holders.iter().any(|id| {
            let l = &self.leases[id];
            let renewed = l.deadline - l.ttl;
            self.now.saturating_sub(renewed) > l.ttl / 2
        });
        if !self.active_holds(r).is_empty() {
            LockState::Frozen
        } else if stale {
            LockState::Stale
        } else if !res.holders.is_empty() {
            LockState::Hot
        } else if self.delay_left(r) > 0 {
            LockState::Delayed
        } else {
            LockState::Free
        }
    }
}

// ---- the harness -----------------------------------------------------------------------------

/// The table under test, with everything the driver has seen.
struct Harness {
    table: LockTable,
    model: Model,
    /// The usual slot count of each resource.
    slots: [u32; 3],
    /// Every lease id ever granted, in grant order.
    granted: Vec<u64>,
    /// Every waiter id ever queued (ids restart after a restart, so duplicates may appear).
    queued: Vec<u64>,
    /// Every hold id ever placed (by a hold or a break), in order.
    placed: Vec<u64>,
    /// Per resource, the queued waiters in enqueue order, for the FIFO check.
    queue_order: Vec<Vec<u64>>,
    /// The last token granted: the next must be larger.
    last_token: u64,
    /// Leases reported ended (expired or released).
    dead: HashSet<u64>,
    /// The persisted image: the mutations replayed into maps.
    persisted: BTreeMap<u64, LeaseRecord>,
    persisted_holds: BTreeMap<u64, HoldRecord>,
    /// The persisted audit log, in order: what a restart hands the table to remember ends.
    persisted_audit: Vec<AuditRecord>,
    high_water: u64,
}

fn refusal(e: &AcquireError) -> Result<Refusal, TestCaseError> {
    Ok(match e {
        AcquireError::Hot { holders, .. } => {
            Refusal::Hot(holders.iter().map(|h| h.lease.0).collect())
        }
        AcquireError::Frozen { holds, .. } => {
            for h in holds {
                prop_assert_eq!(h.state, HoldState::Active, "a pending hold froze: {:?}", e);
            }
            Refusal::Frozen(holds.iter().map(|h| h.record.hold.0).collect())
        }
        AcquireError::LockDelay { left_ms, .. } => Refusal::Delayed(*left_ms),
        other => return Err(TestCaseError::fail(format!("not a refusal: {other:?}"))),
    })
}

fn hold_outcome(view: &HoldView) -> Outcome {
    Outcome::Hold {
        hold: view.record.hold.0,
        active: view.state == HoldState::Active,
        ends_in: view.ends_in_ms,
    }
}

fn hold_error(id: u64, e: HoldError) -> Result<Outcome, TestCaseError> {
    Ok(match e {
        HoldError::NotFound { hold } => {
            prop_assert_eq!(hold.0, id);
            Outcome::HoldNotFound
        }
        HoldError::SameOperator { hold, by } => {
            prop_assert_eq!(hold.0, id);
            prop_assert_eq!(by.as_str(), PLACER);
            Outcome::SameOperator
        }
        HoldError::AlreadyAcknowledged { hold, by, .. } => {
            prop_assert_eq!(hold.0, id);
            prop_assert_eq!(by.as_str(), ACKER);
            Outcome::AlreadyAcknowledged
        }
        HoldError::AckNotRequired { hold, .. } => {
            prop_assert_eq!(hold.0, id);
            Outcome::AckNotRequired
        }
        HoldError::Invalid(e) => {
            return Err(TestCaseError::fail(format!(
                "valid hold request refused: {e}"
            )));
        }
    })
}

impl Harness {
    fn new(slots: [u32; 3]) -> Self {
        Self {
            table: LockTable::new(TableConfig::default()),
            model: Model::new(),
            slots,
            granted: Vec::new(),
            queued: Vec::new(),
            placed: Vec::new(),
            queue_order: vec![Vec::new(); RESOURCES.len()],
            last_token: 0,
            dead: HashSet::new(),
            persisted: BTreeMap::new(),
            persisted_holds: BTreeMap::new(),
            persisted_audit: Vec::new(),
            high_water: 0,
        }
    }

    fn lease_pick(&self, pick: usize) -> u64 {
        let n = self.granted.len();
        match pick % (n + 2) {
            i if i < n => self.granted[i],
            i if i == n => self.model.seq + 3,
            _ => 0,
        }
    }

    fn hold_pick(&self, pick: usize) -> u64 {
        match pick % (self.placed.len() + 1) {
            i if i < self.placed.len() => self.placed[i],
            _ => 999_999_999,
        }
    }

    #[allow(clippy::too_many_lines)]
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut fx = Effects::new();
        let mut expected = Vec::new();
        let t = now(self.model.now);
        self.model.issued.clear();
        let (got, want) = match *op {
            Op::Acquire {
                res,
                owner: o,
                ttl_ms,
                wait_ms,
                odd_slots,
                lock_delay_ms,
            } => {
                let usual = self.slots[res];
                let slots = if odd_slots { usual % 3 + 1 } else { usual };
                let req = Acquire {
                    resource: RESOURCES[res].to_string(),
                    owner: owner(o),
                    ttl_ms,
                    slots,
                    wait_ms,
                    lock_delay_ms,
                    trusted: Trusted::NONE,
                };
                let got = match self.table.acquire(req, t, &mut fx) {
                    Ok(AcquireOutcome::Granted(view)) => {
                        prop_assert_eq!(view.token.0, view.lease.0);
                        prop_assert_eq!(&view.owner, &owner(o));
                        prop_assert_eq!(view.resource.as_str(), RESOURCES[res]);
                        Outcome::Granted {
                            lease: view.lease.0,
                            reacquired: view.reacquired,
                        }
                    }
                    Ok(AcquireOutcome::Queued(w)) => {
                        self.queue_order[res].push(w.0);
                        self.queued.push(w.0);
                        Outcome::Queued(w.0)
                    }
                    Err(AcquireError::SlotsMismatch {
                        held_slots,
                        asked_slots,
                        ..
                    }) => Outcome::SlotsMismatch {
                        held: held_slots,
                        asked: asked_slots,
                    },
                    Err(AcquireError::TtlMismatch {
                        lease,
                        held_ttl_ms,
                        asked_ttl_ms,
                        ..
                    }) => Outcome::TtlMismatch {
                        lease: lease.0,
                        held: held_ttl_ms,
                        asked: asked_ttl_ms,
                    },
                    Err(AcquireError::Invalid(e)) => {
                        return Err(TestCaseError::fail(format!("valid request refused: {e}")));
                    }
                    Err(e) => Outcome::Refused(refusal(&e)?),
                };
                let want = self.model.acquire(
                    res,
                    o,
                    ttl_ms,
                    slots,
                    wait_ms,
                    lock_delay_ms,
                    &mut expected,
                );
                (got, want)
            }
            Op::Release { pick, wrong_token } => {
                let id = self.lease_pick(pick);
                let token = token_for(id, wrong_token);
                let got = match self.table.release(LeaseId(id), token, t, &mut fx) {
                    Ok(r) => {
                        prop_assert_eq!(r.token.0, id);
                        Outcome::Released { already: r.already }
                    }
                    Err(e) => lease_error(id, e)?,
                };
                (got, self.model.release(id, wrong_token, &mut expected))
            }
            Op::Renew { pick, wrong_token } => {
                let id = self.lease_pick(pick);
                let token = token_for(id, wrong_token);
                let got = match self.table.renew(LeaseId(id), token, t, &mut fx) {
                    Ok(view) => {
                        prop_assert_eq!(view.token.0, id);
                        Outcome::Renewed(view.lease.0)
                    }
                    Err(e) => lease_error(id, e)?,
                };
                (got, self.model.renew(id, wrong_token, &mut expected))
            }
            Op::CancelWait { pick } => {
                let id = match pick % (self.queued.len() + 1) {
                    i if i < self.queued.len() => self.queued[i],
                    _ => 999_999,
                };
                let got = Outcome::Cancelled(self.table.cancel_wait(WaiterId(id)));
                if got == Outcome::Cancelled(true) {
                    for order in &mut self.queue_order {
                        order.retain(|w| *w != id);
                    }
                }
                (got, self.model.cancel(id))
            }
            Op::Time { ms, call_advance } => {
                self.model.now += ms;
                if call_advance {
                    self.table.advance(now(self.model.now), &mut fx);
                    self.model.advance(&mut expected);
                }
                (Outcome::Nothing, Outcome::Nothing)
            }
            Op::Restart => {
                self.table = LockTable::restore(TableConfig::default(), self.snapshot(), t);
                self.table.remember_ended(&self.persisted_audit);
                self.model.restart();
                // Waiters died with the server; their ids will be handed out again.
                self.queued.clear();
                for order in &mut self.queue_order {
                    order.clear();
                }
                (Outcome::Nothing, Outcome::Nothing)
            }
            Op::Hold {
                res,
                duration_ms,
                require_ack,
            } => {
                let req = PlaceHold {
                    resource: RESOURCES[res].to_string(),
                    operator: PLACER.to_string(),
                    reason: "model hold".to_string(),
                    duration_ms,
                    require_ack,
                };
                let got = match self.table.place_hold(req, t, &mut fx) {
                    Ok(view) => {
                        prop_assert_eq!(view.record.resource.as_str(), RESOURCES[res]);
                        self.placed.push(view.record.hold.0);
                        hold_outcome(&view)
                    }
                    Err(e) => hold_error(0, e)?,
                };
                let want = self
                    .model
                    .hold(res, duration_ms, require_ack, &mut expected);
                (got, want)
            }
            Op::Ack {
                pick,
                same_operator,
                spelling,
            } => {
                let id = self.hold_pick(pick);
                let operator = if same_operator {
                    PLACER_SPELLINGS[spelling]
                } else {
                    ACKER
                };
                let got = match self.table.ack_hold(HoldId(id), operator, t, &mut fx) {
                    Ok(view) => hold_outcome(&view),
                    Err(e) => hold_error(id, e)?,
                };
                (got, self.model.ack(id, same_operator, &mut expected))
            }
            Op::Lift { pick } => {
                let id = self.hold_pick(pick);
                let got = match self.table.lift_hold(HoldId(id), "dave", t, &mut fx) {
                    Ok(view) => Outcome::Lifted(view.record.hold.0),
                    Err(e) => hold_error(id, e)?,
                };
                (got, self.model.lift(id, &mut expected))
            }
            Op::Break {
                res,
                one,
                freeze_ms,
            } => {
                let one = one.map(|p| self.lease_pick(p));
                let got = match self.table.break_lock(
                    RESOURCES[res],
                    one.map(LeaseId),
                    BREAKER,
                    BREAK_REASON,
                    freeze_ms,
                    t,
                    &mut fx,
                ) {
                    Ok(out) => {
                        for r in &out.revoked {
                            prop_assert!(r.token < out.fence, "revoked {} above fence", r.token);
                        }
                        if let Some(h) = &out.hold {
                            self.placed.push(h.record.hold.0);
                        }
                        Outcome::Broke {
                            revoked: out.revoked.iter().map(|h| h.lease.0).collect(),
                            fence: out.fence.0,
                            hold: out.hold.map(|h| h.record.hold.0),
                        }
                    }
                    Err(BreakError::NotHeld { resource, lease }) => {
                        prop_assert_eq!(resource.as_str(), RESOURCES[res]);
                        prop_assert_eq!(lease.map(|l| l.0), one);
                        Outcome::NotHeld
                    }
                    Err(BreakError::Invalid(e)) => {
                        return Err(TestCaseError::fail(format!("valid break refused: {e}")));
                    }
                };
                (got, self.model.brk(res, one, freeze_ms, &mut expected))
            }
        };
        prop_assert_eq!(&got, &want, "outcome of {:?}", op);
        if let Outcome::Granted {
            lease,
            reacquired: false,
        } = got
        {
            self.granted.push(lease);
        }
        self.check_effects(&fx, &got, &expected)?;
        self.check_state()?;
        Ok(())
    }

    /// Effects: the same observable events as the model, and the persistence promises.
    fn check_effects(
        &mut self,
        fx: &Effects,
        outcome: &Outcome,
        expected: &[Event],
    ) -> Result<(), TestCaseError> {
        let mut events = Vec::new();
        // Every new token of this step, in grant order (a direct grant comes last: its own
        // advance runs first).
        let mut new_tokens = Vec::new();
        let mut hold_changes = 0;
        for (i, e) in fx.iter().enumerate() {
            match e {
                Effect::Persist(m) => {
                    self.persist(m);
                    // Every hold change is audited right after it is persisted.
                    let hold = match m {
                        Mutation::PutHold(h) => Some((h.hold, true)),
                        Mutation::DeleteHold(id) => Some((*id, false)),
                        _ => None,
                    };
                    if let Some((id, put)) = hold {
                        hold_changes += 1;
                        let audited = matches!(
                            fx.get(i + 1),
                            Some(Effect::Persist(Mutation::AppendAudit(a)))
                                if a.hold == Some(id) && if put {
                                    matches!(a.kind, AuditKind::HoldPlaced | AuditKind::HoldAcked)
                                } else {
                                    matches!(a.kind, AuditKind::HoldLifted | AuditKind::HoldExpired)
                                }
                        );
                        prop_assert!(audited, "hold {} change not audited: {:?}", id, fx);
                    }
                }
                Effect::Ended { lease, cause, .. } => {
                    prop_assert!(
                        i > 1 && fx[i - 2] == Effect::Persist(Mutation::DeleteLease(*lease)),
                        "Ended({lease}) not right after its DeleteLease and audit: {fx:?}"
                    );
                    prop_assert!(
                        matches!(
                            &fx[i - 1],
                            Effect::Persist(Mutation::AppendAudit(a)) if a.lease == Some(*lease)
                        ),
                        "Ended({lease}) not right after its audit record: {fx:?}"
                    );
                    prop_assert!(self.dead.insert(lease.0), "lease {lease} ended twice");
                    events.push(Event::Ended(lease.0, cause.clone()));
                }
                Effect::Granted { waiter, lease } => {
                    prop_assert!(
                        fx[..i].contains(&Effect::Persist(Mutation::FenceHighWater(lease.token.0))),
                        "Granted before its FenceHighWater: {fx:?}"
                    );
                    prop_assert!(
                        fx[..i].iter().any(|p| matches!(
                            p,
                            Effect::Persist(Mutation::PutLease(r)) if r.lease == lease.lease
                        )),
                        "Granted before its PutLease: {fx:?}"
                    );
                    let r = RESOURCES
                        .iter()
                        .position(|n| *n == lease.resource)
                        .expect("known resource");
                    // FIFO: nobody queued earlier on this resource is still waiting.
                    let order = &mut self.queue_order[r];
                    let pos = order
                        .iter()
                        .position(|w| *w == waiter.0)
                        .ok_or_else(|| TestCaseError::fail(format!("{waiter} was not queued")))?;
                    prop_assert_eq!(
                        pos,
                        0,
                        "waiter {} granted before {:?}",
                        waiter,
                        &order[..pos]
                    );
                    order.remove(0);
                    new_tokens.push(lease.token.0);
                    self.granted.push(lease.lease.0);
                    events.push(Event::Granted {
                        waiter: waiter.0,
                        lease: lease.lease.0,
                    });
                }
                Effect::WaitTimedOut { waiter, error } => {
                    for order in &mut self.queue_order {
                        order.retain(|w| *w != waiter.0);
                    }
                    events.push(Event::TimedOut {
                        waiter: waiter.0,
                        refusal: refusal(error)?,
                    });
                }
            }
        }
        prop_assert_eq!(&events, expected, "effects {:?}", fx);
        // Every grant and end has exactly one matching audit record, left unnumbered for the
        // driver (whose step numbers every domain's records from one sequence).
        common::check_audit(fx).map_err(TestCaseError::fail)?;
        let records = common::audits(fx);
        let hold_records = records
            .iter()
            .filter(|a| {
                matches!(
                    a.kind,
                    AuditKind::HoldPlaced
                        | AuditKind::HoldAcked
                        | AuditKind::HoldLifted
                        | AuditKind::HoldExpired
                )
            })
            .count();
        prop_assert_eq!(
            hold_records,
            hold_changes,
            "one audit per hold change: {:?}",
            fx
        );
        let broke: Vec<_> = records
            .iter()
            .filter(|a| a.kind == AuditKind::Broke)
            .collect();
        match outcome {
            Outcome::Broke { fence, hold, .. } => {
                prop_assert_eq!(broke.len(), 1, "one Broke record: {:?}", fx);
                prop_assert_eq!(broke[0].token, Some(FenceToken(*fence)));
                prop_assert_eq!(broke[0].operator.as_deref(), Some(BREAKER));
                prop_assert_eq!(broke[0].reason.as_deref(), Some(BREAK_REASON));
                prop_assert_eq!(broke[0].hold.map(|h| h.0), *hold);
            }
            _ => prop_assert!(broke.is_empty(), "Broke without a break: {:?}", fx),
        }
        if let Outcome::Granted {
            lease,
            reacquired: false,
        } = outcome
        {
            new_tokens.push(*lease);
        }
        // Tokens strictly increase across all grants, and each grant persisted exactly one
        // PutLease; each id issued (lease, hold, break fence) exactly one FenceHighWater, in
        // order; nothing else was persisted as new.
        let puts: Vec<u64> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Persist(Mutation::PutLease(r)) => Some(r.token.0),
                _ => None,
            })
            .collect();
        let marks: Vec<u64> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Persist(Mutation::FenceHighWater(h)) => Some(*h),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&puts, &new_tokens, "PutLease per grant: {:?}", fx);
        prop_assert_eq!(
            &marks,
            &self.model.issued,
            "FenceHighWater per id: {:?}",
            fx
        );
        for token in new_tokens {
            prop_assert!(
                token > self.last_token,
                "token {token} after {}",
                self.last_token
            );
            self.last_token = token;
        }
        Ok(())
    }

    fn persist(&mut self, m: &Mutation) {
        match m {
            Mutation::PutLease(r) => {
                self.persisted.insert(r.lease.0, r.clone());
            }
            Mutation::DeleteLease(id) => {
                self.persisted.remove(&id.0);
            }
            Mutation::FenceHighWater(h) => self.high_water = self.high_water.max(*h),
            Mutation::PutHold(h) => {
                self.persisted_holds.insert(h.hold.0, h.clone());
            }
            Mutation::DeleteHold(id) => {
                self.persisted_holds.remove(&id.0);
            }
            Mutation::AppendAudit(a) => {
                self.persisted_audit.push(a.clone());
            }
            Mutation::PutRecord { .. } | Mutation::DeleteRecord { .. } => {
                panic!("the lock table wrote another domain's record: {m:?}")
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            leases: self.persisted.values().cloned().collect(),
            holds: self.persisted_holds.values().cloned().collect(),
            fence_high_water: self.high_water,
            // The driver's: the table numbers no audit records.
            audit_seq: 0,
        }
    }

    /// State after the step: invariants, agreement with the model, and the persisted image.
    fn check_state(&self) -> Result<(), TestCaseError> {
        let t = now(self.model.now);
        for (r, name) in RESOURCES.iter().enumerate() {
            let view = self.table.resource(name, t);
            let m = &self.model.res[r];
            prop_assert!(
                view.holders.len() <= view.slots as usize,
                "{name}: {} holders, {} slots",
                view.holders.len(),
                view.slots
            );
            for h in &view.holders {
                let lease = self
                    .table
                    .lease(h.lease)
                    .ok_or_else(|| TestCaseError::fail(format!("holder {} not live", h.lease)))?;
                prop_assert_eq!(lease.slots, view.slots, "{} holder of another size", name);
                prop_assert!(
                    !self.dead.contains(&h.lease.0),
                    "ended lease {} holds",
                    h.lease
                );
                prop_assert_eq!(h.token.0, h.lease.0);
            }
            let frozen_since = view
                .holds
                .iter()
                .filter(|h| h.state == HoldState::Active)
                .filter_map(|h| h.record.active_since_ms)
                .min();
            prop_assert!(
                view.waiters.is_empty()
                    || !view.holders.is_empty()
                    || frozen_since.is_some()
                    || m.delay.is_some(),
                "{name}: a queue with no holder, hold or lock-delay"
            );
            // No grant while a hold is in force (holds only ever go from pending to active, so
            // an active hold has been in force since `active_since`).
            if let Some(since) = frozen_since {
                for h in &view.holders {
                    prop_assert!(
                        h.granted_at_ms <= since,
                        "{name}: lease {} granted at {} while frozen since {since}",
                        h.lease,
                        h.granted_at_ms
                    );
                }
            }
            // Agreement with the model: holders (grant order), deadlines, queue (FIFO order).
            let holders: Vec<(u64, Owner, u64)> = view
                .holders
                .iter()
                .map(|h| (h.lease.0, h.owner.clone(), h.ttl_left_ms))
                .collect();
            let model_holders: Vec<(u64, Owner, u64)> = m
                .holders
                .iter()
                .map(|id| {
                    let l = &self.model.leases[id];
                    (
                        *id,
                        owner(l.owner),
                        l.deadline.saturating_sub(self.model.now),
                    )
                })
                .collect();
            prop_assert_eq!(holders, model_holders, "holders of {}", name);
            if !m.holders.is_empty() {
                prop_assert_eq!(view.slots, m.slots, "slots of {}", name);
                prop_assert!(
                    m.holders
                        .iter()
                        .all(|id| self.model.leases[id].slots == m.slots)
                );
            }
            let waiters: Vec<Owner> = view.waiters.iter().map(|w| w.owner.clone()).collect();
            let model_waiters: Vec<Owner> = m.queue.iter().map(|w| owner(w.owner)).collect();
            prop_assert_eq!(waiters, model_waiters, "queue of {}", name);
            let order: Vec<u64> = m.queue.iter().map(|w| w.id).collect();
            prop_assert_eq!(&order, &self.queue_order[r], "enqueue order of {}", name);
            // Holds (placement order), lock-delay and the state an operator sees.
            let holds: Vec<(u64, bool, u64)> = view
                .holds
                .iter()
                .map(|h| (h.record.hold.0, h.state == HoldState::Active, h.ends_in_ms))
                .collect();
            let model_holds: Vec<(u64, bool, u64)> = self
                .model
                .holds
                .iter()
                .filter(|(_, h)| h.res == r)
                .map(|(id, h)| (*id, h.active, h.deadline.saturating_sub(self.model.now)))
                .collect();
            prop_assert_eq!(holds, model_holds, "holds of {}", name);
            prop_assert_eq!(
                view.delay_left_ms,
                self.model.delay_left(r),
                "lock-delay of {}",
                name
            );
            prop_assert_eq!(view.state, self.model.state(r), "state of {}", name);
        }
        prop_assert_eq!(self.table.lease_count(), self.model.leases.len());
        prop_assert_eq!(self.table.waiter_count(), self.model.waiter_res.len());
        prop_assert_eq!(self.table.holds(t).len(), self.model.holds.len());
        prop_assert_eq!(self.table.fence_high_water(), self.model.seq);

        // The persisted image restores to the same holders, holds and high-water mark.
        let restored = LockTable::restore(TableConfig::default(), self.snapshot(), t);
        prop_assert_eq!(restored.fence_high_water(), self.table.fence_high_water());
        prop_assert_eq!(holder_set(&restored, t), holder_set(&self.table, t));
        prop_assert_eq!(restored.holds(t), self.table.holds(t));
        Ok(())
    }
}

/// Every (lease, resource, token, owner) holding anything.
fn holder_set(table: &LockTable, t: Now) -> Vec<(u64, String, u64, Owner)> {
    let mut set: Vec<_> = table
        .resources(t)
        .into_iter()
        .flat_map(|v| {
            let resource = v.resource;
            v.holders
                .into_iter()
                .map(move |h| (h.lease.0, resource.clone(), h.token.0, h.owner))
        })
        .collect();
    set.sort_by_key(|(lease, ..)| *lease);
    set
}

fn lease_error(id: u64, e: LeaseError) -> Result<Outcome, TestCaseError> {
    Ok(match e {
        LeaseError::NotHolder { lease } => {
            prop_assert_eq!(lease.0, id);
            Outcome::NotHolder
        }
        LeaseError::LeaseExpired { lease, cause, .. } => {
            prop_assert_eq!(lease.0, id);
            prop_assert!(
                !matches!(cause, EndCause::Broken { .. }),
                "a broken lease is reported as Broken, not LeaseExpired"
            );
            Outcome::Ended(cause)
        }
        LeaseError::Broken {
            lease,
            resource,
            by,
            reason,
        } => {
            prop_assert_eq!(lease.0, id);
            prop_assert!(RESOURCES.contains(&resource.as_str()));
            Outcome::Ended(EndCause::Broken { by, reason })
        }
        LeaseError::StaleToken {
            lease,
            presented,
            current,
        } => {
            prop_assert_eq!(lease.0, id);
            prop_assert_eq!(current.0, id);
            prop_assert_ne!(presented, current);
            Outcome::StaleToken
        }
        LeaseError::Internal(e) => return Err(TestCaseError::fail(format!("lease {id}: {e}"))),
    })
}

/// The token to present for `lease`: lease ids and tokens come from one sequence, so a lease's
/// token is its id.
fn token_for(lease: u64, wrong: bool) -> Option<FenceToken> {
    Some(FenceToken(if wrong { lease + 1_000 } else { lease }))
}

fn run(slots: [u32; 3], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(slots);
    for op in ops {
        h.step(op)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        // Integration tests have no lib.rs beside them: keep shrunk failures next to this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// The table agrees with the model after every step and keeps its invariants.
    #[test]
    fn table_matches_model_and_keeps_invariants(
        slots in [1..=3u32, 1..=3u32, 1..=3u32],
        ops in proptest::collection::vec(op_strategy(Mix { restarts: false, ghosts: false }), 1..80),
    ) {
        run(slots, &ops)?;
    }

    /// The same, with server restarts: the table is rebuilt from the persisted mutations
    /// (a faithful image of the live holders, checked after every step) and carries on.
    #[test]
    fn persisted_log_restores_the_live_table_across_restarts(
        slots in [1..=3u32, 1..=3u32, 1..=3u32],
        ops in proptest::collection::vec(op_strategy(Mix { restarts: true, ghosts: false }), 1..80),
    ) {
        run(slots, &ops)?;
    }

    /// The same again with holds, acknowledgements, lifts, breaks and lock-delays mixed in:
    /// frozen resources grant nothing, a break ends exactly the holders the model says, and
    /// holds survive restarts with their remaining time.
    #[test]
    fn holds_breaks_and_lock_delays_match_the_model(
        slots in [1..=3u32, 1..=3u32, 1..=3u32],
        ops in proptest::collection::vec(op_strategy(Mix { restarts: true, ghosts: true }), 1..80),
    ) {
        run(slots, &ops)?;
    }
}
