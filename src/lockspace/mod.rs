//! The replicated lock state machine: sessions, named locks with FIFO queues, fencing tokens,
//! lock-guarded files and the exactly-once table. Pure and deterministic: no I/O, clock or RNG.
//!
//! Every replica feeds the committed log, entry by entry, to [`LockSpace::apply`]; because
//! `apply` depends only on the entry's index and command and on the state before it, every
//! replica reaches byte-identical states (and [`LockSpace::snapshot`] bytes) after the same prefix.
//!
//! # Sessions
//!
//! `OpenSession` creates a session whose id is the index of its log entry, so ids are unique and
//! need no counter. The command carries a client-chosen nonce: a retried open whose first try
//! was committed finds the live session through the nonce map and gets the same answer, instead
//! of leaking a second session. The open may name an `owner` (free text such as `user@host pid
//! command`) that queries show. A session ends by `CloseSession` (the client), `ExpireSession`
//! (the leader, when the lease ran out) or `RevokeSession` (an administrator's forced revoke);
//! either way its grants are released, its queued acquires end with `SessionExpired`
//! notifications, and its results table and nonce are freed. Requests naming a session that
//! does not exist answer `SessionExpired` and change nothing.
//!
//! An administrator's ordinary revoke is `MarkRevoked`, which does not free the locks at once:
//! the holder's work may still be running, and it only learns of the revoke at its next
//! keep-alive. The session is marked revoked; its queued acquires end with `Revoked`, and it
//! may no longer acquire, extend or append (`Revoked`), while the leader refuses its
//! keep-alives. Its grants stay until it releases them or closes (which its client does once
//! its work is stopped) or until its lease runs out on the leader (`ExpireSession`, the normal
//! path). Since the client's own lease ends before the leader's, the holder has stopped before
//! anybody else can be granted its locks.
//!
//! # Locks, modes and FIFO
//!
//! A lock is a small list of holders and a FIFO queue of waiters (`lock.rs`); it exists in memory
//! only while someone holds it or waits for it. An exclusive acquire is granted at once only if
//! there are no holders and nobody waits; a shared one if no exclusive grant exists and nobody
//! waits. The "nobody waits" clause means a queued writer blocks readers that arrive after it,
//! so writers cannot starve. Otherwise a try-once acquire (`wait_ms == Some(0)`) answers `Busy`
//! and any other joins the back of the queue (`Queued { position }`). A waiter leaves the queue
//! early by `Cancel`, which names its acquire by (session, seq) so that a late retry of an old
//! cancel never removes a newer acquire of the same lock; the acquire then ends `Cancelled`,
//! and a cancel that finds nothing queued answers `NotWaiting`. Whenever holders or waiters
//! leave (release, revoke, wait expiry, cancel, session end), the front of the queue is granted while it
//! fits beside the holders: an exclusive front needs the lock free, a shared front brings every
//! consecutive shared waiter with it, and granting stops at the first waiter that does not fit.
//! Later results of queued acquires leave `apply` as [`Notification`]s in FIFO order. Re-acquiring
//! a lock in the mode the session already holds returns the same grant (idempotent); the other
//! mode, or a second acquire while one waits, is a `Conflict` (no upgrades, no self-deadlock).
//! A grant's hold limit (`hold_ms`) is renewed by `Extend`, which names the grant by its fence:
//! the state records the new duration and the index where the hold restarted, and the leader
//! restarts its deadline when it applies the entry (the `Extended` outcome tells it so). An
//! `ExpireHold` names that index, so an expiry the leader proposed while an Extend was still in
//! the log behind it does nothing: the holder was told `Extended`, and the grant stands until
//! the new deadline.
//!
//! # Fencing
//!
//! Every grant gets a fencing token `max(index, last_fence + 1)`: unique and strictly increasing
//! over all grants of all locks, and at least the index of the entry that made it (one entry can
//! grant several waiters; they get consecutive tokens). `Append` is applied only when its token is
//! the session's current exclusive grant of the named lock, otherwise `StaleFence`: a holder that
//! paused or was partitioned while its grant expired can never write after the lock moved on.
//! Downstream stores can apply the same check with the tokens we hand out.
//!
//! # Files
//!
//! A file exists from its first `Append` until a `Delete`; `Truncate` cuts it to a shorter
//! size (a size at or past the end changes nothing and answers the current size). All three
//! are fenced alike: the fence must be the session's current exclusive grant of the lock the
//! request names, else `StaleFence`, and a revoked session gets `Revoked`. Which lock guards
//! which file stays the clients' convention; the state records the lock and fence of each
//! file's last write so that `Files` can show them. `Truncate` and `Delete` of a file that does
//! not exist answer `NotFound`; a file appended to after a `Delete` starts anew at offset 0.
//!
//! Size limits (`Quota`: per file and in total) are checked when an `Append` applies, against
//! the limits carried in the entry itself by the leader that proposed it: applying never reads
//! a node's own flags, so nodes configured differently cannot diverge, and the check sees every
//! earlier entry, which a check before proposing could not (appends still in the log). Over a
//! limit the append answers `FileQuotaExceeded` or `TotalQuotaExceeded`, writes nothing, and,
//! like every outcome, is what a retry of its seq gets again. Only growth is refused: after an
//! operator lowers a limit, files over it can still be truncated or deleted.
//!
//! # Exactly once
//!
//! Each session remembers the outcomes of its last [`DEDUP_WINDOW`] requests by sequence number
//! (`dedup.rs`), each with a digest of the request that produced it (`digest.rs`). A request
//! whose seq is remembered answers the stored outcome and changes nothing, so a retry after a
//! timeout or failover is never applied twice; a *different* request on a remembered seq (a
//! client bug) answers `SequenceReused` and changes nothing either; a queued acquire's entry is
//! rewritten when it resolves, and while it still waits a retry answers its current queue
//! position (a reconnecting waiter is re-attached to its place). The lowest seqs are evicted
//! first; a seq at or below the highest evicted one answers `SequenceTooOld`, because its result
//! is gone and applying it again could apply it twice. Internal commands (`ExpireSession`,
//! `ExpireWait`, `ExpireHold`) are idempotent by construction: they name exactly what they end
//! (a session, a (session, seq) wait, a (session, fence) grant) and answer `Ignored` otherwise.
//!
//! # Why time never enters the state
//!
//! Replicas apply entries at different wall-clock moments, and their clocks disagree. If `apply`
//! read a clock, two replicas could decide differently whether a lease or wait had expired and
//! diverge for ever. So only the leader reads its clock: it keeps lease, wait and hold deadlines
//! in memory (from [`LockSpace::sessions`], [`LockSpace::bounded_waits`] and
//! [`LockSpace::limited_holds`]) and, when one passes, proposes `ExpireSession`, `ExpireWait` or
//! `ExpireHold` through the log. The state stores durations (`ttl_ms`, `wait_ms`, `hold_ms`) only
//! so a new leader can restart the deadlines. Likewise there is no randomness: tokens are drawn
//! by the leader and carried in the command.
//!
//! # Caveats
//!
//! - Lease renewal (keep-alive) is not in the log, so after a leader change every deadline
//!   restarts at `now + ttl`: a dead client's locks can outlive its TTL by up to one TTL.
//! - The state checks neither tokens nor name lengths: the daemon authenticates the session token
//!   and enforces protocol limits before proposing.
//! - A queued acquire whose results-table entry was evicted (more than [`DEDUP_WINDOW`] later
//!   requests while it waits) still resolves, but a retry of it answers `SequenceTooOld`.
//! - A retried `CloseSession` answers `SessionExpired`: the session and its table are gone.
//! - No lock upgrade/downgrade, no recursive (counted) holds, no lock-level ACLs.
//! - File bytes live in memory and in every snapshot (the quotas below keep them bounded).
//! - `bounded_waits` and `limited_holds` scan every lock; the leader calls them on election and
//!   then follows notifications and outcomes.

