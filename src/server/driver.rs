//! The driver: the tokio shell around the [`Replica`], which makes every decision.
//!
//! The driver owns what does I/O: the inbox of [`Event`]s (one total order: ticks, client
//! requests, peer messages, shutdown), the storage [`Writer`] thread, the peer [`Transport`] and
//! the connections' [`Reply`] handles. One turn of its loop:
//!
//! 1. take one event and drain what is already queued (bounded), feeding each to the replica
//!    (a client request under a fresh ticket, remembered with its `Reply`);
//! 2. [`Replica::advance`], then carry out its effects in order: send messages on the
//!    transport, hand writes to the writer (up to the replica's pipeline depth may be in
//!    flight; the writer group-commits them), answer tickets through their `Reply`s, update the
//!    transport's peers and the published leader;
//! 3. when the writer reports a write durable (and any later ones already synced), tell the
//!    replica, which then releases what waited for them;
//! 4. when a snapshot the replica asked for (`Effect::BuildSnapshot`: its state captured in
//!    O(metadata)) has been serialized on a blocking thread, hand it back
//!    (`Input::SnapshotBuilt`). Serializing and writing it are O(state), seconds per GiB of
//!    files, and neither the driver nor the storage writer may wait for them: the blocking task
//!    also writes and syncs the file (`storage::prepare_snapshot`), and the writer's save only
//!    renames it into place.
//!
//! Nothing here decides anything about Raft, locks or clients: that all lives in the replica,
//! which the simulation runs too. What stays here is the mapping from tickets to connections,
//! the clock (milliseconds since the driver started), the order in which writes complete, and
//! which connections each session's push events go to (`push.rs`).
//!
//! It also publishes the node's metrics and readiness (`metrics/`): counters as it carries out
//! effects, the node's gauges once per tick, never anything a scrape could make it wait for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::ServerConfig;
use super::inbox::{Event, LeaderInfo, Reply};
use super::metrics::{self, ApplyCounter, Metrics, Readiness};
use super::notify::Watchdog;
use super::peer::Transport;
use super::push::{request_session, Subscribers};
use super::writer::{self, Done, Writer};
use super::Error;
use crate::lockspace::{LockSpace, SessionId};
use crate::raft::{Node, NodeId, Role, Term};
use crate::replica::{self, Effect, Input, Replica, Ticket, WriteId, MAX_IN_FLIGHT};

/// Most events handled in one turn before the replica's output is processed.
const MAX_BATCH: usize = 1024;
/// Milliseconds between two refreshes of the lock-space sizes (they cost a walk of the locks).
const STATS_EVERY_MS: u64 = 1000;
// The writer's queue must hold every write in flight plus the final sync, so a submit never
// blocks.
const _: () = assert!(MAX_IN_FLIGHT < writer::CAPACITY);

/// What woke the driver.
enum Wake {
    Written(Result<Result<(), crate::storage::Error>, tokio::sync::oneshot::error::RecvError>),
    Event(Option<Event>),
    /// The snapshot of the replica's last `Effect::BuildSnapshot` is built.
    Built(Result<Result<crate::raft::Snapshot, crate::storage::Error>, tokio::task::JoinError>),
}

