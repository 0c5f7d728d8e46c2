//! An in-memory file system that can lose power.
//!
//! Model: every file has its current bytes and the bytes it had at its last fsync; every name
//! has its current file and the file it had at its directory's last fsync. Losing power keeps
//! only the durable names, each pointing at its file's synced bytes — or, when the file was
//! written since, at a torn half of the new bytes (the worst a real disk may leave). Renames,
//! new names and removals are durable only after the directory's fsync.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Fs, parent};

#[derive(Debug, Default)]
struct File {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<u64, File>,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    next_id: u64,
    /// Mutating operations done so far.
    ops: u64,
    /// Power is lost after this many more mutating operations.
    fail_after: Option<u64>,
    dead: bool,
}

/// [`Fs`] in memory, shared by its clones, with power loss ([`MemFs::fail_after`],
/// [`MemFs::power_cycle`]).
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    inner: Arc<Mutex<Inner>>,
}

fn lost() -> io::Error {
    io::Error::other("power lost")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock already failed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mutating operations so far (to enumerate crash points).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Loses power after `n` more mutating operations: from then on every operation fails
    /// until [`MemFs::power_cycle`].
    pub fn fail_after(&self, n: u64) {
        let mut i = self.lock();
        i.fail_after = Some(n);
        if n == 0 {
            i.dead = true;
        }
    }

    /// Whether power was lost.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Loses power now and boots again: only what was durable is left.
    pub fn power_cycle(&self) {
        let mut i = self.lock();
        let durable = i.durable.clone();
        let mut files = HashMap::new();
        for id in durable.values() {
            if let Some(f) = i.files.get(id) {
                let bytes = if f.data == f.synced {
                    f.synced.clone()
                } else {
                    f.data[..f.data.len() / 2].to_vec()
                };
                files.insert(
                    *id,
                    File {
                        data: bytes.clone(),
                        synced: bytes,
                    },
                );
            }
        }
        i.files = files;
        i.live = durable;
        i.fail_after = None;
        i.dead = false;
    }

    /// The bytes at `path` now, if any.
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        let i = self.lock();
        i.live
            .get(path)
            .and_then(|id| i.files.get(id))
            .map(|f| f.data.clone())
    }

    /// Puts a durable file at `path` (test setup).
    pub fn put_durable(&self, path: &Path, bytes: &[u8]) {
        let mut i = self.lock();
        let id = i.next_id;
        i.next_id += 1;
        i.files.insert(
            id,
            File {
                data: bytes.to_vec(),
                synced: bytes.to_vec(),
            },
        );
        i.live.insert(path.to_path_buf(), id);
        i.durable.insert(path.to_path_buf(), id);
    }

    /// Every path that exists now.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().live.keys().cloned().collect()
    }

    /// Counts a mutating operation, failing once power is lost.
    fn step(&self) -> io::Result<MutexGuard<'_, Inner>> {
        let mut i = self.lock();
        if i.dead {
            return Err(lost());
        }
        if let Some(n) = i.fail_after {
            if n == 0 {
                i.dead = true;
                return Err(lost());
            }
            i.fail_after = Some(n - 1);
        }
        i.ops += 1;
        Ok(i)
    }

    fn read_guard(&self) -> io::Result<MutexGuard<'_, Inner>> {
        let i = self.lock();
        if i.dead { Err(lost()) } else { Ok(i) }
    }
}

impl Inner {
    fn create(&mut self, path: &Path, bytes: Vec<u8>) {
        if let Some(id) = self.live.get(path).copied()
            && let Some(f) = self.files.get_mut(&id)
        {
            f.data = bytes;
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(
            id,
            File {
                data: bytes,
                synced: Vec::new(),
            },
        );
        self.live.insert(path.to_path_buf(), id);
    }
}

impl Fs for MemFs {
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.step()?.create(path, bytes.to_vec());
        Ok(())
    }

    fn fsync(&self, path: &Path) -> io::Result<()> {
        let mut i = self.step()?;
        let id = *i.live.get(path).ok_or_else(|| not_found(path))?;
        if let Some(f) = i.files.get_mut(&id) {
            f.synced = f.data.clone();
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut i = self.step()?;
        let id = i.live.remove(from).ok_or_else(|| not_found(from))?;
        i.live.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut i = self.step()?;
        let in_dir = |p: &Path| parent(p) == dir;
        i.durable.retain(|p, _| !in_dir(p));
        let live: Vec<(PathBuf, u64)> = i
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        i.durable.extend(live);
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let i = self.read_guard()?;
        Ok(i.live
            .get(path)
            .and_then(|id| i.files.get(id))
            .map(|f| f.data.clone()))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.read_guard()?.live.contains_key(path))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.step()?.live.remove(path);
        Ok(())
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut i = self.step()?;
        let bytes = i
            .live
            .get(from)
            .and_then(|id| i.files.get(id))
            .map(|f| f.data.clone())
            .ok_or_else(|| not_found(from))?;
        i.create(to, bytes);
        Ok(())
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        self.read_guard().map(|_| ())
    }
}