mod command;
mod contents;
mod dedup;
mod digest;
mod file;
mod lock;
mod machine;
mod session;

#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use command::{
    Applied, Command, Fence, LockMode, Notification, Outcome, Quota, Seq, SessionId,
};
pub use dedup::DEDUP_WINDOW;

use crate::raft::Index;

/// Errors restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot bytes do not decode.
    #[error("corrupt lockspace snapshot: {0}")]
    CorruptSnapshot(#[from] rmp_serde::decode::Error),
    /// The snapshot decodes but breaks an invariant of the state (e.g. a holder without a
    /// session), so applying further entries could not be trusted.
    #[error("inconsistent lockspace snapshot: {0}")]
    InconsistentSnapshot(&'static str),
}

use file::File;
use lock::{Lock, Waiter};
use session::Session;

/// A live session as queries see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id: the index of its `OpenSession` entry.
    pub id: SessionId,
    /// The secret the client presents with each request.
    pub token: u64,
    /// The lease length in ms.
    pub ttl_ms: u64,
    /// Who opened it, if the client said.
    pub owner: Option<String>,
    /// True once an administrator revoked it (`MarkRevoked`): it holds its grants only until
    /// it closes or its lease runs out.
    pub revoked: bool,
    /// The authenticated principal that opened it (`None` with authentication off).
    pub principal: Option<String>,
}

