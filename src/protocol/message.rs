//! The client wire messages. Every frame body is a MessagePack map with a `type` field naming
//! the message; requests carry a client-chosen `id` (never 0) that their responses echo.

use serde::{Deserialize, Serialize};

use crate::lockspace::{self, Fence, Seq, SessionId};

/// How a lock is held, as the wire spells it (`"exclusive"` or `"shared"`).
///
/// The protocol's own type rather than the lock space's: a change inside the state machine
/// cannot silently change the bytes a client in another language reads. The replica converts
/// at the boundary; `tests/protocol_doc.rs` pins the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// One holder at a time; the only mode that may append to files.
    Exclusive,
    /// Any number of holders at once, none exclusive.
    Shared,
}

impl From<LockMode> for lockspace::LockMode {
    fn from(mode: LockMode) -> Self {
        match mode {
            LockMode::Exclusive => lockspace::LockMode::Exclusive,
            LockMode::Shared => lockspace::LockMode::Shared,
        }
    }
}

impl From<lockspace::LockMode> for LockMode {
    fn from(mode: lockspace::LockMode) -> Self {
        match mode {
            lockspace::LockMode::Exclusive => LockMode::Exclusive,
            lockspace::LockMode::Shared => LockMode::Shared,
        }
    }
}

/// Who is on the other end of a connection, stated in `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An application using locks.
    Client,
    /// Another raftlockd of the same cluster.
    Peer,
}

