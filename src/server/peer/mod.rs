//! The peer transport: carries Raft [`Envelope`](crate::raft::Envelope)s between `raftlockd`
//! nodes over TCP.
//!
//! The Raft core does no I/O. The driver hands every envelope a `Ready` says to send to
//! [`Transport::send`], and the envelopes other nodes send reach the driver's inbox through the
//! [`PeerAcceptor`]. Everything between those two points lives in this module.
//!
//! # Connections
//!
//! A connection carries Raft traffic one way: from the node that has something to say (the
//! *dialer*) to the node it is addressed to (the *acceptor*). Answers travel back on the
//! acceptor's own connection to the dialer. Each node therefore dials one connection per peer
//! and accepts one from each, and no side ever waits for a reply on a connection it writes to.
//!
//! ```text
//!  node 1                                                                     node 2
//!  driver -> Transport::send -> queue -> outbound task ==TCP==> PeerAcceptor -> driver
//!  driver <- PeerAcceptor <==TCP== outbound task <- queue <- Transport::send <- driver
//! ```
//!
//! # The life of an envelope
//!
//! 1. [`Transport::send`] puts it on the bounded queue of the peer it is addressed to. It never
//!    blocks: when the queue is full (or the peer unknown) the envelope is dropped and counted.
//!    Raft tolerates loss (heartbeats carry the commit index again, appends are resent when an
//!    answer shows no progress), while a blocked driver would stall every client.
//! 2. That peer's outbound task (`outbound.rs`) wakes. Connections are made on demand: with none
//!    up, it connects and runs the dialer's half of the handshake (`handshake.rs`). It then
//!    writes everything queued, up to `max_batch` envelopes, as one batch with one flush:
//!    heartbeats, votes and answers first, then appends up to a byte budget (`lanes.rs`), so a
//!    leader busy shipping data never delays its own heartbeats. Each
//!    envelope becomes a [`WireEnvelope`](crate::protocol::WireEnvelope) as it is written
//!    (`wire.rs`), so what other nodes read is the protocol's type, not the core's.
//! 3. On the acceptor, the daemon's listener reads the first frame; a `Hello` with
//!    `role: "peer"` hands the connection to [`PeerAcceptor::serve_peer`] (`inbound.rs`), which
//!    runs the acceptor's half of the handshake and then reads `Raft` frames. It checks that
//!    each envelope comes `from` the authenticated dialer and is addressed `to` this node (any
//!    other frame is dropped, logged and counted), converts it back to a `raft::Envelope` and
//!    delivers it to the driver's inbox.
//! 4. Delivery waits when that inbox is full. That stops reading this one connection,
//!    so backpressure reaches the dialer through TCP; the dialer's write deadline eventually
//!    recycles the connection. Nothing is dropped on this side.
//!
//! # Snapshots
//!
//! One envelope takes another road. An `InstallSnapshot` carries the whole state machine, files
//! included, which may be far larger than a frame and would hold every heartbeat behind it. So
//! `Transport::send` hands it to the peer's snapshot task (`snapshot_out.rs`) instead of the
//! queue, and that task streams it on a connection of its own: an offer, then chunks of at most
//! 1 MiB with a window of 4 MiB in flight, each acknowledged once the follower has synced it
//! (protocol.md §16.5). The follower stages the chunks in `incoming/` under its data directory
//! (`staging.rs`), so a cut connection or a restart resumes from the last acknowledged byte;
//! when the whole has arrived and matches the offer's CRC, the acceptor delivers it to the
//! driver as the `InstallSnapshot` it stands for, and Raft decides from there as for any
//! message. The bookkeeping of both halves is in `transfer.rs`, without I/O, and a seeded
//! simulation there runs it under cuts, late messages, corruption and crashes.
//!
//! # Failures
//!
//! Every wait has a deadline (connect, handshake, each batch's write) and every failure ends one
//! connection only. A dialer drops the batch in hand and redials with capped exponential
//! backoff plus jitter, so peers that lost the same node do not redial it in lockstep; an
//! acceptor's handler returns. Nothing here resends a message: that is Raft's job, and it knows
//! what is still worth sending.
//!
//! One failure is worth telling Raft about: an established connection that ends, followed by a
//! redial the peer's port refuses at once, is what a crashed process looks like (its kernel
//! resets its sockets and nothing listens any more). The dialer redials right after a lost
//! connection to find out, and reports such a peer down ([`Transport::report_down`]), so that
//! followers of a crashed leader elect a new one without waiting for the election timeout.
//!
//! # Security
//!
//! The peer door is closed unless it is opened on purpose. Whoever completes a handshake can
//! vote, win elections and append entries, so the acceptor admits a dialer only when
//!
//! - this node belongs to a cluster: it has at least one peer (a `--peer` other than itself, or
//!   another member in its membership). A standalone node refuses every peer `Hello` with
//!   `BadRequest` and closes, so no stranger can move its term or feed it entries;
//! - and it has a [`ClusterKey`], or peer TLS (`--peer-tls-*`), or
//!   [`TransportConfig::insecure_peers`] says unauthenticated peers are wanted. Without any it
//!   refuses with `Unauthorized`.
//! - with peer TLS, the dialer's TLS client certificate verified against the peer CA
//!   (`server::tls`); a dialer without one is refused with `Unauthorized`. The dialer in turn
//!   verifies the acceptor's certificate against the same CA. A key, if also given, is
//!   checked as well.
//!
//! [`TransportConfig::check_start`] applies the same rule when the daemon starts: a node with
//! peers and neither a key nor `insecure_peers` does not start at all, and one that runs
//! without a key on purpose warns at every start.
//!
//! With a key, the handshake (protocol.md §16.2) is a mutual HMAC-SHA256 challenge/response
//! over fresh 32-byte nonces from both sides: a recorded MAC answers no later challenge, and
//! the dialer's MAC covers the node id it claims, so a dialer cannot speak for another node
//! (after the handshake, `receive` drops every envelope whose `from` is not that id). Frames
//! after the handshake are neither encrypted nor individually authenticated unless the link is
//! TLS: without peer TLS, run peers on a private network or through a tunnel when an attacker
//! may sit on the path.
//!
//! # Files
//!
//! - `key.rs`: the [`ClusterKey`] and how its file is read;
//! - `handshake.rs`: the dialer's and the acceptor's halves of the handshake, side by side;
//! - `outbound.rs`: [`Transport`], the per-peer queues and tasks, batching and backoff;
//! - `lanes.rs`: the urgent and bulk lanes of a peer's queue, and the byte budget of a batch;
//! - `inbound.rs`: [`PeerAcceptor`], the acceptor's side of every connection, snapshot
//!   transfers included;
//! - `snapshot_out.rs`: the leader's per-peer snapshot task and its metrics;
//! - `transfer.rs`: the two halves of a snapshot transfer as pure bookkeeping;
//! - `staging.rs`: where a follower keeps a snapshot while it arrives;
//! - `wire.rs`: the conversions between the core's `raft::Envelope` and the peer protocol's
//!   `protocol::WireEnvelope`, the one place the two meet;
//! - this file: the configuration, the errors and the helpers both directions share.