/// A lock as queries see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock's name.
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
    /// The waiting session.
    pub session: SessionId,
    /// The seq of its `Acquire` (what `ExpireWait` names).
    pub seq: Seq,
    /// The lock waited for.
    pub lock: String,
    /// The mode asked for.
    pub mode: LockMode,
    /// The wait bound in ms; `None` waits forever.
    pub wait_ms: Option<u64>,
}

/// A file as `Files` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The lock named by its last write; `None` if unknown (restored from a snapshot written
    /// before this was recorded, and not written since).
    pub lock: Option<String>,
    /// The fence of its last write; `None` if unknown.
    pub fence: Option<Fence>,
}

/// A grant with a hold limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldInfo {
    /// The holding session.
    pub session: SessionId,
    /// The lock held.
    pub lock: String,
    /// The grant's fencing token (what `ExpireHold` names).
    pub fence: Fence,
    /// The hold limit in ms.
    pub hold_ms: u64,
    /// The log index at which the hold limit last started (the grant or its last `Extend`):
    /// what the leader's `ExpireHold` names, so that an expiry proposed before an Extend was
    /// applied does nothing.
    pub since: Index,
}

/// The whole replicated state.
///
/// Invariants (checked on restore):
/// - every lock is held or has waiters, and satisfies the invariants in `lock.rs`;
/// - every holder and waiter belongs to a live session, and each session's lock list names
///   exactly the locks it holds or waits for;
/// - `nonces` maps exactly the live sessions' nonces to their ids;
/// - `last_fence` is at least every fence held, and `applied_index` at least every session id.
///
/// Every map is a `BTreeMap`, so iteration and snapshots are deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSpace {
    /// The index of the last applied (or skipped) entry.
    applied_index: Index,
    /// The last fencing token handed out (0 if none).
    last_fence: Fence,
    /// Live sessions by id.
    sessions: BTreeMap<SessionId, Session>,
    /// Open nonce → the session it opened, for retried opens.
    nonces: BTreeMap<u64, SessionId>,
    /// Locks that are held or have waiters, by name.
    locks: BTreeMap<String, Lock>,
    /// Lock-guarded files by name.
    files: BTreeMap<String, File>,
    /// The sum of every file's size (for the total quota): derived from `files`, so not in
    /// snapshots; `restore` recomputes it.
    #[serde(skip)]
    file_bytes: u64,
}

impl LockSpace {
    /// An empty state.
    pub fn new() -> LockSpace {
        LockSpace::default()
    }

    /// Applies the command of the log entry at `index`. Indexes must increase.
    pub fn apply(&mut self, index: Index, command: &Command) -> Applied {
        assert!(
            index > self.applied_index,
            "apply of index {index} at or below applied index {}",
            self.applied_index
        );
        self.applied_index = index;
        self.apply_command(index, command)
    }

