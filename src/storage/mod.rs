//! The durable Raft log: checksummed append-only segments, the hard state and snapshots, with
//! crash recovery. Writes are durable only after [`Storage::sync`].
//!
//! # File layout
//!
//! ```text
//! <dir>/FORMAT                      the layout's version number (`format.rs`)
//! <dir>/lock                        held (flock) by the daemon using the directory
//! <dir>/snapshot                    the current snapshot (absent until the first one)
//! <dir>/snapshot.tmp                a snapshot being written (deleted at start-up)
//! <dir>/log/00000000000000000001.seg
//! <dir>/log/00000000000000000002.seg   segments, named by a sequence number (20 digits)
//! ```
//!
//! The log is ONE append-only stream of records cut into segments. Segments are named by a
//! sequence number rather than by their first entry index because a truncation (below) is
//! itself a record: after one, the next segment may start at a lower index than an earlier one,
//! and file names must still sort in stream order. The last segment is the active one; a new one
//! is started once the active one reaches [`Options::segment_bytes`].
//!
//! # Record format
//!
//! `u32 BE payload length | u32 BE crc32 (crc32fast) of the payload | payload`, the payload being
//! the MessagePack (`rmp_serde::to_vec_named`) of one of:
//!
//! - `Entry(Entry)`: a log entry; its index must follow the previous live entry;
//! - `HardState(HardState)`: term, vote and commit; the last one in the stream wins;
//! - `Truncate(index)`: entries at or above `index` are discarded, the next entry is `index`;
//! - `Restart(index)`: every earlier entry is discarded, the next entry is `index` (written when
//!   a snapshot ahead of the log replaces it).
//!
//! The hard state rides in the same stream as the entries, so one fsync covers both (group
//! commit). Every segment starts with the current hard state, so deleting old segments never
//! loses it. Truncation is a record too, not a rewrite of the file: the stream stays strictly
//! append-only, so a crash can only ever leave a prefix of it behind, and a truncation can never
//! take a durable hard state record with it.
//!
//! # Durability rules
//!
//! - `append`, `truncate_from` and `save_hard_state` write into a buffer; [`Storage::sync`]
//!   flushes it and calls `sync_data` on the active segment: one fsync per batch, whatever its
//!   size. Nothing may be acknowledged (a vote, an append) before the `sync` that covers it.
//! - Only the active segment ever holds unsynced bytes: before starting a new segment the old one
//!   is synced, and the directory is fsynced after the new file is created (and after every
//!   create, rename or delete).
//! - A snapshot is written to `snapshot.tmp`, fsynced, renamed to `snapshot`, and the directory
//!   fsynced. The log is synced before that, and segments are deleted only after it, so the files
//!   always describe a state the node was in.
//! - After a snapshot, segments whose live entries are all covered by it are deleted, oldest
//!   first (never the active one). If the snapshot is ahead of the log, a new segment is started
//!   with a `Restart(snapshot index + 1)` record and every older segment is deleted.
//!
//! # Recovery rules
//!
//! - The snapshot is read first; a damaged snapshot file is [`Error::Corrupt`].
//! - Segments are read in order, every checksum verified. Their sequence numbers must be
//!   consecutive (only a prefix is ever deleted).
//! - A damaged record in the LAST segment with no valid record anywhere after it is a torn write:
//!   it and everything after it are cut off the file (logged with `tracing::warn!`: path, offset,
//!   bytes dropped). Any other damage is [`Error::Corrupt`] naming the file and offset: a damaged
//!   record followed by a valid one, a damaged record in an earlier segment, a record whose
//!   checksum matches but which does not decode, entries that are not contiguous, or a log that
//!   does not join the snapshot. Start-up stops rather than lose acknowledged data silently.
//! - Entries at or below the snapshot index are skipped; the rest is returned contiguous.
//!
//! Caveat: random garbage after a torn write passes a checksum with probability 2^-32 per
//! position, which would stop start-up with `Corrupt` (never silently lose data).

mod dir_lock;
mod format;
mod replay;
mod restore;
pub(crate) mod segment;
mod snapshot_file;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::raft::{Entry, HardState, Index, Recovered, Snapshot};
pub use dir_lock::{DataDirLock, LockError, LOCK_FILE};
pub use format::{FORMAT_FILE, KNOWN_VERSIONS, VERSION as FORMAT_VERSION};
pub use restore::{restore, RestoreError};
use segment::RecordRef;
pub use snapshot_file::{prepare as prepare_snapshot, SNAPSHOT_FILE};

/// The default size past which a new segment is started.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The capacity of the write buffer in front of the active segment.
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// The name of the directory holding the segments, inside the data directory.
const LOG_DIR: &str = "log";

