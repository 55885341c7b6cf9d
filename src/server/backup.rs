//! Streams the durable snapshot file to a `SnapshotSave` caller, on a blocking thread.
//!
//! The driver hands the request's [`Reply`] here once the replica says a snapshot covering
//! the request is durable (`Effect::StreamSnapshot`). The file is read and verified here, off
//! the driver, then sent as `SnapshotHeader` and `SnapshotChunk`s of at most
//! [`SNAPSHOT_CHUNK_BYTES`], each waiting for room in the connection's queue (so a slow
//! reader slows only its own stream, and never makes the driver wait). A newer snapshot may
//! have replaced the file meanwhile: the header describes the file actually sent, which
//! covers at least as much.

use std::path::PathBuf;

use super::inbox::{Outgoing, Reply};
use crate::backup;
use crate::protocol::{ErrorCode, Response};

/// The most file bytes in one `SnapshotChunk` (a frame far below the 4 MiB frame limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Reads `path` and streams it to `reply` as the answers to request `id`.
pub(crate) fn stream(path: PathBuf, id: u64, reply: Reply) {
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            let message = format!("cannot read the snapshot {}: {error}", path.display());
            tracing::error!(%message, "snapshot save failed");
            return reply.finish(Response::error(id, ErrorCode::Internal, message));
        }
    };
    let snapshot = match backup::decode(&bytes) {
        Ok(snapshot) => snapshot,
        Err(reason) => {
            let message = format!("the snapshot {} is damaged: {reason}", path.display());
            tracing::error!(%message, "snapshot save failed");
            return reply.finish(Response::error(id, ErrorCode::Internal, message));
        }
    };
    let size = bytes.len() as u64;
    let meta = snapshot.meta;
    tracing::info!(index = meta.index, size, "streaming a snapshot to a client");
    let header = Response::SnapshotHeader {
        id,
        index: meta.index,
        term: meta.term,
        size,
        checksum: backup::file_checksum(&bytes),
    };
    if !send(&reply, header) {
        return;
    }
    let mut offset = 0;
    for chunk in bytes.chunks(SNAPSHOT_CHUNK_BYTES) {
        let next = offset + chunk.len() as u64;
        let response = Response::SnapshotChunk {
            id,
            offset,
            data: chunk.to_vec(),
            last: next == size,
        };
        if !send(&reply, response) {
            return;
        }
        offset = next;
    }
}

/// Queues one answer, waiting for room; false once the connection is gone.
fn send(reply: &Reply, response: Response) -> bool {
    !reply.conn.close.is_cancelled()
        && reply
            .conn
            .outgoing
            .blocking_send(Outgoing::Frame(response))
            .is_ok()
}
