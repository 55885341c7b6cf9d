//! The values the Raft core shares with storage and the daemon: ids, log entries, hard state,
//! snapshots and membership. They are serialized with MessagePack both on disk and on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's id within its cluster. Chosen by the operator (`--id`), never 0.
pub type NodeId = u64;
/// A Raft term: a logical clock that increases with every election.
pub type Term = u64;
/// A position in the replicated log, starting at 1. Index 0 means "before the first entry".
pub type Index = u64;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's position in the log.
    pub index: Index,
    /// The term of the leader that created the entry.
    pub term: Term,
    /// What the entry carries.
    pub data: EntryData,
}

impl Entry {
    /// The command bytes the entry carries (0 for a Noop or a membership change, which are
    /// small): what the byte limits on appends count.
    pub fn payload_len(&self) -> usize {
        match &self.data {
            EntryData::Command(bytes) => bytes.len(),
            EntryData::Noop | EntryData::Config(_) => 0,
        }
    }
}

/// The payload of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryData {
    /// Appended by every new leader at the start of its term so it can commit earlier entries
    /// (Raft §5.4.2, figure 8). Applies nothing to the state machine.
    Noop,
    /// A state machine command, opaque to Raft (a MessagePack-encoded `lockspace::Command`).
    Command(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A membership change, one server at a time. Takes effect as soon as it is appended.
    Config(Membership),
}

/// The cluster's membership: voters and learners (non-voting members that catch up before they
/// are promoted), each with the address peers and clients reach it at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members that vote and count toward quorums.
    pub voters: BTreeMap<NodeId, String>,
    /// Members that receive the log but neither vote nor count toward quorums.
    pub learners: BTreeMap<NodeId, String>,
}

impl Membership {
    /// Returns true if `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }

    /// The address of a member, voter or learner.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.voters
            .get(&id)
            .or_else(|| self.learners.get(&id))
            .map(String::as_str)
    }
}

/// The state that must be durable before the node answers a vote or an append: the current
/// term, whom it voted for in that term, and the highest index known committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest log index known to be committed.
    pub commit: Index,
}

/// Describes the log prefix a snapshot replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The index of the last entry the snapshot includes.
    pub index: Index,
    /// The term of that entry.
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// A snapshot of the state machine at `meta.index`, which replaces every entry up to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The serialized state machine (`lockspace::LockSpace::snapshot`). Shared, not copied:
    /// the core keeps it to send to lagging followers, and every send is a reference count.
    pub data: bytes::Bytes,
}
