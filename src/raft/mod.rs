//! The Raft consensus core: pure, synchronous and deterministic.
//!
//! Raft keeps one log of commands, identical on every node of a cluster. In each term at most
//! one node leads: it appends the commands clients propose to its log, replicates them to the
//! others, and declares an entry *committed* once a quorum of voters holds it durably. Every
//! node applies committed entries in log order to its own copy of the state machine (here the
//! lock space, `lockspace`), so all copies go through the same states, and any node that
//! survives a crash of a minority can take over with nothing committed lost.
//!
//! # The core and its runtime
//!
//! A [`Node`] is driven by its runtime (the daemon, or the simulation in `tests/sim`) with
//! [`Node::tick`] (logical time), [`Node::step`] (a peer's message) and client calls
//! ([`Node::propose`], [`Node::propose_membership`], [`Node::read_index`],
//! [`Node::transfer_leadership`]); it never does I/O. Its output is collected with
//! [`Node::ready`], and the [`Ready`] contract says in which order to send, persist and apply
//! it: a vote grant, a vote request or an append acknowledgement leaves only after the writes
//! it depends on are fsynced. The runtime reports each fsync back with [`Node::persisted`]. The
//! only randomness, the election jitter, comes from a seeded `SmallRng`, so a run is fully
//! determined by the seed and the order of inputs.
//!
//! Around the core, and never seen by it: `storage` makes a `Ready`'s writes durable and
//! recovers them at start-up (as [`Recovered`]); `server::peer` carries [`Envelope`]s between
//! nodes (converting them to the peer protocol's own wire types); `lockspace` is the state
//! machine the committed commands are applied to. This module imports none of them.
//!
//! # Module map
//!
//! - `node.rs`: [`Node`], the protocol itself (roles, elections, replication, commit, reads,
//!   transfers, membership), with its [`Role`], [`Status`] and [`NotLeader`]. Sectioned by
//!   role: shared, follower side, leader side.
//! - `config.rs`: a node's timers and limits ([`Config`]) and what it recovered from its disk
//!   ([`Recovered`]).
//! - `message.rs`: [`Envelope`] and [`Message`], what nodes say to each other, one variant per
//!   exchange.
//! - `ready.rs`: [`Ready`], the work handed to the runtime and the order it must be done in.
//! - `log.rs`: `Log`, the entries since the latest snapshot, and which of them the runtime has
//!   not been handed yet (the unstable tail).
//! - `progress.rs`: `Progress`, the leader's view of one follower (probe, replicate or
//!   snapshot) and how much it may send it.
//! - `membership.rs`: quorum arithmetic and the one-server-at-a-time rule
//!   ([`MembershipError`]).
//! - `types.rs`: the values shared with storage and the daemon: ids, [`Entry`],
//!   [`HardState`], [`Snapshot`], [`Membership`].
//! - `script.rs` and `testscripts/`: the goldenscript runner and its scenarios, one per file;
//!   `tests.rs`: unit tests through a minimal in-memory cluster.
//!
//! # Persisted, committed and applied
//!
//! Three indexes of a node's log say how far an entry has come. Each is an [`Index`] (the
//! position of an entry, from 1; 0 means "before the first entry"), and none ever passes the
//! node's last index.
//!
//! - **Persisted** ([`Node::persisted_index`]): the highest index this node's runtime has
//!   reported durable, by calling [`Node::persisted`] after the fsync: the entries up to it
//!   survive a crash of this node. It moves back only when a conflicting suffix is truncated.
//!   A leader counts itself toward a quorum with its persisted index, never with its last
//!   index, so an entry it has not fsynced yet commits only if enough followers have.
//! - **Committed** ([`Node::commit_index`]): the highest index known to be durable on a quorum
//!   of voters. The leader computes it from its followers' acknowledgements and its own
//!   persisted index, and advances it only onto an entry of its own term (thesis figure 8);
//!   followers learn it from the leader's appends and heartbeats. A committed entry is never
//!   changed or removed, and the index never decreases. It may be ahead of this node's
//!   persisted index: the quorum that made it committed need not include this node.
//! - **Applied** ([`Node::applied_index`]): the highest index handed to the runtime in
//!   `Ready::committed` (or covered by a snapshot). The core counts an entry applied when it
//!   hands it out, so every committed entry is handed out exactly once; the state machine has
//!   applied it once the runtime has processed that `Ready`. Always at most the commit index.
//!
//! # The life of a proposal
//!
//! How one client command travels, here in a three-node cluster whose leader is node 1:
//!
//! 1. **Propose.** The runtime encodes the command and calls [`Node::propose`] on the leader,
//!    which appends an [`Entry`] of its term after its last one and returns its `(index, term)`.
//!    The runtime keeps the pair with the client's request: it recognizes the command when it
//!    is applied, and knows it was lost if another entry is applied at that index. Nothing has
//!    left the node yet; a non-leader (or a leader handing over) refuses with [`NotLeader`].
//! 2. **Replicate.** The next [`Node::ready`] gives the entry twice: in `Ready::append`, for the
//!    runtime to write, and inside an `Append` to each follower in `Ready::messages`, within
//!    that follower's flow-control window. The appends leave before the leader's own fsync, so
//!    followers write in parallel with the leader (thesis §10.2.1).
//! 3. **Persist on the leader.** The runtime writes the entry, fsyncs, and calls
//!    [`Node::persisted`]: the leader's persisted index now covers it.
//! 4. **Persist on a follower.** Node 2 steps the `Append`: it checks that its log holds the
//!    entry just before (`prev_index`, `prev_term`), else answers `AppendReject` with a hint;
//!    it appends, and its next `Ready` gives the entry to write and an `AppendResponse` in
//!    `Ready::persisted_messages`, which its runtime sends only after the fsync: an
//!    acknowledgement is a promise that the entry survives a crash.
//! 5. **Commit.** The leader steps the `AppendResponse`, records node 2's match index, and
//!    takes the highest index a majority of voters holds durably (node 1's persisted index and
//!    node 2's match). If that entry is of the leader's term, the commit index moves to it,
//!    committing every entry before it too.
//! 6. **Apply on the leader.** The next `Ready` hands the entry out in `Ready::committed` (the
//!    applied index moves). The runtime applies it to the state machine and answers the
//!    client with the result, since the `(index, term)` it kept matches.
//! 7. **Apply on the followers.** The commit index reaches the followers with the next
//!    `Append` (at once with `Config::eager_commit`) or `Heartbeat`; each hands the entry out
//!    in its own `Ready::committed` and applies the same command with the same result.
//!
//! If the leader loses leadership before step 6, its runtime fails the pending request when
//! [`Node::role`] changes, without knowing whether the entry will commit: a new leader keeps it
//! if a quorum held it and overwrites it otherwise. The client retries, and the lock space makes
//! the retry safe: a session remembers the outcomes of its recent requests by sequence number,
//! so a command applied twice takes effect once.
//! Reads skip the log: [`Node::read_index`] confirms leadership with a heartbeat round and
//! returns the commit index to wait for, in `Ready::reads`.
//!
//! # What it implements
//!
//! Following Ongaro's dissertation:
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
//! - **Repair of a follower that lost durable entries** (a damaged disk, a restored backup:
//!   outside Raft's crash model). Its log then ends below the match index the leader holds for
//!   it, and the leader would never resend what it believes is there. The follower notices when
//!   a heartbeat's commit (capped at that match) is past its log, and answers with a rejection
//!   naming where its log ends; a rejection of an append says the same. The leader lowers the
//!   match to it and probes from there: one round trip, no snapshot, no election.
//! - **Snapshots**: the runtime compacts (`compacted`), the leader sends `InstallSnapshot` to a
//!   follower whose next index was compacted away.
//! - **Reads**: read-index (§6.4): the commit index at request time, confirmed by a heartbeat
//!   round, and held until the leader committed an entry of its term.
//! - **Leadership transfer** (§3.10) with `TimeoutNow`; proposals are refused meanwhile.
//! - **Crash hints**: [`Node::peer_down`] is the runtime's evidence that the leader's process
//!   died (its connections were reset and its port refuses redials). A follower then forgets
//!   the leader, ending stickiness, and campaigns after a random delay of at most a heartbeat
//!   interval instead of the election timeout. A wrong hint costs one refused pre-vote round.
//! - **Membership changes** one server at a time (§4.1), effective on append, reverted on
//!   truncation, at most one uncommitted, only after the leader committed an entry of its term.
//!   Learners replicate but neither vote nor count. A leader that removed itself steps down once
//!   the change commits, handing over with `TimeoutNow`.
//!
//! # Bootstrap
//!
//! A node with an empty disk and a bootstrap membership writes it as entry 1 at term
//! 0; every bootstrapped node writes the same entry, so nodes added later learn the membership
//! from the log itself.
//!
//! # Caveats
//!
//! - A removed node is not told it was removed (the leader stops replicating to it at once); it
//!   stays harmless thanks to pre-vote and stickiness, and the operator stops it.
//! - Passing a bootstrap membership to a node whose disk was wiped makes it a voter with an
//!   empty log: give `bootstrap` only when creating a cluster.
//! - A wiped node that was not wiped cleanly between its vote and the leader's first message in
//!   that term is not detected (there is no per-disk epoch).
//! - A node that lost durable entries still votes with its shorter log until repaired; if a
//!   majority loses entries that way, committed entries can be lost. Detecting every such loss
//!   would need a durable marker of what was acknowledged, outside the log, at the cost of a
//!   second fsync per write.
//! - Reads and proposals pending when leadership is lost are never answered by the core: the
//!   runtime fails them when `role()` changes.
//! - Config changes take effect on append, so etcd's "campaign with an unapplied committed
//!   config" bug (etcd-io/raft#456) does not arise; joint consensus is not implemented.
//! - Lost InstallSnapshot messages are resent after ten heartbeat answers without progress; a
//!   lost probe is resent on the next heartbeat answer (an empty append when nothing is new).
//! - With `Config::eager_commit` off, followers learn a commit from the next append or
//!   heartbeat, so they apply up to one heartbeat later; the leader's answers do not wait.
//!
//! # Tests
//!
//! Unit tests per module, and goldenscripts in `testscripts/` (see `script.rs`).

mod config;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod ready;
mod types;

pub use config::{Config, Recovered};
pub use membership::MembershipError;
pub use message::{Envelope, Message};
pub use node::{Node, NotLeader, Role, Status};
pub use ready::Ready;
pub use types::{
    Entry, EntryData, HardState, Index, Membership, NodeId, Snapshot, SnapshotMeta, Term,
};
#[cfg(test)]
mod script;
#[cfg(test)]
mod tests;
