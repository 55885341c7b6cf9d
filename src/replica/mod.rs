//! The replica: every decision of a raftlock node, as a pure, synchronous state machine.
//!
//! A [`Replica`] owns the Raft [`Node`] and the [`LockSpace`]. It does no I/O, reads no clock
//! (the shell passes `now`, in milliseconds on any monotonic clock) and draws randomness only
//! from a seed. The daemon's driver (`server/driver.rs`) and the simulation's host
//! (`tests/sim/host.rs`) are both thin shells around it: they feed it [`Input`]s, tell it when
//! a write is durable, and carry out the [`Effect`]s it asks for. So the thousands of simulated
//! seeds run exactly the code the daemon runs.
//!
//! # The life of a client request
//!
//! 1. **Admission** (`requests.rs`). The shell hands over `Input::Request { ticket, request }`;
//!    the ticket is the shell's name for where the answer goes. Reads and `Status` are answered
//!    from local state (a linearizable read first confirms leadership through a read index).
//!    Everything else needs the leader. A session request is checked against the lock space
//!    (`SessionExpired` for an unknown session or a wrong token; the retryable `NotReady` while
//!    this node cannot tell a session it has not applied yet from one that is gone: a new
//!    leader that has not applied an entry of its own term, or a session whose id, the index
//!    of its `OpenSession`, is beyond what this node has applied) and converted, in one
//!    function, into the log [`Command`] it proposes. The proposal's (index, term) is remembered with the
//!    ticket.
//! 2. **Replication and the write pipeline** (`pipeline.rs`). [`Replica::advance`] takes the
//!    node's `Ready`: messages that depend on nothing unwritten become [`Effect::Send`]; the
//!    writes become [`Effect::Persist`] with a [`WriteId`]; the messages that must not leave
//!    before those writes (votes, append acknowledgements) wait in the in-flight queue until the
//!    shell reports [`Replica::durable`]. Up to [`MAX_IN_FLIGHT`] writes may be in flight, and a
//!    hard state that only moves the commit index rides along with the next write instead of
//!    costing an fsync of its own.
//! 3. **Apply and answer** (`apply.rs`). Committed entries are applied at once, without waiting
//!    for this node's own copy to be durable: they are durable on a quorum already (Raft thesis
//!    §10.2.1; the core counts the leader toward a quorum only once its own write is durable).
//!    The entry at the proposal's index answers the ticket with [`Effect::Answer`]: the
//!    command's outcome if the entry has the proposal's term, otherwise `Timeout` (the proposal
//!    was lost to a new leader; the client retries with the same seq). A queued acquire gets an
//!    interim `Queued` answer and its final one when a later entry grants it or its wait ends.
//! 4. **Deadlines** (`deadlines.rs`). On the leader, applying a command also sets the lease,
//!    wait and hold deadlines it implies; every tick proposes an expiry for each one that
//!    passed. A new leader restarts them all.
//!
//! 5. **Pushes** (`pushes.rs`). On the leader, an applied entry that ends grants or reorders a
//!    queue, and a hold limit or lease about to end, become [`Effect::Push`] events for the
//!    sessions concerned (hints; safety rests on the client's own lease).
//!
//! Around that: membership administration and leadership transfer (`admin.rs`), graceful
//! shutdown with a leadership hand-off (`shutdown.rs`), and the wire answers (`answers.rs`).
//! When leadership is lost, every request still waiting is answered `NotLeader`.
//!
//! # The shell's contract
//!
//! - Call [`Replica::handle`] for each input (a batch of them if it likes), then
//!   [`Replica::advance`], then carry out [`Replica::take_effects`] in order.
//! - Persist each [`Effect::Persist`] in the order given; when every write up to one is durable,
//!   call [`Replica::durable`] with its id (then `advance` and take effects again).
//! - Once [`Replica::stopped`] is true, wait for the writes in flight, persist
//!   [`Replica::final_write`] and stop.

mod admin;
mod answers;
mod apply;
mod backup;
mod deadlines;
mod error;
#[cfg(test)]
mod file_tests;
mod pipeline;
#[cfg(test)]
mod push_tests;
mod pushes;
mod requests;
mod shutdown;
#[cfg(test)]
mod tests;
mod times;

