//! The peer transport: carries Raft [`Envelope`]s between `raftlockd` nodes over TCP.
//!
//! Two halves, both owned by [`Transport`]:
//!
//! - **Outbound.** One task per peer, fed by a bounded queue. [`Transport::send`] never blocks:
//!   when a peer's queue is full the message is dropped and counted (Raft retries: heartbeats
//!   and re-sent appends repair any loss). The task connects lazily (when it has something to
//!   send), performs the handshake (`protocol::PeerMessage`, protocol.md §16), then writes every
//!   queued message as one batch before flushing. A failed connect or handshake, or a lost
//!   connection, drops the batch in hand and retries with capped exponential backoff plus
//!   jitter. Every wait has a deadline: connect, handshake and each batch's write.
//! - **Inbound.** [`PeerAcceptor::serve_peer`] is what the daemon's connection code calls after
//!   it has read a `Hello` with `role: "peer"`: it completes the handshake and forwards every
//!   accepted envelope to the driver's bounded inbox. A slow driver backpressures that one
//!   connection (it stops reading, TCP fills, the dialer's write deadline eventually recycles
//!   it); nothing is dropped there, and each wait is counted.
//!
//! A connection carries Raft traffic one way, dialer → acceptor; answers go back on the
//! acceptor's own outbound connection. The acceptor checks that every envelope comes `from`
//! the authenticated dialer and is addressed `to` itself, and drops (and logs and counts) any
//! other.
//!
//! Security: the handshake proves cluster membership (same cluster id and, with a cluster key,
//! a mutual HMAC-SHA256 challenge/response). Frames after it are neither encrypted nor
//! individually authenticated: run peers on a private network or through a tunnel when an
//! attacker may sit on the path.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::{Rng, RngCore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::protocol::{
    self, mac, verify_mac, ClientCodec, ErrorCode, PeerCodec, PeerMessage, Request, Role,
    ServerCodec, Side, MAX_CLUSTER_ID_LEN, PEER_HANDSHAKE_MAX_FRAME, PEER_MAX_FRAME,
    PEER_NONCE_LEN,
};
use crate::raft::{Envelope, NodeId};

/// A shared secret that proves cluster membership in the peer handshake. Its bytes never appear
/// in logs (`Debug` prints its length only).
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

impl ClusterKey {
    /// Shortest accepted key, in bytes. 16 random bytes (or a longer passphrase) resist guessing.
    pub const MIN_LEN: usize = 16;

    /// A key from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<ClusterKey, KeyError> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            });
        }
        Ok(ClusterKey(bytes.into()))
    }

    /// Reads a key file: its whole content, without trailing ASCII whitespace (so a key written
    /// with `echo` or an editor's final newline works), at least [`ClusterKey::MIN_LEN`] bytes.
    /// Every node of the cluster must use the same file content.
    pub fn from_file(path: &Path) -> Result<ClusterKey, KeyError> {
        let mut bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        ClusterKey::new(bytes)
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({} bytes)", self.0.len())
    }
}

/// Why a cluster key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read the cluster key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The key is too short to be a secret.
    #[error("the cluster key is {len} bytes; at least {min} are required")]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
}

/// Identity, secrets, limits and timers of a node's peer transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id (never 0).
    pub node_id: NodeId,
    /// The cluster this node belongs to; every peer must state the same id.
    pub cluster_id: String,
    /// The cluster key, if the cluster uses one (then every peer must prove it holds it).
    pub key: Option<ClusterKey>,
    /// Messages queued per peer before `send` drops new ones.
    pub queue_capacity: usize,
    /// Most messages written per flush.
    pub max_batch: usize,
    /// Deadline for the TCP connect.
    pub connect_timeout: Duration,
    /// Deadline for the whole handshake, on either side.
    pub handshake_timeout: Duration,
    /// Deadline for writing and flushing one batch; past it the connection is recycled.
    pub write_timeout: Duration,
    /// First reconnect delay (before jitter).
    pub backoff_min: Duration,
    /// Longest reconnect delay (before jitter).
    pub backoff_max: Duration,
    /// Largest frame body after the handshake, both directions.
    pub max_frame: usize,
}

