//! The Raft consensus core: pure, synchronous and deterministic.

mod log;
mod membership;
mod message;
mod node;
mod progress;
mod ready;
mod types;

pub use membership::MembershipError;
pub use message::Message;
pub use node::{Config, Envelope, Node, NotLeader, Recovered, Role, Status};
pub use ready::Ready;
pub use types::{
    Entry, EntryData, HardState, Index, Membership, NodeId, Snapshot, SnapshotMeta, Term,
};
#[cfg(test)]
mod tests;
