//! Where leases come from: the index of leases by node and boot id, which is also where the
//! parts of an owner that many leases share are kept once.
//!
//! The index answers "which leases were granted under another boot of this node?" (ghosts, see
//! `ghosts`) and "which leases does this node's probe check?". It has an entry per node and boot
//! id for as long as a lease of that boot lives — so it is the natural place to intern what the
//! leases of one node and boot have in common: a fleet runs many locks per host, and a million
//! leases would otherwise carry a million copies of a few thousand node names, boot ids and
//! user names (four strings per lease, most of a lease's memory). A lease keeps one pointer to
//! its [`Origin`] and only its own purpose, pid and start time; the public [`Owner`] is
//! rebuilt when a view asks for it.
//!
//! [`Owner`]: crate::owner::Owner

use std::sync::Arc;

use super::{LockTable, Map, Set};
use crate::ids::LeaseId;
use crate::owner::Owner;

/// The node, boot id, PID namespace and user of a lease's owner: shared by every lease granted
/// to that user in that namespace on that node under that boot.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Origin {
    pub(super) node: Arc<str>,
    pub(super) boot_id: Arc<str>,
    /// See [`Owner::pid_ns`](crate::owner::Owner::pid_ns): `None` when the owner sent none.
    pub(super) pid_ns: Option<Box<str>>,
    pub(super) user: Box<str>,
}

impl Origin {
    fn is(&self, user: &str, pid_ns: Option<&str>) -> bool {
        *self.user == *user && self.pid_ns.as_deref() == pid_ns
    }
}

/// The leases granted on one node under one boot id, and their origins.
#[derive(Debug, Default)]
pub(super) struct BootLeases {
    pub(super) leases: Set<LeaseId>,
    /// One per user and PID namespace with a lease here (nearly always one), with how many
    /// leases share it; it goes with its last lease.
    origins: Vec<(Arc<Origin>, usize)>,
}

/// The leases held from one node, by the boot id each was granted under. Usually one boot id;
/// more than one when a waiter queued before a reboot was granted after it (a ghost grant).
pub(super) type NodeLeases = Map<Arc<str>, BootLeases>;

impl BootLeases {
    /// Counts `count` more leases of `user` in `pid_ns` here and returns their origin: the one
    /// in use, or `new` (called with the node and boot names to share) when there is none yet.
    fn join(
        &mut self,
        user: &str,
        pid_ns: Option<&str>,
        count: usize,
        new: impl FnOnce() -> Arc<Origin>,
    ) -> Arc<Origin> {
        if let Some((origin, leases)) = self.origins.iter_mut().find(|(o, _)| o.is(user, pid_ns)) {
            *leases += count;
            return Arc::clone(origin);
        }
        let origin = new();
        self.origins.push((Arc::clone(&origin), count));
        origin
    }
}

impl LockTable {
    /// Indexes lease `id` of `owner` under its node and boot id, and returns the origin it
    /// shares with the other leases of its user and PID namespace there.
    pub(super) fn index_lease(&mut self, id: LeaseId, owner: &Owner) -> Arc<Origin> {
        let (node, boot_id, user) = (&*owner.node, &*owner.boot_id, &*owner.user);
        let pid_ns = owner.pid_ns.as_deref();
        // Looked up before inserting: `entry` would need owned names every time, and nearly
        // every lease joins a node and boot that already has some.
        if let Some(boot) = self.nodes.get_mut(node).and_then(|n| n.get_mut(boot_id)) {
            if let Some((first, _)) = boot.origins.first() {
                let (node, boot_id) = (Arc::clone(&first.node), Arc::clone(&first.boot_id));
                boot.leases.insert(id);
                return boot.join(user, pid_ns, 1, || origin(node, boot_id, pid_ns, user));
            }
        }
        let node: Arc<str> = self
            .nodes
            .get_key_value(node)
            .map_or_else(|| Arc::from(node), |(key, _)| Arc::clone(key));
        let known = self.nodes.entry(Arc::clone(&node)).or_default();
        let boot_id: Arc<str> = known
            .get_key_value(boot_id)
            .map_or_else(|| Arc::from(boot_id), |(key, _)| Arc::clone(key));
        let boot = known.entry(Arc::clone(&boot_id)).or_default();
        boot.leases.insert(id);
        boot.join(user, pid_ns, 1, || origin(node, boot_id, pid_ns, user))
    }