use crate::auth::Principal;
use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::SeedableRng;

pub use answers::outcome_response;
pub use deadlines::{Key, Leases, What};
pub use error::Error;
pub use pipeline::MAX_IN_FLIGHT;
pub use pushes::WARN_LEAD_MS;

use crate::lockspace::{Applied, Command, LockSpace, Seq, SessionId};
use crate::protocol::{Limits, Request, Response};
use crate::raft::{
    Entry, HardState, Index, Membership, Node, NodeId, Role, Snapshot, SnapshotMeta, Term,
};

/// The shell's name for where an answer goes (a connection's request, a simulated client's
/// operation). Opaque to the replica.
pub type Ticket = u64;

/// Identifies one write handed to the shell; ids increase by one per write.
pub type WriteId = u64;

/// What the replica needs to know about its node, in plain values.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// Peers known from the command line, merged with the membership for the transport.
    pub peers: BTreeMap<NodeId, String>,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// The longest election timeout, in ticks (bounds a leadership transfer).
    pub election_ticks_max: u32,
    /// Applied entries between two snapshots of the lock space.
    pub snapshot_threshold: u64,
    /// Bytes of applied log entries (their commands) that also trigger a snapshot, so that a
    /// burst of big appends cannot fill the disk before `snapshot_threshold` entries pass.
    pub snapshot_threshold_bytes: u64,
    /// How long a graceful shutdown lets in-flight requests finish.
    pub shutdown_timeout_ms: u64,
    /// How long `AddMember` waits for the new node to acknowledge and catch up before it fails.
    pub add_timeout_ms: u64,
    /// Request limits (the longest read).
    pub limits: Limits,
    /// Seed of the session-token generator.
    pub seed: u64,
}

/// Default for [`Config::add_timeout_ms`].
pub const ADD_TIMEOUT_MS: u64 = 10_000;

/// Default for [`Config::snapshot_threshold_bytes`]: 64 MiB of applied log.
pub const SNAPSHOT_THRESHOLD_BYTES: u64 = 64 << 20;

/// One input to the replica.
#[derive(Debug)]
pub enum Input {
    /// One Raft tick passed.
    Tick,
    /// A Raft message from a peer.
    Peer(crate::raft::Envelope),
    /// A client request (already validated against the limits, and authorized for its
    /// principal's role and grants); answered under `ticket`.
    Request {
        /// Where the answer goes.
        ticket: Ticket,
        /// The request.
        request: Request,
        /// Who sent it, when the daemon authenticates clients (`None` with authentication
        /// off): recorded with the sessions it opens, and checked against the sessions it
        /// uses.
        principal: Option<Principal>,
    },
    /// Graceful shutdown: hand leadership over, refuse new requests, finish in-flight ones.
    Shutdown,
    /// The transport's evidence that this peer's process is gone (its connection ended and
    /// the immediate redial was refused): a hint for the Raft core (`Node::peer_down`).
    PeerDown(NodeId),
    /// The snapshot of the last [`Effect::BuildSnapshot`], built by the shell.
    SnapshotBuilt(Snapshot),
}

/// A captured state to serialize into a snapshot, off the driver ([`Effect::BuildSnapshot`]).
#[derive(Debug)]
pub struct SnapshotBuild {
    /// The snapshot's index, term and membership.
    pub meta: SnapshotMeta,
    /// The lock space as it was at `meta.index` (`LockSpace::capture`: it shares file bytes
    /// with the live state, so taking it cost O(metadata)).
    pub space: Box<LockSpace>,
}

impl SnapshotBuild {
    /// Serializes the captured state: O(state), so the daemon runs it on a blocking thread
    /// and hands the result back as [`Input::SnapshotBuilt`].
    pub fn build(self) -> Snapshot {
        Snapshot {
            meta: self.meta,
            data: self.space.snapshot().into(),
        }
    }
}

