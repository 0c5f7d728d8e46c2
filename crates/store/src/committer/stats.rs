//! Commit counters, kept in atomics so that reading them never waits on the commit thread.
//!
//! Relaxed ordering is enough: each counter is read on its own for metrics, and no decision is
//! made from a combination of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time copy of the committer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Successful `Store::commit` calls (one per group of non-empty jobs).
    pub batches: u64,
    /// Mutations made durable.
    pub mutations: u64,
    /// Jobs acknowledged `Ok` (empty barrier jobs included).
    pub jobs: u64,
    /// Duration of the latest successful `Store::commit`, in microseconds.
    pub last_commit_micros: u64,
    /// Sum of the durations of every successful `Store::commit`, in microseconds.
    pub total_commit_micros: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsCell {
    batches: AtomicU64,
    mutations: AtomicU64,
    jobs: AtomicU64,
    last_commit_micros: AtomicU64,
    total_commit_micros: AtomicU64,
}

impl StatsCell {
    pub(crate) fn record_commit(&self, mutations: u64, micros: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.mutations.fetch_add(mutations, Ordering::Relaxed);
        self.last_commit_micros.store(micros, Ordering::Relaxed);
        self.total_commit_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn record_jobs(&self, jobs: u64) {
        self.jobs.fetch_add(jobs, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            batches: self.batches.load(Ordering::Relaxed),
            mutations: self.mutations.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            last_commit_micros: self.last_commit_micros.load(Ordering::Relaxed),
            total_commit_micros: self.total_commit_micros.load(Ordering::Relaxed),
        }
    }
}
