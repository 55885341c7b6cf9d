//! Backup files: a copy of a node's durable snapshot file (`<data-dir>/snapshot`), byte for byte.
//!
//! The format is the storage's (`storage/snapshot_file.rs`): `u32 BE payload length | u32 BE
//! crc32 of the payload | payload`, the payload the MessagePack (named fields) of a Raft
//! [`Snapshot`] `{meta, data}`, `data` the lock space's own snapshot. A backup is verified
//! three ways before anything trusts it: the header's length must match the file, the crc32
//! must match the payload, and the payload must decode into a lock space that passes its own
//! consistency check. `raftlock snapshot status` prints what [`verify`] finds;
//! `raftlockd restore` installs a verified backup into a new data directory.
//!
//! The whole-file checksum ([`file_checksum`]: crc32 over every byte, header included) is the
//! one `raftlock snapshot save` and `snapshot status` print, so two copies can be compared
//! without reading their payloads.

use std::path::{Path, PathBuf};

use crate::lockspace::{LockSpace, Stats};
use crate::raft::{Snapshot, SnapshotMeta};

/// Why a backup file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not an intact snapshot.
    #[error("{path} is not a valid raftlock snapshot: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A verified backup and what it holds.
#[derive(Debug)]
pub struct Verified {
    /// The snapshot it holds.
    pub snapshot: Snapshot,
    /// The lock space restored from it (proof that it restores).
    pub space: LockSpace,
    /// The file's length in bytes.
    pub len: u64,
    /// crc32 of the whole file ([`file_checksum`]).
    pub checksum: u32,
}

/// The crc32 (crc32fast) of a whole file's bytes, header included.
pub fn file_checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Decodes the bytes of a snapshot file, checking its header and payload checksum; the
/// error is the reason it is not a snapshot.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < 8 {
        return Err(format!(
            "{} bytes: too short for the 8-byte header",
            bytes.len()
        ));
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let payload = &bytes[8..];
    if payload.len() != len {
        return Err(format!(
            "the header says {len} bytes of payload, the file holds {}",
            payload.len()
        ));
    }
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    rmp_serde::from_slice(payload).map_err(|e| format!("the payload does not decode: {e}"))
}

/// Encodes a snapshot as a snapshot file's bytes (the inverse of [`decode`]).
pub fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, String> {
    let payload = rmp_serde::to_vec_named(snapshot).map_err(|e| format!("cannot encode: {e}"))?;
    let len = u32::try_from(payload.len())
        .map_err(|_| format!("a payload of {} bytes exceeds 4 GiB", payload.len()))?;
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Reads and verifies the backup at `path`.
pub fn verify(path: &Path) -> Result<Verified, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let snapshot = decode(&bytes).map_err(corrupt)?;
    let space = LockSpace::restore(&snapshot.data)
        .map_err(|e| corrupt(format!("the lock space does not restore: {e}")))?;
    if space.applied_index() != snapshot.meta.index {
        return Err(corrupt(format!(
            "the lock space is at index {}, the snapshot says {}",
            space.applied_index(),
            snapshot.meta.index
        )));
    }
    Ok(Verified {
        snapshot,
        space,
        len: bytes.len() as u64,
        checksum: file_checksum(&bytes),
    })
}

/// What a verified backup holds, for `raftlock snapshot status`.
#[derive(Debug)]
pub struct Summary<'a> {
    /// Index, term and membership.
    pub meta: &'a SnapshotMeta,
    /// Sessions, locks, waiters, files and file bytes.
    pub stats: Stats,
}

impl Verified {
    /// The summary of what it holds.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            meta: &self.snapshot.meta,
            stats: self.space.stats(),
        }
    }
}
