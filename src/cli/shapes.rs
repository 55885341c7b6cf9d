//! The `--json` shapes: one serializable type per command's answer, so that each command
//! prints one documented field set (docs/cli.md), always the same, whatever the values.
//!
//! Fields are written in declaration order; an absent value is `null`, never a missing field.

use serde::Serialize;

use super::output::mode_name;
use crate::lockspace::{Fence, SessionId};
use crate::protocol::{FileEntry, LockState, MemberStatus, SessionSummary, StatusInfo};

/// `acquire`: the session and grant a script needs (`eval`-free).
#[derive(Debug, Serialize)]
pub(super) struct Acquired<'a> {
    pub lock: &'a str,
    pub session: SessionId,
    pub token: u64,
    pub fence: Fence,
    pub ttl_ms: u64,
}

/// `release`: the lock released, and whether the session was closed too (`--close`).
#[derive(Debug, Serialize)]
pub(super) struct Released<'a> {
    pub lock: &'a str,
    pub session: SessionId,
    pub released: bool,
    pub closed: bool,
}

/// `close`: the same `session` and `closed` fields as [`Released`].
#[derive(Debug, Serialize)]
pub(super) struct Closed {
    pub session: SessionId,
    pub closed: bool,
}

/// `keepalive`: the lease granted by the renewal.
#[derive(Debug, Serialize)]
pub(super) struct Renewed {
    pub session: SessionId,
    pub ttl_ms: u64,
}

/// `append`: where the bytes landed and the file's new size.
#[derive(Debug, Serialize)]
pub(super) struct Appended<'a> {
    pub file: &'a str,
    pub offset: u64,
    pub len: u64,
    pub size: u64,
}

/// `truncate`: the file's size after the cut (less than asked if it was shorter already).
#[derive(Debug, Serialize)]
pub(super) struct Truncated<'a> {
    pub file: &'a str,
    pub size: u64,
}

/// `rm`: the file deleted and the size it had.
#[derive(Debug, Serialize)]
pub(super) struct Deleted<'a> {
    pub file: &'a str,
    pub deleted: bool,
    pub size: u64,
}

/// `files`: one file (the answer is an array of these).
#[derive(Debug, Serialize)]
pub(super) struct File<'a> {
    pub name: &'a str,
    pub size: u64,
    /// The lock of the last write (null if unknown).
    pub lock: Option<&'a str>,
    /// The fence of the last write (null if unknown).
    pub fence: Option<Fence>,
}

impl<'a> From<&'a FileEntry> for File<'a> {
    fn from(f: &'a FileEntry) -> Self {
        File {
            name: &f.name,
            size: f.size,
            lock: f.lock.as_deref(),
            fence: f.fence,
        }
    }
}

/// `read`: the bytes read from `offset`, as text if they are UTF-8 (`encoding` "utf-8"),
/// else as lowercase hex (`encoding` "hex"); the field set is the same either way.
#[derive(Debug, Serialize)]
pub(super) struct ReadData<'a> {
    pub file: &'a str,
    pub offset: u64,
    pub len: u64,
    pub size: u64,
    pub encoding: &'static str,
    pub data: String,
}

impl<'a> ReadData<'a> {
    /// The answer for `data` read from `file` at `offset`, of a file of `size` bytes.
    pub fn new(file: &'a str, offset: u64, size: u64, data: Vec<u8>) -> Self {
        let len = data.len() as u64;
        let (encoding, data) = match String::from_utf8(data) {
            Ok(text) => ("utf-8", text),
            Err(bad) => ("hex", hex(bad.as_bytes())),
        };
        ReadData {
            file,
            offset,
            len,
            size,
            encoding,
            data,
        }
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// `locks`: one lock (the answer is an array of these).
#[derive(Debug, Serialize)]
pub(super) struct Lock<'a> {
    pub name: &'a str,
    /// `exclusive`, `shared`, or null when nobody holds it.
    pub mode: Option<&'static str>,
    pub holders: Vec<Holder<'a>>,
    pub waiters: Vec<Waiter<'a>>,
}

/// A holder of a lock.
#[derive(Debug, Serialize)]
pub(super) struct Holder<'a> {
    pub session: SessionId,
    pub fence: Fence,
    pub owner: Option<&'a str>,
    /// How long the grant has been held, by the leader's clock (null when it cannot know).
    pub held_ms: Option<u64>,
    /// The hold limit's time left (null without a limit, or when unknown).
    pub hold_left_ms: Option<u64>,
}

/// A queued acquire of a lock.
#[derive(Debug, Serialize)]
pub(super) struct Waiter<'a> {
    pub session: SessionId,
    pub seq: u64,
    pub mode: &'static str,
    pub owner: Option<&'a str>,
    /// How long it has waited, by the leader's clock (null when it cannot know).
    pub waited_ms: Option<u64>,
}

impl<'a> From<&'a LockState> for Lock<'a> {
    fn from(lock: &'a LockState) -> Self {
        Lock {
            name: &lock.name,
            mode: lock.mode.map(mode_name),
            holders: lock
                .holders
                .iter()
                .map(|h| Holder {
                    session: h.session,
                    fence: h.fence,
                    owner: h.owner.as_deref(),
                    held_ms: h.held_ms,
                    hold_left_ms: h.hold_left_ms,
                })
                .collect(),
            waiters: lock
                .waiters
                .iter()
                .map(|w| Waiter {
                    session: w.session,
                    seq: w.seq,
                    mode: mode_name(w.mode),
                    owner: w.owner.as_deref(),
                    waited_ms: w.waited_ms,
                })
                .collect(),
        }
    }
}