impl TransportConfig {
    /// Defaults for a node: 1024 queued messages per peer, batches of 256, 1 s connect and 2 s
    /// handshake deadlines, 5 s write deadline, backoff 20 ms doubling to 1 s, no key.
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id: cluster_id.into(),
            key: None,
            queue_capacity: 1024,
            max_batch: 256,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_frame: PEER_MAX_FRAME,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(ConfigError::ClusterIdLength {
                len: self.cluster_id.len(),
                max: MAX_CLUSTER_ID_LEN,
            });
        }
        if self.queue_capacity == 0 || self.max_batch == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(ConfigError::Backoff);
        }
        if self.max_frame < PEER_HANDSHAKE_MAX_FRAME {
            return Err(ConfigError::MaxFrame {
                max_frame: self.max_frame,
                min: PEER_HANDSHAKE_MAX_FRAME,
            });
        }
        Ok(())
    }
}

/// A [`TransportConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node ids start at 1.
    #[error("the node id must be non-zero")]
    ZeroNodeId,
    /// The cluster id is empty or too long.
    #[error("the cluster id is {len} bytes; it must be 1..={max}")]
    ClusterIdLength {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A queue or batch of size 0 could carry nothing.
    #[error("queue_capacity and max_batch must be non-zero")]
    ZeroCapacity,
    /// The backoff bounds are zero or inverted.
    #[error("backoff_min must be non-zero and at most backoff_max")]
    Backoff,
    /// The frame limit is below the handshake's.
    #[error("max_frame {max_frame} is below the handshake frame size {min}")]
    MaxFrame {
        /// The configured limit.
        max_frame: usize,
        /// The smallest allowed.
        min: usize,
    },
}

/// Why a peer connection (or an attempt at one) ended. Every variant ends that connection
/// only; the outbound task retries, the inbound handler returns.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The TCP connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The peer's address.
        addr: String,
        /// The failure.
        source: io::Error,
    },
    /// Framing or socket failure.
    #[error("peer connection failed")]
    Codec(#[from] protocol::Error),
    /// A deadline passed.
    #[error("timed out during {during}")]
    Timeout {
        /// What was being waited for.
        during: &'static str,
    },
    /// The other side closed the connection.
    #[error("the other side closed the connection")]
    Closed,
    /// The other side refused the handshake (or closed with an error frame).
    #[error("refused by the other side: {code:?}: {message}")]
    RefusedByPeer {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// This side refused the other (told with an error frame where possible).
    #[error("refused: {code:?}: {reason}")]
    Refused {
        /// The code sent.
        code: ErrorCode,
        /// Why.
        reason: String,
    },
    /// The transport or the connection is shutting down.
    #[error("cancelled")]
    Cancelled,
}

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
    /// Messages dropped because they exceed the frame limit (e.g. a huge snapshot).
    pub dropped_too_large: u64,
    /// Successful handshakes (the first connection and every reconnection).
    pub connections: u64,
    /// Failed connects and handshakes.
    pub connect_failures: u64,
}

/// Counters of the inbound side, for status and debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Peer connections that completed the handshake.
    pub accepted: u64,
    /// Peer connections refused or failed during the handshake.
    pub refused: u64,
    /// Envelopes delivered to the driver.
    pub received: u64,
    /// Frames dropped after the handshake: envelopes with a forged `from` or a wrong `to`,
    /// undecodable frames, unexpected message types.
    pub rejected: u64,
    /// Envelopes that found the driver's inbox full and waited for room (backpressure).
    pub deliver_waits: u64,
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
}

#[derive(Default)]
struct InboundCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    deliver_waits: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The handle of one peer's outbound task.
struct Outbound {
    addr: String,
    queue: mpsc::Sender<Envelope>,
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
        let acceptor = PeerAcceptor {
            inner: Arc::new(AcceptorInner {
                config: config.clone(),
                deliver,
                counters: InboundCounters::default(),
            }),
        };
        let mut transport = Transport {
            config,
            peers: BTreeMap::new(),
            acceptor,
            dropped_unknown_peer: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        transport.set_peers(peers);
        Ok(transport)
    }
}

