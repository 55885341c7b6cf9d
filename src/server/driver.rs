//! The driver: the one task that owns the Raft [`Node`] and the [`LockSpace`].
//!
//! Everything reaches it through one bounded inbox of [`Event`]s, which gives a single total
//! order; nothing else touches the core (no `Arc<Mutex<Node>>`). One turn of its loop:
//!
//! 1. take one event and drain what is already queued (bounded), stepping each into the node
//!    (ticks, client requests turned into proposals or read-index requests);
//! 2. take the node's `Ready`; send its `messages`; hand its writes to the storage writer and
//!    queue its `persisted_messages` and `persisted` report behind them. Up to
//!    [`MAX_IN_FLIGHT`] writes may be in flight: while earlier ones sync, the driver keeps
//!    stepping events and submitting new writes, and the writer puts everything queued into one
//!    fsync (group commit). A `Ready` without writes but with `persisted_messages` queues behind
//!    the writes in flight (its acknowledgements may vouch for them);
//! 3. at once, without waiting for that write: install a snapshot received from the leader,
//!    apply the `committed` entries to the lock space, answer the clients whose proposals they
//!    were, and serve the confirmed reads whose index has been applied. Committed entries are
//!    durable on a quorum already; this node's own copy is not needed for them to survive
//!    (Raft thesis §10.2.1, which the core supports by counting the leader toward a quorum only
//!    once its own write is durable);
//! 4. when a write is durable, strictly in submission order: send its `persisted_messages` and
//!    report `persisted` to the node (which may commit more on the leader).
//!
//! A proposal's answer is keyed by its (index, term): if the entry applied at that index has
//! another term, the proposal was lost to a new leader and the outcome is unknown (`Timeout`,
//! the client retries with the same seq). On the leader, every tick also checks the deadline
//! table ([`Leases`]) and proposes `ExpireSession` / `ExpireWait` / `ExpireHold` for what passed.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::ServerConfig;
use super::connection::Reply;
use super::leases::{Key, Leases, What};
use super::transport::Transport;
use super::writer::{self, Done, Job, Writer};
use super::Error;
use crate::lockspace::{
    Applied, Command, LockInfo, LockSpace, Notification, Outcome, Seq, SessionId,
};
use crate::protocol::{
    ErrorCode, HolderState, LockState, MemberStatus, Request, Response, SessionSummary, StatusInfo,
    WaiterState,
};
use crate::raft::{
    Entry, EntryData, Envelope, HardState, Index, Membership, MembershipError, Node, NodeId, Ready,
    Role, Snapshot, Term,
};

/// Most events handled in one turn before the node's output is processed.
const MAX_BATCH: usize = 1024;
/// How far behind the commit index a learner may be when it is promoted (under steady load the
/// commit index never waits for it).
const CATCH_UP_SLACK: Index = 64;
/// Longest a graceful shutdown waits for another node to take over leadership.
const HANDOFF_LIMIT: Duration = Duration::from_secs(3);
/// Most consecutive `Ready`s processed without a write before returning to the inbox.
const MAX_READY_ROUNDS: usize = 16;
/// Most `Ready`s (and snapshots) waiting for their writes at once. Deep enough to keep the disk
/// busy while earlier batches sync; bounded so memory and answer latency stay bounded.
const MAX_IN_FLIGHT: usize = 8;
// The writer's queue must hold every job in flight plus the final sync, so a submit never blocks.
const _: () = assert!(MAX_IN_FLIGHT < writer::CAPACITY);

/// What the driver's inbox carries.
#[derive(Debug)]
pub(crate) enum Event {
    /// One Raft tick passed (from the ticker task).
    Tick,
    /// A client request and the handle to answer it.
    Client {
        /// The request (already validated against the limits).
        request: Request,
        /// Where the answer goes.
        reply: Reply,
    },
    /// A Raft message from a peer (from the transport's inbound side).
    Peer(Envelope),
    /// Graceful shutdown: hand leadership over, refuse new requests, finish in-flight ones,
    /// sync, stop.
    Shutdown,
}

impl From<Envelope> for Event {
    fn from(envelope: Envelope) -> Event {
        Event::Peer(envelope)
    }
}

/// A member being added: a learner until it has caught up, then promoted.
#[derive(Debug)]
struct Adding {
    /// Clients waiting for the promotion to commit.
    replies: Vec<Reply>,
}

/// A `TransferLeader` waiting to see another leader.
#[derive(Debug)]
struct TransferWait {
    reply: Reply,
    deadline: Instant,
}

/// The leader as this node sees it, published to the connections (for `Welcome`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaderInfo {
    /// The leader's id, if known.
    pub leader: Option<NodeId>,
    /// Its address from the membership, if known.
    pub addr: Option<String>,
}

/// A proposal waiting for its entry to apply.
#[derive(Debug)]
struct Pending {
    term: Term,
    reply: Reply,
}

/// What to do once a write (and every write before it) is durable.
#[derive(Debug)]
enum AfterWrite {
    /// The parts of a `Ready` that depend on its writes: the messages that must not leave
    /// before them (votes, append acknowledgements) and the node's `persisted` report.
    Ready {
        persisted_messages: Vec<Envelope>,
        last_appended: Option<(Index, Term)>,
    },
    /// A snapshot this node took: the core may now compact its log.
    Snapshot(Snapshot),
}

impl AfterWrite {
    /// True if there is nothing to do.
    fn is_empty(&self) -> bool {
        match self {
            AfterWrite::Ready {
                persisted_messages,
                last_appended,
            } => persisted_messages.is_empty() && last_appended.is_none(),
            AfterWrite::Snapshot(_) => false,
        }
    }
}

/// A `Ready` (or snapshot) waiting in the in-flight queue.
#[derive(Debug)]
struct InFlight {
    /// The writer's answer, or `None` for a `Ready` without writes, which is due as soon as
    /// every write queued before it is durable.
    done: Option<Done>,
    after: AfterWrite,
}

/// What woke the driver.
enum Wake {
    Written(Result<Result<(), crate::storage::Error>, tokio::sync::oneshot::error::RecvError>),
    Event(Option<Event>),
}

