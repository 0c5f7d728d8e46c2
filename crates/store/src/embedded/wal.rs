//! The write-ahead log: numbered segment files `wal-<generation>.log` of checksummed frames, one
//! frame per committed batch.
//!
//! A frame is a 16-byte header — payload length (`u32`), CRC-32 of the rest (`u32`), batch
//! sequence number (`u64`), all little-endian — followed by the payload: the batch's mutations
//! in the binary form of [`crate::codec::encode_batch_into`] (older logs hold JSON, which still
//! replays). A commit appends one frame with one `write` and makes it durable with one
//! `fdatasync`: a sequential append instead of the several pages a B-tree commit writes.
//!
//! A segment is **preallocated**: created at its full size filled with zeros and synced before
//! the first append (ahead of time, by [`prepare`], off the commit path). Appending then
//! overwrites allocated blocks without changing the file's size, so `fdatasync` has no metadata
//! to write: on the reference machine that took a 600-byte append + sync from 0.33 ms to 0.25 ms
//! mean (p99 1.0–1.4 ms to 0.65–0.77 ms).
//!
//! Reading stops at the first frame that is incomplete or fails its checksum. If everything
//! from there on is zeros, that is the unused preallocated end: a clean end. Otherwise, in the
//! newest segment it is the expected shape of a crash mid-append — the frame was never
//! acknowledged — and the rest of the file is ignored; in an older segment (sealed, fully
//! synced before the next one began) it is corruption.
//!
//! What it is not: a store. It never interprets payloads; `super` decides what a frame means and
//! when a segment may be deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";
/// A preallocated segment not yet in use: `wal-<generation>.log.next`.
const PREPARED: &str = ".next";
const HEADER: usize = 16;
/// No batch comes near this; a larger length field is damage, not a frame to allocate for.
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// A segment file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SegmentFile {
    pub(super) generation: u64,
    pub(super) path: PathBuf,
}

/// Every segment in `dir`, oldest first. Other files are ignored.
pub(super) fn segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(generation) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push(SegmentFile {
            generation,
            path: entry.path(),
        });
    }
    found.sort_by_key(|s| s.generation);
    Ok(found)
}

/// One frame read back.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) seq: u64,
    pub(super) payload: Vec<u8>,
}

/// A segment read back: its valid frames, and where the first bad one began (if any).
#[derive(Debug)]
pub(super) struct ReadSegment {
    pub(super) frames: Vec<Frame>,
    pub(super) bad_at: Option<u64>,
}

/// Reads every valid frame of the segment at `path`, stopping at the first incomplete or
/// damaged one.
pub(super) fn read(path: &Path) -> io::Result<ReadSegment> {
    let bytes = fs::read(path)?;
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match parse_frame(&bytes[at..]) {
            Some((frame, len)) => {
                frames.push(frame);
                at += len;
            }
            None => {
                let clean_end = bytes[at..].iter().all(|&b| b == 0);
                return Ok(ReadSegment {
                    frames,
                    bad_at: (!clean_end).then_some(at as u64),
                });
            }
        }
    }
    Ok(ReadSegment {
        frames,
        bad_at: None,
    })
}