    /// The index of the last applied entry (0 if none).
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Records that `index` was applied without a command (a Raft no-op or config entry).
    pub fn skip(&mut self, index: Index) {
        assert!(
            index > self.applied_index,
            "skip of index {index} at or below applied index {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    /// A copy of the whole state for a snapshot built elsewhere (`snapshot` on a blocking
    /// thread): it costs O(metadata) (sessions, locks, file names and segment lists), since file
    /// bytes are shared segments that later writes never change.
    pub fn capture(&self) -> LockSpace {
        self.clone()
    }

    /// Serializes the whole state, including the applied index. Identical states give identical
    /// bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("the state has only serializable, string-keyed data")
    }

    /// Rebuilds a state from `snapshot()` bytes. Bytes that do not decode, or decode to a state
    /// that breaks an invariant, are refused rather than trusted.
    pub fn restore(data: &[u8]) -> Result<LockSpace, Error> {
        let mut space: LockSpace = rmp_serde::from_slice(data)?;
        space.file_bytes = space.files.values().map(File::size).sum();
        space.check_consistency()?;
        Ok(space)
    }

    /// A live session.
    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        self.sessions.get(&id).map(|s| SessionInfo {
            id,
            token: s.token,
            ttl_ms: s.ttl_ms,
            owner: s.owner.clone(),
            revoked: s.revoked,
            principal: s.principal.clone(),
        })
    }

    /// The owner a live session gave, if any.
    pub fn owner(&self, id: SessionId) -> Option<&str> {
        self.sessions.get(&id)?.owner.as_deref()
    }