/// The driver task's state.
pub(crate) struct Driver {
    config: ServerConfig,
    node: Node,
    lockspace: LockSpace,
    writer: Writer,
    inbox: mpsc::Receiver<Event>,
    leader_tx: watch::Sender<LeaderInfo>,
    /// `Ready`s (and snapshots) whose writes were handed to the writer, or which wait behind
    /// such writes, not yet processed; in submission order, at most [`MAX_IN_FLIGHT`].
    in_flight: VecDeque<InFlight>,
    /// Proposals by log index.
    pending: BTreeMap<Index, Pending>,
    /// Clients waiting on a queued acquire, by (session, seq). Several handles may wait on one
    /// acquire (a retry from a new connection); all are answered.
    waiters: BTreeMap<(SessionId, Seq), Vec<Reply>>,
    /// Read-index requests sent to the node, by read id.
    reads: BTreeMap<u64, (Request, Reply)>,
    /// Confirmed reads waiting for the state machine to reach their index, by (index, read id).
    confirmed_reads: BTreeMap<(Index, u64), (Request, Reply)>,
    next_read_id: u64,
    /// Leader only: session, wait and hold deadlines.
    leases: Leases,
    /// Leader only: the lock and hold limit of each queued acquire, to start the hold limit
    /// when the grant comes.
    queued_holds: BTreeMap<(SessionId, Seq), (String, Option<u64>)>,
    was_leader: bool,
    last_applied_term: Term,
    applied_since_snapshot: u64,
    /// Set at shutdown: the time after which in-flight proposals are abandoned.
    shutdown_deadline: Option<Instant>,
    /// At shutdown, while this node still leads: when to give up handing leadership over, and
    /// when to ask the core for a transfer again.
    handoff: Option<(Instant, Instant)>,
    token_rng: StdRng,
    /// The peer transport (outbound queues; its acceptor feeds this driver's inbox).
    transport: Transport<Event>,
    /// The membership the transport was last configured from.
    transport_membership: Option<Membership>,
    /// Leader only: nodes being added (learner, then voter), by id.
    adding: BTreeMap<NodeId, Adding>,
    /// Leader only: clients waiting for a membership entry to commit, by its index.
    config_waiters: BTreeMap<Index, (Term, Vec<Reply>)>,
    /// Clients waiting for a leadership transfer to complete.
    transfers: Vec<TransferWait>,
    /// The hard state last handed to the writer (`None` until the first write).
    written_hard_state: Option<HardState>,
    /// A hard state whose only change is the commit index, not yet written. It rides along with
    /// the next write instead of costing an fsync of its own (see `advance`).
    deferred_hard_state: Option<HardState>,
}

