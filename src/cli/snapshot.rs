//! `raftlock snapshot status FILE`: what a backup file holds, read offline (no server).
//!
//! The file is verified as `raftlockd restore` verifies it (`crate::backup::verify`: header
//! length, payload checksum, a lock space that restores); a file that fails is an error
//! naming the file and the reason, so a damaged backup is found before it is needed.

use std::path::Path;

use super::output::{say, say_json};
use super::{shapes, Failure, EXIT_ERROR, EXIT_OK};
use crate::backup;

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
