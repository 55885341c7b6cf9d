//! The Raft consensus core: pure, synchronous and deterministic.

mod node;
mod types;

pub use node::{Config, Envelope, Message, Node, NotLeader, Ready, Recovered, Role, Status};
pub use types::{
    Entry, EntryData, HardState, Index, Membership, NodeId, Snapshot, SnapshotMeta, Term,
};