/// A message from a client to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// The first frame on every connection.
    Hello {
        /// The protocol version the client speaks (`protocol::VERSION`).
        version: u32,
        role: Role,
        /// The client's secret authentication token, when the daemon requires one (a
        /// `--auth-tokens` file); absent otherwise, and always absent for role `peer`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Opens a session (a lease that owns locks).
    OpenSession {
        id: u64,
        /// Random value chosen once per open; a retry with the same nonce returns the same session.
        nonce: u64,
        /// Lease length in milliseconds.
        ttl_ms: u64,
        /// Who opens it (e.g. `user@host pid command`), shown by `Locks` and `Sessions`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Renews a session's lease. Not written to the log.
    KeepAlive {
        id: u64,
        session: SessionId,
        token: u64,
    },
    /// Closes a session, releasing its locks.
    CloseSession {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
    },
    /// Acquires a lock or waits for it.
    Acquire {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
        lock: String,
        mode: LockMode,
        /// Milliseconds to wait: 0 tries once, nil waits until granted.
        wait_ms: Option<u64>,
        /// Maximum milliseconds to hold the grant, nil for no limit.
        hold_ms: Option<u64>,
    },
    /// Releases a held lock.
    Release {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
        lock: String,
    },
    /// Cancels the session's queued `Acquire` (`acquire_seq`) of `lock`: it leaves the queue
    /// and gets the final answer `Cancelled`. Exactly-once like every mutating request.
    Cancel {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
        lock: String,
        /// The `seq` of the `Acquire` to cancel.
        acquire_seq: Seq,
    },
    /// Renews the hold limit of the session's grant `fence` of `lock`: the grant now lasts at
    /// most `hold_ms` from when the leader applies this request.
    Extend {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
        lock: String,
        fence: Fence,
        hold_ms: u64,
    },
    /// Appends bytes to a file under the lock's current fence.
    Append {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
        file: String,
        lock: String,
        fence: Fence,
        #[serde(with = "super::bin")]
        data: Vec<u8>,
    },
    /// Cuts a file to `size` bytes under the lock's current fence (as `Append`); a size at or
    /// past the end changes nothing.
    Truncate {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
        file: String,
        lock: String,
        fence: Fence,
        size: u64,
    },
    /// Deletes a file under the lock's current fence (as `Append`); a later `Append` creates
    /// it anew.
    Delete {
        id: u64,
        session: SessionId,
        token: u64,
        seq: Seq,
        file: String,
        lock: String,
        fence: Fence,
    },
    /// Lists files with their sizes and last writes.
    Files {
        id: u64,
        /// Only files whose name starts with this prefix.
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        stale: bool,
    },
    /// Reads a range of a file.
    Read {
        id: u64,
        file: String,
        offset: u64,
        /// At most this many bytes (bounded by the server's max read size).
        len: u64,
        /// If true, any node answers from its own applied state (may be stale).
        #[serde(default)]
        stale: bool,
    },
    /// Lists locks with their holders and waiters.
    Locks {
        id: u64,
        /// Only locks whose name starts with this prefix.
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        stale: bool,
    },
    /// The node's view of itself and the cluster.
    Status { id: u64 },
    /// Leader only: the live sessions, with owners and the time since their last keep-alive.
    Sessions { id: u64 },
    /// Admin (leader only): revokes session `session_id` through the log. Its queued acquires
    /// end `Revoked` and its keep-alives are refused (`Revoked`), but its locks stay held until
    /// it closes or its lease runs out, so its holder can stop first. With `force` it ends at
    /// once, as an expiry does: its locks may move while its holder still works.
    RevokeSession {
        id: u64,
        session_id: SessionId,
        /// End the session at once instead (unsafe for a holder that is still working).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Admin (leader only): adds a node to the cluster. It joins as a learner, the leader
    /// waits until it has caught up with the log, then promotes it to voter; the answer
    /// (`MembershipChanged`) comes once the promotion is committed. Idempotent: resending it for
    /// a node that is already a learner resumes the wait, for a voter answers at once.
    AddMember {
        id: u64,
        /// The new node's id (never 0).
        node_id: u64,
        /// The address peers and clients reach it at (`host:port`).
        addr: String,
    },
    /// Admin (leader only): removes a member; answered with `MembershipChanged` once the change
    /// is committed. Removing a node that is not a member answers at once.
    RemoveMember { id: u64, node_id: u64 },
    /// Admin (leader only): hands leadership to `node_id` (nil: the most up-to-date voter);
    /// answered with `LeaderTransferred` once this node has seen another leader take over.
    TransferLeader {
        id: u64,
        #[serde(default)]
        node_id: Option<u64>,
    },
    /// Admin (leader only): a backup. The leader waits until it has applied its commit index
    /// as of the request and a snapshot covering it is durable, then streams its snapshot file:
    /// `SnapshotHeader`, then `SnapshotChunk`s in order, the last one with `last: true`.
    SnapshotSave { id: u64 },
}

/// A message from the daemon to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    /// Answers `Hello`.
    Welcome {
        version: u32,
        node_id: u64,
        /// The current leader's node id, if known.
        leader: Option<u64>,
        /// The current leader's client address, if known.
        leader_addr: Option<String>,
    },
    SessionOpened {
        id: u64,
        session: SessionId,
        token: u64,
        ttl_ms: u64,
    },
    KeptAlive {
        id: u64,
        ttl_ms: u64,
    },
    SessionClosed {
        id: u64,
    },
    /// An interim answer to `Acquire`: the request waits in the queue. A final `Granted` or
    /// `Error` with the same id follows.
    Queued {
        id: u64,
        position: u64,
    },
    Granted {
        id: u64,
        fence: Fence,
    },
    Released {
        id: u64,
    },
    /// Answers `Cancel` (the acquire left the queue), and is the final answer of the cancelled
    /// `Acquire` itself.
    Cancelled {
        id: u64,
    },
    /// Answers `Extend`: the grant's hold limit restarted.
    Extended {
        id: u64,
        hold_ms: u64,
    },
    Appended {
        id: u64,
        offset: u64,
        size: u64,
    },
    /// Answers `Truncate`: the file's size now.
    Truncated {
        id: u64,
        size: u64,
    },
    /// Answers `Delete`: the size the deleted file had.
    Deleted {
        id: u64,
        size: u64,
    },
    /// Answers `Files`.
    FileList {
        id: u64,
        files: Vec<FileEntry>,
    },
    /// Answers `Read`: the bytes read and the file's total size.
    Data {
        id: u64,
        #[serde(with = "super::bin")]
        data: Vec<u8>,
        size: u64,
    },
    LockList {
        id: u64,
        locks: Vec<LockState>,
    },
    /// Answers `Sessions`.
    SessionList {
        id: u64,
        sessions: Vec<SessionSummary>,
    },
    Status(Box<StatusInfo>),
    /// The first answer to `SnapshotSave` (interim): what the streamed file holds and its
    /// whole-file crc32; `SnapshotChunk`s follow.
    SnapshotHeader {
        id: u64,
        /// The snapshot's last included index.
        index: u64,
        /// The term of that entry.
        term: u64,
        /// The file's length in bytes (the chunks' lengths add up to it).
        size: u64,
        /// crc32 (IEEE) of the whole file.
        checksum: u32,
    },
    /// A piece of the snapshot file, in order from offset 0; `last` marks the final answer.
    SnapshotChunk {
        id: u64,
        /// Where `data` starts in the file.
        offset: u64,
        #[serde(with = "super::bin")]
        data: Vec<u8>,
        /// True on the final chunk, which ends the request.
        last: bool,
    },
    /// Answers `AddMember` and `RemoveMember`: the membership now committed.
    MembershipChanged {
        id: u64,
        /// The log index of the committed membership entry (0 if nothing had to change).
        index: u64,
        /// Every member after the change (`match_index` nil).
        members: Vec<MemberStatus>,
    },
    /// Answers `TransferLeader`: the new leader.
    LeaderTransferred {
        id: u64,
        leader: u64,
        leader_addr: Option<String>,
    },
    /// Push (`id` always 0, answers no request): a grant of `session` ended for a reason
    /// other than its own release. A hint, at most once per connection; the client's own
    /// lease is what guarantees safety.
    Revoked {
        id: u64,
        session: SessionId,
        lock: String,
        fence: Fence,
        reason: PushReason,
    },
    /// Push (`id` 0): the queued acquire `seq` of `session` on `lock` moved in the queue;
    /// `ahead` waiters are now before it, and the lock is held by `holders` sessions in
    /// `mode` (nil when free).
    QueuePosition {
        id: u64,
        session: SessionId,
        lock: String,
        seq: Seq,
        ahead: u64,
        mode: Option<LockMode>,
        holders: u64,
    },
    /// Push (`id` 0): the hold limit of the grant `fence` of `lock` ends in `left_ms` on the
    /// leader's clock unless it is extended.
    HoldExpiring {
        id: u64,
        session: SessionId,
        lock: String,
        fence: Fence,
        left_ms: u64,
    },
    /// Push (`id` 0): the leader expires `session` in `left_ms` unless a keep-alive reaches it.
    SessionExpiring {
        id: u64,
        session: SessionId,
        left_ms: u64,
    },
    /// Push (`id` 0): `session` ended (its lease ran out, or an administrator's forced
    /// revoke); its grants are gone.
    SessionExpired {
        id: u64,
        session: SessionId,
        reason: PushReason,
    },
    /// A failed request, or (with `id` 0) a connection-level error sent before closing.
    Error {
        id: u64,
        code: ErrorCode,
        message: String,
        /// With `NotLeader`: the leader's id and address, if known.
        #[serde(default)]
        leader: Option<u64>,
        #[serde(default)]
        leader_addr: Option<String>,
    },
}

/// Why a push says a grant or session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushReason {
    /// The grant's hold limit passed.
    Hold,
    /// The session's lease ran out on the leader.
    Expired,
    /// An administrator revoked the session (`RevokeSession`).
    Admin,
}

