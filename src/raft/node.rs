//! The Raft node: the API between the pure core and its runtime (the daemon or the simulation).

use serde::{Deserialize, Serialize};

use super::{Entry, HardState, Index, Membership, NodeId, Snapshot, SnapshotMeta, Term};

/// Timers and limits of a node, in ticks and counts. One tick is a runtime choice (the daemon
/// uses 10 ms, so the defaults are a 50 ms heartbeat and a 300-600 ms election timeout).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: u32,
    /// Election timeout drawn uniformly from `[election_ticks_min, election_ticks_max)`.
    pub election_ticks_min: u32,
    pub election_ticks_max: u32,
    /// Ask for pre-votes before starting a real election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down.
    pub check_quorum: bool,
    /// Most entries in one AppendEntries message.
    pub max_entries_per_append: usize,
    /// Most unacknowledged AppendEntries in flight per follower.
    pub max_inflight_appends: usize,
    /// The membership to start from when the log and snapshot are empty (a new cluster).
    /// A node with an empty disk and no bootstrap waits to be added by a leader.
    pub bootstrap: Option<Membership>,
}

impl Config {
    /// Defaults for a node with the given id.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            heartbeat_ticks: 5,
            election_ticks_min: 30,
            election_ticks_max: 60,
            pre_vote: true,
            check_quorum: true,
            max_entries_per_append: 512,
            max_inflight_appends: 16,
            bootstrap: None,
        }
    }
}

/// What the node recovered from its disk.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The latest snapshot (its data is kept to send to lagging followers).
    pub snapshot: Option<Snapshot>,
    /// Every entry after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// A Raft message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term.
    pub term: Term,
    pub message: Message,
}

/// The Raft messages. (Filled in by the core.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {}

/// The node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    /// A non-voting member catching up.
    Learner,
}

/// A snapshot of the node's state for status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: Index,
    pub last_index: Index,
    pub membership: Membership,
    /// On a leader: the match index of each member (itself included).
    pub match_index: Vec<(NodeId, Index)>,
}

/// Returned when a request needs the leader and this node is not it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (leader: {leader:?})")]
pub struct NotLeader {
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
}

/// Work for the runtime, done in this order:
/// 1. send `messages` (they do not depend on this batch's writes);
/// 2. persist `snapshot`, `truncate_from`, `append` and `hard_state`, then fsync once;
/// 3. send `persisted_messages`, then call `Node::persisted` with the last appended (index, term);
/// 4. apply `committed` in order (a received `snapshot` first replaces the state machine);
/// 5. answer each read in `reads` once the state machine has applied its index.
#[derive(Debug, Default)]
pub struct Ready {
    pub messages: Vec<Envelope>,
    pub snapshot: Option<Snapshot>,
    pub truncate_from: Option<Index>,
    pub append: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub persisted_messages: Vec<Envelope>,
    pub committed: Vec<Entry>,
    /// Read-index requests confirmed by a quorum: (read id, index to wait for).
    pub reads: Vec<(u64, Index)>,
}

/// One Raft node. (Filled in by the core.)
#[derive(Debug)]
pub struct Node {}

impl Node {
    /// Creates a node from its recovered state. `seed` drives the election-timeout jitter.
    pub fn new(_config: Config, _recovered: Recovered, _seed: u64) -> Node {
        todo!("raft core")
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        todo!("raft core")
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, _message: Envelope) {
        todo!("raft core")
    }

    /// Appends a state machine command (leader only). Returns its (index, term).
    pub fn propose(&mut self, _command: Vec<u8>) -> Result<(Index, Term), NotLeader> {
        todo!("raft core")
    }

    /// Proposes a membership change (leader only; one at a time).
    pub fn propose_membership(
        &mut self,
        _membership: Membership,
    ) -> Result<(Index, Term), NotLeader> {
        todo!("raft core")
    }

    /// Starts a linearizable read; its id comes back in `Ready::reads` once confirmed.
    pub fn read_index(&mut self, _read_id: u64) -> Result<(), NotLeader> {
        todo!("raft core")
    }

    /// Hands leadership to `to` (or the most up-to-date follower).
    pub fn transfer_leadership(&mut self, _to: Option<NodeId>) -> Result<(), NotLeader> {
        todo!("raft core")
    }

    /// Takes the work accumulated since the last call.
    pub fn ready(&mut self) -> Ready {
        todo!("raft core")
    }

    /// Reports that the log is durable up to (index, term).
    pub fn persisted(&mut self, _index: Index, _term: Term) {
        todo!("raft core")
    }

    /// Reports that the runtime saved a snapshot; the core may drop the entries it covers.
    pub fn compacted(&mut self, _snapshot: Snapshot) {
        todo!("raft core")
    }

    /// The node's current status.
    pub fn status(&self) -> Status {
        todo!("raft core")
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        todo!("raft core")
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        todo!("raft core")
    }

    /// The metadata of the latest snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        todo!("raft core")
    }
}
