//! The messages Raft nodes exchange. Every message travels in an [`Envelope`] that carries the
//! sender's term; the variants of [`Message`] carry what is specific to each exchange.

use serde::{Deserialize, Serialize};

use super::{Entry, Index, NodeId, Snapshot, Term};

/// A Raft message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term.
    pub term: Term,
    /// What is said.
    pub message: Message,
}

/// A Raft message. The envelope's `term` is the sender's current term, except for `PreVote`
/// (the term the sender would campaign in) and a granted `PreVoteResponse` (the term of the
/// pre-vote it answers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Pre-vote request (thesis §9.6): "would you vote for me if I campaigned in the envelope's
    /// term?" The receiver changes no state, so a node cut off from the cluster cannot inflate
    /// terms and depose a healthy leader when it comes back.
    PreVote {
        /// The index of the candidate's last log entry.
        last_index: Index,
        /// The term of the candidate's last log entry.
        last_term: Term,
    },
    /// Answer to a `PreVote`.
    PreVoteResponse {
        /// True if the receiver would vote for the candidate.
        granted: bool,
    },
    /// RequestVote (figure 2): the candidate asks for the receiver's vote in the envelope's term.
    Vote {
        /// The index of the candidate's last log entry.
        last_index: Index,
        /// The term of the candidate's last log entry.
        last_term: Term,
        /// Set when the campaign follows a `TimeoutNow` (leadership transfer): the receiver
        /// grants it even if it heard from the leader recently (bypasses leader stickiness).
        transfer: bool,
    },
    /// Answer to a `Vote`. A grant is sent only after the vote is durable.
    VoteResponse {
        /// True if the receiver voted for the candidate in this term.
        granted: bool,
    },
    /// AppendEntries (figure 2): entries following (`prev_index`, `prev_term`), which the
    /// receiver accepts only if its log holds that entry (log matching).
    Append {
        /// The index of the entry just before `entries`.
        prev_index: Index,
        /// The term of the entry at `prev_index`.
        prev_term: Term,
        /// Entries to store, contiguous from `prev_index + 1` (empty for a commit update).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The follower's log now matches the leader's up to `index` (sent once durable).
    AppendResponse {
        /// The highest index known to match the leader's log.
        index: Index,
    },
    /// The follower's log does not hold (`rejected`, its term): a hint for fast back-off.
    AppendReject {
        /// The `prev_index` of the rejected `Append`.
        rejected: Index,
        /// The first index the leader should consider: the follower's last index + 1 if its
        /// log is too short, else the first index of `conflict_term` in the follower's log.
        conflict_index: Index,
        /// The follower's term at `rejected`, if its log reaches that far.
        conflict_term: Option<Term>,
    },
    /// Leader heartbeat: asserts leadership, carries a safe commit index and the sequence
    /// number of the latest read-index round.
    Heartbeat {
        /// The leader's commit index, capped at what this follower is known to hold.
        commit: Index,
        /// The leader's latest read-index sequence number.
        read_seq: u64,
    },
    /// Answer to a `Heartbeat`: confirms the leader's leadership for the read round `read_seq`.
    HeartbeatResponse {
        /// The `read_seq` of the heartbeat answered.
        read_seq: u64,
    },
    /// InstallSnapshot: the leader no longer has the entries this follower needs, so it sends
    /// its snapshot. The follower answers with an `AppendResponse` at the snapshot's index.
    InstallSnapshot {
        /// The snapshot, data included.
        snapshot: Snapshot,
    },
    /// Leadership transfer (thesis §3.10): the receiver, now caught up, campaigns at once,
    /// without pre-vote.
    TimeoutNow,
}