/// One lock in a `LockList`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub name: String,
    /// The mode of the current grant, nil when free.
    pub mode: Option<LockMode>,
    pub holders: Vec<HolderState>,
    pub waiters: Vec<WaiterState>,
}

/// A holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderState {
    pub session: SessionId,
    pub fence: Fence,
    /// The holding session's owner, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Milliseconds since the grant, by the leader's clock; nil if unknown (a stale read, or
    /// a grant made before this leader was elected).
    #[serde(default)]
    pub held_ms: Option<u64>,
    /// Milliseconds left of the grant's hold limit, by the leader's clock; nil without a hold
    /// limit or when unknown (a stale read).
    #[serde(default)]
    pub hold_left_ms: Option<u64>,
}

/// A queued acquire, in FIFO order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterState {
    pub session: SessionId,
    pub seq: Seq,
    pub mode: LockMode,
    /// The waiting session's owner, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Milliseconds it has waited, by the leader's clock; nil if unknown (a stale read, or
    /// queued before this leader was elected).
    #[serde(default)]
    pub waited_ms: Option<u64>,
}

/// One file in a `FileList`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The lock named by its last write (the lock that guards it by the clients' convention);
    /// nil if unknown (a file not written since it was restored from an old snapshot).
    #[serde(default)]
    pub lock: Option<String>,
    /// The fence of its last write; nil if unknown.
    #[serde(default)]
    pub fence: Option<Fence>,
}

