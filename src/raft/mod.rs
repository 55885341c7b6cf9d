//! The Raft consensus core: pure, synchronous and deterministic.

mod types;

pub use types::{
    Entry, EntryData, HardState, Index, Membership, NodeId, Snapshot, SnapshotMeta, Term,
};
