//! The file system the driver applies through: [`RealFs`] on disk, [`MemFs`] in memory with
//! power loss.

mod mem;
mod real;

use std::io;
use std::path::Path;

pub use mem::MemFs;
pub use real::RealFs;

/// File operations, each one system call's worth, so a test can lose power between any two.
///
/// Durability contract (what [`RealFs`] gets from the kernel and [`MemFs`] models): a file's
/// bytes survive a crash once the file was fsynced; a new name, a rename or a removal survives
/// once its directory was fsynced. A rename is atomic: the name points at the old file or the
/// new one, whole.
pub trait Fs {
    /// Creates or truncates `path` and writes `bytes` (not durable yet).
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Makes `path`'s bytes durable.
    fn fsync(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` over `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable.
    fn fsync_dir(&self, dir: &Path) -> io::Result<()>;
    /// `path`'s bytes, `None` when it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Removes `path`; absent is fine.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Copies `from` to `to` (created or truncated; not durable yet).
    fn copy(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// The directory of `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` so that after a crash at any point it holds the old bytes or
/// the new ones, whole: write `path.tmp`, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_of(path);
    fs.write(&tmp, bytes)?;
    fs.fsync(&tmp)?;
    fs.rename(&tmp, path)?;
    fs.fsync_dir(parent(path))
}

/// `path` with `.tmp` appended to its file name.
pub fn tmp_of(path: &Path) -> std::path::PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}
