//! Helpers shared by the integration tests: sample records and a scriptable fake [`Store`].
//!
//! The fake is legitimate here: it tests the committer (grouping, ordering, latching), whose
//! behaviour does not depend on what the store does with the bytes. The store itself is tested
//! for real by the conformance suite and the crash test.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use locksmith_core::{AuditRecord, FenceToken, LeaseId, LeaseRecord, Mutation, Owner, Snapshot};
use locksmith_store::{AuditQuery, Store, StoreError};

/// A complete lease record; `purpose` tells versions apart.
pub fn lease(id: u64, purpose: &str) -> LeaseRecord {
    LeaseRecord {
        lease: LeaseId(id),
        resource: format!("reboot/slot-{id}"),
        owner: Owner {
            node: "node-7".to_owned(),
            pid: 4121,
            start_time: 987_654,
            boot_id: "0b2c5d1e-8f7a-4c3b-9e2d-1a0f6b5c4d3e".to_owned(),
            user: "orchestrator".to_owned(),
            purpose: purpose.to_owned(),
            pid_ns: None,
        },
        token: FenceToken(id),
        ttl_ms: 30_000,
        slots: 1,
        granted_at_ms: 1_700_000_000_000,
        lock_delay_ms: 250,
    }
}

pub fn put(id: u64) -> Mutation {
    Mutation::PutLease(lease(id, "test"))
}

/// What a [`FakeStore`] saw, shared with the test.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Every successful commit's batch, in order.
    pub commits: Arc<Mutex<Vec<Vec<Mutation>>>>,
    /// Every call to `commit`, including failed ones.
    pub calls: Arc<AtomicUsize>,
    /// Set when the store is dropped (the committer closed it).
    pub dropped: Arc<AtomicBool>,
    /// The name of the thread each `commit` call ran on, in order.
    pub threads: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    pub fn commits(&self) -> Vec<Vec<Mutation>> {
        self.commits.lock().expect("probe lock").clone()
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    pub fn threads(&self) -> Vec<String> {
        self.threads.lock().expect("probe lock").clone()
    }
}

/// A store that records commits and can be told to fail, panic, or hold a commit until the
/// test releases it.
#[derive(Debug, Default)]
pub struct FakeStore {
    probe: Probe,
    fail_on_call: Option<usize>,
    refuse_on_call: Option<usize>,
    fail_after_call: Option<usize>,
    /// Set by `fail_after_call`: what `failure()` reports, and why later commits are refused.
    latched: Option<String>,
    panic_on_call: Option<usize>,
    gate: Option<Gate>,
    max_batch: Option<usize>,
    max_bytes: Option<usize>,
    /// Commits of more than this many bytes are refused unwritten as `Invalid`.
    refuse_above_bytes: Option<usize>,
    inline: bool,
}

/// Holds each commit until the test sends a token; reports each commit's start.
#[derive(Debug)]
struct Gate {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// The test's side of a gate.
#[derive(Debug)]
pub struct GateControl {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl GateControl {
    /// Blocks until the store is inside a commit.
    pub fn wait_entered(&self) {
        self.entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the committer should call commit");
    }

    /// Lets one held commit proceed.
    pub fn release_one(&self) {
        self.release.send(()).expect("the store is alive");
    }
}

impl FakeStore {
    pub fn new() -> (Self, Probe) {
        let store = Self::default();
        let probe = store.probe.clone();
        (store, probe)
    }

    /// The `n`-th call to commit (1-based) fails with an injected I/O error.
    pub fn fail_on_call(mut self, n: usize) -> Self {
        self.fail_on_call = Some(n);
        self
    }

    /// The `n`-th call to commit (1-based) is refused unwritten with [`StoreError::Failed`],
    /// as the embedded store refuses one after its apply thread failed.
    pub fn refuse_on_call(mut self, n: usize) -> Self {
        self.refuse_on_call = Some(n);
        self
    }

