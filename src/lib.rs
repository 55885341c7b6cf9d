//! raftlock: a distributed lock manager replicated with Raft.

pub mod bench;
pub mod client;
pub mod lockspace;
pub mod protocol;
pub mod raft;
pub mod server;
pub mod storage;