impl Driver {
    /// A driver around a recovered node and state machine.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: ServerConfig,
        node: Node,
        lockspace: LockSpace,
        last_applied_term: Term,
        writer: Writer,
        inbox: mpsc::Receiver<Event>,
        leader_tx: watch::Sender<LeaderInfo>,
        transport: Transport<Event>,
    ) -> Driver {
        Driver {
            config,
            node,
            lockspace,
            writer,
            inbox,
            leader_tx,
            in_flight: VecDeque::with_capacity(MAX_IN_FLIGHT),
            written_hard_state: None,
            deferred_hard_state: None,
            pending: BTreeMap::new(),
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed_reads: BTreeMap::new(),
            next_read_id: 1,
            leases: Leases::new(),
            queued_holds: BTreeMap::new(),
            was_leader: false,
            last_applied_term,
            applied_since_snapshot: 0,
            shutdown_deadline: None,
            handoff: None,
            token_rng: StdRng::from_entropy(),
            transport,
            transport_membership: None,
            adding: BTreeMap::new(),
            config_waiters: BTreeMap::new(),
            transfers: Vec::new(),
        }
    }

    /// Runs until shutdown completes (`Ok`) or persisting or applying fails (`Err`: the caller
    /// must stop the process; recovery replays the log).
    pub(crate) async fn run(mut self) -> Result<(), Error> {
        self.advance()?;
        self.observe_role();
        loop {
            let wake = {
                let inbox = &mut self.inbox;
                let in_flight = &mut self.in_flight;
                tokio::select! {
                    biased;
                    written = async {
                        match in_flight.front_mut() {
                            Some(InFlight { done: Some(done), .. }) => done.await,
                            // A `Ready` without writes at the front is due at once (`complete_due`
                            // normally takes it before the loop comes back here).
                            Some(InFlight { done: None, .. }) => Ok(Ok(())),
                            None => std::future::pending().await,
                        }
                    } => Wake::Written(written),
                    event = inbox.recv() => Wake::Event(event),
                }
            };
            match wake {
                Wake::Written(result) => {
                    let in_flight = self.in_flight.pop_front().expect("a write was in flight");
                    written(result)?;
                    self.after_write(in_flight.after)?;
                    self.complete_due()?;
                }
                Wake::Event(None) => {
                    // Every sender is gone: nothing can reach us any more.
                    return self.final_sync().await;
                }
                Wake::Event(Some(event)) => {
                    self.handle(event);
                    for _ in 1..MAX_BATCH {
                        match self.inbox.try_recv() {
                            Ok(event) => self.handle(event),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.advance()?;
            self.observe_role();
            self.cluster_upkeep();
            self.advance()?;
            self.maybe_snapshot();
            if self.shutdown_done() {
                return self.final_sync().await;
            }
        }
    }

    // --- Events -------------------------------------------------------------------------------

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => {
                self.node.tick();
                self.expire_deadlines();
                self.continue_handoff();
            }
            Event::Peer(envelope) => self.node.step(envelope),
            Event::Client { request, reply } => self.on_request(request, reply),
            Event::Shutdown => self.begin_shutdown(),
        }
    }

    fn on_request(&mut self, request: Request, reply: Reply) {
        let id = reply.id();
        if self.shutdown_deadline.is_some() {
            reply.finish(Response::error(
                id,
                ErrorCode::ShuttingDown,
                "the node is shutting down",
            ));
            return;
        }
        match request {
            Request::Hello { .. } => reply.finish(Response::error(
                id,
                ErrorCode::BadRequest,
                "Hello was already received",
            )),
            Request::Status { .. } => reply.finish(self.status(id)),
            Request::Read { stale: true, .. } | Request::Locks { stale: true, .. } => {
                let response = self.answer_read(&request, id);
                reply.finish(response);
            }
            Request::Read { .. } | Request::Locks { .. } => {
                let read_id = self.next_read_id;
                self.next_read_id += 1;
                match self.node.read_index(read_id) {
                    Ok(()) => {
                        self.reads.insert(read_id, (request, reply));
                    }
                    Err(_) => reply.finish(self.not_leader(id)),
                }
            }
            _ if !self.is_leader() => reply.finish(self.not_leader(id)),
            Request::AddMember { node_id, addr, .. } => self.add_member(node_id, addr, reply),
            Request::RemoveMember { node_id, .. } => self.remove_member(node_id, reply),
            Request::TransferLeader { node_id, .. } => self.transfer_leader(node_id, reply),
            Request::OpenSession {
                nonce,
                ttl_ms,
                owner,
                ..
            } => {
                let token = self.token_rng.gen();
                self.propose(
                    Command::OpenSession {
                        nonce,
                        ttl_ms,
                        token,
                        owner,
                    },
                    reply,
                );
            }
            Request::Sessions { .. } => reply.finish(self.session_list(id)),
            Request::RevokeSession { session_id, .. } => self.propose(
                Command::RevokeSession {
                    session: session_id,
                },
                reply,
            ),
            Request::KeepAlive { session, token, .. } => match self.lockspace.session(session) {
                Some(info) if info.token == token => {
                    let deadline = Instant::now() + std::time::Duration::from_millis(info.ttl_ms);
                    self.leases.set(
                        Key {
                            session,
                            what: What::Lease,
                        },
                        deadline,
                    );
                    reply.finish(Response::KeptAlive {
                        id,
                        ttl_ms: info.ttl_ms,
                    });
                }
                _ => reply.finish(session_expired(id)),
            },
            Request::CloseSession {
                session,
                token,
                seq,
                ..
            } => {
                if self.check_session(session, token) {
                    self.propose(Command::CloseSession { session, seq }, reply);
                } else {
                    reply.finish(session_expired(id));
                }
            }
            Request::Acquire {
                session,
                token,
                seq,
                lock,
                mode,
                wait_ms,
                hold_ms,
                ..
            } => {
                if self.check_session(session, token) {
                    let command = Command::Acquire {
                        session,
                        seq,
                        lock,
                        mode,
                        wait_ms,
                        hold_ms,
                    };
                    self.propose(command, reply);
                } else {
                    reply.finish(session_expired(id));
                }
            }
            Request::Release {
                session,
                token,
                seq,
                lock,
                ..
            } => {
                if self.check_session(session, token) {
                    self.propose(Command::Release { session, seq, lock }, reply);
                } else {
                    reply.finish(session_expired(id));
                }
            }
            Request::Cancel {
                session,
                token,
                seq,
                lock,
                acquire_seq,
                ..
            } => {
                if self.check_session(session, token) {
                    let command = Command::Cancel {
                        session,
                        seq,
                        lock,
                        acquire_seq,
                    };
                    self.propose(command, reply);
                } else {
                    reply.finish(session_expired(id));
                }
            }
            Request::Extend {
                session,
                token,
                seq,
                lock,
                fence,
                hold_ms,
                ..
            } => {
                if self.check_session(session, token) {
                    let command = Command::Extend {
                        session,
                        seq,
                        lock,
                        fence,
                        hold_ms,
                    };
                    self.propose(command, reply);
                } else {
                    reply.finish(session_expired(id));
                }
            }
            Request::Append {
                session,
                token,
                seq,
                file,
                lock,
                fence,
                data,
                ..
            } => {
                if self.check_session(session, token) {
                    let command = Command::Append {
                        session,
                        seq,
                        file,
                        lock,
                        fence,
                        data,
                    };
                    self.propose(command, reply);
                } else {
                    reply.finish(session_expired(id));
                }
            }
        }
    }

    fn check_session(&self, session: SessionId, token: u64) -> bool {
        self.lockspace
            .session(session)
            .is_some_and(|info| info.token == token)
    }

    fn propose(&mut self, command: Command, reply: Reply) {
        let bytes = rmp_serde::to_vec_named(&command).expect("commands always serialize");
        match self.node.propose(bytes) {
            Ok((index, term)) => {
                self.pending.insert(index, Pending { term, reply });
            }
            Err(_) => {
                let response = self.not_leader(reply.id());
                reply.finish(response);
            }
        }
    }

    /// Proposes an internal command (an expiry); it has no client to answer.
    fn propose_internal(&mut self, command: Command) {
        tracing::debug!(?command, "proposing expiry");
        let bytes = rmp_serde::to_vec_named(&command).expect("commands always serialize");
        if self.node.propose(bytes).is_err() {
            // Leadership just moved: the new leader restarts every deadline.
            tracing::debug!("expiry not proposed: no longer the leader");
        }
    }

    fn expire_deadlines(&mut self) {
        if !self.is_leader() || self.leases.is_empty() {
            return;
        }
        for key in self.leases.take_due(Instant::now()) {
            let session = key.session;
            // Skip what no longer applies; the state machine would ignore it anyway.
            let command = match key.what {
                What::Lease => {
                    if self.lockspace.session(session).is_none() {
                        continue;
                    }
                    tracing::info!(session, "session lease expired");
                    Command::ExpireSession { session }
                }
                What::Wait { seq, lock } => {
                    let waiting = self.lockspace.lock(&lock).is_some_and(|info| {
                        info.waiters
                            .iter()
                            .any(|w| w.session == session && w.seq == seq)
                    });
                    if !waiting {
                        continue;
                    }
                    Command::ExpireWait { session, seq, lock }
                }
                What::Hold { lock, fence } => {
                    let holding = self.lockspace.lock(&lock).is_some_and(|info| {
                        info.holders
                            .iter()
                            .any(|&(s, f)| s == session && f == fence)
                    });
                    if !holding {
                        continue;
                    }
                    Command::ExpireHold {
                        session,
                        lock,
                        fence,
                    }
                }
            };
            self.propose_internal(command);
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        tracing::info!(
            pending = self.pending.len(),
            waiters = self.waiters.len(),
            "shutting down: finishing in-flight proposals"
        );
        let now = Instant::now();
        self.shutdown_deadline = Some(now + self.config.shutdown_timeout);
        if self.is_leader() && self.has_other_voter() {
            // Hand leadership to an up-to-date follower first, so clients barely notice.
            let limit = now + self.config.shutdown_timeout.min(HANDOFF_LIMIT);
            self.handoff = Some((limit, now));
            self.continue_handoff();
        }
        // Queued acquires may wait forever: tell them now; they retry elsewhere with their seq.
        for (_, replies) in std::mem::take(&mut self.waiters) {
            for reply in replies {
                let id = reply.id();
                reply.finish(Response::error(
                    id,
                    ErrorCode::ShuttingDown,
                    "the node is shutting down",
                ));
            }
        }
    }

    /// At shutdown, while this node still leads: (re)asks the core to transfer leadership,
    /// once per election timeout, until the hand-off limit.
    fn continue_handoff(&mut self) {
        let Some((limit, next)) = self.handoff else {
            return;
        };
        let now = Instant::now();
        if !self.is_leader() || now >= limit {
            if self.is_leader() {
                tracing::warn!("no follower took over in time; stopping as leader");
            }
            self.handoff = None;
            return;
        }
        if now >= next {
            tracing::info!("shutting down: transferring leadership");
            if self.node.transfer_leadership(None).is_err() {
                self.handoff = None;
                return;
            }
            let retry = self.config.tick * self.config.election_ticks_max;
            self.handoff = Some((limit, now + retry));
        }
    }

    fn has_other_voter(&self) -> bool {
        self.node
            .membership()
            .voters
            .keys()
            .any(|id| *id != self.config.id)
    }

    fn shutdown_done(&mut self) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if self.handoff.is_some() && self.is_leader() && Instant::now() < deadline {
            return false;
        }
        let idle =
            self.pending.is_empty() && self.reads.is_empty() && self.confirmed_reads.is_empty();
        if !idle && Instant::now() < deadline {
            return false;
        }
        if !idle {
            tracing::warn!(
                pending = self.pending.len(),
                "shutdown timeout: abandoning in-flight requests"
            );
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            let id = pending.reply.id();
            pending.reply.finish(Response::error(
                id,
                ErrorCode::Timeout,
                "the node shut down before the outcome was known; retry with the same seq",
            ));
        }
        let reads = std::mem::take(&mut self.reads).into_values();
        let confirmed = std::mem::take(&mut self.confirmed_reads).into_values();
        for (_, reply) in reads.chain(confirmed) {
            let id = reply.id();
            reply.finish(Response::error(
                id,
                ErrorCode::ShuttingDown,
                "the node is shutting down",
            ));
        }
        true
    }

    /// Waits for every write in flight, then fsyncs once more.
    async fn final_sync(&mut self) -> Result<(), Error> {
        while let Some(in_flight) = self.in_flight.pop_front() {
            if let Some(done) = in_flight.done {
                written(done.await)?;
            }
        }
        // The last commit index goes to disk with the final sync, if it was deferred.
        let job = match self.deferred_hard_state.take() {
            Some(hard_state) => Job::Persist {
                snapshot: None,
                truncate_from: None,
                append: Vec::new(),
                hard_state: Some(hard_state),
            },
            None => Job::Sync,
        };
        match self.writer.submit(job).await {
            Ok(Ok(())) => {
                tracing::info!(applied = self.lockspace.applied_index(), "final sync done");
                Ok(())
            }
            Ok(Err(error)) => Err(Error::Persist(error)),
            Err(_) => Err(Error::WriterStopped),
        }
    }

    // --- Cluster administration -------------------------------------------------------------

    /// `AddMember` on the leader: propose the node as a learner (or resume waiting for it).
    fn add_member(&mut self, node_id: NodeId, addr: String, reply: Reply) {
        let id = reply.id();
        let membership = self.node.membership().clone();
        if let Some(known) = membership.address(node_id) {
            if known != addr {
                let message = format!("node {node_id} is a member at {known}, not {addr}");
                reply.finish(Response::error(id, ErrorCode::BadRequest, message));
                return;
            }
            if membership.voters.contains_key(&node_id) {
                reply.finish(self.membership_changed(id, 0));
            } else {
                self.adding
                    .entry(node_id)
                    .or_insert(Adding {
                        replies: Vec::new(),
                    })
                    .replies
                    .push(reply);
            }
            return;
        }
        let mut next = membership;
        next.learners.insert(node_id, addr.clone());
        match self.node.propose_membership(next) {
            Ok((index, _)) => {
                tracing::info!(node_id, %addr, index, "adding a member as a learner");
                self.adding.insert(
                    node_id,
                    Adding {
                        replies: vec![reply],
                    },
                );
            }
            Err(error) => reply.finish(self.membership_error(id, error)),
        }
    }

    /// `RemoveMember` on the leader.
    fn remove_member(&mut self, node_id: NodeId, reply: Reply) {
        let id = reply.id();
        let mut next = self.node.membership().clone();
        if !next.contains(node_id) {
            reply.finish(self.membership_changed(id, 0));
            return;
        }
        next.voters.remove(&node_id);
        next.learners.remove(&node_id);
        match self.node.propose_membership(next) {
            Ok((index, term)) => {
                tracing::info!(node_id, index, "removing a member");
                if let Some(adding) = self.adding.remove(&node_id) {
                    for reply in adding.replies {
                        let id = reply.id();
                        let message = format!("node {node_id} was removed while being added");
                        reply.finish(Response::error(id, ErrorCode::Conflict, message));
                    }
                }
                self.config_waiters
                    .entry(index)
                    .or_insert((term, Vec::new()))
                    .1
                    .push(reply);
            }
            Err(error) => reply.finish(self.membership_error(id, error)),
        }
    }

    /// `TransferLeader` on the leader.
    fn transfer_leader(&mut self, to: Option<NodeId>, reply: Reply) {
        let id = reply.id();
        if to == Some(self.config.id) {
            reply.finish(self.leader_transferred(id, self.config.id));
            return;
        }
        let voters = &self.node.membership().voters;
        let valid = match to {
            Some(to) => voters.contains_key(&to),
            None => self.has_other_voter(),
        };
        if !valid {
            let message = match to {
                Some(to) => format!("node {to} is not a voter"),
                None => "there is no other voter to transfer to".to_string(),
            };
            reply.finish(Response::error(id, ErrorCode::BadRequest, message));
            return;
        }
        if self.node.transfer_leadership(to).is_err() {
            reply.finish(self.not_leader(id));
            return;
        }
        // The core gives up after an election timeout; allow a few.
        let deadline = Instant::now() + self.config.tick * self.config.election_ticks_max * 3;
        self.transfers.push(TransferWait { reply, deadline });
    }

    /// Work that follows the node's state after each turn: the transport's peer list, learners
    /// to promote, and transfers that completed or timed out.
    fn cluster_upkeep(&mut self) {
        if self.transport_membership.as_ref() != Some(self.node.membership()) {
            let membership = self.node.membership().clone();
            let mut peers = self.config.peers.clone();
            for (id, addr) in membership.voters.iter().chain(membership.learners.iter()) {
                peers.insert(*id, addr.clone());
            }
            peers.remove(&self.config.id);
            tracing::info!(?peers, "peer set");
            self.transport.set_peers(peers);
            self.transport_membership = Some(membership);
        }
        if !self.adding.is_empty() && self.is_leader() {
            self.promote_caught_up();
        }
        if !self.transfers.is_empty() {
            let now = Instant::now();
            let leader = self.node.leader().filter(|l| *l != self.config.id);
            for wait in std::mem::take(&mut self.transfers) {
                let id = wait.reply.id();
                if let Some(leader) = leader {
                    wait.reply.finish(self.leader_transferred(id, leader));
                } else if now >= wait.deadline {
                    wait.reply.finish(Response::error(
                        id,
                        ErrorCode::Timeout,
                        "leadership did not move in time; retry",
                    ));
                } else {
                    self.transfers.push(wait);
                }
            }
        }
    }

    /// Promotes learners being added once they have caught up with the commit index.
    fn promote_caught_up(&mut self) {
        let status = self.node.status();
        let ids: Vec<NodeId> = self.adding.keys().copied().collect();
        for node_id in ids {
            if status.membership.voters.contains_key(&node_id) {
                // Promoted meanwhile (by an earlier leader): nothing left to wait for.
                if let Some(adding) = self.adding.remove(&node_id) {
                    for reply in adding.replies {
                        let id = reply.id();
                        reply.finish(self.membership_changed(id, 0));
                    }
                }
                continue;
            }
            let Some(addr) = status.membership.learners.get(&node_id) else {
                continue;
            };
            let matched = status
                .match_index
                .iter()
                .find(|(id, _)| *id == node_id)
                .map_or(0, |(_, m)| *m);
            if matched.saturating_add(CATCH_UP_SLACK) < status.commit_index {
                continue;
            }
            let mut next = status.membership.clone();
            next.learners.remove(&node_id);
            next.voters.insert(node_id, addr.clone());
            match self.node.propose_membership(next) {
                Ok((index, term)) => {
                    tracing::info!(node_id, index, "learner caught up; promoting it to voter");
                    let adding = self.adding.remove(&node_id).expect("id from keys");
                    let waiters = &mut self
                        .config_waiters
                        .entry(index)
                        .or_insert((term, Vec::new()))
                        .1;
                    waiters.extend(adding.replies);
                    // One change at a time: the next learner waits for this one to commit.
                    return;
                }
                Err(MembershipError::ChangeInProgress) => return,
                Err(error) => {
                    tracing::warn!(node_id, %error, "cannot promote the learner");
                    return;
                }
            }
        }
    }

    fn membership_error(&self, id: u64, error: MembershipError) -> Response {
        match error {
            MembershipError::NotLeader(_) => self.not_leader(id),
            MembershipError::ChangeInProgress => Response::error(
                id,
                ErrorCode::Timeout,
                "another membership change is in progress; retry",
            ),
            MembershipError::Invalid(reason) => Response::error(id, ErrorCode::BadRequest, reason),
        }
    }

    fn membership_changed(&self, id: u64, index: Index) -> Response {
        let membership = self.node.membership();
        let voters = membership.voters.iter().map(|(n, a)| (n, a, true));
        let learners = membership.learners.iter().map(|(n, a)| (n, a, false));
        Response::MembershipChanged {
            id,
            index,
            members: voters
                .chain(learners)
                .map(|(node_id, addr, voter)| MemberStatus {
                    node_id: *node_id,
                    addr: addr.clone(),
                    voter,
                    match_index: None,
                })
                .collect(),
        }
    }

    fn leader_transferred(&self, id: u64, leader: NodeId) -> Response {
        Response::LeaderTransferred {
            id,
            leader,
            leader_addr: self.node.membership().address(leader).map(String::from),
        }
    }

    // --- Ready --------------------------------------------------------------------------------

    /// Processes the node's output until it has none, or the in-flight queue is full.
    fn advance(&mut self) -> Result<(), Error> {
        for _ in 0..MAX_READY_ROUNDS {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                return Ok(());
            }
            let mut ready = self.node.ready();
            // A hard state that only moves the commit index need not be durable before the
            // committed entries are applied: the entries are durable on a quorum, and Raft
            // recovers the commit index from the leader (a restart merely re-learns it).
            // Deferring it to the next write halves the fsyncs per operation.
            if self.is_commit_only(&ready) {
                self.deferred_hard_state = ready.hard_state.take();
            }
            let has_writes = ready.snapshot.is_some()
                || ready.truncate_from.is_some()
                || !ready.append.is_empty()
                || ready.hard_state.is_some();
            if ready.is_empty() {
                return Ok(());
            }
            self.send(ready.messages);
            // What is committed is durable on a quorum already, so applying it does not wait for
            // this node's own writes (Raft thesis §10.2.1): the leader answers a client as soon
            // as a quorum has the entry, even while its own fsync of it is still running. A
            // snapshot received from the leader is committed state too, and is installed at once
            // (the entries after it, applied below, build on it). The committed entries were all
            // handed to the writer by the time they are applied (in this `Ready` or an earlier
            // one), so a snapshot this node takes of its applied state is saved after them.
            if let Some(snapshot) = &ready.snapshot {
                self.install_snapshot(snapshot)?;
            }
            let after = AfterWrite::Ready {
                persisted_messages: ready.persisted_messages,
                last_appended: ready.append.last().map(|entry| (entry.index, entry.term)),
            };
            if has_writes {
                // A newer hard state in this batch supersedes the deferred one.
                let deferred = self.deferred_hard_state.take();
                let hard_state = ready.hard_state.or(deferred);
                if hard_state.is_some() {
                    self.written_hard_state = hard_state;
                }
                let done = self.writer.submit(Job::Persist {
                    snapshot: ready.snapshot,
                    truncate_from: ready.truncate_from,
                    append: ready.append,
                    hard_state,
                });
                self.in_flight.push_back(InFlight {
                    done: Some(done),
                    after,
                });
            } else if !after.is_empty() {
                if self.in_flight.is_empty() {
                    self.after_write(after)?;
                } else {
                    // Acknowledgements may vouch for writes still in flight: they leave once
                    // every earlier write is durable.
                    self.in_flight.push_back(InFlight { done: None, after });
                }
            }
            for entry in ready.committed {
                self.apply(entry)?;
            }
            for (read_id, index) in ready.reads {
                if let Some(read) = self.reads.remove(&read_id) {
                    self.confirmed_reads.insert((index, read_id), read);
                }
            }
            self.serve_reads();
        }
        Ok(())
    }

    /// Processes, in order, the queued `Ready`s that are due: those without writes at the front,
    /// and those whose writes the writer has already answered (one fsync answers a whole group).
    fn complete_due(&mut self) -> Result<(), Error> {
        while let Some(front) = self.in_flight.front_mut() {
            if let Some(done) = &mut front.done {
                match done.try_recv() {
                    Ok(result) => written(Ok(result))?,
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        return Err(Error::WriterStopped)
                    }
                }
            }
            let front = self.in_flight.pop_front().expect("front exists");
            self.after_write(front.after)?;
        }
        Ok(())
    }

    /// True if the only write `ready` asks for is a hard state whose term and vote equal the
    /// last written ones (a commit index update). Term and vote changes are always written and
    /// fsynced before anything that depends on them is sent.
    fn is_commit_only(&self, ready: &Ready) -> bool {
        let (Some(new), Some(written)) = (ready.hard_state, self.written_hard_state) else {
            return false;
        };
        ready.snapshot.is_none()
            && ready.truncate_from.is_none()
            && ready.append.is_empty()
            && new.term == written.term
            && new.vote == written.vote
    }

    /// Queues messages to peers on the transport (never blocks; Raft retries what is lost).
    fn send(&mut self, messages: Vec<Envelope>) {
        for message in messages {
            self.transport.send(message);
        }
    }

    fn after_write(&mut self, after: AfterWrite) -> Result<(), Error> {
        match after {
            AfterWrite::Ready {
                persisted_messages,
                last_appended,
            } => {
                self.send(persisted_messages);
                if let Some((index, term)) = last_appended {
                    self.node.persisted(index, term);
                }
                Ok(())
            }
            AfterWrite::Snapshot(snapshot) => {
                tracing::info!(
                    index = snapshot.meta.index,
                    bytes = snapshot.data.len(),
                    "snapshot saved"
                );
                self.node.compacted(snapshot);
                Ok(())
            }
        }
    }

    /// Replaces the state machine with a snapshot received from the leader.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        self.lockspace = LockSpace::restore(&snapshot.data).map_err(Error::Restore)?;
        self.last_applied_term = snapshot.meta.term;
        self.applied_since_snapshot = 0;
        tracing::info!(
            index = snapshot.meta.index,
            "installed snapshot from the leader"
        );
        // Proposals the snapshot covers can no longer be matched with their outcome.
        let covered: Vec<Index> = self
            .pending
            .range(..=snapshot.meta.index)
            .map(|(i, _)| *i)
            .collect();
        for index in covered {
            let pending = self.pending.remove(&index).expect("key from range");
            let id = pending.reply.id();
            pending.reply.finish(timeout_error(id));
        }
        let later = self.config_waiters.split_off(&(snapshot.meta.index + 1));
        for (_, (_, replies)) in std::mem::replace(&mut self.config_waiters, later) {
            for reply in replies {
                let id = reply.id();
                reply.finish(timeout_error(id));
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self) {
        let applied = self.lockspace.applied_index();
        while let Some(entry) = self.confirmed_reads.first_entry() {
            if entry.key().0 > applied {
                break;
            }
            let (request, reply) = entry.remove();
            let response = self.answer_read(&request, reply.id());
            reply.finish(response);
        }
    }

    // --- Apply --------------------------------------------------------------------------------

    fn apply(&mut self, entry: Entry) -> Result<(), Error> {
        let index = entry.index;
        if index <= self.lockspace.applied_index() {
            // Already in the state machine (restored from the snapshot).
            return Ok(());
        }
        self.last_applied_term = entry.term;
        self.applied_since_snapshot += 1;
        let pending = self.pending.remove(&index);
        if let Some((term, replies)) = self.config_waiters.remove(&index) {
            let committed = term == entry.term && matches!(entry.data, EntryData::Config(_));
            for reply in replies {
                let id = reply.id();
                let response = if committed {
                    self.membership_changed(id, index)
                } else {
                    timeout_error(id)
                };
                reply.finish(response);
            }
        }
        let EntryData::Command(bytes) = entry.data else {
            self.lockspace.skip(index);
            if let Some(pending) = pending {
                let id = pending.reply.id();
                pending.reply.finish(timeout_error(id));
            }
            return Ok(());
        };
        let command: Command = rmp_serde::from_slice(&bytes)
            .map_err(|source| Error::CorruptCommand { index, source })?;
        let applied = self.lockspace.apply(index, &command);
        if self.is_leader() {
            self.track_deadlines(&command, &applied);
        }
        for notification in &applied.notifications {
            self.notify(notification);
        }
        if let Some(pending) = pending {
            let id = pending.reply.id();
            if pending.term != entry.term {
                pending.reply.finish(timeout_error(id));
            } else if let Outcome::Queued { position } = applied.outcome {
                pending.reply.interim(Response::Queued { id, position });
                if let Command::Acquire { session, seq, .. } = command {
                    let replies = self.waiters.entry((session, seq)).or_default();
                    replies.retain(|reply| !reply.is_closed());
                    replies.push(pending.reply);
                }
            } else {
                pending.reply.finish(outcome_response(id, &applied.outcome));
            }
        }
        Ok(())
    }

    /// Answers every client waiting on the acquire a notification resolves.
    fn notify(&mut self, notification: &Notification) {
        let key = (notification.session, notification.seq);
        if let Some(replies) = self.waiters.remove(&key) {
            for reply in replies {
                let id = reply.id();
                reply.finish(outcome_response(id, &notification.outcome));
            }
        }
    }

    /// Leader only: keeps the deadline table in step with what was just applied.
    fn track_deadlines(&mut self, command: &Command, applied: &Applied) {
        let now = Instant::now();
        let after = |ms: u64| now + std::time::Duration::from_millis(ms);
        match (command, &applied.outcome) {
            (
                Command::OpenSession { .. },
                Outcome::SessionOpened {
                    session, ttl_ms, ..
                },
            ) => {
                self.leases.set(
                    Key {
                        session: *session,
                        what: What::Lease,
                    },
                    after(*ttl_ms),
                );
            }
            (
                Command::CloseSession { session, .. }
                | Command::ExpireSession { session }
                | Command::RevokeSession { session },
                _,
            ) => {
                self.leases.remove_session(*session);
                let keys: Vec<_> = self
                    .queued_holds
                    .range((*session, 0)..=(*session, Seq::MAX))
                    .map(|(key, _)| *key)
                    .collect();
                for key in keys {
                    self.queued_holds.remove(&key);
                }
            }
            (
                Command::Acquire {
                    session,
                    lock,
                    hold_ms: Some(hold_ms),
                    ..
                },
                Outcome::Granted { fence },
            ) => {
                let what = What::Hold {
                    lock: lock.clone(),
                    fence: *fence,
                };
                self.leases.set(
                    Key {
                        session: *session,
                        what,
                    },
                    after(*hold_ms),
                );
            }
            (
                Command::Extend {
                    session,
                    lock,
                    fence,
                    ..
                },
                Outcome::Extended { hold_ms },
            ) => {
                // The hold restarts now: no earlier than the Extend was sent.
                let what = What::Hold {
                    lock: lock.clone(),
                    fence: *fence,
                };
                self.leases.set(
                    Key {
                        session: *session,
                        what,
                    },
                    after(*hold_ms),
                );
            }
            (
                Command::Acquire {
                    session,
                    seq,
                    lock,
                    wait_ms,
                    hold_ms,
                    ..
                },
                Outcome::Queued { .. },
            ) => {
                if let Some(wait_ms) = wait_ms {
                    let what = What::Wait {
                        seq: *seq,
                        lock: lock.clone(),
                    };
                    self.leases.set(
                        Key {
                            session: *session,
                            what,
                        },
                        after(*wait_ms),
                    );
                }
                self.queued_holds
                    .insert((*session, *seq), (lock.clone(), *hold_ms));
            }
            _ => {}
        }
        for notification in &applied.notifications {
            let (session, seq) = (notification.session, notification.seq);
            let hold_ms = self.queued_holds.remove(&(session, seq));
            let Outcome::Granted { fence } = notification.outcome else {
                continue;
            };
            // The wait is over: start the grant's hold limit, if it has one.
            let hold = match hold_ms {
                Some((lock, Some(hold_ms))) => Some((lock, hold_ms)),
                Some((_, None)) => None,
                // Queued before this node led: its hold limit is only in the state machine.
                None => self
                    .lockspace
                    .limited_holds()
                    .into_iter()
                    .find(|hold| hold.session == session && hold.fence == fence)
                    .map(|hold| (hold.lock, hold.hold_ms)),
            };
            if let Some((lock, hold_ms)) = hold {
                self.leases.set(
                    Key {
                        session,
                        what: What::Hold { lock, fence },
                    },
                    after(hold_ms),
                );
            }
        }
    }

    // --- Leadership, snapshots ----------------------------------------------------------------

    fn is_leader(&self) -> bool {
        self.node.role() == Role::Leader
    }

    fn observe_role(&mut self) {
        let leader = self.is_leader();
        if leader && !self.was_leader {
            self.restart_deadlines();
        } else if !leader && self.was_leader {
            tracing::info!(leader = ?self.node.leader(), "lost leadership");
            self.leases.clear();
            self.queued_holds.clear();
            let pending = std::mem::take(&mut self.pending);
            let reads = std::mem::take(&mut self.reads).into_values();
            let waiters = std::mem::take(&mut self.waiters).into_values().flatten();
            let adding = std::mem::take(&mut self.adding)
                .into_values()
                .flat_map(|a| a.replies);
            let configs = std::mem::take(&mut self.config_waiters)
                .into_values()
                .flat_map(|(_, r)| r);
            let replies = pending
                .into_values()
                .map(|p| p.reply)
                .chain(reads.map(|(_, r)| r))
                .chain(waiters)
                .chain(adding)
                .chain(configs);
            for reply in replies.collect::<Vec<_>>() {
                let response = self.not_leader(reply.id());
                reply.finish(response);
            }
        }
        self.was_leader = leader;
        let info = self.leader_info();
        self.leader_tx.send_if_modified(|current| {
            if *current == info {
                false
            } else {
                *current = info;
                true
            }
        });
    }

    /// A new leader cannot know when the last keep-alive arrived: every deadline restarts.
    fn restart_deadlines(&mut self) {
        let now = Instant::now();
        let after = |ms: u64| now + std::time::Duration::from_millis(ms);
        self.leases.clear();
        for session in self.lockspace.sessions() {
            self.leases.set(
                Key {
                    session: session.id,
                    what: What::Lease,
                },
                after(session.ttl_ms),
            );
        }
        for wait in self.lockspace.bounded_waits() {
            if let Some(wait_ms) = wait.wait_ms {
                let what = What::Wait {
                    seq: wait.seq,
                    lock: wait.lock,
                };
                self.leases.set(
                    Key {
                        session: wait.session,
                        what,
                    },
                    after(wait_ms),
                );
            }
        }
        for hold in self.lockspace.limited_holds() {
            let what = What::Hold {
                lock: hold.lock,
                fence: hold.fence,
            };
            self.leases.set(
                Key {
                    session: hold.session,
                    what,
                },
                after(hold.hold_ms),
            );
        }
        let status = self.node.status();
        tracing::info!(
            term = status.term,
            commit = status.commit_index,
            deadlines = self.leases.len(),
            "became leader; restarted every lease deadline"
        );
    }

    fn maybe_snapshot(&mut self) {
        // Every applied entry was handed to the writer before it was applied, and the writer
        // keeps submission order, so the snapshot is saved after the entries it covers; but only
        // one snapshot of ours at a time (the core learns of it when it is saved).
        let snapshot_in_flight = self
            .in_flight
            .iter()
            .any(|in_flight| matches!(in_flight.after, AfterWrite::Snapshot(_)));
        if self.in_flight.len() >= MAX_IN_FLIGHT
            || snapshot_in_flight
            || self.applied_since_snapshot < self.config.snapshot_threshold
        {
            return;
        }
        let index = self.lockspace.applied_index();
        if index == 0
            || self
                .node
                .snapshot_meta()
                .is_some_and(|meta| meta.index >= index)
        {
            return;
        }
        // The term and the membership in force at `index`, as the core's log has them.
        let Some(meta) = self.node.snapshot_meta_at(index) else {
            return;
        };
        let snapshot = Snapshot {
            meta,
            data: self.lockspace.snapshot(),
        };
        tracing::info!(index, bytes = snapshot.data.len(), "taking a snapshot");
        self.applied_since_snapshot = 0;
        let done = self.writer.submit(Job::SaveSnapshot(snapshot.clone()));
        self.in_flight.push_back(InFlight {
            done: Some(done),
            after: AfterWrite::Snapshot(snapshot),
        });
    }

    // --- Answers ------------------------------------------------------------------------------

    fn leader_info(&self) -> LeaderInfo {
        let leader = self.node.leader();
        let addr =
            leader.and_then(|id| self.node.status().membership.address(id).map(String::from));
        LeaderInfo { leader, addr }
    }

    fn not_leader(&self, id: u64) -> Response {
        let info = self.leader_info();
        Response::Error {
            id,
            code: ErrorCode::NotLeader,
            message: match &info.addr {
                Some(addr) => format!("not the leader; the leader is at {addr}"),
                None => "not the leader; no leader is known yet".into(),
            },
            leader: info.leader,
            leader_addr: info.addr,
        }
    }

    fn answer_read(&self, request: &Request, id: u64) -> Response {
        match request {
            Request::Read {
                file, offset, len, ..
            } => {
                match self
                    .lockspace
                    .read(file, *offset, self.config.limits.read_len(*len))
                {
                    Some((data, size)) => Response::Data {
                        id,
                        data: data.to_vec(),
                        size,
                    },
                    None => Response::error(id, ErrorCode::NotFound, format!("no file {file:?}")),
                }
            }
            Request::Locks { prefix, .. } => Response::LockList {
                id,
                locks: self
                    .lockspace
                    .locks(prefix.as_deref())
                    .into_iter()
                    .map(|info| lock_state(&self.lockspace, info))
                    .collect(),
            },
            other => Response::error(
                id,
                ErrorCode::Internal,
                format!("{} is not a read", other.type_name()),
            ),
        }
    }

    /// Answers `Sessions` (leader only): every live session, with the time since the leader
    /// last restarted its lease deadline (`ttl - time left`).
    fn session_list(&self, id: u64) -> Response {
        let now = Instant::now();
        let sessions = self
            .lockspace
            .sessions()
            .into_iter()
            .map(|info| {
                let key = Key {
                    session: info.id,
                    what: What::Lease,
                };
                let ttl = std::time::Duration::from_millis(info.ttl_ms);
                let since_renewal_ms = self.leases.deadline(&key).map(|deadline| {
                    let left = deadline.saturating_duration_since(now);
                    u64::try_from(ttl.saturating_sub(left).as_millis()).unwrap_or(u64::MAX)
                });
                SessionSummary {
                    session: info.id,
                    owner: info.owner,
                    ttl_ms: info.ttl_ms,
                    since_renewal_ms,
                }
            })
            .collect();
        Response::SessionList { id, sessions }
    }

    fn status(&self, id: u64) -> Response {
        let status = self.node.status();
        let leader_addr = status
            .leader
            .and_then(|leader| status.membership.address(leader).map(String::from));
        let match_index: BTreeMap<NodeId, Index> = status.match_index.iter().copied().collect();
        let voters = status
            .membership
            .voters
            .iter()
            .map(|(id, addr)| (id, addr, true));
        let learners = status
            .membership
            .learners
            .iter()
            .map(|(id, addr)| (id, addr, false));
        let members = voters
            .chain(learners)
            .map(|(node_id, addr, voter)| MemberStatus {
                node_id: *node_id,
                addr: addr.clone(),
                voter,
                match_index: match_index.get(node_id).copied(),
            })
            .collect();
        Response::Status(Box::new(StatusInfo {
            id,
            node_id: status.id,
            role: role_name(status.role).into(),
            term: status.term,
            leader: status.leader,
            leader_addr,
            commit_index: status.commit_index,
            applied_index: self.lockspace.applied_index(),
            last_log_index: status.last_index,
            sessions: self.lockspace.sessions().len() as u64,
            locks: self.lockspace.locks(None).len() as u64,
            members,
        }))
    }
}