    /// The `n`-th call to commit (1-based) succeeds — durable — but work after it fails: the
    /// store then reports the failure in `failure()` and refuses every later commit.
    pub fn fail_after_call(mut self, n: usize) -> Self {
        self.fail_after_call = Some(n);
        self
    }

    /// Reports `n` as its [`Store::max_batch_bytes`].
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// Refuses, unwritten and as [`StoreError::Invalid`], any commit of more than `n` bytes (as
    /// `mutation_bytes` counts them): how etcd answers a request above its size limit.
    pub fn refuse_above_bytes(mut self, n: usize) -> Self {
        self.refuse_above_bytes = Some(n);
        self
    }

    /// The `n`-th call to commit (1-based) panics.
    pub fn panic_on_call(mut self, n: usize) -> Self {
        self.panic_on_call = Some(n);
        self
    }

    /// Reports `n` as its [`Store::max_batch_mutations`].
    /// Says [`Store::commits_inline`]: a waiting task may take a commit turn.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = Some(n);
        self
    }

    /// Every commit waits for [`GateControl::release_one`].
    pub fn gated(mut self) -> (Self, GateControl) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        self.gate = Some(Gate {
            entered: entered_tx,
            release: release_rx,
        });
        (
            self,
            GateControl {
                entered: entered_rx,
                release: release_tx,
            },
        )
    }
}

impl Store for FakeStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        let call = self.probe.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        self.probe.threads.lock().expect("probe lock").push(thread);
        if let Some(gate) = &self.gate {
            let _ = gate.entered.send(());
            // A dropped control releases everything.
            let _ = gate.release.recv_timeout(Duration::from_secs(10));
        }
        if self.panic_on_call == Some(call) {
            panic!("injected panic on commit call {call}");
        }
        if let Some(cause) = &self.latched {
            return Err(StoreError::Failed(cause.clone()));
        }
        if self.refuse_on_call == Some(call) {
            return Err(StoreError::Failed(format!(
                "storage I/O failed: injected apply failure before call {call}"
            )));
        }
        if self.fail_on_call == Some(call) {
            return Err(StoreError::Io(format!(
                "injected failure on commit call {call}"
            )));
        }
        let bytes: usize = batch.iter().map(locksmith_store::mutation_bytes).sum();
        if self.refuse_above_bytes.is_some_and(|limit| bytes > limit) {
            return Err(StoreError::Invalid(locksmith_core::InvalidRequest::new(
                "batch",
                format!("is {bytes} bytes"),
            )));
        }
        self.probe
            .commits
            .lock()
            .expect("probe lock")
            .push(batch.to_vec());
        if self.fail_after_call == Some(call) {
            self.latched = Some(format!("injected failure after commit call {call}"));
        }
        Ok(())
    }

    fn failure(&self) -> Option<StoreError> {
        self.latched.clone().map(StoreError::Failed)
    }

    /// Answers with one record per mutation committed so far (seq = its position), so that
    /// tests can see which batches a query was ordered after; fails or panics if the query
    /// asks for resource `fail` or `panic`.
    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        match query.resource.as_deref() {
            Some("fail") => return Err(StoreError::Io("injected query failure".to_owned())),
            Some("panic") => panic!("injected panic in a query"),
            _ => {}
        }
        let committed: usize = self.probe.commits().iter().map(Vec::len).sum();
        Ok((1..=committed as u64)
            .map(|seq| {
                let mut record = AuditRecord::new("fake", locksmith_core::AuditKind::Granted);
                record.seq = seq;
                record
            })
            .collect())
    }

    fn describe(&self) -> String {
        "fake:test".to_owned()
    }

    fn max_batch_mutations(&self) -> Option<usize> {
        self.max_batch
    }

    fn max_batch_bytes(&self) -> Option<usize> {
        self.max_bytes
    }

    fn commits_inline(&self) -> bool {
        self.inline
    }
}

impl Drop for FakeStore {
    fn drop(&mut self) {
        self.probe.dropped.store(true, Ordering::SeqCst);
    }
}