/// A write for the shell to persist, in order; durable after the fsync that covers it.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// The writes of one `Ready`, done in field order: the hard state (first, so a snapshot
    /// rename never lands before its term and vote), a snapshot received from the leader, a
    /// truncated conflicting suffix, new entries.
    Persist {
        /// A snapshot to install (it replaces the log it covers).
        snapshot: Option<Snapshot>,
        /// Drop every entry from this index on.
        truncate_from: Option<Index>,
        /// Entries to append after the (possibly truncated) log.
        append: Vec<Entry>,
        /// The hard state to record.
        hard_state: Option<HardState>,
    },
    /// A snapshot this node took of its state machine; the log before it may be compacted.
    SaveSnapshot(Snapshot),
    /// Only an fsync (the final one at shutdown).
    Sync,
}

/// The leader as this node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's id, if known.
    pub leader: Option<NodeId>,
    /// Its address from the membership, if known.
    pub addr: Option<String>,
}

/// Something the shell must do, in the order given.
#[derive(Debug)]
pub enum Effect {
    /// Send a Raft message to a peer (best effort; Raft retries what is lost).
    Send(crate::raft::Envelope),
    /// Persist a write; report [`Replica::durable`] once it (and all before it) is durable.
    Persist {
        /// The write's id.
        id: WriteId,
        /// What to write.
        write: Write,
    },
    /// Answer the request of `ticket`.
    Answer {
        /// The request's ticket.
        ticket: Ticket,
        /// The answer.
        response: Response,
        /// True for the final answer; false for an interim one (`Queued`): more will follow.
        last: bool,
    },
    /// The peers the transport should keep connections to changed (the membership moved).
    Peers(BTreeMap<NodeId, String>),
    /// The leader as this node sees it changed.
    Leader(LeaderInfo),
    /// Leader only: stream the durable snapshot file to the `SnapshotSave` of `ticket` (wire
    /// id `id`): `SnapshotHeader`, then `SnapshotChunk`s, the last one final. The snapshot
    /// file covers everything committed before the request.
    StreamSnapshot {
        /// The request's ticket.
        ticket: Ticket,
        /// The request's wire id.
        id: u64,
    },
    /// Build this snapshot (serialize the captured state, [`SnapshotBuild::build`]) away from
    /// the replica's thread and hand it back as [`Input::SnapshotBuilt`]. At most one build is
    /// outstanding; the replica takes no other snapshot until it returns.
    BuildSnapshot(SnapshotBuild),
    /// Leader only: write this push event (a [`Response`] with `id` 0, see
    /// [`Response::push_session`]) to the connections that sent a request for `session` with
    /// its token. A hint: the shell drops it rather than wait for a full connection.
    Push {
        /// The session it concerns.
        session: SessionId,
        /// The event.
        event: Response,
    },
}

/// Hooks into the replica's apply step, for checkers (the simulation's invariants). Every
/// method has a default that does nothing; the daemon uses [`NoObserver`].
pub trait Observer {
    /// A write is handed to the shell (before any entry it carries is applied).
    fn persist(&mut self, _id: WriteId, _write: &Write) {}
    /// A snapshot received from the leader replaced the lock space.
    fn installed(&mut self, _snapshot: &Snapshot, _space: &LockSpace) {}
    /// `entry` is about to be applied to `space` (`command` decoded, if it is one).
    fn applying(&mut self, _space: &LockSpace, _entry: &Entry, _command: Option<&Command>) {}
    /// `entry` was applied to `space`, with `applied` for a command.
    fn applied(
        &mut self,
        _space: &LockSpace,
        _entry: &Entry,
        _command: Option<&Command>,
        _applied: Option<&Applied>,
    ) {
    }
}

/// The observer that observes nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// A request waiting for something: its ticket and its wire id (the answer carries it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    ticket: Ticket,
    id: u64,
}

/// A proposal waiting for its entry to apply.
#[derive(Debug)]
struct Pending {
    term: Term,
    caller: Caller,
}

