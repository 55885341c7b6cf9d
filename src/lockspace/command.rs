//! What goes into the log (`Command`) and what applying it yields (`Outcome`, `Notification`).
//!
//! Commands are serialized with MessagePack (`rmp_serde::to_vec_named`) into
//! `raft::EntryData::Command`. Only the leader creates them; every replica applies the same
//! sequence and so reaches the same state.

use serde::{Deserialize, Serialize};

use crate::raft::Index;

/// A session's id: the log index of the `OpenSession` entry that created it.
pub type SessionId = u64;
/// A per-session request sequence number, chosen by the client, for exactly-once semantics.
pub type Seq = u64;
/// A fencing token. Strictly increasing across all grants of all locks; at least the log index
/// of the entry that made the grant.
pub type Fence = u64;

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// One holder at a time; the only mode that may append to files.
    Exclusive,
    /// Any number of holders at once, none exclusive.
    Shared,
}

/// A state machine command: exactly what goes into the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Opens a session. Retrying with the same `nonce` while the session lives returns the same
    /// session instead of opening a second one.
    OpenSession {
        /// Client-chosen random value that identifies this open request across retries.
        nonce: u64,
        /// Lease length in milliseconds; the leader expires the session after this long without
        /// a keep-alive.
        ttl_ms: u64,
        /// The secret the client must present with every session request, drawn by the leader.
        token: u64,
        /// Who opened it, as the client said (absent in entries written before owners existed).
        #[serde(default)]
        owner: Option<String>,
        /// The authenticated principal that opened it, when the daemon checks tokens: only it
        /// (or an admin) may use the session. Absent with authentication off, and in entries
        /// written before principals existed.
        #[serde(default)]
        principal: Option<String>,
    },
    /// Closes a session at its client's request, releasing its locks and dropping its waits.
    CloseSession { session: SessionId, seq: Seq },
    /// Expires a session whose lease ran out on the leader. Same effect as `CloseSession`.
    ExpireSession { session: SessionId },
    /// Ends a session at once at an administrator's request (the forced revoke). Same effect
    /// as `CloseSession`; a session that does not exist answers `SessionExpired`. Unsafe for a
    /// holder that is still working: its locks move before it can hear of the revoke.
    RevokeSession { session: SessionId },
    /// Marks a session revoked at an administrator's request (the safe revoke): its queued
    /// acquires end with `Revoked`, and from then on the leader refuses its keep-alives and the
    /// state refuses its `Acquire`, `Extend` and `Append` (`Revoked`). Its grants stay held until
    /// the session closes, releases them, or its lease runs out on the leader (`ExpireSession`),
    /// so nobody else is granted them before the holder's own lease ends. A session that does
    /// not exist answers `SessionExpired`; marking a revoked session again changes nothing.
    MarkRevoked { session: SessionId },
    /// Acquires a lock, or joins its FIFO queue.
    Acquire {
        session: SessionId,
        seq: Seq,
        /// The lock's name.
        lock: String,
        mode: LockMode,
        /// How long to wait in the queue, in milliseconds: `Some(0)` tries once, `None` waits
        /// until granted or the session ends. The leader proposes `ExpireWait` when it passes.
        wait_ms: Option<u64>,
        /// If set, the grant lasts at most this long; the leader then proposes `ExpireHold`.
        hold_ms: Option<u64>,
    },
    /// Releases a lock the session holds, granting it to the next waiters in FIFO order.
    Release {
        session: SessionId,
        seq: Seq,
        lock: String,
    },
    /// Removes the session's queued acquire `acquire_seq` of `lock` from the queue, if it still
    /// waits; it then ends with `Cancelled`, and the waiters it blocked may be granted.
    Cancel {
        session: SessionId,
        seq: Seq,
        lock: String,
        acquire_seq: Seq,
    },
    /// Restarts the hold limit of the session's grant `fence` of `lock` at `hold_ms`, counted
    /// (by the leader) from when this entry is applied.
    Extend {
        session: SessionId,
        seq: Seq,
        lock: String,
        fence: Fence,
        hold_ms: u64,
    },
    /// Appends to a file, only if `fence` is the session's current exclusive grant of `lock`
    /// and the file and the total stay within `quota`.
    Append {
        session: SessionId,
        seq: Seq,
        file: String,
        lock: String,
        fence: Fence,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The size limits of the leader that proposed the entry, carried in it so that every
        /// replica checks the same ones (see [`Quota`]). Absent in entries written before
        /// quotas existed: no limit.
        #[serde(default)]
        quota: Option<Quota>,
    },
    /// Cuts a file to `size` bytes, only if `fence` is the session's current exclusive grant
    /// of `lock` (as for `Append`). A size at or past the end changes nothing.
    Truncate {
        session: SessionId,
        seq: Seq,
        file: String,
        lock: String,
        fence: Fence,
        size: u64,
    },
    /// Deletes a file, only if `fence` is the session's current exclusive grant of `lock` (as
    /// for `Append`). A later `Append` creates the file anew, empty.
    Delete {
        session: SessionId,
        seq: Seq,
        file: String,
        lock: String,
        fence: Fence,
    },
    /// Ends the wait of the `Acquire` (session, seq) on `lock` if it is still queued. Proposed by
    /// the leader when the wait bound passes.
    ExpireWait {
        session: SessionId,
        seq: Seq,
        lock: String,
    },
    /// Revokes the grant `fence` of `lock` to `session` if it still holds it and its hold limit
    /// last started at index `since`. Proposed by the leader when the grant's hold limit passes.
    ///
    /// `since` makes the expiry lose a race with `Extend`: an Extend already in the log when
    /// the leader proposed this (but not yet applied there) restarts the hold at its own index,
    /// so this entry, applied after it, finds another start and does nothing; the leader's
    /// new deadline ends the extended hold. `None` (entries written before the field existed)
    /// ends the grant whatever its start.
    ExpireHold {
        session: SessionId,
        lock: String,
        fence: Fence,
        #[serde(default)]
        since: Option<Index>,
    },
}

