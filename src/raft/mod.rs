//! The Raft consensus core: pure, synchronous and deterministic.
//!
//! A [`Node`] is driven by its runtime (the daemon, or a simulation) with `tick` (logical time),
//! `step` (a peer's message) and client calls (`propose`, `propose_membership`, `read_index`,
//! `transfer_leadership`); it never does I/O. Its output is collected with `ready`, and the
//! [`Ready`] contract says in which order to send, persist and apply it: a vote grant, a vote
//! request or an append acknowledgement leaves only after the writes it depends on are fsynced.
//! The only randomness, the election jitter, comes from a seeded `SmallRng`, so a run is fully
//! determined by the seed and the order of inputs.
//!
//! What it implements, following Ongaro's dissertation:
//! - **Elections** with randomized timeouts; **pre-vote** (§9.6) and **check-quorum** on by
//!   default; **leader stickiness**: a node that heard from a leader within the minimum election
//!   timeout ignores (pre-)votes, so a rejoining node cannot depose a healthy leader. A node
//!   votes and campaigns only if it is a voter in its own latest membership, so a wiped node
//!   (no log, no bootstrap) waits until a leader has sent it the log that lists it.
//! - **Replication**: a Noop opens every term, commit advances only on an entry of the current
//!   term (figure 8), and the leader counts itself only once `persisted` confirms its write.
//!   Appends are batched per `Ready` and pipelined per follower (probe / replicate / snapshot
//!   states, `max_inflight_appends`); rejections carry a conflict hint (the follower's last
//!   index + 1, or the first index of the conflicting term) for one-round-trip back-off, and a
//!   follower truncates only from the first entry whose term differs (never on a duplicated or
//!   reordered append, never at or below its commit index). Lost appends are resent when a
//!   heartbeat answer shows no progress.
//! - **Snapshots**: the runtime compacts (`compacted`), the leader sends `InstallSnapshot` to a
//!   follower whose next index was compacted away.
//! - **Reads**: read-index (§6.4): the commit index at request time, confirmed by a heartbeat
//!   round, and held until the leader committed an entry of its term.
//! - **Leadership transfer** (§3.10) with `TimeoutNow`; proposals are refused meanwhile.
//! - **Membership changes** one server at a time (§4.1), effective on append, reverted on
//!   truncation, at most one uncommitted, only after the leader committed an entry of its term.
//!   Learners replicate but neither vote nor count. A leader that removed itself steps down once
//!   the change commits, handing over with `TimeoutNow`.
//!
//! Bootstrap: a node with an empty disk and a bootstrap membership writes it as entry 1 at term
//! 0; every bootstrapped node writes the same entry, so nodes added later learn the membership
//! from the log itself.
//!
//! Caveats:
//! - A removed node is not told it was removed (the leader stops replicating to it at once); it
//!   stays harmless thanks to pre-vote and stickiness, and the operator stops it.
//! - Passing a bootstrap membership to a node whose disk was wiped makes it a voter with an
//!   empty log: give `bootstrap` only when creating a cluster.
//! - A wiped node that was not wiped cleanly between its vote and the leader's first message in
//!   that term is not detected (there is no per-disk epoch).
//! - Reads and proposals pending when leadership is lost are never answered by the core: the
//!   runtime fails them when `role()` changes.
//! - Config changes take effect on append, so etcd's "campaign with an unapplied committed
//!   config" bug (etcd-io/raft#456) does not arise; joint consensus is not implemented.
//! - Lost InstallSnapshot messages are resent after ten heartbeat answers without progress; a
//!   lost probe is resent on the next heartbeat answer (an empty append when nothing is new).
//! - With `Config::eager_commit` off, followers learn a commit from the next append or
//!   heartbeat, so they apply up to one heartbeat later; the leader's answers do not wait.
//!
//! Tests: unit tests per module, and goldenscripts in `testscripts/` (see `script.rs`).

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
mod script;
#[cfg(test)]
mod tests;
