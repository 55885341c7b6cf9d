//! The replicated lock state machine: sessions, named locks with FIFO queues, fencing tokens,
//! lock-guarded files and the exactly-once table. Pure and deterministic: no I/O, clock or RNG.

mod command;

pub use command::{Applied, Command, Fence, LockMode, Notification, Outcome, Seq, SessionId};

use crate::raft::Index;

/// Errors restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot bytes do not decode.
    #[error("corrupt lockspace snapshot: {0}")]
    CorruptSnapshot(#[from] rmp_serde::decode::Error),
}

/// A live session as queries see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub token: u64,
    pub ttl_ms: u64,
}

/// A lock as queries see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub name: String,
    /// Mode of the current grant; `None` when free.
    pub mode: Option<LockMode>,
    /// (session, fence) of each holder, in grant order.
    pub holders: Vec<(SessionId, Fence)>,
    /// Queued acquires in FIFO order.
    pub waiters: Vec<WaitInfo>,
}

/// A queued acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitInfo {
    pub session: SessionId,
    pub seq: Seq,
    pub lock: String,
    pub mode: LockMode,
    /// The wait bound in ms; `None` waits forever.
    pub wait_ms: Option<u64>,
}

/// A grant with a hold limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldInfo {
    pub session: SessionId,
    pub lock: String,
    pub fence: Fence,
    pub hold_ms: u64,
}

/// The whole replicated state.
#[derive(Debug, Default)]
pub struct LockSpace {}

impl LockSpace {
    /// An empty state.
    pub fn new() -> LockSpace {
        LockSpace::default()
    }

    /// Applies the command of the log entry at `index`. Indexes must increase.
    pub fn apply(&mut self, _index: Index, _command: &Command) -> Applied {
        todo!("lockspace")
    }

    /// The index of the last applied entry (0 if none).
    pub fn applied_index(&self) -> Index {
        todo!("lockspace")
    }

    /// Records that `index` was applied without a command (a Raft no-op or config entry).
    pub fn skip(&mut self, _index: Index) {
        todo!("lockspace")
    }

    /// Serializes the whole state, including the applied index.
    pub fn snapshot(&self) -> Vec<u8> {
        todo!("lockspace")
    }

    /// Rebuilds a state from `snapshot()` bytes.
    pub fn restore(_data: &[u8]) -> Result<LockSpace, Error> {
        todo!("lockspace")
    }

    /// A live session.
    pub fn session(&self, _id: SessionId) -> Option<SessionInfo> {
        todo!("lockspace")
    }

    /// Every live session, by id.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        todo!("lockspace")
    }

    /// One lock, if it is held or has waiters.
    pub fn lock(&self, _name: &str) -> Option<LockInfo> {
        todo!("lockspace")
    }

    /// Every lock that is held or has waiters, by name, optionally filtered by prefix.
    pub fn locks(&self, _prefix: Option<&str>) -> Vec<LockInfo> {
        todo!("lockspace")
    }

    /// Every queued acquire with a wait bound (the leader schedules `ExpireWait` for them).
    pub fn bounded_waits(&self) -> Vec<WaitInfo> {
        todo!("lockspace")
    }

    /// Every grant with a hold limit (the leader schedules `ExpireHold` for them).
    pub fn limited_holds(&self) -> Vec<HoldInfo> {
        todo!("lockspace")
    }

    /// Reads up to `len` bytes of `file` from `offset`; returns the bytes and the file's size,
    /// or `None` if the file does not exist.
    pub fn read(&self, _file: &str, _offset: u64, _len: u64) -> Option<(&[u8], u64)> {
        todo!("lockspace")
    }
}