/// Storage errors. Any of them while the daemon runs is fatal: the node stops and recovery
/// replays the log on restart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`"open"`, `"write"`, `"fsync"`, ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error the operating system returned.
        source: std::io::Error,
    },
    /// A damaged record before the log's tail: start-up stops instead of losing data silently.
    #[error("corrupt log record in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset of the damaged record in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The data directory's `FORMAT` file names a version this build cannot read.
    #[error("{path} says format version {found:?}; this build knows version(s) {known}")]
    UnknownFormat {
        /// The `FORMAT` file.
        path: PathBuf,
        /// What it holds (trimmed, at most 40 characters).
        found: String,
        /// The versions this build knows, comma-separated.
        known: String,
    },
    /// A record too large to write (far beyond any frame the protocol accepts).
    #[error("log record of {len} bytes exceeds the limit of {max}")]
    RecordTooLarge {
        /// The encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Builds an [`Error::Io`].
pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
thread_local! {
    /// Set by the crash tests, which model durability through `synced_tail` and cut files
    /// themselves: real fsyncs would only make them slow. Unit tests keep real fsyncs.
    pub(crate) static SKIP_FSYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Fsyncs a file: its data and the metadata needed to read it (`sync_data`), or everything.
pub(crate) fn fsync(file: &File, path: &Path, data_only: bool) -> Result<(), Error> {
    #[cfg(test)]
    if SKIP_FSYNC.with(std::cell::Cell::get) {
        return Ok(());
    }
    let result = if data_only {
        file.sync_data()
    } else {
        file.sync_all()
    };
    result.map_err(|e| io_err("fsync", path, e))
}

/// Fsyncs a directory, making the creation, rename or deletion of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(test)]
    if SKIP_FSYNC.with(std::cell::Cell::get) {
        return Ok(());
    }
    let handle = File::open(dir).map_err(|e| io_err("open directory", dir, e))?;
    fsync(&handle, dir, false)
}

/// Creates a directory if it is missing, then makes its creation durable.
fn create_dir(dir: &Path) -> Result<(), Error> {
    match fs::create_dir(dir) {
        Ok(()) => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(parent.unwrap_or(Path::new(".")))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            match parent {
                Some(parent) => {
                    create_dir(parent)?;
                    create_dir(dir)
                }
                None => Err(io_err("create directory", dir, e)),
            }
        }
        Err(e) => Err(io_err("create directory", dir, e)),
    }
}

/// Tuning of a [`Storage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// A new segment is started once the active one reaches this many bytes.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// One segment file and the live entries it holds.
#[derive(Debug)]
struct Segment {
    /// Its sequence number (its file name).
    seq: u64,
    /// Its path.
    path: PathBuf,
    /// The first and last live entry in it, if any (entries covered by the snapshot included).
    live: Option<(Index, Index)>,
}

/// The on-disk log of one node.
#[derive(Debug)]
pub struct Storage {
    /// The data directory.
    dir: PathBuf,
    /// The directory of the segments.
    log_dir: PathBuf,
    /// Tuning.
    options: Options,
    /// The segments, oldest first; the last one is active. Never empty.
    segments: Vec<Segment>,
    /// The buffered writer on the active segment.
    writer: BufWriter<File>,
    /// Bytes written to the active segment, buffered ones included.
    active_len: u64,
    /// Bytes of the active segment known durable.
    synced_len: u64,
    /// The latest hard state written.
    hard_state: HardState,
    /// The index covered by the snapshot (0 without one).
    snapshot_index: Index,
    /// The index of the last entry, or the snapshot's if there is none after it.
    last_index: Index,
    /// The index the stream expects for its next entry record, if it says.
    stream_next: Option<Index>,
    /// A reusable encoding buffer.
    buf: Vec<u8>,
}

impl Storage {
    /// Opens (creating if needed) the data directory and recovers its contents.
    pub fn open(dir: &Path) -> Result<(Storage, Recovered), Error> {
        Storage::open_with(dir, Options::default())
    }

    /// Like [`Storage::open`], with explicit tuning (tests use tiny segments).
    pub fn open_with(dir: &Path, options: Options) -> Result<(Storage, Recovered), Error> {
        create_dir(dir)?;
        // Before anything else is read: a layout this build does not know is never misread.
        format::check_or_create(dir)?;
        let log_dir = dir.join(LOG_DIR);
        create_dir(&log_dir)?;
        let snapshot = snapshot_file::read(dir)?;
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.index);

