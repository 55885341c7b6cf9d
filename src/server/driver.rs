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
//!    replica, which then releases what waited for them.
//!
//! Nothing here decides anything about Raft, locks or clients: that all lives in the replica,
//! which the simulation runs too. What stays here is the mapping from tickets to connections,
//! the clock (milliseconds since the driver started), the order in which writes complete, and
//! which connections each session's push events go to (`push.rs`).

use std::collections::{HashMap, VecDeque};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::ServerConfig;
use super::inbox::{Event, LeaderInfo, Reply};
use super::notify::Watchdog;
use super::peer::Transport;
use super::push::{request_session, Subscribers};
use super::writer::{self, Done, Writer};
use super::Error;
use crate::lockspace::{LockSpace, SessionId};
use crate::raft::{Node, Term};
use crate::replica::{self, Effect, Input, Replica, Ticket, WriteId, MAX_IN_FLIGHT};

/// Most events handled in one turn before the replica's output is processed.
const MAX_BATCH: usize = 1024;
// The writer's queue must hold every write in flight plus the final sync, so a submit never
// blocks.
const _: () = assert!(MAX_IN_FLIGHT < writer::CAPACITY);

/// What woke the driver.
enum Wake {
    Written(Result<Result<(), crate::storage::Error>, tokio::sync::oneshot::error::RecvError>),
    Event(Option<Event>),
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
    /// Where each ticket's answer goes, and the session its request speaks for.
    replies: HashMap<Ticket, (Reply, Option<SessionId>)>,
    /// The connections each session's push events go to.
    subscribers: Subscribers,
    next_ticket: Ticket,
    /// The origin of the replica's clock.
    epoch: Instant,
    /// systemd's watchdog, pinged every turn: a driver that stops turning gets restarted.
    watchdog: Watchdog,
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
        let replica_config = replica::Config {
            id: config.id,
            peers: config.peers.clone(),
            tick_ms: config.tick.as_millis() as u64,
            election_ticks_max: config.election_ticks_max,
            snapshot_threshold: config.snapshot_threshold,
            shutdown_timeout_ms: config.shutdown_timeout.as_millis() as u64,
            add_timeout_ms: replica::ADD_TIMEOUT_MS,
            limits: config.limits.clone(),
            seed: rand::random(),
        };
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
        }
    }

    /// Runs until shutdown completes (`Ok`) or persisting or applying fails (`Err`: the caller
    /// must stop the process; recovery replays the log).
    pub(crate) async fn run(mut self) -> Result<(), Error> {
        self.turn()?;
        loop {
            self.watchdog.ping();
            let wake = {
                let inbox = &mut self.inbox;
                let writes = &mut self.writes;
                tokio::select! {
                    biased;
                    written = async {
                        match writes.front_mut() {
                            Some((_, done)) => done.await,
                            None => std::future::pending().await,
                        }
                    } => Wake::Written(written),
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
            Event::Tick => Input::Tick,
            Event::Peer(envelope) => Input::Peer(envelope),
            Event::Shutdown => Input::Shutdown,
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
        self.replica.advance(now).map_err(Error::Replica)?;
        for effect in self.replica.take_effects() {
            match effect {
                Effect::Send(message) => self.transport.send(message),
                Effect::Persist { id, write } => {
                    let done = self.writer.submit(write);
                    self.writes.push_back((id, done));
                }
                Effect::Answer {
                    ticket,
                    response,
                    last: true,
                } => {
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
                Effect::Leader(info) => {
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
        Ok(())
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
