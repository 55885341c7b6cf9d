//! How a node is set up: its timers and limits ([`Config`]) and the state it starts from, as
//! recovered from its disk ([`Recovered`]).

use super::{Entry, HardState, Membership, NodeId, Snapshot};

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
    /// See `election_ticks_min`.
    pub election_ticks_max: u32,
    /// Ask for pre-votes before starting a real election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down.
    pub check_quorum: bool,
    /// Most entries in one AppendEntries message.
    pub max_entries_per_append: usize,
    /// Most payload bytes in one AppendEntries message (an entry larger than this still
    /// travels, alone). Bounds how long one message holds the peer link, so a heartbeat or a
    /// vote queued behind it waits for one batch at most, and keeps a batch within a frame.
    pub max_append_bytes: usize,
    /// Most unacknowledged AppendEntries in flight per follower.
    pub max_inflight_appends: usize,
    /// Most payload bytes in unacknowledged AppendEntries per follower: with big entries, the
    /// message count alone would let many MiB queue on the link ahead of the next heartbeat.
    pub max_inflight_bytes: usize,
    /// The membership to start from when the log and snapshot are empty (a new cluster).
    /// A node with an empty disk and no bootstrap waits to be added by a leader.
    pub bootstrap: Option<Membership>,
    /// When the leader's commit index moves, send every follower an AppendEntries at once, even
    /// without entries (true); or let the next AppendEntries or heartbeat carry it (false).
    /// Lazy halves the messages per operation at low load (no empty append and no answer to it
    /// per commit); followers then learn a commit up to one heartbeat later, which only delays
    /// their own applying, never the leader's answers.
    pub eager_commit: bool,
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
            max_append_bytes: 1 << 20,
            max_inflight_appends: 16,
            max_inflight_bytes: 4 << 20,
            bootstrap: None,
            eager_commit: true,
        }
    }
}

/// What the node recovered from its disk.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The durable term, vote and commit index.
    pub hard_state: HardState,
    /// The latest snapshot (its data is kept to send to lagging followers).
    pub snapshot: Option<Snapshot>,
    /// Every entry after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}
