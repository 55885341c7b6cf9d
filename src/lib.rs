//! raftlock: a distributed lock manager replicated with Raft.
//!
//! A cluster of `raftlockd` daemons replicates every lock and file operation through its own
//! Raft log. The code is a pure, deterministic core inside a tokio shell:
//!
//! - [`protocol`]: frames (u32 big-endian length + MessagePack map), client and peer messages,
//!   limits. `protocol.md` is the contract for other languages.
//! - [`raft`]: the consensus core. No I/O, clock or ambient randomness: it takes messages,
//!   ticks and proposals and returns a `Ready` (what to send, persist and apply, in order).
//! - [`lockspace`]: the replicated state machine: sessions, locks with FIFO queues, fencing
//!   tokens, lock-guarded files and the exactly-once table. Also pure.
//! - [`storage`]: the durable log: checksummed segments, hard state, snapshots, recovery.
//! - [`replica`]: every decision of a node (admission, the write pipeline, apply and answers,
//!   deadlines, membership, shutdown) as a pure state machine around the Raft node and the lock
//!   space; the daemon and the simulation both run it.
//! - [`server`]: the daemon. One driver task owns the Raft node and the lock space; a writer
//!   thread does group-committed fsyncs; connections, the ticker and the peer transport talk to
//!   the driver through bounded channels.
//! - [`client`]: the Rust client library (redirects, same-seq retries, keep-alive, lock guards)
//!   and the `raftlock` CLI; [`bench`](mod@bench): `raftlock bench`.

pub mod bench;
pub mod client;
pub mod lockspace;
pub mod protocol;
pub mod raft;
pub mod replica;
pub mod server;
pub mod storage;

/// An error and its sources on one line, joined with ": " (for logs and the CLI's messages).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