mod handshake;
mod inbound;
mod key;
mod lanes;
mod outbound;
mod snapshot_out;
mod staging;
mod transfer;
mod wire;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::tls::ServerTls;
use crate::protocol::{
    self, ErrorCode, MAX_CLUSTER_ID_LEN, PEER_HANDSHAKE_MAX_FRAME, PEER_MAX_FRAME,
    SNAPSHOT_CHUNK_BYTES,
};
use crate::raft::NodeId;

pub use inbound::{InboundStats, PeerAcceptor};
pub use key::{ClusterKey, KeyError};
pub use outbound::{PeerStats, Transport, TransportStats};
pub use snapshot_out::SnapshotMetrics;
pub use staging::STAGING_DIR;

/// Identity, secrets, limits and timers of a node's peer transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id (never 0).
    pub node_id: NodeId,
    /// The cluster this node belongs to; every peer must state the same id.
    pub cluster_id: String,
    /// The cluster key, if the cluster uses one (then every peer must prove it holds it).
    pub key: Option<ClusterKey>,
    /// Accept peers that prove nothing when there is no key (`--insecure-peers`). Off by
    /// default: without a key and without this, the acceptor refuses every peer.
    pub insecure_peers: bool,
    /// The node's TLS. With peer TLS configured (`--peer-tls-*`) the dialer connects over TLS
    /// with its peer certificate, and the acceptor admits only dialers whose certificate
    /// chains to the peer CA; that authenticates peers without a key.
    pub tls: Option<Arc<ServerTls>>,
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
    /// The data directory: a snapshot being received is staged in its `incoming/`
    /// (`staging.rs`). Without one, this node refuses snapshot offers (a transport on its own,
    /// in tests).
    pub snapshot_dir: Option<PathBuf>,
    /// Most snapshot bytes per chunk sent (at most [`SNAPSHOT_CHUNK_BYTES`]).
    pub snapshot_chunk: usize,
    /// Where snapshot transfers are counted.
    pub snapshot_metrics: SnapshotMetrics,
}

