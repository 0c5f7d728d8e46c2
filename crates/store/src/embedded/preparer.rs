//! The log's next segment, made ahead of need on a helper thread ([`wal::prepare`]), so that
//! the commit that fills a segment only renames the next one into place.
//!
//! The switch normally finds the next segment ready (it was started when the current one
//! was, and a segment takes seconds to fill); if it is still being written, the switch waits
//! for it, as a commit waits for its own write. But a preparation can fail for passing
//! reasons — the process is out of file descriptors, the disk is full until someone frees
//! space — and such a failure must not fail the store: no commit is lost by it. So the helper
//! retries, backing off, until it succeeds or the store closes; while it has failed, the store
//! keeps appending to its current segment past its size (see `EmbeddedStore::rotate`) and
//! switches once the next one is ready.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::priority;
use super::wal::{self, Prepared};

/// The first wait before a failed preparation is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A segment being prepared on a helper thread.
#[derive(Debug)]
pub(super) struct Preparer {
    dir: PathBuf,
    generation: u64,
    capacity: u64,
    /// `None` while no thread runs: the OS refused one (tried again by
    /// [`take_ready`](Self::take_ready)), or it was stopped.
    handle: Option<JoinHandle<Option<Prepared>>>,
    shared: Arc<Shared>,
}

/// What the helper and the store share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of `state`.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The store is closing: stop retrying.
    stopped: bool,
    /// The helper thread has ended (prepared the segment, or stopped, or panicked).
    exited: bool,
    /// Failed tries so far.
    failures: u64,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state());
        self.changed.notify_all();
    }

    /// Waits `timeout`, or less if stopped meanwhile; true if stopped.
    fn wait_unless_stopped(&self, timeout: Duration) -> bool {
        let (state, _) = self
            .changed
            .wait_timeout_while(self.state(), timeout, |state| !state.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        state.stopped
    }
}

impl Preparer {
    /// Starts preparing segment `generation` of `capacity` bytes in `dir`.
    pub(super) fn start(dir: &Path, generation: u64, capacity: u64) -> Self {
        let mut preparer = Self {
            dir: dir.to_path_buf(),
            generation,
            capacity,
            handle: None,
            shared: Arc::default(),
        };
        preparer.spawn();
        preparer
    }

    fn spawn(&mut self) {
        let (dir, generation, capacity) = (self.dir.clone(), self.generation, self.capacity);
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name("locksmith-segment".to_owned())
            .spawn(move || prepare_until_done(&dir, generation, capacity, &shared));
        match spawned {
            Ok(handle) => self.handle = Some(handle),
            Err(error) => {
                self.shared.update(|state| state.failures += 1);
                tracing::warn!(%error, generation, "cannot start the log segment preparer; trying again at the next commit");
            }
        }
    }

    /// The generation it prepares.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The prepared segment: at once if it is ready; after waiting for it if its first try is
    /// still under way; `None` (at once) if a try has failed and the helper is retrying.
    pub(super) fn take_ready(&mut self) -> Option<Prepared> {
        let Some(handle) = self.handle.take() else {
            if !self.shared.state().stopped {
                self.spawn();
            }
            return None;
        };
        let waited = self
            .shared
            .changed
            .wait_while(self.shared.state(), |state| {
                !state.exited && state.failures == 0
            })
            .unwrap_or_else(PoisonError::into_inner);
        if !waited.exited {
            // A try failed and the helper is retrying: do not wait for it.
            drop(waited);
            self.handle = Some(handle);
            return None;
        }
        drop(waited);
        match handle.join() {
            Ok(Some(prepared)) => Some(prepared),
            // Stopped, or the helper panicked: start again (unless stopped).
            Ok(None) | Err(_) => {
                if !self.shared.state().stopped {
                    self.spawn();
                }
                None
            }
        }
    }

    /// Waits until the helper thread has ended (prepared the segment, usually). For tests.
    #[cfg(test)]
    pub(super) fn wait_exited(&self) {
        let state = self.shared.state();
        let _exited = self
            .shared
            .changed
            .wait_while(state, |state| !state.exited)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Stops the helper (a preparation under way finishes first) and waits for it. Idempotent.
    pub(super) fn stop(&mut self) {
        self.shared.update(|state| state.stopped = true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The helper thread: prepares the segment, retrying after each failure, until it is done or
/// stopped.
fn prepare_until_done(
    dir: &Path,
    generation: u64,
    capacity: u64,
    shared: &Shared,
) -> Option<Prepared> {
    /// Says the thread ended, however it ends (a panic included), so that no waiter waits on.
    struct Exits<'a>(&'a Shared);
    impl Drop for Exits<'_> {
        fn drop(&mut self) {
            self.0.update(|state| state.exited = true);
        }
    }
    let _exits = Exits(shared);
    priority::run_in_background("segment preparer");
    let mut wait = RETRY_FIRST;
    for attempt in 1u64.. {
        // A try on a disk without room for the segment would fill it to the last byte before
        // failing, and the database's next write could then fail for want of space: wait
        // for room instead.
        let prepared = match super::free_bytes(dir) {
            Some(free) if free < capacity => Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("{free} bytes free, {capacity} needed"),
            )),
            _ => wal::prepare(dir, generation, capacity),
        };
        match prepared {
            Ok(prepared) => {
                if attempt > 1 {
                    tracing::info!(generation, attempt, "the next log segment is prepared");
                }
                return Some(prepared);
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    generation,
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot prepare the next log segment; the log goes on in the current one \
                     until it is prepared"
                );
                shared.update(|state| state.failures += 1);
            }
        }
        if shared.wait_unless_stopped(wait) {
            return None;
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
    None
}
