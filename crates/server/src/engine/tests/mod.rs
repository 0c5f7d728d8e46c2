//! The driver's tests: a real engine over the real embedded store, with slow or failing commits
//! injected where a test needs a window or a fault.

mod callers;
mod sequence;
mod storage;
mod watches;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locksmith_core::{
    Acquire, AuditRecord, LockTable, Mutation, Owner, ResourceView, Snapshot, TableConfig, Trusted,
};
use locksmith_store::{AuditQuery, Committer, EmbeddedStore, Store, StoreError};

use super::{Engine, State, lock};
use crate::clock::SystemClock;

impl Engine {
    /// One resource as the table has it now, durable or not: for tests that watch a grant
    /// on its way to disk.
    pub(super) fn peek(&self, name: &str) -> ResourceView {
        lock(&self.inner.state)
            .locks
            .resource(name, self.inner.clock.now())
    }
}

/// The real embedded store, with every commit taking at least `delay` more: a window in
/// which a caller can go away while its batch is on its way to disk.
struct SlowCommits {
    store: EmbeddedStore,
    delay: Duration,
}

impl Store for SlowCommits {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.store.load()
    }
    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        std::thread::sleep(self.delay);
        self.store.commit(batch)
    }
    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.audit(query)
    }
    fn describe(&self) -> String {
        format!("slow {}", self.store.describe())
    }
}

/// Faults a [`Faulty`] store is told to make, shared with the test.
#[derive(Default)]
pub(super) struct Faults {
    /// The next commit fails before writing anything (a full disk, a dead device).
    pub(super) fail_next: std::sync::atomic::AtomicBool,
    /// The next commit is made — durable — and then the store fails (its apply, its
    /// segment switch).
    pub(super) fail_after_next: std::sync::atomic::AtomicBool,
    /// While set, every commit waits here until the test lets it go.
    pub(super) gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// The real embedded store, with failures injected on demand.
struct Faulty {
    store: EmbeddedStore,
    faults: Arc<Faults>,
    failed: Option<String>,
}

impl Store for Faulty {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.store.load()
    }
    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if let Some(gate) = lock(&self.faults.gate).as_ref() {
            let _ = gate.recv_timeout(Duration::from_secs(10));
        }
        if let Some(cause) = &self.failed {
            return Err(StoreError::Failed(cause.clone()));
        }
        if self.faults.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Io(
                "append to the log: No space left on device (injected)".into(),
            ));
        }
        self.store.commit(batch)?;
        if self.faults.fail_after_next.swap(false, Ordering::SeqCst) {
            self.failed = Some("apply: No space left on device (injected)".into());
        }
        Ok(())
    }
    fn failure(&self) -> Option<StoreError> {
        self.failed.clone().map(StoreError::Failed)
    }
    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.audit(query)
    }
    fn describe(&self) -> String {
        format!("faulty {}", self.store.describe())
    }
}

/// An engine over the embedded store in `dir`, with the handle that injects its faults.
pub(super) fn engine_with_faults(dir: &std::path::Path) -> (Engine, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let engine = engine_over(Faulty {
        store: EmbeddedStore::open(dir).expect("open"),
        faults: Arc::clone(&faults),
        failed: None,
    });
    (engine, faults)
}

/// A server's restart on `dir`: the table recovered from what the disk has.
pub(super) async fn restarted(dir: &std::path::Path) -> Engine {
    let identity = crate::NodeIdentity {
        node: "server-node".into(),
        boot_id: "server-boot".into(),
        pid_ns: None,
    };
    let store = EmbeddedStore::open(dir).expect("reopen");
    crate::recover(Box::new(store), &identity, SystemClock::shared())
        .await
        .expect("recover")
}

/// Every token and lease id an answer shows.
pub(super) fn tokens_in(view: &ResourceView) -> Vec<u64> {
    view.holders
        .iter()
        .flat_map(|h| [h.token.0, h.lease.0])
        .collect()
}

/// An engine with an empty table over `store` (loaded, as a server boots).
pub(super) fn engine_over(mut store: impl Store + 'static) -> Engine {
    store.load().expect("load");
    let committer = Committer::spawn(Box::new(store)).expect("committer");
    Engine::new(
        State::new(LockTable::new(TableConfig::default()), 0),
        committer,
        SystemClock::shared(),
    )
}

/// An engine over the embedded store in `dir` whose every commit takes 200 ms more: a
/// caller can go away while its batch is on its way to disk.
pub(super) fn engine_with_slow_commits(dir: &std::path::Path) -> Engine {
    engine_over(SlowCommits {
        store: EmbeddedStore::open(dir).expect("open"),
        delay: Duration::from_millis(200),
    })
}

pub(super) fn acquire(resource: &str, pid: u32, wait_ms: u64) -> Acquire {
    Acquire {
        resource: resource.to_string(),
        owner: Owner {
            node: "node-1".into(),
            pid,
            start_time: 1,
            boot_id: "boot-1".into(),
            user: "ops".into(),
            purpose: format!("test holder {pid}"),
            pid_ns: None,
        },
        ttl_ms: 60_000,
        slots: 1,
        wait_ms,
        lock_delay_ms: 0,
        trusted: Trusted::NONE,
    }
}