/// One live session in a `SessionList`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session: SessionId,
    /// The owner given at open, if any.
    pub owner: Option<String>,
    pub ttl_ms: u64,
    /// Milliseconds since the leader last renewed the lease (a keep-alive, the open, or its own
    /// election); nil if it keeps no deadline for the session.
    pub since_renewal_ms: Option<u64>,
}

/// Answers `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub id: u64,
    pub node_id: u64,
    /// "leader", "follower", "candidate" or "learner".
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub sessions: u64,
    pub locks: u64,
    pub members: Vec<MemberStatus>,
}

/// One member of the cluster as the answering node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node_id: u64,
    pub addr: String,
    pub voter: bool,
    /// The highest index known replicated to it (leader only), nil elsewhere.
    pub match_index: Option<u64>,
}

/// Stable error codes. Written on the wire as their names (MessagePack str).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame or message is malformed, has a bad field, or breaks a name/size limit.
    BadRequest,
    /// The `type` is not a known message.
    UnknownType,
    /// The length prefix exceeds the maximum frame size. The connection is closed.
    FrameTooLarge,
    /// A request came before `Hello`. The connection is closed.
    HandshakeRequired,
    /// `Hello` did not arrive within the handshake deadline. The connection is closed.
    HandshakeTimeout,
    /// The protocol version is not supported. The connection is closed.
    UnsupportedVersion,
    /// The daemon requires an authentication token and `Hello` carried none, or one it does
    /// not know. The connection is closed.
    Unauthenticated,
    /// The connection's principal may not make this request (its role or its name grants), or
    /// may not use this session (another principal opened it). Nothing was done.
    PermissionDenied,
    /// The daemon is at its connection limit. The connection is closed.
    TooManyConnections,
    /// The connection has too many requests in flight; retry after an answer arrives.
    TooManyRequests,
    /// This node is not the leader; reconnect to `leader_addr` and retry.
    NotLeader,
    /// The session does not exist (expired or closed), or the token is wrong.
    SessionExpired,
    /// A try-once acquire found the lock taken.
    Busy,
    /// A queued acquire waited past its `wait_ms`.
    WaitTimeout,
    /// The session does not hold the lock.
    NotHolder,
    /// The session holds or waits for the lock in another mode, or already waits for it.
    Conflict,
    /// `Cancel` of an acquire that is not queued (granted, ended or never applied).
    NotWaiting,
    /// The fence is not the current exclusive grant of the lock to this session.
    StaleFence,
    /// The sequence number is older than the results the session still remembers.
    SequenceTooOld,
    /// The sequence number was already used by a different request of the session (a client
    /// bug: a seq is re-sent only with the identical request). Nothing was applied.
    SequenceReused,
    /// The file does not exist.
    NotFound,
    /// An `Append` would grow a file, or all files together, past the daemon's size limit
    /// (the message names the limit and the size it would reach). Nothing was written.
    QuotaExceeded,
    /// The outcome is unknown (e.g. leadership was lost mid-request); retry with the same seq.
    Timeout,
    /// The node is shutting down; retry elsewhere.
    ShuttingDown,
    /// An administrator revoked the session: its keep-alives are refused and it may no longer
    /// acquire, extend or append. Stop using its locks, then release them or close it.
    Revoked,
    /// A new leader has not yet applied its log up to its own term, so it cannot answer for a
    /// session yet; retry shortly (same request).
    NotReady,
    /// An unexpected server-side failure.
    Internal,
    /// Peer connections only: the two nodes state different cluster ids. The connection is
    /// closed.
    WrongCluster,
    /// Peer connections only: the cluster key proof (MAC) is missing or wrong. The connection
    /// is closed.
    Unauthorized,
}

