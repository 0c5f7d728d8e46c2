//! Rebuilding the table from storage at boot.
//!
//! [`RestoreBuilder`] takes the stored leases a few thousand at a time, as the store reads them,
//! so that a server can read its store on one thread and build its table on another at the
//! same time (see `locksmith-server`'s `recover`); [`LockTable::restore`] does the same from a
//! whole [`Snapshot`]. Both give the same table for the same leases, in whatever order and
//! chunks they come.
//!
//! The work per lease splits in two halves of about the same cost, so that each thread of such
//! a restart gets one: making the lease (its allocations, first touches of fresh memory, the
//! sharing of its owner's node, boot id and user) is a [`LeasePreparer`]'s, which can run on
//! the thread that reads the store; indexing it (the resource, lease and node maps, the timers)
//! is the builder's.
//!
//! Order: a resource's holders are kept in grant (token) order, and its size is its newest
//! holder's. Stores hand leases over in id order, which is token order, so each lease simply
//! goes last; one that comes after a newer lease of its resource is put in its place instead.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use super::origins::Origin;
use super::resources::Resource;
use super::{Lease, LockTable, Map, TableConfig, Timer};
use crate::ids::{FenceToken, LeaseId};
use crate::record::{LeaseChunk, LeaseRef, OwnerRef, Snapshot};
use crate::time::{Mono, Now};

/// Builds a [`LockTable`] from storage after a (re)start: the stored leases, handed over in
/// any number of chunks and in any order, then the rest of the stored state.
///
/// Every surviving lease is treated as renewed at `now`: a live holder keeps its lock (its next
/// heartbeat lands in time), a dead one expires one TTL later. Nothing is reclaimed here;
/// [`LockTable::advance`] does that. The table comes out the same however the leases were cut
/// into chunks and whatever their order: a resource's holders are kept in grant (token) order,
/// and its size is that of its newest holder.
///
/// Leases come either as they are stored ([`RestoreBuilder::chunk`], [`RestoreBuilder::lease`])
/// or made ready on another thread by a [`LeasePreparer`] ([`RestoreBuilder::prepared`]).
#[derive(Debug)]
pub struct RestoreBuilder {
    table: LockTable,
    /// Prepares the leases that come as they are stored.
    preparer: LeasePreparer,
    /// Lease deadlines, sorted into the timer set at the end (one bulk build instead of a
    /// million ordered inserts).
    timers: Vec<(Mono, Timer)>,
    /// Scratch: the ids of a run of leases of one origin.
    run: Vec<LeaseId>,
}

impl RestoreBuilder {
    /// An empty table to fill; every lease will count as renewed at `now`.
    pub fn new(config: TableConfig, now: Now) -> Self {
        Self {
            table: LockTable::new(config),
            preparer: LeasePreparer::new(now),
            timers: Vec::new(),
            run: Vec::new(),
        }
    }

    /// A preparer for this builder's leases, to run on another thread (see
    /// [`RestoreBuilder::prepared`]).
    pub fn preparer(&self) -> LeasePreparer {
        LeasePreparer::new(self.preparer.now)
    }

    /// Makes room for `leases` more leases: what a store that knows how many it holds says
    /// before handing them over. Growing the maps by doubling instead would rehash them and
    /// touch about twice their final memory on the way.
    pub fn reserve(&mut self, leases: usize) {
        self.table.leases.reserve(leases);
        // At most one per lease; nearly always exactly one.
        self.table.resources.reserve(leases);
        self.timers.reserve(leases);
    }

    /// Adds every lease of `chunk`.
    pub fn chunk(&mut self, chunk: &LeaseChunk) {
        let prepared = self.preparer.prepare(chunk);
        self.prepared(prepared);
    }

    /// Adds one stored lease. Each lease id must come once.
    pub fn lease(&mut self, lease: LeaseRef<'_>) {
        let lease = self.preparer.lease(lease);
        self.prepared(PreparedLeases {
            leases: vec![lease],
        });
    }

    /// Adds leases made ready by a [`LeasePreparer`] of this builder.
    pub fn prepared(&mut self, prepared: PreparedLeases) {
        let mut leases = prepared.leases;
        // Index them by node and boot a run of one origin at a time: one lookup for a node's
        // hundred leases rather than one each.
        let mut start = 0;
        while let Some(first) = leases.get(start) {
            let origin = Arc::clone(&first.origin);
            let end = start
                + leases[start..]
                    .iter()
                    .take_while(|l| Arc::ptr_eq(&l.origin, &origin))
                    .count();
            self.run.clear();
            self.run.extend(leases[start..end].iter().map(|l| l.id));
            let shared = self.table.index_leases(&origin, &self.run);
            if !Arc::ptr_eq(&shared, &origin) {
                for lease in &mut leases[start..end] {
                    lease.origin = Arc::clone(&shared);
                }
            }
            start = end;
        }
        for lease in leases {
            self.add(lease);
        }
    }