    /// Every live session, by id.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .map(|(&id, s)| SessionInfo {
                id,
                token: s.token,
                ttl_ms: s.ttl_ms,
                owner: s.owner.clone(),
                revoked: s.revoked,
                principal: s.principal.clone(),
            })
            .collect()
    }

    /// One lock, if it is held or has waiters.
    pub fn lock(&self, name: &str) -> Option<LockInfo> {
        self.locks.get(name).map(|lock| lock_info(name, lock))
    }

    /// Every lock that is held or has waiters, by name, optionally filtered by prefix.
    pub fn locks(&self, prefix: Option<&str>) -> Vec<LockInfo> {
        let prefix = prefix.unwrap_or("");
        // Names with the prefix form one contiguous range of the sorted map.
        self.locks
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, lock)| lock_info(name, lock))
            .collect()
    }

    /// Every queued acquire with a wait bound (the leader schedules `ExpireWait` for them), by
    /// lock name then queue order.
    pub fn bounded_waits(&self) -> Vec<WaitInfo> {
        self.locks
            .iter()
            .flat_map(|(name, lock)| lock.queue.iter().map(move |w| wait_info(name, w)))
            .filter(|w| matches!(w.wait_ms, Some(ms) if ms > 0))
            .collect()
    }

    /// Every grant with a hold limit (the leader schedules `ExpireHold` for them), by lock name
    /// then grant order.
    pub fn limited_holds(&self) -> Vec<HoldInfo> {
        self.locks
            .iter()
            .flat_map(|(name, lock)| {
                lock.holders.iter().filter_map(move |h| {
                    Some(HoldInfo {
                        session: h.session,
                        lock: name.clone(),
                        fence: h.fence,
                        hold_ms: h.hold_ms?,
                        since: h.hold_since,
                    })
                })
            })
            .collect()
    }

    /// `session`'s grant of `lock`, if it has one with a hold limit.
    pub fn limited_hold(&self, lock: &str, session: SessionId) -> Option<HoldInfo> {
        let h = self.locks.get(lock)?.holder(session)?;
        Some(HoldInfo {
            session,
            lock: lock.to_owned(),
            fence: h.fence,
            hold_ms: h.hold_ms?,
            since: h.hold_since,
        })
    }

    /// Reads up to `len` bytes of `file` from `offset`; returns the bytes and the file's size,
    /// or `None` if the file does not exist.
    pub fn read(&self, file: &str, offset: u64, len: u64) -> Option<(Cow<'_, [u8]>, u64)> {
        self.files
            .get(file)
            .map(|f| (f.read(offset, len), f.size()))
    }

    /// The grants a session holds: (lock, mode, fence), by lock name. Empty for unknown
    /// sessions. Lets a reconnecting client or the CLI list what it owns.
    pub fn holds(&self, session: SessionId) -> Vec<(String, LockMode, Fence)> {
        let Some(state) = self.sessions.get(&session) else {
            return Vec::new();
        };
        state
            .locks
            .iter()
            .filter_map(|name| {
                let lock = self.locks.get(name)?;
                let holder = lock.holder(session)?;
                Some((name.clone(), lock.mode, holder.fence))
            })
            .collect()
    }

    /// The locks a session holds or waits for, by name (empty for unknown sessions): what an
    /// entry ending the session can change, for the leader's push events.
    pub fn involved_locks(&self, session: SessionId) -> Vec<String> {
        self.sessions
            .get(&session)
            .map(|s| s.locks.clone())
            .unwrap_or_default()
    }

    /// The last fencing token handed out (0 if none); the next grant gets a larger one.
    pub fn last_fence(&self) -> Fence {
        self.last_fence
    }

    /// Sizes of the state for status output and metrics.
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len() as u64,
            locks: self.locks.len() as u64,
            waiters: self.locks.values().map(|l| l.queue.len() as u64).sum(),
            files: self.files.len() as u64,
            file_bytes: self.file_bytes,
        }
    }

    /// Every file and its size, by name, optionally filtered by prefix.
    pub fn files(&self, prefix: Option<&str>) -> Vec<(String, u64)> {
        let prefix = prefix.unwrap_or("");
        self.files
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, file)| (name.clone(), file.size()))
            .collect()
    }

    /// Every file with its size and last write, by name, optionally filtered by prefix.
    pub fn file_list(&self, prefix: Option<&str>) -> Vec<FileInfo> {
        let prefix = prefix.unwrap_or("");
        self.files
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, file)| {
                let (lock, fence) = file.last_write();
                FileInfo {
                    name: name.clone(),
                    size: file.size(),
                    lock: lock.map(str::to_owned),
                    fence,
                }
            })
            .collect()
    }

    /// Checks the invariants listed on the type; a restored state must pass before it is used.
    fn check_consistency(&self) -> Result<(), Error> {
        use Error::InconsistentSnapshot as Bad;
        for (name, lock) in &self.locks {
            if !lock.is_consistent() {
                return Err(Bad("a lock breaks its invariants"));
            }
            let sessions = lock
                .holders
                .iter()
                .map(|h| h.session)
                .chain(lock.queue.iter().map(|w| w.session));
            for id in sessions {
                let known = self
                    .sessions
                    .get(&id)
                    .is_some_and(|s| s.locks.binary_search(name).is_ok());
                if !known {
                    return Err(Bad("a holder or waiter has no session that lists the lock"));
                }
            }
            if lock.holders.iter().any(|h| h.fence > self.last_fence) {
                return Err(Bad("a fence is above the last fence"));
            }
        }
        for (&id, session) in &self.sessions {
            if id > self.applied_index || !session.dedup.is_consistent() {
                return Err(Bad(
                    "a session is ahead of the applied index or its table is bad",
                ));
            }
            if !session.locks.windows(2).all(|pair| pair[0] < pair[1]) {
                return Err(Bad("a session's lock list is not sorted"));
            }
            for name in &session.locks {
                let involved = self
                    .locks
                    .get(name)
                    .is_some_and(|lock| lock.holder(id).is_some() || lock.waiter_of(id).is_some());
                if !involved {
                    return Err(Bad("a session lists a lock it neither holds nor waits for"));
                }
            }
            if self.nonces.get(&session.nonce) != Some(&id) {
                return Err(Bad("a session's nonce does not map to it"));
            }
        }
        if self.nonces.len() != self.sessions.len() {
            return Err(Bad("a nonce maps to no session"));
        }
        Ok(())
    }
}

/// Sizes of the state, for status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live sessions.
    pub sessions: u64,
    /// Locks held or waited for.
    pub locks: u64,
    /// Queued acquires over all locks.
    pub waiters: u64,
    /// Files.
    pub files: u64,
    /// Total bytes over all files.
    pub file_bytes: u64,
}

fn lock_info(name: &str, lock: &Lock) -> LockInfo {
    LockInfo {
        name: name.to_owned(),
        mode: lock.current_mode(),
        holders: lock.holders.iter().map(|h| (h.session, h.fence)).collect(),
        waiters: lock.queue.iter().map(|w| wait_info(name, w)).collect(),
    }
}

fn wait_info(name: &str, waiter: &Waiter) -> WaitInfo {
    WaitInfo {
        session: waiter.session,
        seq: waiter.seq,
        lock: name.to_owned(),
        mode: waiter.mode,
        wait_ms: waiter.wait_ms,
    }
}