impl Request {
    /// The request's id, or 0 for `Hello` (which has none).
    pub fn id(&self) -> u64 {
        match self {
            Request::Hello { .. } => 0,
            Request::OpenSession { id, .. }
            | Request::KeepAlive { id, .. }
            | Request::CloseSession { id, .. }
            | Request::Acquire { id, .. }
            | Request::Release { id, .. }
            | Request::Cancel { id, .. }
            | Request::Extend { id, .. }
            | Request::Append { id, .. }
            | Request::Truncate { id, .. }
            | Request::Delete { id, .. }
            | Request::Files { id, .. }
            | Request::Read { id, .. }
            | Request::Locks { id, .. }
            | Request::Status { id }
            | Request::Sessions { id }
            | Request::RevokeSession { id, .. }
            | Request::AddMember { id, .. }
            | Request::RemoveMember { id, .. }
            | Request::TransferLeader { id, .. }
            | Request::SnapshotSave { id } => *id,
        }
    }

    /// The wire `type` of this request (one of `protocol::REQUEST_TYPES`), e.g. for logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "Hello",
            Request::OpenSession { .. } => "OpenSession",
            Request::KeepAlive { .. } => "KeepAlive",
            Request::CloseSession { .. } => "CloseSession",
            Request::Acquire { .. } => "Acquire",
            Request::Release { .. } => "Release",
            Request::Cancel { .. } => "Cancel",
            Request::Extend { .. } => "Extend",
            Request::Append { .. } => "Append",
            Request::Truncate { .. } => "Truncate",
            Request::Delete { .. } => "Delete",
            Request::Files { .. } => "Files",
            Request::Read { .. } => "Read",
            Request::Locks { .. } => "Locks",
            Request::Status { .. } => "Status",
            Request::Sessions { .. } => "Sessions",
            Request::RevokeSession { .. } => "RevokeSession",
            Request::AddMember { .. } => "AddMember",
            Request::RemoveMember { .. } => "RemoveMember",
            Request::TransferLeader { .. } => "TransferLeader",
            Request::SnapshotSave { .. } => "SnapshotSave",
        }
    }
}

