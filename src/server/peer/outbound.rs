//! The outbound direction: [`Transport`], two queues (`lanes.rs`) and one task per peer.
//!
//! [`Transport::send`] only queues. Each peer's task (`run_outbound`) sleeps until its queues
//! have something, dials (`dial`: TCP connect, then the dialer's half of the handshake), and
//! then `pump`s: it writes every queued envelope, up to `max_batch` (and a byte budget of
//! appends), before one flush, so a burst of appends costs one syscall rather than one each,
//! and heartbeats and votes go ahead of queued appends. When the connection fails, the
//! envelopes in hand are dropped and counted and the task backs off before it dials again.
//!
//! # Crash detection
//!
//! When an established connection ends (EOF or reset), the task redials at once, without
//! waiting for something to send: a *probe*. A crashed process's kernel resets its sockets and
//! its port refuses connections, so a probe refused by the peer (`ECONNREFUSED`) is strong
//! evidence that the peer's process is gone, and the task reports the peer as down (see
//! [`Transport::report_down`]); the driver hands that to the Raft core as
//! `Node::peer_down`, which acts on it only if the peer is this node's leader. A probe that
//! connects is no evidence (the link is simply back), and one that fails otherwise (a reset
//! during the handshake, while a dying process's listener closes) is retried once. A paused or
//! partitioned peer resets nothing, so it is never reported: those cases wait for the
//! election timeout, as they must.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::handshake::dial_handshake;
use super::lanes::{self, Batch, Queues, Senders};
use super::snapshot_out::{snapshot_lane, SnapshotLane};
use super::{
    bump, or_cancel, read, ConfigError, InboundStats, PeerAcceptor, PeerError, TransportConfig,
};
use crate::protocol::{self, ErrorCode, PeerCodec, PeerMessage};
use crate::raft::{Envelope, NodeId};
use crate::tls::Stream;

/// Counters of one outbound peer, for status and debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The address dialed.
    pub addr: String,
    /// True while a handshaken connection is up.
    pub connected: bool,
    /// Messages written and flushed to the socket.
    pub sent: u64,
    /// Messages dropped by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because the connection failed (or could not be made) while they were
    /// in hand.
    pub dropped_connection: u64,
    /// Messages dropped because they exceed the frame limit (none should: snapshots travel
    /// in chunks and appends in bounded batches).
    pub dropped_too_large: u64,
    /// Successful handshakes (the first connection and every reconnection).
    pub connections: u64,
    /// Failed connects and handshakes.
    pub connect_failures: u64,
    /// Times a connection ended and the immediate redial was refused: the peer's process was
    /// reported down.
    pub down_reports: u64,
}

/// Everything the transport counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Per configured peer.
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Messages addressed to a node that is not a configured peer (dropped).
    pub dropped_unknown_peer: u64,
    /// The inbound side.
    pub inbound: InboundStats,
}

#[derive(Default)]
struct PeerCounters {
    connected: AtomicBool,
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_connection: AtomicU64,
    dropped_too_large: AtomicU64,
    connections: AtomicU64,
    connect_failures: AtomicU64,
    down_reports: AtomicU64,
}

/// How a peer found gone becomes the driver's inbox event.
type DownEvent<E> = fn(NodeId) -> E;

/// Where the outbound tasks report a peer whose process is gone: the driver's inbox, and the
/// event to put there (set by [`Transport::report_down`]; unset, nothing is reported).
struct DownReport<E> {
    deliver: mpsc::Sender<E>,
    event: Arc<OnceLock<DownEvent<E>>>,
}

impl<E> Clone for DownReport<E> {
    fn clone(&self) -> Self {
        DownReport {
            deliver: self.deliver.clone(),
            event: self.event.clone(),
        }
    }
}

impl<E> DownReport<E> {
    /// Puts `peer`'s report in the inbox, unless reports are off. Never waits: with the inbox
    /// full the report is dropped (the election timeout still covers the crash).
    fn report(&self, peer: NodeId) -> bool {
        let Some(event) = self.event.get() else {
            return false;
        };
        self.deliver.try_send(event(peer)).is_ok()
    }
}

/// The handle of one peer's outbound task.
struct Outbound {
    addr: String,
    queue: Senders,
    snapshots: SnapshotLane,
    cancel: CancellationToken,
    counters: Arc<PeerCounters>,
}

