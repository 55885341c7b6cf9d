//! Why the replica cannot go on. Each is fatal for the process: recovery replays the log.

use crate::lockspace;
use crate::raft::Index;

/// A failure the replica cannot recover from by itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot received from the leader does not restore.
    #[error("cannot restore the lock space from the leader's snapshot")]
    Restore(#[source] lockspace::Error),
    /// A committed entry holds bytes that are not a command.
    #[error("committed log entry {index} is not a valid command")]
    CorruptCommand {
        /// The entry's index.
        index: Index,
        /// The decoding failure.
        source: rmp_serde::decode::Error,
    },
}