    /// Adds a lease, already indexed by node, to the resource, lease and timer indexes.
    fn add(&mut self, mut lease: Box<Lease>) {
        let t = &mut self.table;
        t.last_seq = t.last_seq.max(lease.token.0).max(lease.id.0);
        match t.resources.entry(Arc::clone(&lease.resource)) {
            Entry::Vacant(entry) => {
                let res = entry.insert(Resource::default());
                res.slots = lease.slots;
                res.holders.push(lease.id);
            }
            Entry::Occupied(mut entry) => {
                // The resource's one copy of its name.
                lease.resource = Arc::clone(entry.key());
                let res = entry.get_mut();
                let leases = &t.leases;
                let (id, token) = (lease.id, lease.token);
                let token_of = |other: LeaseId| {
                    if other == id {
                        token
                    } else {
                        leases.get(&other).map_or(FenceToken(0), |l| l.token)
                    }
                };
                match res.holders.as_slice().last() {
                    Some(&newest) if token_of(newest) > token => {
                        res.holders.insert_by(id, token_of);
                    }
                    _ => {
                        res.slots = lease.slots;
                        res.holders.push(id);
                    }
                }
            }
        }
        self.timers.push((lease.deadline, Timer::Lease(lease.id)));
        t.leases.insert(lease.id, lease);
    }

    /// Adds the rest of the stored state — `snapshot`'s leases if it has any (none when they
    /// came in chunks), its holds and fence high-water mark — and returns the table. (The
    /// snapshot's audit sequence is the driver's: the table numbers no audit records.)
    pub fn finish(mut self, snapshot: Snapshot) -> LockTable {
        let mut records = snapshot.leases;
        // Stores hand leases back in id order already; then this is one linear pass.
        records.sort_by_key(|r| r.token);
        self.reserve(records.len());
        for r in &records {
            self.lease(r.into());
        }
        drop(records);
        let Self {
            mut table,
            preparer,
            mut timers,
            ..
        } = self;
        let now = preparer.now;
        table.last_seq = table.last_seq.max(snapshot.fence_high_water);
        // Every deadline is `now` + a TTL and the leases came in id order, so this is sorted
        // already unless TTLs differ; the set is then built in one pass.
        timers.sort_unstable();
        table.timers = timers.into_iter().collect();
        for record in snapshot.holds {
            table.last_seq = table.last_seq.max(record.hold.0);
            table.restore_hold(record, now);
        }
        table
    }
}

/// Stored leases made into table leases, ready for [`RestoreBuilder::prepared`].
#[derive(Debug, Default)]
pub struct PreparedLeases {
    // Boxed already: each goes into the table's lease map as it is (the whole point of making
    // them on another thread).
    #[allow(clippy::vec_box)]
    leases: Vec<Box<Lease>>,
}

impl PreparedLeases {
    /// How many leases it holds.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

/// Makes table leases out of stored ones, for a [`RestoreBuilder`] on another thread: the
/// allocations of each lease (its record, resource name and purpose — most of a restart's
/// first touches of fresh memory), and the sharing of its owner's node, boot id and user, so
/// that the builder only indexes them. Made by [`RestoreBuilder::preparer`].
#[derive(Debug)]
pub struct LeasePreparer {
    now: Now,
    /// The origins made so far, by node, boot id and user.
    origins: Map<Arc<str>, OriginsByBoot>,
    /// The last origin made or found: a node's leases tend to come together.
    last: Option<Arc<Origin>>,
}

/// A node's origins by boot id (one per user).
type OriginsByBoot = Map<Arc<str>, Vec<Arc<Origin>>>;

impl LeasePreparer {
    fn new(now: Now) -> Self {
        Self {
            now,
            origins: Map::default(),
            last: None,
        }
    }

    /// The leases of `chunk`, made.
    pub fn prepare(&mut self, chunk: &LeaseChunk) -> PreparedLeases {
        let mut leases = Vec::with_capacity(chunk.len());
        leases.extend(chunk.iter().map(|lease| self.lease(lease)));
        PreparedLeases { leases }
    }