/// The peer transport of one node: outbound tasks per peer and the inbound acceptor. Owned by
/// the driver (sends and membership changes come from it); dropping it stops the outbound
/// tasks. `E` is the driver's inbox event, built from each received envelope.
pub struct Transport<E> {
    config: Arc<TransportConfig>,
    peers: BTreeMap<NodeId, Outbound>,
    acceptor: PeerAcceptor<E>,
    down: DownReport<E>,
    dropped_unknown_peer: AtomicU64,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl<E: From<Envelope> + Send + 'static> Transport<E> {
    /// Starts a transport (must be called inside a tokio runtime): one outbound task per entry
    /// of `peers` (node id → `host:port`; this node's own id is ignored) and an acceptor that
    /// delivers received envelopes, converted to `E`, into `deliver`.
    pub fn new(
        config: TransportConfig,
        peers: BTreeMap<NodeId, String>,
        deliver: mpsc::Sender<E>,
    ) -> Result<Transport<E>, ConfigError> {
        config.validate()?;
        let config = Arc::new(config);
        let down = DownReport {
            deliver: deliver.clone(),
            event: Arc::new(OnceLock::new()),
        };
        let acceptor = PeerAcceptor::new(config.clone(), deliver);
        let mut transport = Transport {
            config,
            peers: BTreeMap::new(),
            acceptor,
            down,
            dropped_unknown_peer: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        transport.set_peers(peers);
        Ok(transport)
    }
}

impl<E: Send + 'static> Transport<E> {
    /// From now on, a peer found gone (its connection ended and the immediate redial was
    /// refused: see the module documentation) is reported to the inbox as `event(peer)`, at
    /// most once per lost connection. Only the first call counts.
    pub fn report_down(&self, event: DownEvent<E>) {
        let _ = self.down.event.set(event);
    }

    /// Queues an envelope for `envelope.to`. Never blocks: if that peer's queue is full, or the
    /// peer is unknown, the envelope is dropped and counted (Raft retries).
    pub fn send(&self, envelope: Envelope) {
        let Some(peer) = self.peers.get(&envelope.to) else {
            bump(&self.dropped_unknown_peer, 1);
            tracing::debug!(to = envelope.to, "dropping a message to an unknown peer");
            return;
        };
        // Snapshots go to the peer's snapshot task (`snapshot_out.rs`), not to the queue.
        let Some(envelope) = peer.snapshots.route(envelope) else {
            return;
        };
        // A closed queue (the task is gone only after cancellation) counts like a full one.
        let to = envelope.to;
        if !peer.queue.try_send(envelope) {
            bump(&peer.counters.dropped_queue_full, 1);
            tracing::trace!(to, "peer queue full, dropping a message");
        }
    }

    /// Replaces the set of peers (membership change): tasks of removed peers stop (their
    /// queued messages are dropped), a peer whose address changed is redialed at the new one,
    /// new peers get a task. This node's own id is ignored. A node left with no peer refuses
    /// every dialer (it is standalone); one with peers admits those that pass the handshake.
    pub fn set_peers(&mut self, mut peers: BTreeMap<NodeId, String>) {
        peers.remove(&self.config.node_id);
        peers.remove(&0);
        self.acceptor.set_clustered(!peers.is_empty());
        if !peers.is_empty() && !self.config.admits_peers() {
            tracing::error!(
                ?peers,
                "this node has peers but no cluster key: it refuses them all; restart every \
                 node with the same --cluster-key-file (or --insecure-peers)"
            );
        }
        self.peers.retain(|id, outbound| {
            let keep = peers.get(id) == Some(&outbound.addr);
            if !keep {
                outbound.cancel.cancel();
            }
            keep
        });
        for (id, addr) in peers {
            if self.peers.contains_key(&id) {
                continue;
            }
            let (queue, receiver) = lanes::queues(self.config.queue_capacity);
            let cancel = self.cancel.child_token();
            let counters = Arc::new(PeerCounters::default());
            let span =
                tracing::info_span!("peer_out", node = self.config.node_id, peer = id, %addr);
            self.tasks.spawn(
                run_outbound(
                    self.config.clone(),
                    id,
                    addr.clone(),
                    receiver,
                    cancel.clone(),
                    counters.clone(),
                    self.down.clone(),
                )
                .instrument(span),
            );
            let (snapshots, task) =
                snapshot_lane(self.config.clone(), id, addr.clone(), cancel.clone());
            let span =
                tracing::info_span!("snapshot_out", node = self.config.node_id, peer = id, %addr);
            self.tasks.spawn(task.instrument(span));
            self.peers.insert(
                id,
                Outbound {
                    addr,
                    queue,
                    snapshots,
                    cancel,
                    counters,
                },
            );
        }
    }