impl Response {
    /// An `Error` response without a leader hint.
    pub fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            id,
            code,
            message: message.into(),
            leader: None,
            leader_addr: None,
        }
    }

    /// The id of the request this answers (0 for `Welcome` and connection-level errors).
    pub fn id(&self) -> u64 {
        match self {
            Response::Welcome { .. } => 0,
            Response::Status(info) => info.id,
            Response::SessionOpened { id, .. }
            | Response::KeptAlive { id, .. }
            | Response::SessionClosed { id }
            | Response::Queued { id, .. }
            | Response::Granted { id, .. }
            | Response::Released { id }
            | Response::Cancelled { id }
            | Response::Extended { id, .. }
            | Response::Appended { id, .. }
            | Response::Truncated { id, .. }
            | Response::Deleted { id, .. }
            | Response::FileList { id, .. }
            | Response::Data { id, .. }
            | Response::LockList { id, .. }
            | Response::SessionList { id, .. }
            | Response::SnapshotHeader { id, .. }
            | Response::SnapshotChunk { id, .. }
            | Response::MembershipChanged { id, .. }
            | Response::LeaderTransferred { id, .. }
            | Response::Revoked { id, .. }
            | Response::QueuePosition { id, .. }
            | Response::HoldExpiring { id, .. }
            | Response::SessionExpiring { id, .. }
            | Response::SessionExpired { id, .. }
            | Response::Error { id, .. } => *id,
        }
    }

    /// The wire `type` of this response (one of `protocol::RESPONSE_TYPES`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Response::Welcome { .. } => "Welcome",
            Response::SessionOpened { .. } => "SessionOpened",
            Response::KeptAlive { .. } => "KeptAlive",
            Response::SessionClosed { .. } => "SessionClosed",
            Response::Queued { .. } => "Queued",
            Response::Granted { .. } => "Granted",
            Response::Released { .. } => "Released",
            Response::Cancelled { .. } => "Cancelled",
            Response::Extended { .. } => "Extended",
            Response::Appended { .. } => "Appended",
            Response::Truncated { .. } => "Truncated",
            Response::Deleted { .. } => "Deleted",
            Response::FileList { .. } => "FileList",
            Response::Data { .. } => "Data",
            Response::LockList { .. } => "LockList",
            Response::SessionList { .. } => "SessionList",
            Response::Status(_) => "Status",
            Response::SnapshotHeader { .. } => "SnapshotHeader",
            Response::SnapshotChunk { .. } => "SnapshotChunk",
            Response::MembershipChanged { .. } => "MembershipChanged",
            Response::LeaderTransferred { .. } => "LeaderTransferred",
            Response::Revoked { .. } => "Revoked",
            Response::QueuePosition { .. } => "QueuePosition",
            Response::HoldExpiring { .. } => "HoldExpiring",
            Response::SessionExpiring { .. } => "SessionExpiring",
            Response::SessionExpired { .. } => "SessionExpired",
            Response::Error { .. } => "Error",
        }
    }
}

impl Response {
    /// The session a push event is for, or `None` if this is not a push (an answer).
    pub fn push_session(&self) -> Option<SessionId> {
        match self {
            Response::Revoked { session, .. }
            | Response::QueuePosition { session, .. }
            | Response::HoldExpiring { session, .. }
            | Response::SessionExpiring { session, .. }
            | Response::SessionExpired { session, .. } => Some(*session),
            _ => None,
        }
    }
}

impl ErrorCode {
    /// True for the codes after which the server closes the connection (always sent with id 0).
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge
                | ErrorCode::HandshakeRequired
                | ErrorCode::HandshakeTimeout
                | ErrorCode::UnsupportedVersion
                | ErrorCode::TooManyConnections
                | ErrorCode::WrongCluster
                | ErrorCode::Unauthorized
                | ErrorCode::Unauthenticated
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire spelling of a lock mode is pinned here, apart from the lock space's type: a
    /// rename or reordering inside the state machine must not reach the bytes.
    #[test]
    fn lock_modes_encode_as_their_documented_strings() {
        let exclusive = rmp_serde::to_vec(&LockMode::Exclusive).unwrap();
        let shared = rmp_serde::to_vec(&LockMode::Shared).unwrap();
        assert_eq!(exclusive, b"\xa9exclusive");
        assert_eq!(shared, b"\xa6shared");
        for mode in [LockMode::Exclusive, LockMode::Shared] {
            let inner: lockspace::LockMode = mode.into();
            assert_eq!(LockMode::from(inner), mode);
        }
    }
}