/// File size limits in bytes, as the proposing leader's flags set them.
///
/// They travel in each `Append` entry instead of being read from the applying node's flags:
/// replicas started with different flags must still apply the same log to the same state, and
/// a check made at apply time is exact (a check on the leader before proposing could not see
/// the appends still in the log ahead of the entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// The largest size any one file may grow to.
    pub max_file_bytes: u64,
    /// The largest total of every file's size.
    pub max_total_bytes: u64,
}

/// The deterministic result of applying a command. Lock outcomes are values, not errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A session was opened (or the retried open found it).
    SessionOpened {
        session: SessionId,
        token: u64,
        ttl_ms: u64,
    },
    /// The session was closed or expired.
    SessionClosed,
    /// The lock was granted with this fencing token.
    Granted { fence: Fence },
    /// The request waits in the lock's queue; `position` counts waiters ahead of it (0 = next).
    /// The final outcome arrives later as a `Notification` for the same (session, seq).
    Queued { position: u64 },
    /// A try-once acquire (`wait_ms == Some(0)`) found the lock unavailable.
    Busy,
    /// A queued acquire waited past its bound.
    TimedOut,
    /// The lock was released.
    Released,
    /// A queued acquire left the queue by `Cancel`: the answer to the `Cancel` and the final
    /// outcome of the acquire.
    Cancelled,
    /// `Cancel` named an acquire that does not wait (granted, ended, or never applied).
    NotWaiting,
    /// The grant's hold limit restarted at `hold_ms` (the leader restarts its deadline).
    Extended { hold_ms: u64 },
    /// The session does not hold that lock (release, append or revoke of a lock not held).
    NotHolder,
    /// The session holds or waits for the lock in the other mode, or already waits for it.
    Conflict,
    /// Data was appended; `offset` is where it starts in the file, `size` the file's new size.
    Appended { offset: u64, size: u64 },
    /// The file was cut (or already was no longer than asked); `size` is its size now.
    Truncated { size: u64 },
    /// The file was deleted; `size` is the size it had.
    Deleted { size: u64 },
    /// `Truncate` or `Delete` of a file that does not exist.
    NotFound,
    /// The append would make the file `size` bytes, more than the per-file `limit`; nothing
    /// was written.
    FileQuotaExceeded { limit: u64, size: u64 },
    /// The append would make all files together `size` bytes, more than the total `limit`;
    /// nothing was written.
    TotalQuotaExceeded { limit: u64, size: u64 },
    /// The fence is not the session's current exclusive grant of the lock.
    StaleFence,
    /// The session does not exist: it expired or was closed.
    SessionExpired,
    /// The sequence number is older than the oldest result the session still remembers.
    SequenceTooOld,
    /// The sequence number is remembered for a different request (another digest): a client
    /// bug; nothing was applied.
    SequenceReused,
    /// The session was revoked by an administrator (`MarkRevoked`): it may no longer acquire,
    /// extend or append, and a queued acquire of it ended.
    Revoked,
    /// An internal command (expiry, revoke) found nothing to do.
    Ignored,
}

/// A later outcome for an earlier request: a queued acquire that was granted, timed out, was
/// cancelled or ended with its session. The daemon answers the client waiting on (session, seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub session: SessionId,
    pub seq: Seq,
    pub outcome: Outcome,
}

/// Everything applying one command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The result for the request in the entry itself.
    pub outcome: Outcome,
    /// Results for earlier requests that this entry resolved, in FIFO order.
    pub notifications: Vec<Notification>,
}