    fn lease(&mut self, r: LeaseRef<'_>) -> Box<Lease> {
        let o = r.owner;
        let now = self.now;
        Box::new(Lease {
            id: r.lease,
            token: r.token,
            resource: Arc::from(r.resource),
            origin: self.origin(&o),
            purpose: o.purpose.into(),
            pid: o.pid,
            start_time: o.start_time,
            ttl_ms: r.ttl_ms,
            slots: r.slots,
            granted_at_ms: r.granted_at_ms,
            renewed_wall_ms: now.wall_ms,
            renewed: now.mono,
            deadline: now.mono.plus_ms(r.ttl_ms),
            lock_delay_ms: r.lock_delay_ms,
        })
    }

    fn origin(&mut self, o: &OwnerRef<'_>) -> Arc<Origin> {
        if let Some(last) = self.last.as_ref().filter(|l| {
            *l.node == *o.node
                && *l.boot_id == *o.boot_id
                && *l.user == *o.user
                && l.pid_ns.as_deref() == o.pid_ns
        }) {
            return Arc::clone(last);
        }
        let node: Arc<str> = self
            .origins
            .get_key_value(o.node)
            .map_or_else(|| Arc::from(o.node), |(key, _)| Arc::clone(key));
        let boots = self.origins.entry(Arc::clone(&node)).or_default();
        let boot_id: Arc<str> = boots
            .get_key_value(o.boot_id)
            .map_or_else(|| Arc::from(o.boot_id), |(key, _)| Arc::clone(key));
        let users = boots.entry(Arc::clone(&boot_id)).or_default();
        let origin = match users
            .iter()
            .find(|u| *u.user == *o.user && u.pid_ns.as_deref() == o.pid_ns)
        {
            Some(found) => Arc::clone(found),
            None => {
                let made = Arc::new(Origin {
                    node,
                    boot_id,
                    pid_ns: o.pid_ns.map(Box::from),
                    user: o.user.into(),
                });
                users.push(Arc::clone(&made));
                made
            }
        };
        self.last = Some(Arc::clone(&origin));
        origin
    }
}

impl LockTable {
    /// Rebuilds the table from storage after a (re)start: a [`RestoreBuilder`] given the whole
    /// snapshot at once (see there).
    pub fn restore(config: TableConfig, snapshot: Snapshot, now: Now) -> Self {
        RestoreBuilder::new(config, now).finish(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hold::{HoldId, HoldRecord};
    use crate::owner::Owner;
    use crate::record::LeaseRecord;

    const WALL0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> Now {
        Now::at(ms, WALL0 + ms)
    }

    /// A lease as a store might hold it: `n` picks resource, owner and numbers, `seq` is its
    /// id and token.
    fn record(seq: u64, n: u64) -> LeaseRecord {
        LeaseRecord {
            lease: LeaseId(seq),
            resource: format!("r/{}", n % 5),
            owner: Owner {
                node: format!("node-{}", n % 3),
                pid: 100 + (n % 7) as u32,
                start_time: 1 + n % 11,
                boot_id: format!("boot-{}", n % 2),
                user: ["svc", "ops"][(n % 13 % 2) as usize].into(),
                purpose: format!("lease {seq}"),
                // Two namespaces, and owners that recorded none.
                pid_ns: (n % 3 != 2).then(|| format!("pid:[{}]", 1 + n % 2)),
            },
            token: FenceToken(seq),
            ttl_ms: 1_000 * (1 + n % 4),
            slots: 1 + (n % 17 % 3) as u32,
            granted_at_ms: WALL0 - n,
            lock_delay_ms: 500 * (n % 3),
        }
    }

    fn hold(seq: u64, n: u64) -> HoldRecord {
        HoldRecord {
            hold: HoldId(seq),
            resource: format!("r/{}", n % 5),
            reason: "restore test".into(),
            by: "alice".into(),
            placed_at_ms: WALL0 - 1_000,
            duration_ms: 2_500,
            require_ack: n % 2 == 0,
            acked_by: None,
            active_since_ms: (n % 2 == 1).then_some(WALL0 - 500),
        }
    }

    /// Everything a caller can see of a table, and its timers: equal tables answer alike.
    fn assert_same(a: &LockTable, b: &LockTable, ids: &[LeaseId], now: Now) {
        a.check_origins();
        b.check_origins();
        assert_eq!(a.fence_high_water(), b.fence_high_water());
        assert_eq!(a.lease_count(), b.lease_count());
        assert_eq!(a.resources(now), b.resources(now));
        assert_eq!(a.holds(now), b.holds(now));
        for id in ids {
            assert_eq!(a.lease(*id), b.lease(*id), "lease {id}");
        }
        for node in ["node-0", "node-1", "node-2"] {
            for boot in ["boot-0", "boot-1"] {
                for ns in ["pid:[1]", "pid:[2]"] {
                    assert_eq!(
                        a.local_leases(node, boot, ns),
                        b.local_leases(node, boot, ns)
                    );
                }
            }
        }
        assert_eq!(a.timers, b.timers);
        assert_eq!(a.next_deadline(), b.next_deadline());
    }

    proptest! {
        /// The leases handed over in chunks, in any order, give the table `restore` gives for
        /// the whole snapshot: same views, fence, timers, and the same expiries afterwards.
        #[test]
        fn chunks_in_any_order_restore_the_same_table(
            shapes in proptest::collection::vec(0u64..1_000, 0..40),
            holds in proptest::collection::vec(0u64..10, 0..3),
            chunk in 1usize..9,
            order in any::<u64>(),
            fence_gap in 0u64..5,
        ) {
            let leases: Vec<LeaseRecord> = shapes
                .iter()
                .enumerate()
                .map(|(i, n)| record(i as u64 + 1, *n))
                .collect();
            let first_hold = leases.len() as u64 + 1;
            let holds: Vec<HoldRecord> = holds
                .iter()
                .enumerate()
                .map(|(i, n)| hold(first_hold + i as u64, *n))
                .collect();
            let snapshot = Snapshot {
                leases: leases.clone(),
                holds: holds.clone(),
                fence_high_water: first_hold + holds.len() as u64 + fence_gap,
                audit_seq: 42,
            };
            let ids: Vec<LeaseId> = leases.iter().map(|r| r.lease).collect();
            let now = at(10_000);
            let mut whole = LockTable::restore(TableConfig::default(), snapshot.clone(), now);

            // A deterministic shuffle picked by `order` (0 keeps id order).
            let mut shuffled = leases;
            let mut x = order;
            for i in (1..shuffled.len()).rev() {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                if order != 0 {
                    shuffled.swap(i, (x >> 33) as usize % (i + 1));
                }
            }
            let mut builder = RestoreBuilder::new(TableConfig::default(), now);
            builder.reserve(shuffled.len());
            // Chunks prepared by the builder itself and by two preparers of its own (as if on
            // other threads), by turns: their origins must still be shared, one per owner.
            let mut preparers = [builder.preparer(), builder.preparer()];
            let mut buffer = LeaseChunk::default();
            for (i, part) in shuffled.chunks(chunk).enumerate() {
                for r in part {
                    buffer.push(r.into());
                }
                match (order >> (i % 64)) % 4 {
                    0 | 1 => builder.chunk(&buffer),
                    way => builder.prepared(preparers[way as usize - 2].prepare(&buffer)),
                }
                buffer.clear();
            }
            drop(preparers);
            let mut streamed = builder.finish(Snapshot { leases: Vec::new(), ..snapshot });

            assert_same(&whole, &streamed, &ids, now);
            // Then through every deadline: the same leases expire, in the same order, with
            // the same effects (lock-delays, hold ends and all).
            for step in 1..=6 {
                let later = at(10_000 + step * 1_000);
                let (mut fa, mut fb) = (Vec::new(), Vec::new());
                prop_assert_eq!(whole.advance(later, &mut fa), streamed.advance(later, &mut fb));
                prop_assert_eq!(fa, fb);
                assert_same(&whole, &streamed, &ids, later);
            }
        }
    }

    #[test]
    fn a_lease_older_than_its_resources_newest_takes_its_place_and_not_its_size() {
        let mut builder = RestoreBuilder::new(TableConfig::default(), at(0));
        let (mut newer, mut older) = (record(9, 0), record(4, 0));
        newer.slots = 3;
        older.slots = 2;
        builder.lease((&newer).into());
        builder.lease((&older).into());
        let table = builder.finish(Snapshot::default());
        let view = table.resource("r/0", at(0));
        assert_eq!(view.slots, 3);
        let order: Vec<LeaseId> = view.holders.iter().map(|h| h.lease).collect();
        assert_eq!(order, [LeaseId(4), LeaseId(9)]);
        assert_eq!(table.fence_high_water(), 9);
    }
}