/// Turns the writer's answer into the driver's error: storage errors are fatal.
fn written(
    result: Result<Result<(), crate::storage::Error>, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), Error> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Error::Persist(error)),
        Err(_) => Err(Error::WriterStopped),
    }
}

/// The wire name of a role.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::PreCandidate | Role::Candidate => "candidate",
        Role::Learner => "learner",
    }
}

fn lock_state(space: &LockSpace, info: LockInfo) -> LockState {
    let owner = |session| space.owner(session).map(str::to_owned);
    LockState {
        name: info.name,
        mode: info.mode,
        holders: info
            .holders
            .into_iter()
            .map(|(session, fence)| HolderState {
                session,
                fence,
                owner: owner(session),
            })
            .collect(),
        waiters: info
            .waiters
            .into_iter()
            .map(|wait| WaiterState {
                session: wait.session,
                seq: wait.seq,
                mode: wait.mode,
                owner: owner(wait.session),
            })
            .collect(),
    }
}

fn session_expired(id: u64) -> Response {
    Response::error(
        id,
        ErrorCode::SessionExpired,
        "no such session, or a wrong token",
    )
}

fn timeout_error(id: u64) -> Response {
    Response::error(
        id,
        ErrorCode::Timeout,
        "leadership changed before the request committed; the outcome is unknown, retry with the same seq",
    )
}