    /// Indexes leases `ids`, all of `origin` (made elsewhere: see `restore`), and returns the
    /// origin they must share: `origin`, or an equal one already in use.
    pub(super) fn index_leases(&mut self, origin: &Arc<Origin>, ids: &[LeaseId]) -> Arc<Origin> {
        let boot = self
            .nodes
            .entry(Arc::clone(&origin.node))
            .or_default()
            .entry(Arc::clone(&origin.boot_id))
            .or_default();
        boot.leases.extend(ids.iter().copied());
        boot.join(&origin.user, origin.pid_ns.as_deref(), ids.len(), || {
            Arc::clone(origin)
        })
    }

    /// Removes lease `id` (of `origin`) from the index, and with it whatever only it used:
    /// its origin, its boot's entry, its node's entry.
    pub(super) fn unindex_lease(&mut self, id: LeaseId, origin: &Arc<Origin>) {
        let Some(node) = self.nodes.get_mut(&*origin.node) else {
            return;
        };
        if let Some(boot) = node.get_mut(&*origin.boot_id) {
            if boot.leases.remove(&id) {
                if let Some(at) = boot
                    .origins
                    .iter()
                    .position(|(o, _)| Arc::ptr_eq(o, origin))
                {
                    boot.origins[at].1 -= 1;
                    if boot.origins[at].1 == 0 {
                        boot.origins.swap_remove(at);
                    }
                }
            }
            if boot.leases.is_empty() {
                node.remove(&*origin.boot_id);
            }
        }
        if node.is_empty() {
            self.nodes.remove(&*origin.node);
        }
    }
}

impl LockTable {
    /// Panics unless the index and the leases agree: every live lease is indexed under its
    /// origin's node and boot, shares the one origin there for its user, and each origin counts
    /// exactly its leases.
    #[cfg(test)]
    pub(super) fn check_origins(&self) {
        let mut indexed = 0;
        for (node, boots) in &self.nodes {
            for (boot_id, boot) in boots {
                assert!(!boot.leases.is_empty(), "an empty boot entry stays behind");
                let mut counted = 0;
                for (i, (origin, count)) in boot.origins.iter().enumerate() {
                    assert!(*origin.node == **node && *origin.boot_id == **boot_id);
                    assert!(
                        boot.origins[..i]
                            .iter()
                            .all(|(o, _)| !o.is(&origin.user, origin.pid_ns.as_deref()))
                    );
                    let leases = boot
                        .leases
                        .iter()
                        .filter(|id| {
                            self.leases
                                .get(id)
                                .is_some_and(|l| Arc::ptr_eq(&l.origin, origin))
                        })
                        .count();
                    assert_eq!(leases, *count, "origin {origin:?} counts its leases");
                    counted += count;
                }
                assert_eq!(
                    counted,
                    boot.leases.len(),
                    "every lease has its origin here"
                );
                indexed += boot.leases.len();
            }
        }
        assert_eq!(indexed, self.leases.len(), "every live lease is indexed");
    }
}