/// `sessions`: one live session (the answer is an array of these).
#[derive(Debug, Serialize)]
pub(super) struct Session<'a> {
    pub session: SessionId,
    pub owner: Option<&'a str>,
    pub ttl_ms: u64,
    pub since_renewal_ms: Option<u64>,
}

impl<'a> From<&'a SessionSummary> for Session<'a> {
    fn from(s: &'a SessionSummary) -> Self {
        Session {
            session: s.session,
            owner: s.owner.as_deref(),
            ttl_ms: s.ttl_ms,
            since_renewal_ms: s.since_renewal_ms,
        }
    }
}

/// `revoke`: the session revoked, and whether at once (`--force`).
#[derive(Debug, Serialize)]
pub(super) struct Revoked {
    pub session: SessionId,
    pub revoked: bool,
    pub force: bool,
}

/// A cluster member as the answering node's configuration lists it.
#[derive(Debug, Serialize)]
pub(super) struct Member<'a> {
    pub node_id: u64,
    pub addr: &'a str,
    pub voter: bool,
    /// The leader's replication progress for it; null from a follower.
    pub match_index: Option<u64>,
}

impl<'a> From<&'a MemberStatus> for Member<'a> {
    fn from(m: &'a MemberStatus) -> Self {
        Member {
            node_id: m.node_id,
            addr: &m.addr,
            voter: m.voter,
            match_index: m.match_index,
        }
    }
}

/// `status`: the answering node's own view.
#[derive(Debug, Serialize)]
pub(super) struct Status<'a> {
    pub node_id: u64,
    pub role: &'a str,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<&'a str>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub sessions: u64,
    pub locks: u64,
    pub members: Vec<Member<'a>>,
}

impl<'a> From<&'a StatusInfo> for Status<'a> {
    fn from(s: &'a StatusInfo) -> Self {
        Status {
            node_id: s.node_id,
            role: &s.role,
            term: s.term,
            leader: s.leader,
            leader_addr: s.leader_addr.as_deref(),
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_log_index: s.last_log_index,
            sessions: s.sessions,
            locks: s.locks,
            members: s.members.iter().map(Member::from).collect(),
        }
    }
}

/// `cluster add` and `cluster remove`: the committed configuration.
#[derive(Debug, Serialize)]
pub(super) struct Membership<'a> {
    pub index: u64,
    pub members: Vec<Member<'a>>,
}

/// `cluster transfer-leader`: the new leader.
#[derive(Debug, Serialize)]
pub(super) struct Leader<'a> {
    pub leader: u64,
    pub leader_addr: Option<&'a str>,
}

/// `cluster status`: the leader seen and every member's own answer.
#[derive(Debug, Serialize)]
pub(super) struct ClusterStatus {
    pub leader: Option<u64>,
    pub term: Option<u64>,
    pub members: Vec<ClusterMember>,
}

/// One row of `cluster status`; the fields of a member's own status are null when it did not
/// answer (`reachable` false).
#[derive(Debug, Serialize)]
pub(super) struct ClusterMember {
    pub node_id: u64,
    pub addr: String,
    /// `voter`, `learner` or `not a member`.
    pub kind: &'static str,
    pub reachable: bool,
    pub role: Option<String>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub match_index: Option<u64>,
    /// The leader's commit index less the member's applied index.
    pub lag: Option<u64>,
}

/// Any failure under `--json`, on stderr: the message and the exit status.
#[derive(Debug, Serialize)]
pub(super) struct Failed<'a> {
    pub error: &'a str,
    pub exit_code: u8,
}

/// `cluster health`: the verdict, the bound it was judged by, and every member's.
#[derive(Debug, Serialize)]
pub(super) struct ClusterHealth {
    /// True when every member is healthy (the exit status is then 0).
    pub healthy: bool,
    pub leader: Option<u64>,
    pub max_lag: u64,
    pub members: Vec<MemberHealth>,
}

/// One member of `cluster health`; its own fields are null when it did not answer.
#[derive(Debug, Serialize)]
pub(super) struct MemberHealth {
    pub node_id: u64,
    pub addr: String,
    pub healthy: bool,
    pub reachable: bool,
    pub role: Option<String>,
    pub term: Option<u64>,
    pub applied_index: Option<u64>,
    /// The leader's commit index less the member's applied index.
    pub lag: Option<u64>,
    /// Milliseconds its status took to arrive (or to fail).
    pub took_ms: u64,
    /// Why it is unhealthy; null when healthy.
    pub error: Option<String>,
}

/// `snapshot save`: the backup written, as the leader described it.
#[derive(Debug, Serialize)]
pub(super) struct SnapshotSaved<'a> {
    /// The backup file's path, as given.
    pub file: &'a str,
    pub index: u64,
    pub term: u64,
    /// The file's length in bytes.
    pub size: u64,
    /// crc32 of the whole file, 8 lowercase hex digits.
    pub checksum: &'a str,
}

/// `snapshot status`: what a backup file holds.
#[derive(Debug, Serialize)]
pub(super) struct SnapshotStatus<'a> {
    pub index: u64,
    pub term: u64,
    /// The file's length in bytes.
    pub size: u64,
    /// crc32 of the whole file, 8 lowercase hex digits.
    pub checksum: &'a str,
    /// Always true: a file that fails verification is an error instead.
    pub checksum_ok: bool,
    pub sessions: u64,
    pub locks: u64,
    pub files: u64,
    pub file_bytes: u64,
    /// Voters first, then learners, each by id.
    pub members: Vec<SnapshotMember<'a>>,
}

/// One member of a snapshot's membership.
#[derive(Debug, Serialize)]
pub(super) struct SnapshotMember<'a> {
    pub id: u64,
    pub addr: &'a str,
    pub voter: bool,
}