        let mut found = list_segments(&log_dir)?;
        if found.is_empty() {
            if snapshot.is_some() {
                return Err(Error::Corrupt {
                    path: log_dir,
                    offset: 0,
                    reason: "a snapshot exists but the log has no segment: the hard state is lost"
                        .into(),
                });
            }
            let path = log_dir.join(segment::file_name(1));
            create_segment_file(&log_dir, &path)?;
            found.push((1, path));
        }
        for pair in found.windows(2) {
            if pair[1].0 != pair[0].0 + 1 {
                return Err(Error::Corrupt {
                    path: pair[1].1.clone(),
                    offset: 0,
                    reason: format!(
                        "segment {} follows segment {}: segments are missing",
                        pair[1].0, pair[0].0
                    ),
                });
            }
        }

        let paths: Vec<PathBuf> = found.iter().map(|(_, p)| p.clone()).collect();
        let mut replay = replay::Replay::new(snapshot_index);
        let mut active_len = 0;
        let mut torn = None;
        for (pos, path) in paths.iter().enumerate() {
            let data = fs::read(path).map_err(|e| io_err("read", path, e))?;
            let is_last = pos + 1 == paths.len();
            let scanned = segment::scan(path, &data, is_last)?;
            for (offset, record) in scanned.records {
                replay.apply(pos, path, offset, record)?;
            }
            if is_last {
                active_len = scanned.valid_len;
                if let Some(reason) = scanned.torn {
                    torn = Some((data.len() as u64 - scanned.valid_len, reason));
                }
            }
        }
        let replayed = replay.finish(&paths)?;
        let active_path = paths.last().expect("at least one segment");
        if let Some((dropped, reason)) = torn {
            tracing::warn!(
                path = %active_path.display(),
                offset = active_len,
                dropped,
                reason,
                "dropping the torn tail of the log (an interrupted write)"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(active_path)
                .map_err(|e| io_err("open", active_path, e))?;
            file.set_len(active_len)
                .map_err(|e| io_err("truncate", active_path, e))?;
            fsync(&file, active_path, false)?;
        }

        let file = OpenOptions::new()
            .append(true)
            .open(active_path)
            .map_err(|e| io_err("open", active_path, e))?;
        let last_index = replayed.entries.last().map_or(snapshot_index, |e| e.index);
        let segments = found
            .into_iter()
            .zip(replayed.live)
            .map(|((seq, path), live)| Segment { seq, path, live })
            .collect();
        let mut storage = Storage {
            dir: dir.to_path_buf(),
            log_dir,
            options,
            segments,
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            active_len,
            synced_len: active_len,
            hard_state: replayed.hard_state,
            snapshot_index,
            last_index,
            stream_next: replayed.next,
            buf: Vec::new(),
        };
        if storage.active_len == 0 {
            // A new (or wholly torn) segment: give it the hard state it must start with.
            let hard_state = storage.hard_state;
            storage.write_raw(RecordRef::HardState(&hard_state))?;
            storage.sync()?;
        }
        storage.compact()?;
        let recovered = Recovered {
            hard_state: replayed.hard_state,
            snapshot,
            entries: replayed.entries,
        };
        Ok((storage, recovered))
    }

