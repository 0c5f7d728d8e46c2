//! # locksmith-store
//!
//! Durable storage for the lock table: the [`Store`] trait and its durability contract, the
//! embedded [`redb`] backend (the default: one file, no setup), the group-commit [`Committer`]
//! that lets concurrent requests share one fsync, and a conformance suite
//! ([`conformance`], behind the `conformance` feature) that every backend must pass.
//!
//! What it is not: a lock table. It stores what `locksmith-core` tells it to and hands it back
//! at boot; it makes no decisions about leases.

mod committer;
#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
mod error;

pub use committer::{CommitStats, CommitTicket, Committer};
pub use embedded::EmbeddedStore;
pub use error::StoreError;

use std::path::Path;

use locksmith_core::{Mutation, Snapshot};

/// Opens the embedded store in `dir` (created if missing), loads it, and starts its committer:
/// everything a server needs at boot, in the order the [`Store`] contract requires.
pub fn open_embedded(dir: &Path) -> Result<(Snapshot, Committer), StoreError> {
    let mut store = EmbeddedStore::open(dir)?;
    let snapshot = store.load()?;
    let committer = Committer::spawn(Box::new(store))?;
    Ok((snapshot, committer))
}

/// A durable home for the lock table's state.
///
/// # Durability contract
///
/// - [`Store::commit`] applies the whole batch atomically — after a crash at any instant, either
///   every mutation of the batch is visible to [`Store::load`] or none is — and in order
///   (a later mutation of the same lease wins).
/// - When `commit` returns `Ok`, the batch is durable: it survives `kill -9` of the process and
///   the loss of power of the machine (the data is fsynced to stable storage).
/// - Batches are durable in the order they were committed: if batch N is visible after a crash,
///   every batch before N is too.
/// - The fence high-water mark never goes backwards: `load` returns the maximum
///   `FenceHighWater` ever committed (and at least every stored lease's token).
/// - After `commit` returns `Err`, the store's durable state is unknown; the caller must stop
///   writing (the [`Committer`] latches the failure and refuses all later batches) rather than
///   guess. A new process must `load` to learn what survived.
/// - `load` is called once, before any `commit`, and returns exactly the durable state.
pub trait Store: Send + 'static {
    /// Reads the durable state.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Applies `batch` atomically and durably (see the trait docs).
    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError>;

    /// A short name for logs and health output, e.g. `embedded:/var/lib/locksmith`.
    fn describe(&self) -> String;
}