impl TransportConfig {
    /// Defaults for a node: 1024 queued messages per peer, batches of 256, 1 s connect and 2 s
    /// handshake deadlines, 5 s write deadline, backoff 20 ms doubling to 1 s, no key and no
    /// unauthenticated peers (so peers are refused until a key or `insecure_peers` is set).
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id: cluster_id.into(),
            key: None,
            insecure_peers: false,
            tls: None,
            queue_capacity: 1024,
            max_batch: 256,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_frame: PEER_MAX_FRAME,
            snapshot_dir: None,
            snapshot_chunk: SNAPSHOT_CHUNK_BYTES,
            snapshot_metrics: SnapshotMetrics::default(),
        }
    }

    /// The start-up rule of the peer door, for a node that is `clustered` (it has peers on its
    /// command line or other voters in its membership): such a node needs a key, or
    /// `insecure_peers` set on purpose, and then gets a warning logged. A standalone node
    /// starts either way (it refuses every peer).
    pub fn check_start(&self, clustered: bool) -> Result<(), ConfigError> {
        if self.key.is_some() || self.peer_tls() {
            return Ok(());
        }
        if self.insecure_peers {
            tracing::warn!(
                "--insecure-peers: peer connections are not authenticated; anyone who can reach \
                 this port can join the cluster, vote and append entries. Give every node the \
                 same --cluster-key-file instead"
            );
            return Ok(());
        }
        if clustered {
            return Err(ConfigError::KeyRequired);
        }
        Ok(())
    }

    /// True when a handshaken dialer may be admitted at all: a key, peer TLS, or
    /// unauthenticated peers on purpose.
    fn admits_peers(&self) -> bool {
        self.key.is_some() || self.insecure_peers || self.peer_tls()
    }

    /// True when peers authenticate with TLS certificates (`--peer-tls-*`).
    fn peer_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.peer_tls())
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
        if self.snapshot_chunk == 0 || self.snapshot_chunk > SNAPSHOT_CHUNK_BYTES {
            return Err(ConfigError::SnapshotChunk {
                chunk: self.snapshot_chunk,
                max: SNAPSHOT_CHUNK_BYTES,
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
    /// A node with peers (on its command line or in its stored membership) has no cluster key
    /// and was not told that unauthenticated peers are wanted.
    #[error(
        "this node has other cluster members but no cluster key, so anyone who reaches its port \
         could join the cluster: give every node the same --cluster-key-file \
         (RAFTLOCKD_CLUSTER_KEY_FILE), or authenticate peers with mutual TLS (--peer-tls-cert, \
         --peer-tls-key, --peer-tls-ca), or pass --insecure-peers \
         (RAFTLOCKD_INSECURE_PEERS=true) to run unauthenticated peers on purpose"
    )]
    KeyRequired,
    /// The snapshot chunk size is 0 or above the protocol's limit.
    #[error("snapshot_chunk {chunk} must be 1..={max}")]
    SnapshotChunk {
        /// The configured size.
        chunk: usize,
        /// The limit.
        max: usize,
    },
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
    /// The TLS handshake with the peer failed (its certificate is not from the peer CA or does
    /// not name its address, or it refused ours).
    #[error("TLS with {addr} failed")]
    Tls {
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

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_problem() {
        let ok = TransportConfig::new(1, "c");
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.check_start(false), Ok(()));
        assert_eq!(ok.check_start(true), Err(ConfigError::KeyRequired));
        let mut insecure = ok.clone();
        insecure.insecure_peers = true;
        assert_eq!(insecure.check_start(true), Ok(()));
        let mut keyed = ok.clone();
        keyed.key = Some(ClusterKey::new(*b"sixteen bytes ok").unwrap());
        assert_eq!(keyed.check_start(true), Ok(()));
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
}