    /// Writes entries after the last one (contiguous). Durable only after `sync`.
    ///
    /// # Panics
    ///
    /// If the entries do not follow the last index contiguously (a bug in the caller).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), Error> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert_eq!(
            first.index,
            self.last_index + 1,
            "append of entry {} after last index {}",
            first.index,
            self.last_index
        );
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index + 1,
                "append of non-contiguous entries {} and {}",
                pair[0].index,
                pair[1].index
            );
        }
        if self.stream_next != Some(first.index) {
            self.write_record(RecordRef::Restart(first.index))?;
            for segment in &mut self.segments {
                segment.live = None;
            }
        }
        for entry in entries {
            self.write_record(RecordRef::Entry(entry))?;
            let active = self.segments.last_mut().expect("at least one segment");
            active.live = Some(
                active
                    .live
                    .map_or((entry.index, entry.index), |(f, _)| (f, entry.index)),
            );
            self.last_index = entry.index;
            self.stream_next = Some(entry.index + 1);
        }
        Ok(())
    }

    /// Removes every entry with index >= `index` (an uncommitted conflicting suffix). Durable
    /// only after `sync`. A no-op if `index` is past the last entry.
    ///
    /// # Panics
    ///
    /// If `index` is at or below the snapshot index: those entries are committed (a bug).
    pub fn truncate_from(&mut self, index: Index) -> Result<(), Error> {
        assert!(
            index > self.snapshot_index,
            "truncation from {index} at or below the snapshot index {}",
            self.snapshot_index
        );
        if index > self.last_index {
            return Ok(());
        }
        self.write_record(RecordRef::Truncate(index))?;
        for segment in &mut self.segments {
            segment.live = match segment.live {
                Some((first, _)) if first >= index => None,
                Some((first, last)) if last >= index => Some((first, index - 1)),
                live => live,
            };
        }
        self.last_index = index - 1;
        self.stream_next = Some(index);
        Ok(())
    }

    /// Records the hard state. Durable only after `sync`.
    pub fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), Error> {
        self.write_record(RecordRef::HardState(hard_state))?;
        self.hard_state = *hard_state;
        Ok(())
    }

    /// Makes every write so far durable (fsync). One call covers every preceding write.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.active_len == self.synced_len {
            return Ok(());
        }
        let path = &self.segments.last().expect("at least one segment").path;
        self.writer.flush().map_err(|e| io_err("write", path, e))?;
        fsync(self.writer.get_ref(), path, true)?;
        self.synced_len = self.active_len;
        Ok(())
    }

    /// Durably saves a snapshot and drops the log entries it covers. Syncs the log first.
    ///
    /// If the snapshot is ahead of the last entry, the whole log is dropped and the next entry is
    /// `snapshot.meta.index + 1`. If it is not, the entries after it are kept as they are: when
    /// they conflict with the snapshot the caller truncates them first.
    ///
    /// # Panics
    ///
    /// If the snapshot is older than the current one (a bug in the caller).
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        let index = snapshot.meta.index;
        assert!(
            index >= self.snapshot_index,
            "snapshot at {index} older than the current one at {}",
            self.snapshot_index
        );
        // The files must hold what memory says before segments are deleted on its word.
        self.sync()?;
        snapshot_file::write(&self.dir, snapshot)?;
        self.snapshot_index = index;
        if index > self.last_index {
            self.roll()?;
            self.write_raw(RecordRef::Restart(index + 1))?;
            for segment in &mut self.segments {
                segment.live = None;
            }
            self.last_index = index;
            self.stream_next = Some(index + 1);
            self.sync()?;
        }
        self.compact()
    }

    /// The index of the last entry, or of the snapshot if the log after it is empty.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// The active segment and how many of its bytes are durable (for crash tests).
    #[cfg(test)]
    pub(crate) fn synced_tail(&self) -> (PathBuf, u64) {
        let active = self.segments.last().expect("at least one segment");
        (active.path.clone(), self.synced_len)
    }

    /// Writes a record, first starting a new segment if the active one is full.
    fn write_record(&mut self, record: RecordRef<'_>) -> Result<(), Error> {
        if self.active_len >= self.options.segment_bytes {
            self.roll()?;
        }
        self.write_raw(record)
    }

    /// Writes a record into the active segment's buffer.
    fn write_raw(&mut self, record: RecordRef<'_>) -> Result<(), Error> {
        self.buf.clear();
        segment::encode(record, &mut self.buf)?;
        let path = &self.segments.last().expect("at least one segment").path;
        self.writer
            .write_all(&self.buf)
            .map_err(|e| io_err("write", path, e))?;
        self.active_len += self.buf.len() as u64;
        Ok(())
    }

    /// Syncs the active segment and starts a new one, beginning with the current hard state.
    fn roll(&mut self) -> Result<(), Error> {
        self.sync()?;
        let seq = self.segments.last().expect("at least one segment").seq + 1;
        let path = self.log_dir.join(segment::file_name(seq));
        let file = create_segment_file(&self.log_dir, &path)?;
        // The old buffer is empty (just synced): dropping it writes nothing.
        self.writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        self.segments.push(Segment {
            seq,
            path,
            live: None,
        });
        self.active_len = 0;
        self.synced_len = 0;
        let hard_state = self.hard_state;
        self.write_raw(RecordRef::HardState(&hard_state))
    }

    /// Deletes the oldest segments while they are not the active one and every live entry in
    /// them is covered by the snapshot. Only called when the files match memory (after a sync).
    fn compact(&mut self) -> Result<(), Error> {
        let covered = self.snapshot_index;
        let count = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| s.live.map_or(true, |(_, last)| last <= covered))
            .count();
        if count == 0 {
            return Ok(());
        }
        for segment in self.segments.drain(..count) {
            fs::remove_file(&segment.path).map_err(|e| io_err("remove", &segment.path, e))?;
        }
        sync_dir(&self.log_dir)
    }
}

/// Creates an empty segment file and makes its directory entry durable.
fn create_segment_file(log_dir: &Path, path: &Path) -> Result<File, Error> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err("create", path, e))?;
    sync_dir(log_dir)?;
    Ok(file)
}

/// The segment files in `log_dir`, sorted by sequence number. Other files are ignored.
fn list_segments(log_dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut found = Vec::new();
    let read = fs::read_dir(log_dir).map_err(|e| io_err("list", log_dir, e))?;
    for item in read {
        let item = item.map_err(|e| io_err("list", log_dir, e))?;
        if let Some(seq) = item.file_name().to_str().and_then(segment::parse_file_name) {
            found.push((seq, item.path()));
        }
    }
    found.sort();
    Ok(found)
}
