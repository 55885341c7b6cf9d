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
//! - [`backup`]: verifying and describing backup files (copies of a node's snapshot file).
//! - [`replica`]: every decision of a node (admission, the write pipeline, apply and answers,
//!   deadlines, membership, shutdown) as a pure state machine around the Raft node and the lock
//!   space; the daemon and the simulation both run it.
//! - [`server`]: the daemon. One driver task owns the Raft node and the lock space; a writer
//!   thread does group-committed fsyncs; connections, the ticker and the peer transport talk to
//!   the driver through bounded channels.
//! - [`auth`]: client authentication and access control: principals, roles and name grants,
//!   the hashed token file, and the policy checked on every request.
//! - [`client`]: the Rust client library (redirects, same-seq retries, keep-alive, lock guards).
//! - [`tls`]: TLS (rustls) for client connections and peer links, shared by both sides.
//! - `cli`: the `raftlock` command line and `raftlock bench`, over the client library.
//!
//! Cargo features: `server` (the daemon: [`server`], [`replica`], [`storage`] and `raftlockd`) and `cli`
//! (`cli` and `raftlock`), both on by default. A program that only talks to a cluster depends on
//! `raftlock` with `default-features = false` and gets the client, the protocol and the pure
//! cores, without clap, hdrhistogram or the daemon.

#[cfg(feature = "server")]
pub mod auth;
#[cfg(any(feature = "server", feature = "cli"))]
pub mod backup;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod lockspace;
pub mod protocol;
pub mod raft;
#[cfg(feature = "server")]
pub mod replica;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod storage;
pub mod tls;

/// An error and its sources on one line, joined with ": " (for logs and the CLI's messages).
///
/// The same line as anyhow's `{:#}`, which the `raftlockd` binary uses for its own errors.
/// This helper stays for the library, which has no anyhow (the client library builds without
/// it): it formats a borrowed `&dyn Error` in place, as a tracing field
/// (`error = %error_chain(&error)`) or in a message of `src/cli`, where wrapping the error in
/// an `anyhow::Error` would take ownership of it for nothing.
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