/// The answer to a request whose command applied with `outcome`: the one place where state
/// machine outcomes become wire responses.
pub(crate) fn outcome_response(id: u64, outcome: &Outcome) -> Response {
    let error = |code, message: &str| Response::error(id, code, message);
    match *outcome {
        Outcome::SessionOpened {
            session,
            token,
            ttl_ms,
        } => Response::SessionOpened {
            id,
            session,
            token,
            ttl_ms,
        },
        Outcome::SessionClosed => Response::SessionClosed { id },
        Outcome::Granted { fence } => Response::Granted { id, fence },
        Outcome::Queued { position } => Response::Queued { id, position },
        Outcome::Busy => error(ErrorCode::Busy, "the lock is held"),
        Outcome::TimedOut => error(
            ErrorCode::WaitTimeout,
            "the wait bound passed before a grant",
        ),
        Outcome::Released => Response::Released { id },
        Outcome::Cancelled => Response::Cancelled { id },
        Outcome::NotWaiting => error(
            ErrorCode::NotWaiting,
            "the acquire does not wait in the queue (granted, ended or never applied)",
        ),
        Outcome::Extended { hold_ms } => Response::Extended { id, hold_ms },
        Outcome::NotHolder => error(ErrorCode::NotHolder, "the session does not hold the lock"),
        Outcome::Conflict => error(
            ErrorCode::Conflict,
            "the session holds or waits for the lock in another mode, or already waits for it",
        ),
        Outcome::Appended { offset, size } => Response::Appended { id, offset, size },
        Outcome::StaleFence => error(
            ErrorCode::StaleFence,
            "the fence is not the session's current exclusive grant of the lock",
        ),
        Outcome::SessionExpired => error(
            ErrorCode::SessionExpired,
            "the session expired or was closed",
        ),
        Outcome::SequenceTooOld => error(
            ErrorCode::SequenceTooOld,
            "the sequence number is older than the results the session remembers",
        ),
        Outcome::Ignored => error(ErrorCode::Internal, "the request had no effect"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_maps_to_its_documented_response() {
        let code = |outcome: Outcome| match outcome_response(7, &outcome) {
            Response::Error { id: 7, code, .. } => Some(code),
            Response::Error { .. } => panic!("wrong id"),
            _ => None,
        };
        assert_eq!(code(Outcome::Busy), Some(ErrorCode::Busy));
        assert_eq!(code(Outcome::TimedOut), Some(ErrorCode::WaitTimeout));
        assert_eq!(code(Outcome::NotHolder), Some(ErrorCode::NotHolder));
        assert_eq!(code(Outcome::Conflict), Some(ErrorCode::Conflict));
        assert_eq!(code(Outcome::NotWaiting), Some(ErrorCode::NotWaiting));
        assert_eq!(
            outcome_response(7, &Outcome::Cancelled),
            Response::Cancelled { id: 7 }
        );
        assert_eq!(
            outcome_response(7, &Outcome::Extended { hold_ms: 500 }),
            Response::Extended {
                id: 7,
                hold_ms: 500
            }
        );
        assert_eq!(code(Outcome::StaleFence), Some(ErrorCode::StaleFence));
        assert_eq!(
            code(Outcome::SessionExpired),
            Some(ErrorCode::SessionExpired)
        );
        assert_eq!(
            code(Outcome::SequenceTooOld),
            Some(ErrorCode::SequenceTooOld)
        );
        assert_eq!(
            outcome_response(7, &Outcome::Granted { fence: 12 }),
            Response::Granted { id: 7, fence: 12 }
        );
        assert_eq!(
            outcome_response(
                7,
                &Outcome::SessionOpened {
                    session: 3,
                    token: 9,
                    ttl_ms: 1000
                }
            ),
            Response::SessionOpened {
                id: 7,
                session: 3,
                token: 9,
                ttl_ms: 1000
            }
        );
        assert_eq!(
            outcome_response(
                7,
                &Outcome::Appended {
                    offset: 4,
                    size: 10
                }
            ),
            Response::Appended {
                id: 7,
                offset: 4,
                size: 10
            }
        );
        assert_eq!(
            outcome_response(7, &Outcome::Released),
            Response::Released { id: 7 }
        );
        assert_eq!(
            outcome_response(7, &Outcome::SessionClosed),
            Response::SessionClosed { id: 7 }
        );
    }
}
