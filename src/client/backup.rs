//! Hot backups: [`Client::snapshot_save`] streams the leader's durable snapshot into a writer.
//!
//! The leader answers one `SnapshotSave` with a `SnapshotHeader` (the snapshot's index, term,
//! size and whole-file crc32), then `SnapshotChunk`s in order, the last one marked (protocol.md
//! §14). Until the header arrives the request is retried like any other (redirects to the
//! leader, reconnects); once bytes flow, a lost connection is an error, because a backup is
//! only worth having whole: the caller writes to a scratch file and keeps it only when this
//! returns `Ok` (as `raftlock snapshot save` does). Every chunk's offset is checked against
//! the bytes so far, and the whole against the header's size and checksum, so an `Ok` means
//! the writer received exactly the file the leader described.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Client, Error, Patience, Result};
use crate::protocol::{Request, Response};

/// What a saved backup holds, from the leader's header (checked against the bytes received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedSnapshot {
    /// The snapshot's last included log index.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The file's length in bytes.
    pub size: u64,
    /// crc32 (IEEE) of the whole file.
    pub checksum: u32,
}

impl Client {
    /// Admin: streams a consistent snapshot of the cluster (covering every write acknowledged
    /// before the call) from the leader into `out`, and returns what it holds. The bytes are a
    /// snapshot file as `raftlockd restore` and `raftlock snapshot status` read it. Fails with
    /// [`Error::Protocol`] if the stream breaks its own header (a bug on one side), with
    /// [`Error::Io`] if the connection is lost mid-stream or `out` fails; `out` then holds a
    /// partial file, which the caller must discard.
    pub async fn snapshot_save<W>(&self, out: &mut W) -> Result<SavedSnapshot>
    where
        W: AsyncWrite + Unpin,
    {
        let (first, mut rest) = self
            .call_keeping_reply(
                |id| Request::SnapshotSave { id },
                // The leader may first take a snapshot of a large state.
                Patience::Long(std::time::Duration::from_secs(60)),
                &|| {},
            )
            .await?;
        let saved = match first {
            Response::SnapshotHeader {
                index,
                term,
                size,
                checksum,
                ..
            } => SavedSnapshot {
                index,
                term,
                size,
                checksum,
            },
            other => return Err(super::unexpected("SnapshotSave", &other)),
        };
        let timeout = self.inner.options.request_timeout;
        let mut received = 0u64;
        let mut crc = crc32fast::Hasher::new();
        loop {
            let answer = tokio::time::timeout(timeout, rest.recv())
                .await
                .map_err(|_| Error::Timeout)?;
            let (offset, data, last) = match answer {
                Some(Ok(Response::SnapshotChunk {
                    offset, data, last, ..
                })) => (offset, data, last),
                Some(Ok(Response::Error { code, message, .. })) => {
                    return Err(Error::from_code(code, message))
                }
                Some(Ok(other)) => return Err(super::unexpected("SnapshotSave", &other)),
                Some(Err(bad)) => return Err(Error::Protocol(bad)),
                None => {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        format!(
                            "the connection was lost after {received} of {} bytes",
                            saved.size
                        ),
                    )))
                }
            };
            if offset != received {
                return Err(Error::Protocol(format!(
                    "snapshot chunk at offset {offset}, expected {received}"
                )));
            }
            received += data.len() as u64;
            if received > saved.size {
                return Err(Error::Protocol(format!(
                    "snapshot chunks exceed the header's size of {} bytes",
                    saved.size
                )));
            }
            crc.update(&data);
            out.write_all(&data).await?;
            if last {
                break;
            }
        }
        out.flush().await?;
        if received != saved.size {
            return Err(Error::Protocol(format!(
                "snapshot ended at {received} bytes, the header said {}",
                saved.size
            )));
        }
        let checksum = crc.finalize();
        if checksum != saved.checksum {
            return Err(Error::Protocol(format!(
                "snapshot checksum {checksum:08x}, the header said {:08x}",
                saved.checksum
            )));
        }
        Ok(saved)
    }
}