/// The driver task's state.
pub(crate) struct Driver {
    replica: Replica,
    writer: Writer,
    inbox: mpsc::Receiver<Event>,
    leader_tx: watch::Sender<LeaderInfo>,
    transport: Transport<Event>,
    /// Writes handed to the writer, in submission order, with their answers.
    writes: VecDeque<(WriteId, Done)>,
    /// The snapshot being serialized on a blocking thread (at most one, `Effect::BuildSnapshot`).
    building: Option<tokio::task::JoinHandle<Result<crate::raft::Snapshot, crate::storage::Error>>>,
    /// Where each ticket's answer goes, and the session its request speaks for.
    replies: HashMap<Ticket, (Reply, Option<SessionId>)>,
    /// The connections each session's push events go to.
    subscribers: Subscribers,
    next_ticket: Ticket,
    /// The origin of the replica's clock.
    epoch: Instant,
    /// systemd's watchdog, pinged every turn: a driver that stops turning gets restarted.
    watchdog: Watchdog,
    /// Every metric and the health state; the driver's share is published per tick.
    metrics: Arc<Metrics>,
    /// The replica's apply observer (grants, expiries, apply time).
    apply: ApplyCounter,
    /// The leader's commit index as heard, for `/readyz`.
    readiness: Readiness,
    /// A tick arrived since the gauges were last published.
    ticked: bool,
    /// When the lock-space sizes were last published.
    stats_at: Option<u64>,
    /// The (term, leader) last counted as a leader change.
    counted_leader: Option<(Term, NodeId)>,
    /// The peers with a published replication lag.
    lag_peers: Vec<NodeId>,
    /// This node's id.
    id: NodeId,
    /// The durable snapshot file, streamed to `SnapshotSave` callers.
    snapshot_path: std::path::PathBuf,
    /// The data directory, where snapshot builds write their prepared file.
    data_dir: std::path::PathBuf,
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
        metrics: Arc<Metrics>,
    ) -> Driver {
        let replica_config = replica::Config {
            id: config.id,
            peers: config.peers.clone(),
            tick_ms: config.tick.as_millis() as u64,
            election_ticks_max: config.election_ticks_max,
            snapshot_threshold: config.snapshot_threshold,
            snapshot_threshold_bytes: config.snapshot_threshold_bytes,
            shutdown_timeout_ms: config.shutdown_timeout.as_millis() as u64,
            add_timeout_ms: replica::ADD_TIMEOUT_MS,
            limits: config.limits.clone(),
            seed: rand::random(),
        };
        // A crashed peer's reset connections and refused redials reach the Raft core as a hint.
        transport.report_down(Event::PeerDown);
        Driver {
            replica: Replica::new(replica_config, node, lockspace, last_applied_term),
            writer,
            inbox,
            leader_tx,
            transport,
            writes: VecDeque::with_capacity(MAX_IN_FLIGHT),
            replies: HashMap::new(),
            subscribers: Subscribers::default(),
            next_ticket: 1,
            epoch: Instant::now(),
            watchdog: Watchdog::from_env(),
            apply: metrics.apply.clone(),
            metrics,
            readiness: Readiness::default(),
            ticked: false,
            stats_at: None,
            counted_leader: None,
            lag_peers: Vec::new(),
            building: None,
            id: config.id,
            snapshot_path: config.data_dir.join(crate::storage::SNAPSHOT_FILE),
            data_dir: config.data_dir.clone(),
        }
    }

    /// Runs until shutdown completes (`Ok`) or persisting or applying fails (`Err`: the caller
    /// must stop the process; recovery replays the log).
    pub(crate) async fn run(mut self) -> Result<(), Error> {
        self.turn()?;
        loop {
            self.watchdog.ping();
            self.metrics.health.beat();
            let wake = {
                let inbox = &mut self.inbox;
                let writes = &mut self.writes;
                let building = &mut self.building;
                tokio::select! {
                    biased;
                    written = async {
                        match writes.front_mut() {
                            Some((_, done)) => done.await,
                            None => std::future::pending().await,
                        }
                    } => Wake::Written(written),
                    built = async {
                        match building.as_mut() {
                            Some(build) => build.await,
                            None => std::future::pending().await,
                        }
                    } => Wake::Built(built),
                    event = inbox.recv() => Wake::Event(event),
                }
            };
            match wake {
                Wake::Written(result) => {
                    let (mut durable, _) = self.writes.pop_front().expect("a write was in flight");
                    written(result)?;
                    // One fsync answers a whole group: take every write already answered.
                    while let Some((id, done)) = self.writes.front_mut() {
                        match done.try_recv() {
                            Ok(result) => written(Ok(result))?,
                            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => break,
                            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                                return Err(Error::WriterStopped)
                            }
                        }
                        durable = *id;
                        self.writes.pop_front();
                    }
                    let now = self.now();
                    self.replica.durable(now, durable);
                }
                Wake::Built(built) => {
                    self.building = None;
                    let snapshot = built
                        .map_err(Error::SnapshotBuild)?
                        .map_err(Error::Persist)?;
                    let now = self.now();
                    self.replica.handle(now, Input::SnapshotBuilt(snapshot));
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
            self.turn()?;
            if self.replica.stopped() {
                return self.final_sync().await;
            }
        }
    }

    /// Milliseconds since the driver started: the replica's clock.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        let input = match event {
            Event::Tick => {
                self.ticked = true;
                Input::Tick
            }
            Event::Peer(envelope) => {
                self.readiness.heard(&envelope);
                Input::Peer(envelope)
            }
            Event::Shutdown => Input::Shutdown,
            Event::PeerDown(peer) => {
                tracing::info!(peer, "peer reported down");
                Input::PeerDown(peer)
            }
            Event::Client {
                request,
                reply,
                principal,
            } => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                let session = request_session(&request);
                self.replies.insert(ticket, (reply, session));
                Input::Request {
                    ticket,
                    request,
                    principal,
                }
            }
        };
        self.replica.handle(now, input);
    }

    /// Lets the replica process what happened, then carries out its effects.
    fn turn(&mut self) -> Result<(), Error> {
        let now = self.now();
        self.replica
            .advance_observed(now, &mut self.apply)
            .map_err(Error::Replica)?;
        for effect in self.replica.take_effects() {
            match effect {
                Effect::Send(message) => self.transport.send(message),
                Effect::Persist { id, write } => {
                    if let replica::Write::Persist { append, .. } = &write {
                        if !append.is_empty() {
                            let driver = &self.metrics.driver;
                            driver.append_batch.observe(append.len() as f64);
                            if self.replica.node().role() == Role::Leader {
                                driver.proposals.inc_by(append.len() as u64);
                            }
                        }
                    }
                    let done = self.writer.submit(write);
                    self.writes.push_back((id, done));
                }
                Effect::Answer {
                    ticket,
                    response,
                    last: true,
                } => {
                    self.metrics.driver.answered(&response);
                    if let Some((reply, session)) = self.replies.remove(&ticket) {
                        self.subscribers.answered(session, &reply.conn, &response);
                        reply.finish(response);
                    }
                }
                Effect::Answer {
                    ticket,
                    response,
                    last: false,
                } => {
                    if let Some((reply, session)) = self.replies.get(&ticket) {
                        self.subscribers.answered(*session, &reply.conn, &response);
                        reply.interim(response);
                    }
                }
                Effect::Peers(peers) => {
                    tracing::info!(?peers, "peer set");
                    self.transport.set_peers(peers);
                }
                Effect::Push { session, event } => self.subscribers.push(session, event),
                Effect::BuildSnapshot(build) => {
                    // O(state): off the driver and off the storage writer, so heartbeats,
                    // appends and answers go on meanwhile. The file is written and synced
                    // here; the writer's SaveSnapshot only renames it into place.
                    let dir = self.data_dir.clone();
                    self.building = Some(tokio::task::spawn_blocking(move || {
                        let snapshot = build.build();
                        crate::storage::prepare_snapshot(&dir, &snapshot)?;
                        Ok(snapshot)
                    }));
                }
                Effect::StreamSnapshot { ticket, id } => {
                    if let Some((reply, _)) = self.replies.remove(&ticket) {
                        let path = self.snapshot_path.clone();
                        tokio::task::spawn_blocking(move || super::backup::stream(path, id, reply));
                    }
                }
                Effect::Leader(info) => {
                    if let Some(leader) = info.leader {
                        let seen = Some((self.replica.node().term(), leader));
                        if self.counted_leader != seen {
                            self.counted_leader = seen;
                            self.metrics.driver.leader_changes.inc();
                        }
                    }
                    self.leader_tx.send_if_modified(|current| {
                        if *current == info {
                            false
                        } else {
                            *current = info;
                            true
                        }
                    });
                }
            }
        }
        if std::mem::take(&mut self.ticked) {
            self.publish(now);
        }
        Ok(())
    }

    /// Publishes the node's gauges and readiness (once per tick: cheap reads of the replica).
    fn publish(&mut self, now: u64) {
        let node = self.replica.node();
        let gauges = &self.metrics.node;
        let role = node.role();
        metrics::set(&gauges.term, node.term());
        for each in metrics::ROLES {
            let label = vec![("role", metrics::role_name(each).to_string())];
            gauges
                .role
                .get_or_create(&label)
                .set(i64::from(each == role));
        }
        metrics::set(&gauges.leader_id, node.leader().unwrap_or(0));
        metrics::set(&gauges.commit_index, node.commit_index());
        let applied = self.replica.lockspace().applied_index();
        metrics::set(&gauges.applied_index, applied);
        let last = node.last_index();
        metrics::set(&gauges.last_log_index, last);
        let own_id = self.id;
        let lags: Vec<(NodeId, u64)> = if role == Role::Leader {
            node.status()
                .match_index
                .into_iter()
                .filter(|(id, _)| *id != own_id)
                .map(|(id, matched)| (id, last.saturating_sub(matched)))
                .collect()
        } else {
            Vec::new()
        };
        let peers: Vec<NodeId> = lags.iter().map(|(id, _)| *id).collect();
        if peers != self.lag_peers {
            gauges.peer_lag.clear();
            self.lag_peers = peers;
        }
        for (id, lag) in lags {
            metrics::set(
                &gauges
                    .peer_lag
                    .get_or_create(&vec![("peer", id.to_string())]),
                lag,
            );
        }
        let stats_due = match self.stats_at {
            Some(at) => now.saturating_sub(at) >= STATS_EVERY_MS,
            None => true,
        };
        if stats_due {
            self.stats_at = Some(now);
            let stats = self.replica.lockspace().stats();
            metrics::set(&gauges.sessions, stats.sessions);
            metrics::set(&gauges.locks, stats.locks);
            metrics::set(&gauges.waiters, stats.waiters);
        }
        let view = metrics::View {
            leader: node.leader(),
            is_leader: role == Role::Leader,
            member: node.membership().contains(own_id),
            commit: node.commit_index(),
            applied,
        };
        let (state, applied, target) = self.readiness.evaluate(view);
        self.metrics.health.set_ready(state, applied, target);
        gauges
            .ready
            .set(i64::from(state == metrics::ReadyState::Ready));
    }

    /// Waits for every write in flight, then persists the replica's final write.
    async fn final_sync(&mut self) -> Result<(), Error> {
        while let Some((_, done)) = self.writes.pop_front() {
            written(done.await)?;
        }
        match self.writer.submit(self.replica.final_write()).await {
            Ok(Ok(())) => {
                tracing::info!(
                    applied = self.replica.lockspace().applied_index(),
                    "final sync done"
                );
                Ok(())
            }
            Ok(Err(error)) => Err(Error::Persist(error)),
            Err(_) => Err(Error::WriterStopped),
        }
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