fn origin(node: Arc<str>, boot_id: Arc<str>, pid_ns: Option<&str>, user: &str) -> Arc<Origin> {
    Arc::new(Origin {
        node,
        boot_id,
        pid_ns: pid_ns.map(Box::from),
        user: user.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LeaseRecord, Snapshot};
    use crate::table::{Acquire, AcquireOutcome, TableConfig, Trusted};
    use crate::time::Now;
    use crate::{Effect, FenceToken};

    fn owner(node: &str, boot_id: &str, user: &str, pid: u32) -> Owner {
        Owner {
            node: node.into(),
            pid,
            start_time: 100 + u64::from(pid),
            boot_id: boot_id.into(),
            user: user.into(),
            purpose: format!("purpose of {pid}"),
            pid_ns: Some("pid:[4026531836]".into()),
        }
    }

    fn acquire(table: &mut LockTable, resource: &str, owner: &Owner) -> LeaseId {
        let req = Acquire {
            resource: resource.into(),
            owner: owner.clone(),
            ttl_ms: 10_000,
            slots: 1,
            wait_ms: 0,
            lock_delay_ms: 0,
            trusted: Trusted {
                // Several boots of one node side by side, without reclaiming each other.
                synthetic_owner: true,
                ..Trusted::NONE
            },
        };
        match table.acquire(req, Now::at(0, 0), &mut Vec::new()) {
            Ok(AcquireOutcome::Granted(view)) => {
                assert_eq!(&view.owner, owner);
                view.lease
            }
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    fn origin(table: &LockTable, id: LeaseId) -> Arc<Origin> {
        let lease = table.leases.get(&id).expect("a live lease");
        Arc::clone(&lease.origin)
    }

    fn origins(table: &LockTable) -> usize {
        table
            .nodes
            .values()
            .flat_map(|n| n.values())
            .map(|b| b.origins.len())
            .sum()
    }

    /// Every live lease shows exactly the owner it was granted to.
    fn assert_owners(table: &LockTable, expected: &[(LeaseId, &Owner)]) {
        table.check_origins();
        for (id, owner) in expected {
            let view = table.lease(*id).expect("a live lease");
            assert_eq!(&view.owner, *owner, "lease {id}");
        }
    }

    #[test]
    fn leases_of_one_node_boot_and_user_share_an_origin_and_keep_their_own_process() {
        let mut table = LockTable::new(TableConfig::default());
        let a = owner("node-1", "boot-a", "svc", 1);
        let b = owner("node-1", "boot-a", "svc", 2);
        let (la, lb) = (
            acquire(&mut table, "r/1", &a),
            acquire(&mut table, "r/2", &b),
        );
        assert!(Arc::ptr_eq(&origin(&table, la), &origin(&table, lb)));
        assert_owners(&table, &[(la, &a), (lb, &b)]);
        assert_eq!(origins(&table), 1);
    }

    #[test]
    fn different_boots_nodes_and_users_never_share_an_origin() {
        let mut table = LockTable::new(TableConfig::default());
        let owners = [
            owner("node-1", "boot-a", "svc", 1),
            owner("node-1", "boot-b", "svc", 1),
            // The same boot id string on another node is another boot.
            owner("node-2", "boot-a", "svc", 1),
            owner("node-1", "boot-a", "root", 1),
        ];
        let ids: Vec<LeaseId> = owners
            .iter()
            .enumerate()
            .map(|(i, o)| acquire(&mut table, &format!("r/{i}"), o))
            .collect();
        for (i, x) in ids.iter().enumerate() {
            for y in &ids[i + 1..] {
                assert!(!Arc::ptr_eq(&origin(&table, *x), &origin(&table, *y)));
            }
        }
        let expected: Vec<_> = ids.iter().copied().zip(owners.iter()).collect();
        assert_owners(&table, &expected);
        assert_eq!(origins(&table), 4);
        // The node's leases under boot-b are not node-2's or boot-a's.
        let local = table.local_leases("node-1", "boot-b", "pid:[4026531836]");
        assert_eq!(local.iter().map(|d| d.lease).collect::<Vec<_>>(), [ids[1]]);
    }

    #[test]
    fn a_reboot_reclaims_only_the_old_boots_leases_of_that_node() {
        let mut table = LockTable::new(TableConfig::default());
        let old = owner("node-1", "boot-a", "svc", 1);
        let other_node = owner("node-2", "boot-a", "svc", 1);
        let (lo, ln) = (
            acquire(&mut table, "r/1", &old),
            acquire(&mut table, "r/2", &other_node),
        );
        let mut fx = Vec::new();
        assert_eq!(
            table.observe_boot("node-1", "boot-b", Now::at(1, 1), &mut fx),
            vec![lo]
        );
        assert!(table.lease(lo).is_none());
        assert!(fx.iter().any(|e| matches!(e,
            Effect::Ended { lease, owner, .. } if *lease == lo && *owner == old)));
        assert_owners(&table, &[(ln, &other_node)]);
        // The old boot's origin went with its last lease.
        assert_eq!(origins(&table), 1);
        assert!(!table.nodes.contains_key("node-1"));
    }

    /// Issue 15 item 3: the same node, boot and user in two PID namespaces are two origins, and
    /// a probe in one namespace is shown only that namespace's leases.
    #[test]
    fn pid_namespaces_never_share_an_origin_and_probes_see_only_their_own() {
        let mut table = LockTable::new(TableConfig::default());
        let host = owner("node-1", "boot-a", "svc", 7);
        let pod = Owner {
            pid_ns: Some("pid:[4026532175]".into()),
            ..owner("node-1", "boot-a", "svc", 7)
        };
        let unknown = Owner {
            pid_ns: None,
            ..owner("node-1", "boot-a", "svc", 8)
        };
        let ids = [
            acquire(&mut table, "r/host", &host),
            acquire(&mut table, "r/pod", &pod),
            acquire(&mut table, "r/unknown", &unknown),
        ];
        // Two holders claim pid 7: both are granted, being different processes.
        assert_ne!(ids[0], ids[1]);
        assert!(!Arc::ptr_eq(
            &origin(&table, ids[0]),
            &origin(&table, ids[1])
        ));
        assert_owners(
            &table,
            &[(ids[0], &host), (ids[1], &pod), (ids[2], &unknown)],
        );
        assert_eq!(origins(&table), 3);
        let seen = |ns| {
            table
                .local_leases("node-1", "boot-a", ns)
                .iter()
                .map(|d| d.lease)
                .collect::<Vec<_>>()
        };
        assert_eq!(seen("pid:[4026531836]"), [ids[0]]);
        assert_eq!(seen("pid:[4026532175]"), [ids[1]]);
        // A holder with no namespace recorded is nobody's to probe.
        assert_eq!(seen("pid:[1]"), []);
    }

    #[test]
    fn an_origin_goes_with_its_last_lease_and_a_new_user_gets_its_own() {
        let mut table = LockTable::new(TableConfig::default());
        let svc = owner("node-1", "boot-a", "svc", 1);
        let root = owner("node-1", "boot-a", "root", 2);
        let (ls, lr) = (
            acquire(&mut table, "r/1", &svc),
            acquire(&mut table, "r/2", &root),
        );
        let mut fx = Vec::new();
        table
            .release(ls, None, Now::at(1, 1), &mut fx)
            .expect("release");
        assert_eq!(origins(&table), 1);
        assert_owners(&table, &[(lr, &root)]);
        let again = owner("node-1", "boot-a", "svc", 3);
        let la = acquire(&mut table, "r/3", &again);
        assert_owners(&table, &[(lr, &root), (la, &again)]);
        assert_eq!(origins(&table), 2);
        for id in [lr, la] {
            table
                .release(id, None, Now::at(2, 2), &mut fx)
                .expect("release");
        }
        assert!(table.nodes.is_empty());
    }

    #[test]
    fn a_restore_keeps_every_owner_apart() {
        let owners = [
            owner("node-1", "boot-a", "svc", 1),
            owner("node-1", "boot-a", "svc", 2),
            owner("node-1", "boot-b", "svc", 1),
            owner("node-2", "boot-a", "svc", 1),
            owner("node-2", "boot-a", "ops", 1),
        ];
        let leases = owners
            .iter()
            .enumerate()
            .map(|(i, o)| LeaseRecord {
                lease: LeaseId(i as u64 + 1),
                resource: format!("r/{i}"),
                owner: o.clone(),
                token: FenceToken(i as u64 + 1),
                ttl_ms: 10_000,
                slots: 1,
                granted_at_ms: 5,
                lock_delay_ms: 0,
            })
            .collect();
        let snapshot = Snapshot {
            leases,
            ..Snapshot::default()
        };
        let table = LockTable::restore(TableConfig::default(), snapshot, Now::at(0, 0));
        let expected: Vec<_> = (1..=5).map(LeaseId).zip(owners.iter()).collect();
        assert_owners(&table, &expected);
        assert_eq!(origins(&table), 4);
        assert!(Arc::ptr_eq(
            &origin(&table, LeaseId(1)),
            &origin(&table, LeaseId(2))
        ));
    }

    #[test]
    fn a_lease_stays_small() {
        assert!(std::mem::size_of::<super::super::Lease>() <= 128);
    }
}
