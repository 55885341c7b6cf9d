//! The durable Raft log: checksummed append-only segments, the hard state and snapshots, with
//! crash recovery. Writes are durable only after `sync`.

use std::path::{Path, PathBuf};

use crate::raft::{Entry, HardState, Index, Recovered, Snapshot};

/// Storage errors. Any of them while the daemon runs is fatal: the node stops and recovery
/// replays the log on restart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A damaged record before the log's tail: start-up stops instead of losing data silently.
    #[error("corrupt log record in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// The on-disk log of one node.
#[derive(Debug)]
pub struct Storage {}

impl Storage {
    /// Opens (creating if needed) the data directory and recovers its contents.
    pub fn open(_dir: &Path) -> Result<(Storage, Recovered), Error> {
        todo!("storage")
    }

    /// Writes entries after the last one (contiguous). Durable only after `sync`.
    pub fn append(&mut self, _entries: &[Entry]) -> Result<(), Error> {
        todo!("storage")
    }

    /// Removes every entry with index >= `index` (an uncommitted conflicting suffix).
    pub fn truncate_from(&mut self, _index: Index) -> Result<(), Error> {
        todo!("storage")
    }

    /// Records the hard state. Durable only after `sync`.
    pub fn save_hard_state(&mut self, _hard_state: &HardState) -> Result<(), Error> {
        todo!("storage")
    }

    /// Makes every write so far durable (fsync). One call covers every preceding write.
    pub fn sync(&mut self) -> Result<(), Error> {
        todo!("storage")
    }

    /// Durably saves a snapshot and drops the log entries it covers.
    pub fn save_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), Error> {
        todo!("storage")
    }

    /// The index of the last entry, or of the snapshot if the log after it is empty.
    pub fn last_index(&self) -> Index {
        todo!("storage")
    }
}
