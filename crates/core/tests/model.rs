//! Property tests: the lock table against a simple reference model.
//!
//! Random sequences of acquires, releases, renewals, cancelled waits, clock jumps (with and without
//! an explicit `advance`) and server restarts run over three resources and five processes. After
//! every step the table must agree with the model (outcomes, effects, holders, queues, deadlines)
//! and must keep the invariants in `table.rs`'s module docs, checked directly on its views and
//! effects: never more holders than slots, strictly increasing tokens, FIFO queues, one
//! `PutLease` + `FenceHighWater` per grant, no holder after its end. And the persisted mutations,
//! replayed into a map and handed to `LockTable::restore`, always give back the live holders.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, Effect, Effects, EndCause, FenceToken, LeaseError,
    LeaseId, LeaseRecord, LockTable, Mutation, Now, Owner, Snapshot, TableConfig, WaiterId,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const RESOURCES: [&str; 3] = ["cfg/aim.conf", "cfg/safety.conf", "reboot/default"];
const OWNERS: usize = 5;
const WALL0: u64 = 1_700_000_000_000;

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
}

fn op_strategy(restarts: bool) -> impl Strategy<Value = Op> {
    let ttl = prop_oneof![Just(1_000u64), Just(2_000), 1_000..5_000u64];
    let wait = prop_oneof![Just(0u64), Just(0), Just(1_000), 1..6_000u64];
    let acquire = (
        0..RESOURCES.len(),
        0..OWNERS,
        ttl,
        wait,
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(res, owner, ttl_ms, wait_ms, odd_slots)| Op::Acquire {
            res,
            owner,
            ttl_ms,
            wait_ms,
            odd_slots,
        });
    let pick = 0..64usize;
    let release = (pick.clone(), proptest::bool::weighted(0.1))
        .prop_map(|(pick, wrong_token)| Op::Release { pick, wrong_token });
    let renew = (pick.clone(), proptest::bool::weighted(0.1))
        .prop_map(|(pick, wrong_token)| Op::Renew { pick, wrong_token });
    let cancel = pick.prop_map(|pick| Op::CancelWait { pick });
    let time = (
        prop_oneof![Just(0u64), Just(500), Just(1_000), 1..3_000u64],
        any::<bool>(),
    )
        .prop_map(|(ms, call_advance)| Op::Time { ms, call_advance });
    let restart_weight = if restarts { 1 } else { 0 };
    prop_oneof![
        8 => acquire,
        3 => release,
        3 => renew,
        1 => cancel,
        4 => time,
        restart_weight => Just(Op::Restart),
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
}

#[derive(Debug, Clone)]
struct MWaiter {
    id: u64,
    owner: usize,
    ttl: u64,
    slots: u32,
    deadline: u64,
}

#[derive(Debug, Clone, Default)]
struct MRes {
    slots: u32,
    /// Lease ids in grant order.
    holders: Vec<u64>,
    queue: VecDeque<MWaiter>,
}

/// What the driver observes, as comparable values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Ended(u64, EndCause),
    Granted { waiter: u64, lease: u64 },
    TimedOut { waiter: u64, holders: Vec<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Granted { lease: u64, reacquired: bool },
    Queued(u64),
    Hot(Vec<u64>),
    SlotsMismatch { held: u32, asked: u32 },
    Renewed(u64),
    Released { already: bool },
    Ended(EndCause),
    NotHolder,
    StaleToken,
    Cancelled(bool),
    Nothing,
}

/// A deliberately plain model: vectors and a queue per resource, deadlines in ms, and a scan for
/// the earliest due deadline (leases before waiters at the same instant, then by id — the
/// table's timer order).
#[derive(Debug, Clone)]
struct Model {
    now: u64,
    seq: u64,
    last_waiter: u64,
    leases: BTreeMap<u64, MLease>,
    res: Vec<MRes>,
    waiter_res: HashMap<u64, usize>,
    ended: HashMap<u64, EndCause>,
}

impl Model {
    fn new() -> Self {
        Self {
            now: 0,
            seq: 0,
            last_waiter: 0,
            leases: BTreeMap::new(),
            res: vec![MRes::default(); RESOURCES.len()],
            waiter_res: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    fn advance(&mut self, ev: &mut Vec<Event>) {
        loop {
            let lease_due = self
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= self.now)
                .map(|(id, l)| (l.deadline, 0u8, *id))
                .min();
            let waiter_due = self
                .res
                .iter()
                .flat_map(|r| r.queue.iter())
                .filter(|w| w.deadline <= self.now)
                .map(|w| (w.deadline, 1u8, w.id))
                .min();
            match lease_due.into_iter().chain(waiter_due).min() {
                None => return,
                Some((_, 0, id)) => self.end(id, EndCause::Expired, ev),
                Some((_, _, id)) => {
                    let r = self
                        .waiter_res
                        .remove(&id)
                        .expect("queued waiter has a resource");
                    self.res[r].queue.retain(|w| w.id != id);
                    ev.push(Event::TimedOut {
                        waiter: id,
                        holders: self.res[r].holders.clone(),
                    });
                }
            }
        }
    }

    fn grant(&mut self, r: usize, owner: usize, ttl: u64, slots: u32) -> u64 {
        self.seq += 1;
        let id = self.seq;
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
            },
        );
        id
    }

    fn end(&mut self, id: u64, cause: EndCause, ev: &mut Vec<Event>) {
        let lease = self.leases.remove(&id).expect("ending a live lease");
        self.res[lease.res].holders.retain(|h| *h != id);
        self.ended.insert(id, cause.clone());
        ev.push(Event::Ended(id, cause));
        // Hand free slots to the queue, first come first served.
        let r = lease.res;
        while let Some(front) = self.res[r].queue.front() {
            let res = &self.res[r];
            let fits = res.holders.is_empty()
                || (front.slots == res.slots && res.holders.len() < res.slots as usize);
            if !fits {
                break;
            }
            let w = self.res[r].queue.pop_front().expect("front exists");
            self.waiter_res.remove(&w.id);
            let lease = self.grant(r, w.owner, w.ttl, w.slots);
            ev.push(Event::Granted {
                waiter: w.id,
                lease,
            });
        }
    }

    fn acquire(
        &mut self,
        r: usize,
        owner: usize,
        ttl: u64,
        slots: u32,
        wait: u64,
        ev: &mut Vec<Event>,
    ) -> Outcome {
        self.advance(ev);
        let mine = self.res[r]
            .holders
            .iter()
            .copied()
            .find(|id| self.leases[id].owner == owner);
        if let Some(id) = mine {
            let l = self.leases.get_mut(&id).expect("holder is live");
            l.deadline = self.now + l.ttl;
            return Outcome::Granted {
                lease: id,
                reacquired: true,
            };
        }
        let res = &self.res[r];
        if !res.holders.is_empty() && res.slots != slots {
            return Outcome::SlotsMismatch {
                held: res.slots,
                asked: slots,
            };
        }
        let full = (!res.holders.is_empty() && res.holders.len() >= res.slots as usize)
            || !res.queue.is_empty();
        if !full {
            let lease = self.grant(r, owner, ttl, slots);
            return Outcome::Granted {
                lease,
                reacquired: false,
            };
        }
        if wait == 0 {
            return Outcome::Hot(res.holders.clone());
        }
        self.last_waiter += 1;
        let id = self.last_waiter;
        self.res[r].queue.push_back(MWaiter {
            id,
            owner,
            ttl,
            slots,
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

    /// A restart: waiters and the memory of ended leases are gone, waiter ids start over, and
    /// every surviving lease is treated as renewed now.
    fn restart(&mut self) {
        for res in &mut self.res {
            res.queue.clear();
        }
        self.waiter_res.clear();
        self.ended.clear();
        self.last_waiter = 0;
        let now = self.now;
        for l in self.leases.values_mut() {
            l.deadline = now + l.ttl;
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
    /// Per resource, the queued waiters in enqueue order, for the FIFO check.
    queue_order: Vec<Vec<u64>>,
    /// The last token granted: the next must be larger.
    last_token: u64,
    /// Leases reported ended (expired or released).
    dead: HashSet<u64>,
    /// The persisted image: the mutations replayed into a map.
    persisted: BTreeMap<u64, LeaseRecord>,
    high_water: u64,
}

impl Harness {
    fn new(slots: [u32; 3]) -> Self {
        Self {
            table: LockTable::new(TableConfig::default()),
            model: Model::new(),
            slots,
            granted: Vec::new(),
            queued: Vec::new(),
            queue_order: vec![Vec::new(); RESOURCES.len()],
            last_token: 0,
            dead: HashSet::new(),
            persisted: BTreeMap::new(),
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

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut fx = Effects::new();
        let mut expected = Vec::new();
        let t = now(self.model.now);
        let (got, want) = match *op {
            Op::Acquire {
                res,
                owner: o,
                ttl_ms,
                wait_ms,
                odd_slots,
            } => {
                let usual = self.slots[res];
                let slots = if odd_slots { usual % 3 + 1 } else { usual };
                let req = Acquire {
                    resource: RESOURCES[res].to_string(),
                    owner: owner(o),
                    ttl_ms,
                    slots,
                    wait_ms,
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
                    Err(AcquireError::Hot { resource, holders }) => {
                        prop_assert_eq!(resource.as_str(), RESOURCES[res]);
                        Outcome::Hot(holders.iter().map(|h| h.lease.0).collect())
                    }
                    Err(AcquireError::SlotsMismatch {
                        held_slots,
                        asked_slots,
                        ..
                    }) => Outcome::SlotsMismatch {
                        held: held_slots,
                        asked: asked_slots,
                    },
                    Err(AcquireError::Invalid(e)) => {
                        return Err(TestCaseError::fail(format!("valid request refused: {e}")));
                    }
                };
                let want = self
                    .model
                    .acquire(res, o, ttl_ms, slots, wait_ms, &mut expected);
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
                self.model.restart();
                // Waiters died with the server; their ids will be handed out again.
                self.queued.clear();
                for order in &mut self.queue_order {
                    order.clear();
                }
                (Outcome::Nothing, Outcome::Nothing)
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
        for (i, e) in fx.iter().enumerate() {
            match e {
                Effect::Persist(m) => self.persist(m),
                Effect::Ended { lease, cause, .. } => {
                    prop_assert!(
                        i > 0 && fx[i - 1] == Effect::Persist(Mutation::DeleteLease(*lease)),
                        "Ended({lease}) not right after its DeleteLease: {fx:?}"
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
                    let AcquireError::Hot { holders, .. } = error else {
                        return Err(TestCaseError::fail(format!("timeout with {error:?}")));
                    };
                    for order in &mut self.queue_order {
                        order.retain(|w| *w != waiter.0);
                    }
                    events.push(Event::TimedOut {
                        waiter: waiter.0,
                        holders: holders.iter().map(|h| h.lease.0).collect(),
                    });
                }
            }
        }
        prop_assert_eq!(&events, expected, "effects {:?}", fx);
        if let Outcome::Granted {
            lease,
            reacquired: false,
        } = outcome
        {
            new_tokens.push(*lease);
        }
        // Tokens strictly increase across all grants, and each grant persisted exactly one
        // PutLease and one FenceHighWater with its token; nothing else was persisted as new.
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
        prop_assert_eq!(&marks, &new_tokens, "FenceHighWater per grant: {:?}", fx);
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
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            leases: self.persisted.values().cloned().collect(),
            fence_high_water: self.high_water,
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
            prop_assert!(
                view.waiters.is_empty() || !view.holders.is_empty(),
                "{name}: a queue with no holder"
            );
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
        }
        prop_assert_eq!(self.table.lease_count(), self.model.leases.len());
        prop_assert_eq!(self.table.waiter_count(), self.model.waiter_res.len());
        prop_assert_eq!(self.table.fence_high_water(), self.model.seq);

        // The persisted image restores to the same holders and the same high-water mark.
        let restored = LockTable::restore(TableConfig::default(), self.snapshot(), t);
        prop_assert_eq!(restored.fence_high_water(), self.table.fence_high_water());
        prop_assert_eq!(holder_set(&restored, t), holder_set(&self.table, t));
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
            Outcome::Ended(cause)
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
        ops in proptest::collection::vec(op_strategy(false), 1..80),
    ) {
        run(slots, &ops)?;
    }

    /// The same, with server restarts: the table is rebuilt from the persisted mutations
    /// (a faithful image of the live holders, checked after every step) and carries on.
    #[test]
    fn persisted_log_restores_the_live_table_across_restarts(
        slots in [1..=3u32, 1..=3u32, 1..=3u32],
        ops in proptest::collection::vec(op_strategy(true), 1..80),
    ) {
        run(slots, &ops)?;
    }
}