impl<E> Transport<E> {
    /// Queues an envelope for `envelope.to`. Never blocks: if that peer's queue is full, or the
    /// peer is unknown, the envelope is dropped and counted (Raft retries).
    pub fn send(&self, envelope: Envelope) {
        let Some(peer) = self.peers.get(&envelope.to) else {
            bump(&self.dropped_unknown_peer, 1);
            tracing::debug!(to = envelope.to, "dropping a message to an unknown peer");
            return;
        };
        match peer.queue.try_send(envelope) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(envelope)) => {
                bump(&peer.counters.dropped_queue_full, 1);
                tracing::trace!(to = envelope.to, "peer queue full, dropping a message");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The task is gone only after cancellation; count it like a full queue.
                bump(&peer.counters.dropped_queue_full, 1);
            }
        }
    }

    /// Replaces the set of peers (membership change): tasks of removed peers stop (their
    /// queued messages are dropped), a peer whose address changed is redialed at the new one,
    /// new peers get a task. This node's own id is ignored.
    pub fn set_peers(&mut self, mut peers: BTreeMap<NodeId, String>) {
        peers.remove(&self.config.node_id);
        peers.remove(&0);
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
            let (queue, receiver) = mpsc::channel(self.config.queue_capacity);
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
                )
                .instrument(span),
            );
            self.peers.insert(
                id,
                Outbound {
                    addr,
                    queue,
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

/// Returns `future`'s output, or `Cancelled` when `cancel` fires first.
async fn or_cancel<T>(
    cancel: &CancellationToken,
    future: impl Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(PeerError::Cancelled),
        result = future => result,
    }
}

/// Half the delay plus a uniform random part of the other half ("equal jitter"), so peers that
/// lost a node together do not redial it in lockstep.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

fn fresh_nonce() -> Vec<u8> {
    let mut nonce = vec![0u8; PEER_NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// One peer's outbound task: wait for a message, connect, pump batches; on failure drop the
/// batch in hand and back off.
async fn run_outbound(
    config: Arc<TransportConfig>,
    peer: NodeId,
    addr: String,
    mut queue: mpsc::Receiver<Envelope>,
    cancel: CancellationToken,
    counters: Arc<PeerCounters>,
) {
    let mut backoff = config.backoff_min;
    let mut batch: Vec<Envelope> = Vec::new();
    let mut failures_in_row = 0u64;
    loop {
        if batch.is_empty() {
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
        match or_cancel(&cancel, dial(&config, peer, &addr)).await {
            Err(PeerError::Cancelled) => return,
            Err(error) => {
                bump(&counters.connect_failures, 1);
                bump(&counters.dropped_connection, batch.len() as u64);
                batch.clear();
                failures_in_row += 1;
                let refused = matches!(
                    error,
                    PeerError::Refused { .. } | PeerError::RefusedByPeer { .. }
                );
                // A refusal is a misconfiguration worth a warning, once per run of failures;
                // an unreachable peer is routine (it may be restarting).
                if refused && failures_in_row == 1 {
                    tracing::warn!(%error, "peer handshake refused");
                } else {
                    tracing::debug!(%error, failures_in_row, "cannot reach peer");
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
                    Err(error) => tracing::debug!(%error, "peer connection lost"),
                }
            }
        }
        let delay = jittered(backoff);
        backoff = (backoff * 2).min(config.backoff_max);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Writes batches until the connection fails (`Err`), the transport is dropped (`Ok`) or
/// cancelled. `batch` may hold messages on entry; on an error the messages in hand are counted
/// as dropped and `batch` is left empty.
async fn pump(
    framed: Framed<TcpStream, PeerCodec>,
    config: &TransportConfig,
    queue: &mut mpsc::Receiver<Envelope>,
    batch: &mut Vec<Envelope>,
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
        while batch.len() < config.max_batch {
            match queue.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
        let total = batch.len() as u64;
        let too_large_before = read(&counters.dropped_too_large);
        let write = async {
            let mut written = 0u64;
            for envelope in batch.drain(..) {
                match sink.feed(PeerMessage::Raft { envelope }).await {
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
/// `peer`. Bounded by the connect and handshake deadlines.
async fn dial(
    config: &TransportConfig,
    peer: NodeId,
    addr: &str,
) -> Result<Framed<TcpStream, PeerCodec>, PeerError> {
    let stream = timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout { during: "connect" })?
        .map_err(|source| PeerError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Small Raft messages must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let framed = timeout(
        config.handshake_timeout,
        dial_handshake(config, peer, stream),
    )
    .await
    .map_err(|_| PeerError::Timeout {
        during: "handshake",
    })??;
    Ok(framed.map_codec(|_| PeerCodec::new(config.max_frame)))
}

async fn dial_handshake(
    config: &TransportConfig,
    peer: NodeId,
    stream: TcpStream,
) -> Result<Framed<TcpStream, PeerCodec>, PeerError> {
    let mut hello = Framed::new(stream, ClientCodec::new(PEER_HANDSHAKE_MAX_FRAME));
    hello
        .feed(Request::Hello {
            version: protocol::VERSION,
            role: Role::Peer,
        })
        .await?;
    let mut framed = hello.map_codec(|_| PeerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
    let my_nonce = config.key.as_ref().map(|_| fresh_nonce());
    framed
        .send(PeerMessage::PeerHello {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            nonce: my_nonce.clone(),
        })
        .await?;
    let (cluster_id, node_id, their_nonce, their_mac) = match next_message(&mut framed).await? {
        PeerMessage::PeerWelcome {
            cluster_id,
            node_id,
            nonce,
            mac,
        } => (cluster_id, node_id, nonce, mac),
        other => return Err(unexpected(&mut framed, "PeerWelcome", other).await),
    };
    if cluster_id != config.cluster_id {
        let reason = format!(
            "peer is in cluster {cluster_id:?}, this node in {:?}",
            config.cluster_id
        );
        return Err(refuse(&mut framed, ErrorCode::WrongCluster, reason).await);
    }
    if node_id != peer {
        let reason = format!("reached node {node_id}, expected node {peer}");
        return Err(refuse(&mut framed, ErrorCode::BadRequest, reason).await);
    }
    let auth = match (&config.key, &my_nonce) {
        (Some(key), Some(my_nonce)) => {
            let proven = their_mac.as_deref().is_some_and(|m| {
                verify_mac(key.bytes(), Side::Acceptor, my_nonce, &cluster_id, peer, m)
            });
            if !proven {
                let reason = "the acceptor did not prove it holds the cluster key".to_string();
                return Err(refuse(&mut framed, ErrorCode::Unauthorized, reason).await);
            }
            match their_nonce {
                Some(nonce) if nonce.len() == PEER_NONCE_LEN => Some(mac(
                    key.bytes(),
                    Side::Dialer,
                    &nonce,
                    &config.cluster_id,
                    config.node_id,
                )),
                _ => {
                    let reason = "the acceptor sent no valid challenge".to_string();
                    return Err(refuse(&mut framed, ErrorCode::Unauthorized, reason).await);
                }
            }
        }
        _ => None,
    };
    framed.send(PeerMessage::PeerAuth { mac: auth }).await?;
    match next_message(&mut framed).await? {
        PeerMessage::PeerAccepted {} => Ok(framed),
        other => Err(unexpected(&mut framed, "PeerAccepted", other).await),
    }
}

/// Reads the next handshake message; a bad frame is refused with `BadRequest`.
async fn next_message<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
) -> Result<PeerMessage, PeerError> {
    match framed.next().await {
        None => Err(PeerError::Closed),
        Some(Err(error)) => Err(PeerError::Codec(error)),
        Some(Ok(Err(bad_frame))) => {
            Err(refuse(framed, ErrorCode::BadRequest, bad_frame.to_string()).await)
        }
        Some(Ok(Ok(message))) => Ok(message),
    }
}

/// The error for a handshake message of the wrong type (an `Error` frame is the other side's
/// refusal).
async fn unexpected<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    expected: &str,
    got: PeerMessage,
) -> PeerError {
    match got {
        PeerMessage::Error { code, message } => PeerError::RefusedByPeer { code, message },
        other => {
            let reason = format!("expected {expected}, got {}", other.type_name());
            refuse(framed, ErrorCode::BadRequest, reason).await
        }
    }
}

/// Tells the other side why it is refused (best effort; the caller's deadline bounds it) and
/// returns the matching error.
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    code: ErrorCode,
    reason: String,
) -> PeerError {
    let _ = framed.send(PeerMessage::error(code, reason.clone())).await;
    PeerError::Refused { code, reason }
}

struct AcceptorInner<E> {
    config: Arc<TransportConfig>,
    deliver: mpsc::Sender<E>,
    counters: InboundCounters,
}

/// The inbound side of the transport: serves connections whose first frame was a peer
/// `Hello`. Cheap to clone; hand one to the connection code.
pub struct PeerAcceptor<E> {
    inner: Arc<AcceptorInner<E>>,
}

impl<E> Clone for PeerAcceptor<E> {
    fn clone(&self) -> Self {
        PeerAcceptor {
            inner: self.inner.clone(),
        }
    }
}

impl<E> PeerAcceptor<E> {
    /// A snapshot of the inbound counters.
    pub fn stats(&self) -> InboundStats {
        let c = &self.inner.counters;
        InboundStats {
            accepted: read(&c.accepted),
            refused: read(&c.refused),
            received: read(&c.received),
            rejected: read(&c.rejected),
            deliver_waits: read(&c.deliver_waits),
        }
    }
}

impl<E: From<Envelope> + Send + 'static> PeerAcceptor<E> {
    /// Serves a peer connection whose client `Hello {version, role: "peer"}` the caller has just
    /// read (and whose version it has checked) from `framed`; frames already buffered are kept.
    /// Runs the acceptor's side of the handshake within the handshake deadline, then delivers
    /// envelopes until the dialer closes, the connection fails, `cancel` fires or the driver's
    /// inbox is closed. Refusals are sent as an `Error` frame, logged and counted.
    pub async fn serve_peer<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: Framed<T, ServerCodec>,
        remote: SocketAddr,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let config = &self.inner.config;
        let counters = &self.inner.counters;
        let span = tracing::info_span!("peer_in", node = config.node_id, %remote);
        async move {
            let mut framed = framed.map_codec(|_| PeerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
            let deadline = Instant::now() + config.handshake_timeout;
            let handshake = async {
                timeout_at(deadline, accept_handshake(config, &mut framed))
                    .await
                    .unwrap_or(Err(PeerError::Timeout {
                        during: "handshake",
                    }))
            };
            let dialer = match or_cancel(cancel, handshake).await {
                Ok(dialer) => dialer,
                Err(error) => {
                    if let PeerError::Timeout { .. } = error {
                        let told = framed.send(PeerMessage::error(
                            ErrorCode::HandshakeTimeout,
                            "peer handshake not completed in time",
                        ));
                        let _ = timeout(Duration::from_millis(100), told).await;
                    }
                    bump(&counters.refused, 1);
                    tracing::warn!(%error, "peer handshake failed");
                    return Err(error);
                }
            };
            bump(&counters.accepted, 1);
            tracing::debug!(dialer, "peer connection accepted");
            let framed = framed.map_codec(|_| PeerCodec::new(config.max_frame));
            self.receive(framed, dialer, cancel)
                .instrument(tracing::info_span!("from", dialer))
                .await
        }
        .instrument(span)
        .await
    }

    /// Reads the client `Hello` from a fresh stream (within the handshake deadline), then
    /// [`serve_peer`](Self::serve_peer). For a listener dedicated to peers; the daemon's shared
    /// listener reads `Hello` itself and calls `serve_peer`.
    pub async fn serve_stream<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: T,
        remote: SocketAddr,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let config = &self.inner.config;
        let mut framed = Framed::new(stream, ServerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
        let first = or_cancel(cancel, async {
            timeout(config.handshake_timeout, framed.next())
                .await
                .map_err(|_| PeerError::Timeout { during: "Hello" })
        })
        .await;
        let refusal = match first {
            Err(error) => {
                bump(&self.inner.counters.refused, 1);
                return Err(error);
            }
            Ok(None) => {
                bump(&self.inner.counters.refused, 1);
                return Err(PeerError::Closed);
            }
            Ok(Some(Err(error))) => {
                bump(&self.inner.counters.refused, 1);
                return Err(PeerError::Codec(error));
            }
            Ok(Some(Ok(Ok(Request::Hello {
                version,
                role: Role::Peer,
            }))))
                if version == protocol::VERSION =>
            {
                None
            }
            Ok(Some(Ok(Ok(Request::Hello { version, .. })))) if version != protocol::VERSION => {
                Some((
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {version} is not supported"),
                ))
            }
            Ok(Some(Ok(_))) => Some((
                ErrorCode::BadRequest,
                "this listener serves peers only: expected Hello with role peer".to_string(),
            )),
        };
        if let Some((code, reason)) = refusal {
            bump(&self.inner.counters.refused, 1);
            let _ = timeout(
                config.handshake_timeout,
                framed.send(protocol::Response::error(0, code, reason.clone())),
            )
            .await;
            return Err(PeerError::Refused { code, reason });
        }
        self.serve_peer(framed, remote, cancel).await
    }

    /// Delivers the dialer's envelopes until the connection ends.
    async fn receive<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut framed: Framed<T, PeerCodec>,
        dialer: NodeId,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let me = self.inner.config.node_id;
        let counters = &self.inner.counters;
        loop {
            let frame = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                frame = framed.next() => frame,
            };
            let envelope = match frame {
                None => return Err(PeerError::Closed),
                Some(Err(error)) => return Err(PeerError::Codec(error)),
                Some(Ok(Err(bad_frame))) => {
                    bump(&counters.rejected, 1);
                    tracing::warn!(error = %bad_frame, "dropping an undecodable peer frame");
                    continue;
                }
                Some(Ok(Ok(PeerMessage::Raft { envelope }))) => envelope,
                Some(Ok(Ok(PeerMessage::Error { code, message }))) => {
                    return Err(PeerError::RefusedByPeer { code, message })
                }
                Some(Ok(Ok(other))) => {
                    bump(&counters.rejected, 1);
                    tracing::warn!(
                        r#type = other.type_name(),
                        "dropping an unexpected peer frame"
                    );
                    continue;
                }
            };
            if envelope.from != dialer || envelope.to != me {
                bump(&counters.rejected, 1);
                tracing::warn!(
                    from = envelope.from,
                    to = envelope.to,
                    "dropping an envelope not from the authenticated dialer to this node"
                );
                continue;
            }
            let event = E::from(envelope);
            let event = match self.inner.deliver.try_send(event) {
                Ok(()) => {
                    bump(&counters.received, 1);
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(PeerError::Cancelled),
                Err(mpsc::error::TrySendError::Full(event)) => event,
            };
            // The driver is behind: wait for room, which stops reading this connection only.
            bump(&counters.deliver_waits, 1);
            let sent = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                sent = self.inner.deliver.send(event) => sent,
            };
            if sent.is_err() {
                return Err(PeerError::Cancelled);
            }
            bump(&counters.received, 1);
        }
    }
}

/// The acceptor's side of the handshake, after `Hello`: returns the authenticated dialer's id.
async fn accept_handshake<T: AsyncRead + AsyncWrite + Unpin>(
    config: &TransportConfig,
    framed: &mut Framed<T, PeerCodec>,
) -> Result<NodeId, PeerError> {
    let (cluster_id, dialer, dialer_nonce) = match next_message(framed).await? {
        PeerMessage::PeerHello {
            cluster_id,
            node_id,
            nonce,
        } => (cluster_id, node_id, nonce),
        other => return Err(unexpected(framed, "PeerHello", other).await),
    };
    if cluster_id != config.cluster_id {
        let reason = format!(
            "this node is in cluster {:?}, the dialer in {cluster_id:?}",
            config.cluster_id
        );
        return Err(refuse(framed, ErrorCode::WrongCluster, reason).await);
    }
    if dialer == 0 || dialer == config.node_id {
        let reason = format!("node id {dialer} cannot dial node {}", config.node_id);
        return Err(refuse(framed, ErrorCode::BadRequest, reason).await);
    }
    let (my_nonce, my_mac) = match &config.key {
        None => (None, None),
        Some(key) => match dialer_nonce {
            None => {
                let reason = "this cluster requires a cluster key: PeerHello has no nonce";
                return Err(refuse(framed, ErrorCode::Unauthorized, reason.to_string()).await);
            }
            Some(nonce) if nonce.len() != PEER_NONCE_LEN => {
                let reason = format!("nonce must be {PEER_NONCE_LEN} bytes, got {}", nonce.len());
                return Err(refuse(framed, ErrorCode::BadRequest, reason).await);
            }
            Some(nonce) => {
                let answer = mac(
                    key.bytes(),
                    Side::Acceptor,
                    &nonce,
                    &config.cluster_id,
                    config.node_id,
                );
                (Some(fresh_nonce()), Some(answer))
            }
        },
    };
    framed
        .send(PeerMessage::PeerWelcome {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            nonce: my_nonce.clone(),
            mac: my_mac,
        })
        .await?;
    let dialer_mac = match next_message(framed).await? {
        PeerMessage::PeerAuth { mac } => mac,
        other => return Err(unexpected(framed, "PeerAuth", other).await),
    };
    if let (Some(key), Some(my_nonce)) = (&config.key, &my_nonce) {
        let proven = dialer_mac.as_deref().is_some_and(|m| {
            verify_mac(
                key.bytes(),
                Side::Dialer,
                my_nonce,
                &config.cluster_id,
                dialer,
                m,
            )
        });
        if !proven {
            let reason = format!("node {dialer} did not prove it holds the cluster key");
            return Err(refuse(framed, ErrorCode::Unauthorized, reason).await);
        }
    }
    framed.send(PeerMessage::PeerAccepted {}).await?;
    Ok(dialer)
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

    #[test]
    fn config_validation_names_the_problem() {
        let ok = TransportConfig::new(1, "c");
        assert_eq!(ok.validate(), Ok(()));
        type Breaker = fn(&mut TransportConfig);
        let cases: [(Breaker, ConfigError); 5] = [
            (|c| c.node_id = 0, ConfigError::ZeroNodeId),
            (
                |c| c.cluster_id = "x".repeat(MAX_CLUSTER_ID_LEN + 1),
                ConfigError::ClusterIdLength {
                    len: MAX_CLUSTER_ID_LEN + 1,
                    max: MAX_CLUSTER_ID_LEN,
                },
            ),
            (|c| c.max_batch = 0, ConfigError::ZeroCapacity),
            (|c| c.backoff_min = c.backoff_max * 2, ConfigError::Backoff),
            (
                |c| c.max_frame = 1,
                ConfigError::MaxFrame {
                    max_frame: 1,
                    min: PEER_HANDSHAKE_MAX_FRAME,
                },
            ),
        ];
        for (break_it, want) in cases {
            let mut config = ok.clone();
            break_it(&mut config);
            assert_eq!(config.validate(), Err(want));
        }
    }

    #[test]
    fn key_files_lose_only_trailing_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b" secret with spaces inside \r\n\n").unwrap();
        let key = ClusterKey::from_file(&path).unwrap();
        assert_eq!(key.bytes(), b" secret with spaces inside");
        std::fs::write(&path, b"short\n").unwrap();
        assert!(matches!(
            ClusterKey::from_file(&path),
            Err(KeyError::TooShort { len: 5, min: 16 })
        ));
    }
}