/// The replica's state.
pub struct Replica {
    config: Config,
    node: Node,
    lockspace: LockSpace,
    now: u64,
    effects: Vec<Effect>,
    pipeline: pipeline::Pipeline,
    /// Proposals by log index.
    pending: BTreeMap<Index, Pending>,
    /// Callers waiting on a queued acquire, by (session, seq). Several may wait on one acquire
    /// (a retry from a new connection); all are answered.
    waiters: BTreeMap<(SessionId, Seq), Vec<Caller>>,
    /// Read-index requests sent to the node, by read id.
    reads: BTreeMap<u64, (Request, Caller)>,
    /// Confirmed reads waiting for the state machine to reach their index, by (index, read id).
    confirmed_reads: BTreeMap<(Index, u64), (Request, Caller)>,
    next_read_id: u64,
    /// Leader only: session, wait and hold deadlines.
    leases: Leases,
    /// Leader only: the lock and hold limit of each queued acquire, to start the hold limit
    /// when the grant comes.
    queued_holds: BTreeMap<(SessionId, Seq), (String, Option<u64>)>,
    /// Leader only: when each grant was made and each acquire queued (for `Locks`).
    times: times::Times,
    was_leader: bool,
    last_applied_term: Term,
    applied_since_snapshot: u64,
    /// Bytes of entry data applied since the last snapshot (see `snapshot_threshold_bytes`).
    applied_bytes_since_snapshot: u64,
    /// An [`Effect::BuildSnapshot`] is out and has not come back.
    snapshot_building: bool,
    /// A built snapshot waiting for room in the write pipeline.
    snapshot_built: Option<Snapshot>,
    token_rng: StdRng,
    admin: admin::Admin,
    shutdown: shutdown::Shutdown,
    /// The leader last published with [`Effect::Leader`].
    published_leader: Option<LeaderInfo>,
    /// The membership the transport was last configured from.
    transport_membership: Option<Membership>,
    /// Leader only: `SnapshotSave` requests waiting, with the commit index at their arrival.
    backups: Vec<(Caller, Index)>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.config.id)
            .field("role", &self.node.role())
            .field("term", &self.node.term())
            .field("applied", &self.lockspace.applied_index())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica around a recovered node and the lock space restored from its snapshot
    /// (`last_applied_term`: the snapshot's term, or 0).
    pub fn new(config: Config, node: Node, lockspace: LockSpace, last_applied_term: Term) -> Self {
        let token_rng = StdRng::seed_from_u64(config.seed);
        Replica {
            config,
            node,
            lockspace,
            now: 0,
            effects: Vec::new(),
            pipeline: pipeline::Pipeline::default(),
            pending: BTreeMap::new(),
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed_reads: BTreeMap::new(),
            next_read_id: 1,
            leases: Leases::new(),
            queued_holds: BTreeMap::new(),
            times: times::Times::default(),
            was_leader: false,
            last_applied_term,
            applied_since_snapshot: 0,
            applied_bytes_since_snapshot: 0,
            snapshot_building: false,
            snapshot_built: None,
            token_rng,
            admin: admin::Admin::default(),
            shutdown: shutdown::Shutdown::default(),
            published_leader: None,
            transport_membership: None,
            backups: Vec::new(),
        }
    }

    /// Steps one input. Cheap: the node's output is processed by [`Replica::advance`], so a
    /// shell can feed a batch of inputs and advance once (their proposals share one write).
    pub fn handle(&mut self, now: u64, input: Input) {
        self.set_now(now);
        match input {
            Input::Tick => {
                self.node.tick();
                self.expire_deadlines();
                self.continue_handoff();
            }
            Input::Peer(envelope) => self.node.step(envelope),
            Input::Request {
                ticket,
                request,
                principal,
            } => self.on_request(ticket, request, principal.as_ref()),
            Input::Shutdown => self.begin_shutdown(),
            Input::PeerDown(peer) => self.node.peer_down(peer),
            Input::SnapshotBuilt(snapshot) => self.snapshot_built(snapshot),
        }
    }

    /// Every write up to and including `id` is durable: releases what waited for them (the
    /// messages that vouch for them, the node's `persisted` report, a snapshot's compaction).
    pub fn durable(&mut self, now: u64, id: WriteId) {
        self.set_now(now);
        self.complete_writes(id);
    }

    /// Processes everything the inputs caused: the node's output (sends, writes, applies,
    /// answers), role changes, membership upkeep and snapshots. Errors are fatal.
    pub fn advance(&mut self, now: u64) -> Result<(), Error> {
        self.advance_observed(now, &mut NoObserver)
    }

    /// [`Replica::advance`], reporting writes and applies to `observer`.
    pub fn advance_observed(&mut self, now: u64, observer: &mut dyn Observer) -> Result<(), Error> {
        self.set_now(now);
        self.drain_ready(observer)?;
        self.observe_role();
        self.cluster_upkeep();
        self.drain_ready(observer)?;
        self.maybe_snapshot(observer);
        self.serve_backups();
        self.check_shutdown();
        Ok(())
    }

    /// Takes the effects produced so far, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// True once a graceful shutdown has finished its work: the shell waits for the writes in
    /// flight, persists [`Replica::final_write`] and stops.
    pub fn stopped(&self) -> bool {
        self.shutdown.stopped
    }

    /// The Raft node (read only: for status and checks).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The lock space (read only).
    pub fn lockspace(&self) -> &LockSpace {
        &self.lockspace
    }

    /// Gives up the replica, keeping its lock space (a crashed node's last state, for checks).
    pub fn into_lockspace(self) -> LockSpace {
        self.lockspace
    }

    /// The writes handed out and not yet reported durable.
    pub fn writes_in_flight(&self) -> usize {
        self.pipeline.writes_in_flight()
    }

    /// True while the pipeline is full: [`Replica::advance`] takes no more of the node's
    /// output (its log may be ahead of the writes handed out) until a write is durable.
    pub fn pipeline_full(&self) -> bool {
        self.pipeline.is_full()
    }

    fn set_now(&mut self, now: u64) {
        // The shell's clock is monotonic; never let a deadline move backwards if it is not.
        self.now = self.now.max(now);
    }

    fn is_leader(&self) -> bool {
        self.node.role() == Role::Leader
    }

    /// True on a leader that has applied an entry of its own term: its lock space then holds
    /// every session the cluster ever acknowledged, so "no such session" means gone.
    fn caught_up(&self) -> bool {
        self.is_leader() && self.last_applied_term == self.node.term()
    }

    fn answer(&mut self, caller: Caller, response: Response) {
        self.effects.push(Effect::Answer {
            ticket: caller.ticket,
            response,
            last: true,
        });
    }

    fn interim(&mut self, caller: Caller, response: Response) {
        self.effects.push(Effect::Answer {
            ticket: caller.ticket,
            response,
            last: false,
        });
    }

    fn leader_info(&self) -> LeaderInfo {
        let leader = self.node.leader();
        let addr = leader.and_then(|id| self.node.membership().address(id).map(String::from));
        LeaderInfo { leader, addr }
    }

    /// Follows role changes: a new leader restarts every deadline; a deposed one answers every
    /// waiting request `NotLeader`. Publishes the leader when it changed.
    fn observe_role(&mut self) {
        let leader = self.is_leader();
        if leader && !self.was_leader {
            self.restart_deadlines();
        } else if !leader && self.was_leader {
            tracing::info!(leader = ?self.node.leader(), "lost leadership");
            self.leases.clear();
            self.queued_holds.clear();
            self.times.clear();
            let pending = std::mem::take(&mut self.pending);
            let reads = std::mem::take(&mut self.reads).into_values();
            let waiters = std::mem::take(&mut self.waiters).into_values().flatten();
            let callers: Vec<Caller> = pending
                .into_values()
                .map(|p| p.caller)
                .chain(reads.map(|(_, c)| c))
                .chain(waiters)
                .chain(self.admin.take_all())
                .chain(self.take_backups())
                .collect();
            for caller in callers {
                let response = self.not_leader(caller.id);
                self.answer(caller, response);
            }
        }
        self.was_leader = leader;
        let info = self.leader_info();
        if self.published_leader.as_ref() != Some(&info) {
            self.published_leader = Some(info.clone());
            self.effects.push(Effect::Leader(info));
        }
    }
}
