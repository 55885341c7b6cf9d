//! The snapshot file: `u32 BE payload length | u32 BE crc32 of the payload | payload`, the payload
//! being the MessagePack (named fields) of the [`Snapshot`]. Replaced atomically: written to
//! `snapshot.tmp`, fsynced, renamed over `snapshot`, then the directory is fsynced.
//!
//! A snapshot the node takes of itself is large and written off the storage writer: the thread
//! that builds it writes and fsyncs it as `snapshot.<index>.prepared` ([`prepare`]), and the
//! writer's save then only renames it into place ([`write`] finds it). Were the writer to write
//! it, every log append (and so every Raft message a write releases) would wait behind the
//! whole file. A leftover prepared file (a crash, or a build that a received snapshot
//! overtook) is deleted at start-up and by the next [`prepare`].

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::{fsync, io_err, sync_dir, Error};
use crate::raft::Snapshot;

/// The name of the current snapshot in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// The name of a snapshot being written; a leftover one is deleted at start-up.
pub(crate) const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";

/// The suffix of a prepared snapshot's file name.
const PREPARED_SUFFIX: &str = ".prepared";

fn prepared_path(dir: &Path, index: crate::raft::Index) -> PathBuf {
    dir.join(format!("{SNAPSHOT_FILE}.{index}{PREPARED_SUFFIX}"))
}

/// Writes and fsyncs `snapshot` as `dir`'s prepared snapshot for its index, for a later
/// [`write`] of the same snapshot to rename into place; deletes any other prepared snapshot
/// (only one is built at a time, so another one is stale). Runs on any thread: it touches no
/// file the storage writer uses.
pub fn prepare(dir: &Path, snapshot: &Snapshot) -> Result<(), Error> {
    remove_prepared(dir)?;
    write_file(&prepared_path(dir, snapshot.meta.index), snapshot)
}

/// Deletes every prepared snapshot in `dir`.
pub(crate) fn remove_prepared(dir: &Path) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| io_err("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("read", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SNAPSHOT_FILE) && name.ends_with(PREPARED_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
        }
    }
    Ok(())
}

/// Durably replaces the snapshot in `dir`: by renaming its prepared file when [`prepare`] made
/// one for this index, else by writing it here.
pub(crate) fn write(dir: &Path, snapshot: &Snapshot) -> Result<(), Error> {
    let path = dir.join(SNAPSHOT_FILE);
    let prepared = prepared_path(dir, snapshot.meta.index);
    if !prepared.exists() {
        let tmp = dir.join(SNAPSHOT_TMP_FILE);
        write_file(&tmp, snapshot)?;
        fs::rename(&tmp, &path).map_err(|e| io_err("rename", &tmp, e))?;
    } else {
        fs::rename(&prepared, &path).map_err(|e| io_err("rename", &prepared, e))?;
    }
    sync_dir(dir)
}

/// Writes the framed snapshot to `tmp` and fsyncs it.
fn write_file(tmp: &Path, snapshot: &Snapshot) -> Result<(), Error> {
    let payload =
        rmp_serde::to_vec_named(snapshot).expect("encoding a snapshot into memory cannot fail");
    let len = u32::try_from(payload.len()).map_err(|_| Error::RecordTooLarge {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    let crc = crc32fast::hash(&payload);
    let mut file = fs::File::create(tmp).map_err(|e| io_err("create", tmp, e))?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&len.to_be_bytes());
    header[4..].copy_from_slice(&crc.to_be_bytes());
    file.write_all(&header)
        .and_then(|()| file.write_all(&payload))
        .map_err(|e| io_err("write", tmp, e))?;
    fsync(&file, tmp, false)
}

/// Reads the snapshot in `dir`, if there is one, verifying its checksum. Deletes a leftover
/// `snapshot.tmp` (a write the crash interrupted before its rename) and prepared snapshots.
pub(crate) fn read(dir: &Path) -> Result<Option<Snapshot>, Error> {
    remove_prepared(dir)?;
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    match fs::remove_file(&tmp) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp, e)),
    }
    let path = dir.join(SNAPSHOT_FILE);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path, e)),
    };
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        path: PathBuf::from(&path),
        offset,
        reason,
    };
    if data.len() < 8 {
        return Err(corrupt(
            0,
            format!("snapshot file of {} bytes has no header", data.len()),
        ));
    }
    let len = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes"));
    let payload = &data[8..];
    if payload.len() != len {
        return Err(corrupt(
            0,
            format!(
                "snapshot header says {len} bytes, file holds {}",
                payload.len()
            ),
        ));
    }
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(corrupt(
            0,
            format!("snapshot checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"),
        ));
    }
    rmp_serde::from_slice(payload)
        .map(Some)
        .map_err(|e| corrupt(8, format!("snapshot does not decode: {e}")))
}
