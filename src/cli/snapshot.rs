//! `raftlock snapshot save FILE` and `raftlock snapshot status FILE`: hot backups.
//!
//! `save` streams the leader's snapshot ([`Client::snapshot_save`], which checks the bytes
//! against the leader's header) into `FILE.part`, verifies the file as `status` does, flushes
//! it and renames it over FILE, then flushes the directory: FILE is never a partial backup.
//!
//! `status` reads a file offline (no server). Both verify as `raftlockd restore` verifies
//! (`crate::backup::verify`: header length, payload checksum, a lock space that restores); a
//! file that fails is an error naming the file and the reason, so a damaged backup is found
//! before it is needed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::output::{say, say_json};
use super::{shapes, Failure, EXIT_ERROR, EXIT_OK};
use crate::backup;
use crate::client::Client;

/// Saves a backup from the leader into `file`.
pub(super) async fn save(client: &Client, file: &Path, json: bool) -> Result<u8, Failure> {
    let scratch = scratch_path(file);
    let failure = |what: &str, error: std::io::Error| Failure {
        code: EXIT_ERROR,
        message: format!(
            "{what} {}: {}",
            scratch.display(),
            crate::error_chain(&error)
        ),
    };
    let mut out = tokio::fs::File::create(&scratch)
        .await
        .map_err(|e| failure("cannot create", e))?;
    let saved = match client.snapshot_save(&mut out).await {
        Ok(saved) => saved,
        Err(error) => {
            drop(out);
            let _ = std::fs::remove_file(&scratch);
            return Err(error.into());
        }
    };
    out.sync_all()
        .await
        .map_err(|e| failure("cannot flush", e))?;
    drop(out);
    if let Err(error) = backup::verify(&scratch) {
        let _ = std::fs::remove_file(&scratch);
        return Err(Failure {
            code: EXIT_ERROR,
            message: format!(
                "the leader's snapshot does not verify: {}",
                crate::error_chain(&error)
            ),
        });
    }
    std::fs::rename(&scratch, file).map_err(|e| failure("cannot rename", e))?;
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failure("cannot flush the directory of", e))?;
    let checksum = format!("{:08x}", saved.checksum);
    let shown = file.display().to_string();
    if json {
        say_json(&shapes::SnapshotSaved {
            file: &shown,
            index: saved.index,
            term: saved.term,
            size: saved.size,
            checksum: &checksum,
        });
    } else {
        say(format_args!(
            "saved the snapshot at index {} (term {}, {} bytes, checksum {checksum}) to {shown}",
            saved.index, saved.term, saved.size
        ));
    }
    Ok(EXIT_OK)
}

/// `FILE.part`, beside FILE (same file system, so the rename is atomic).
fn scratch_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(OsString::from(".part"));
    PathBuf::from(name)
}

/// Prints what the backup at `file` holds (one JSON object with `json`).
pub(super) fn status(file: &Path, json: bool) -> Result<u8, Failure> {
    let verified = backup::verify(file).map_err(|error| Failure {
        code: EXIT_ERROR,
        message: crate::error_chain(&error),
    })?;
    let summary = verified.summary();
    let meta = summary.meta;
    let stats = summary.stats;
    let members: Vec<shapes::SnapshotMember<'_>> = meta
        .membership
        .voters
        .iter()
        .map(|(id, addr)| (id, addr, true))
        .chain(
            meta.membership
                .learners
                .iter()
                .map(|(id, addr)| (id, addr, false)),
        )
        .map(|(id, addr, voter)| shapes::SnapshotMember {
            id: *id,
            addr,
            voter,
        })
        .collect();
    let checksum = format!("{:08x}", verified.checksum);
    if json {
        say_json(&shapes::SnapshotStatus {
            index: meta.index,
            term: meta.term,
            size: verified.len,
            checksum: &checksum,
            checksum_ok: true,
            sessions: stats.sessions,
            locks: stats.locks,
            files: stats.files,
            file_bytes: stats.file_bytes,
            members,
        });
        return Ok(EXIT_OK);
    }
    let members: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{}={}{}",
                m.id,
                m.addr,
                if m.voter { "" } else { " (learner)" }
            )
        })
        .collect();
    say(format_args!("index: {}", meta.index));
    say(format_args!("term: {}", meta.term));
    say(format_args!("members: {}", members.join(", ")));
    say(format_args!("size: {} bytes", verified.len));
    say(format_args!("checksum: {checksum} (ok)"));
    say(format_args!("sessions: {}", stats.sessions));
    say(format_args!("locks: {}", stats.locks));
    say(format_args!(
        "files: {} ({} bytes)",
        stats.files, stats.file_bytes
    ));
    Ok(EXIT_OK)
}
