//! The snapshot file: `u32 BE payload length | u32 BE crc32 of the payload | payload`, the payload
//! being the MessagePack (named fields) of the [`Snapshot`]. Replaced atomically: written to
//! `snapshot.tmp`, fsynced, renamed over `snapshot`, then the directory is fsynced.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::{fsync, io_err, sync_dir, Error};
use crate::raft::Snapshot;

/// The name of the current snapshot in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// The name of a snapshot being written; a leftover one is deleted at start-up.
pub(crate) const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";

/// Durably replaces the snapshot in `dir`.
pub(crate) fn write(dir: &Path, snapshot: &Snapshot) -> Result<(), Error> {
    let payload =
        rmp_serde::to_vec_named(snapshot).expect("encoding a snapshot into memory cannot fail");
    let len = u32::try_from(payload.len()).map_err(|_| Error::RecordTooLarge {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    let crc = crc32fast::hash(&payload);
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    let path = dir.join(SNAPSHOT_FILE);
    let mut file = fs::File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&len.to_be_bytes());
    header[4..].copy_from_slice(&crc.to_be_bytes());
    file.write_all(&header)
        .and_then(|()| file.write_all(&payload))
        .map_err(|e| io_err("write", &tmp, e))?;
    fsync(&file, &tmp, false)?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| io_err("rename", &tmp, e))?;
    sync_dir(dir)
}

/// Reads the snapshot in `dir`, if there is one, verifying its checksum. Deletes a leftover
/// `snapshot.tmp` (a write the crash interrupted before its rename).
pub(crate) fn read(dir: &Path) -> Result<Option<Snapshot>, Error> {
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