fn parse_frame(bytes: &[u8]) -> Option<(Frame, usize)> {
    let header = bytes.get(..HEADER)?;
    let len = usize::try_from(u32::from_le_bytes(header[0..4].try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER + len)?;
    if checksum(seq, payload) != crc {
        return None;
    }
    Some((
        Frame {
            seq,
            payload: payload.to_vec(),
        },
        HEADER + len,
    ))
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The file name of segment `generation`.
fn segment_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{generation:020}{SUFFIX}"))
}

/// Writes `wal-<generation>.log.next`: `capacity` zero bytes, synced. Slow (a sequential write of
/// the whole segment), so the store runs it ahead of time on a helper thread; [`Segment::open`]
/// then only renames it.
pub(super) fn prepare(dir: &Path, generation: u64, capacity: u64) -> io::Result<PathBuf> {
    let mut path = segment_path(dir, generation).into_os_string();
    path.push(PREPARED);
    let path = PathBuf::from(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let chunk = vec![0u8; 1024 * 1024];
    let mut left = capacity;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(path)
}

/// Deletes the whole log — every segment and every prepared one — and makes the removals
/// durable. Only once redb durably has everything the segments hold.
pub(super) fn remove_all(dir: &Path) -> io::Result<()> {
    for segment in segments(dir)? {
        fs::remove_file(&segment.path)?;
    }
    remove_prepared(dir)?;
    sync_dir(dir)
}

/// Deletes prepared segments (they hold nothing).
fn remove_prepared(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(PREPARED))
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Segment {
    file: File,
    path: PathBuf,
    generation: u64,
    len: u64,
    buf: Vec<u8>,
}

impl Segment {
    /// Makes segment `generation` in `dir` (it must not exist) from the file [`prepare`]d for
    /// it, and makes its directory entry durable, so an acknowledged frame can never sit in a
    /// file that vanishes in a crash.
    pub(super) fn open(dir: &Path, generation: u64, prepared: &Path) -> io::Result<Self> {
        let path = segment_path(dir, generation);
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", path.display()),
            ));
        }
        fs::rename(prepared, &path)?;
        sync_dir(dir)?;
        let file = OpenOptions::new().write(true).open(&path)?;
        Ok(Self {
            file,
            path,
            generation,
            len: 0,
            buf: Vec::new(),
        })
    }

    /// [`prepare`] and [`open`](Self::open) in one step.
    pub(super) fn create(dir: &Path, generation: u64, capacity: u64) -> io::Result<Self> {
        let prepared = prepare(dir, generation, capacity)?;
        Self::open(dir, generation, &prepared)
    }

    /// Appends one frame and returns once it is durable (`fdatasync`). After an error the
    /// segment may end in a partial frame; the caller must stop appending. A frame that runs
    /// past the preallocated size grows the file (correct, just slower).
    pub(super) fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&len| len as usize <= MAX_PAYLOAD)
            .ok_or_else(|| io::Error::other(format!("batch of {} bytes", payload.len())))?;
        self.buf.clear();
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&checksum(seq, payload).to_le_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.file.write_all_at(&self.buf, self.len)?;
        self.file.sync_data()?;
        self.len += self.buf.len() as u64;
        Ok(())
    }

    /// Bytes of frames written so far.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The generation number.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes creations and removals in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut_off() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut segment = Segment::create(dir.path(), 7, 4096)?;
        segment.append(1, b"one")?;
        segment.append(2, b"")?;
        segment.append(3, b"three")?;
        let path = segment.path().to_path_buf();
        let written = usize::try_from(segment.len()).map_err(io::Error::other)?;
        // The preallocated zeros after the frames read as a clean end.
        assert_eq!(read(&path)?.bad_at, None);
        let full = fs::read(&path)?[..written].to_vec();
        // Every possible crash point inside the last frame reads as the first two frames.
        let third_at = full.len() - (HEADER + 5);
        for cut in third_at..full.len() {
            fs::write(&path, &full[..cut])?;
            let read = read(&path)?;
            let seqs: Vec<u64> = read.frames.iter().map(|f| f.seq).collect();
            assert_eq!(seqs, vec![1, 2], "cut at {cut}");
            assert_eq!(read.bad_at, (cut > third_at).then_some(third_at as u64));
        }
        fs::write(&path, &full)?;
        let read = read(&path)?;
        assert_eq!(read.frames.len(), 3);
        assert_eq!(read.frames[2].payload, b"three");
        assert_eq!(read.bad_at, None);
        Ok(())
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut segment = Segment::create(dir.path(), 1, 4096)?;
        segment.append(1, b"payload")?;
        let path = segment.path().to_path_buf();
        let mut bytes = fs::read(&path)?;
        let last = usize::try_from(segment.len()).map_err(io::Error::other)? - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes)?;
        let read = read(&path)?;
        assert!(read.frames.is_empty());
        assert_eq!(read.bad_at, Some(0));
        Ok(())
    }

    #[test]
    fn segments_are_listed_oldest_first_and_strangers_ignored() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for generation in [10, 2, 33] {
            Segment::create(dir.path(), generation, 0)?;
        }
        prepare(dir.path(), 34, 0)?;
        fs::write(dir.path().join("wal-notanumber.log"), b"")?;
        fs::write(dir.path().join("locksmith.redb"), b"")?;
        let found: Vec<u64> = segments(dir.path())?.iter().map(|s| s.generation).collect();
        assert_eq!(found, vec![2, 10, 33]);
        remove_prepared(dir.path())?;
        assert_eq!(fs::read_dir(dir.path())?.count(), 5);
        remove_all(dir.path())?;
        assert_eq!(fs::read_dir(dir.path())?.count(), 2, "strangers stay");
        Ok(())
    }
}