    /// The configured peers and their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers
            .iter()
            .map(|(id, outbound)| (*id, outbound.addr.clone()))
            .collect()
    }

    /// The inbound entry point, to hand to the connection code.
    pub fn acceptor(&self) -> PeerAcceptor<E> {
        self.acceptor.clone()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> TransportStats {
        let peers = self
            .peers
            .iter()
            .map(|(id, outbound)| {
                let c = &outbound.counters;
                let stats = PeerStats {
                    addr: outbound.addr.clone(),
                    connected: c.connected.load(Ordering::Relaxed),
                    sent: read(&c.sent),
                    dropped_queue_full: read(&c.dropped_queue_full),
                    dropped_connection: read(&c.dropped_connection),
                    dropped_too_large: read(&c.dropped_too_large),
                    connections: read(&c.connections),
                    connect_failures: read(&c.connect_failures),
                    down_reports: read(&c.down_reports),
                };
                (*id, stats)
            })
            .collect();
        TransportStats {
            peers,
            dropped_unknown_peer: read(&self.dropped_unknown_peer),
            inbound: self.acceptor.stats(),
        }
    }

    /// Stops every outbound task and waits for them to end (each ends at its next await).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl<E> Drop for Transport<E> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Half the delay plus a uniform random part of the other half ("equal jitter"), so peers that
/// lost a node together do not redial it in lockstep.
pub(super) fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

/// Immediate redials after a lost connection before the task waits for traffic again: the
/// second covers a dying process whose listener is still closing when the first arrives.
const PROBES: u32 = 2;

/// True if the dial failed because the peer's port refused the connection (nothing listens:
/// the process is gone).
fn refused_connect(error: &PeerError) -> bool {
    matches!(error, PeerError::Connect { source, .. }
        if source.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// One peer's outbound task: wait for a message, connect, pump batches; on failure drop the
/// batch in hand and back off. After a lost connection it probes at once (see the module
/// documentation) and reports the peer down if the probe is refused.
async fn run_outbound<E>(
    config: Arc<TransportConfig>,
    peer: NodeId,
    addr: String,
    mut queue: Queues,
    cancel: CancellationToken,
    counters: Arc<PeerCounters>,
    down: DownReport<E>,
) {
    let mut backoff = config.backoff_min;
    let mut batch = Batch::default();
    let mut failures_in_row = 0u64;
    // Immediate redials left since the last connection was lost.
    let mut probes = 0u32;
    // When the last series of probes started.
    let mut last_probe: Option<Instant> = None;
    loop {
        if batch.is_empty() && probes == 0 {
            // Idle until there is something to send: connections are made on demand.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                next = queue.recv() => match next {
                    Some(envelope) => batch.push(envelope),
                    None => return,
                },
            }
        }
        let probing = probes > 0;
        probes = probes.saturating_sub(1);
        match or_cancel(&cancel, dial(&config, peer, &addr)).await {
            Err(PeerError::Cancelled) => return,
            Err(error) => {
                bump(&counters.connect_failures, 1);
                bump(&counters.dropped_connection, batch.len() as u64);
                batch.clear();
                failures_in_row += 1;
                if probing && refused_connect(&error) {
                    probes = 0;
                    bump(&counters.down_reports, 1);
                    let reported = down.report(peer);
                    tracing::info!(
                        reported,
                        "peer connection lost and redial refused: peer down"
                    );
                }
                let refused = matches!(
                    error,
                    PeerError::Refused { .. }
                        | PeerError::RefusedByPeer { .. }
                        | PeerError::Tls { .. }
                );
                // A refusal is a misconfiguration worth a warning, once per run of failures;
                // an unreachable peer is routine (it may be restarting).
                if refused && failures_in_row == 1 {
                    tracing::warn!(error = %crate::error_chain(&error), "peer handshake refused");
                } else {
                    tracing::debug!(%error, failures_in_row, "cannot reach peer");
                }
                if probes > 0 {
                    // The listener of a dying process may still be closing: probe again soon.
                    let delay = jittered(config.backoff_min);
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
            Ok(framed) => {
                bump(&counters.connections, 1);
                failures_in_row = 0;
                counters.connected.store(true, Ordering::Relaxed);
                tracing::debug!("peer connected");
                let started = Instant::now();
                let result =
                    pump(framed, &config, &mut queue, &mut batch, &cancel, &counters).await;
                counters.connected.store(false, Ordering::Relaxed);
                // A connection that lived a while resets the backoff; one that dies at once
                // (e.g. the peer accepts and drops us) keeps backing off.
                if started.elapsed() >= config.backoff_max {
                    backoff = config.backoff_min;
                }
                match result {
                    // Cancelled, or the transport dropped its sender.
                    Err(PeerError::Cancelled) | Ok(()) => return,
                    Err(error) => {
                        tracing::debug!(%error, "peer connection lost");
                        // Redial now, to learn whether the peer's process is still there; at
                        // most once per `backoff_max`, so a peer that keeps dropping the
                        // connection is redialed with the usual backoff.
                        let due = match last_probe {
                            Some(at) => at.elapsed() >= config.backoff_max,
                            None => true,
                        };
                        if due {
                            last_probe = Some(Instant::now());
                            probes = PROBES;
                            continue;
                        }
                    }
                }
            }
        }
        if !back_off(&mut backoff, config.backoff_max, &cancel).await {
            return;
        }
    }
}

/// Sleeps a jittered `backoff`, then doubles it (up to `max`); false if cancelled meanwhile.
pub(super) async fn back_off(
    backoff: &mut Duration,
    max: Duration,
    cancel: &CancellationToken,
) -> bool {
    let delay = jittered(*backoff);
    *backoff = (*backoff * 2).min(max);
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Writes batches until the connection fails (`Err`), the transport is dropped (`Ok`) or
/// cancelled. `batch` may hold messages on entry; on an error the messages in hand are counted
/// as dropped and `batch` is left empty.
async fn pump(
    framed: Framed<Stream, PeerCodec>,
    config: &TransportConfig,
    queue: &mut Queues,
    batch: &mut Batch,
    cancel: &CancellationToken,
    counters: &PeerCounters,
) -> Result<(), PeerError> {
    let (mut sink, mut incoming) = framed.split();
    loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                // The acceptor sends nothing after `PeerAccepted` but an error before closing.
                frame = incoming.next() => return Err(match frame {
                    None => PeerError::Closed,
                    Some(Err(error)) => PeerError::Codec(error),
                    Some(Ok(Ok(PeerMessage::Error { code, message }))) => {
                        PeerError::RefusedByPeer { code, message }
                    }
                    Some(Ok(other)) => PeerError::Refused {
                        code: ErrorCode::BadRequest,
                        reason: format!("unexpected frame from the acceptor: {other:?}"),
                    },
                }),
                next = queue.recv() => match next {
                    Some(envelope) => batch.push(envelope),
                    None => return Ok(()),
                },
            }
        }
        queue.fill(batch, config.max_batch);
        let total = batch.len() as u64;
        let too_large_before = read(&counters.dropped_too_large);
        let write = async {
            let mut written = 0u64;
            for envelope in batch.drain() {
                match sink
                    .feed(PeerMessage::Raft {
                        envelope: envelope.into(),
                    })
                    .await
                {
                    Ok(()) => written += 1,
                    Err(protocol::Error::FrameTooLarge { len, max }) => {
                        bump(&counters.dropped_too_large, 1);
                        tracing::warn!(len, max, "dropping a Raft message larger than a frame");
                    }
                    Err(error) => return Err(PeerError::Codec(error)),
                }
            }
            sink.flush().await?;
            Ok(written)
        };
        let written = or_cancel(cancel, async {
            timeout(config.write_timeout, write)
                .await
                .map_err(|_| PeerError::Timeout { during: "write" })?
        });
        match written.await {
            Ok(written) => bump(&counters.sent, written),
            Err(error) => {
                // Everything fed but not flushed is lost with the connection (`batch` was
                // drained as it was fed).
                let too_large = read(&counters.dropped_too_large) - too_large_before;
                bump(&counters.dropped_connection, total - too_large);
                batch.clear();
                return Err(error);
            }
        }
    }
}

/// Connects to `addr` and performs the dialer's side of the handshake, expecting to reach
/// `peer`: over TLS first with peer TLS configured. Bounded by the connect and handshake
/// deadlines (the TLS handshake counts toward the latter).
pub(super) async fn dial(
    config: &TransportConfig,
    peer: NodeId,
    addr: &str,
) -> Result<Framed<Stream, PeerCodec>, PeerError> {
    let stream = timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout { during: "connect" })?
        .map_err(|source| PeerError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Small Raft messages must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let dialer = config.tls.as_ref().and_then(|tls| tls.peer_dialer());
    let handshake = async {
        let stream = match dialer {
            None => Stream::Plain(stream),
            Some(tls) => tls
                .connect(addr, stream)
                .await
                .map_err(|source| PeerError::Tls {
                    addr: addr.to_string(),
                    source,
                })?,
        };
        dial_handshake(config, peer, stream).await
    };
    let framed = timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| PeerError::Timeout {
            during: "handshake",
        })??;
    Ok(framed.map_codec(|_| PeerCodec::new(config.max_frame)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        let delay = Duration::from_millis(100);
        for _ in 0..1000 {
            let d = jittered(delay);
            assert!(d >= delay / 2 && d <= delay, "{d:?}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
