//! The inbound direction: [`PeerAcceptor`] serves the connections other nodes dial to this one.
//!
//! The daemon's listener reads the first frame of every connection; a peer `Hello` hands the
//! connection to [`PeerAcceptor::serve_peer`]. It first checks that the door is open (this
//! node has peers, and a cluster key or unauthenticated peers on purpose; see the module
//! essay's Security section): if not, it answers with an `Error` and closes before reading
//! anything the dialer says. Otherwise it runs the acceptor's half of the handshake and then
//! delivers each envelope the dialer sends to the driver's inbox, converted to the
//! driver's event type `E`. An envelope that does not come from the authenticated dialer to
//! this node, an undecodable frame or a stray handshake message is dropped (logged and counted)
//! and the connection stays up: one bad frame is not worth the reconnection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::handshake::accept_handshake;
use super::staging::{StagedMeta, Staging, StagingError};
use super::transfer::TransferId;
use super::{bump, or_cancel, read, PeerError, TransportConfig};
use crate::protocol::{
    self, ErrorCode, PeerCodec, PeerMessage, Request, Role, ServerCodec, WireSnapshotMeta,
    PEER_HANDSHAKE_MAX_FRAME,
};
use crate::raft::{Envelope, Message, NodeId, Snapshot, Term};

/// Counters of the inbound side, for status and debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Peer connections that completed the handshake.
    pub accepted: u64,
    /// Peer connections refused or failed during the handshake (including those refused
    /// because this node accepts no peers).
    pub refused: u64,
    /// Envelopes delivered to the driver.
    pub received: u64,
    /// Frames dropped after the handshake: envelopes with a forged `from` or a wrong `to`,
    /// undecodable frames, unexpected message types.
    pub rejected: u64,
    /// Envelopes that found the driver's inbox full and waited for room (backpressure).
    pub deliver_waits: u64,
}

#[derive(Default)]
struct InboundCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    deliver_waits: AtomicU64,
}

struct AcceptorInner<E> {
    config: Arc<TransportConfig>,
    /// The snapshot being received, shared by every connection (opened at the first offer).
    staging: Arc<Mutex<Option<Staging>>>,
    deliver: mpsc::Sender<E>,
    counters: InboundCounters,
    /// True while this node has at least one peer (set by `Transport::set_peers`).
    clustered: AtomicBool,
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
    /// An acceptor that delivers the envelopes it receives, converted to `E`, into `deliver`.
    pub(super) fn new(config: Arc<TransportConfig>, deliver: mpsc::Sender<E>) -> PeerAcceptor<E> {
        PeerAcceptor {
            inner: Arc::new(AcceptorInner {
                config,
                staging: Arc::new(Mutex::new(None)),
                deliver,
                counters: InboundCounters::default(),
                clustered: AtomicBool::new(false),
            }),
        }
    }

    /// Records whether this node has peers; a node without any refuses every dialer.
    pub(super) fn set_clustered(&self, clustered: bool) {
        self.inner.clustered.store(clustered, Ordering::Relaxed);
    }

    /// Why this dialer cannot be admitted (`tls_verified`: its TLS certificate chains to the
    /// peer CA), if it cannot.
    fn closed_door(&self, tls_verified: bool) -> Option<(ErrorCode, &'static str)> {
        if !self.inner.clustered.load(Ordering::Relaxed) {
            return Some((
                ErrorCode::BadRequest,
                "this node is not configured for a cluster (no --peer, no other member): it \
                 accepts no peers",
            ));
        }
        if !self.inner.config.admits_peers() {
            return Some((
                ErrorCode::Unauthorized,
                "this node has no cluster key and does not accept unauthenticated peers \
                 (--insecure-peers)",
            ));
        }
        if self.inner.config.peer_tls() && !tls_verified {
            return Some((
                ErrorCode::Unauthorized,
                "this cluster authenticates peers by TLS: dial over TLS with a certificate from \
                 the cluster's --peer-tls-ca",
            ));
        }
        None
    }

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
    /// A node that admits no peers (none configured, or no key and no `insecure_peers`)
    /// answers with an `Error` frame and closes at once. Otherwise runs the acceptor's side
    /// of the handshake within the handshake deadline, then delivers envelopes until the dialer
    /// closes, the connection fails, `cancel` fires or the driver's inbox is closed. Refusals
    /// are sent as an `Error` frame, logged and counted. `tls_verified` says that the
    /// connection is TLS with a client certificate from the peer CA (required with peer TLS).
    pub async fn serve_peer<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: Framed<T, ServerCodec>,
        remote: SocketAddr,
        tls_verified: bool,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let config = &self.inner.config;
        let counters = &self.inner.counters;
        let span = tracing::info_span!("peer_in", node = config.node_id, %remote);
        async move {
            let mut framed = framed.map_codec(|_| PeerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
            let deadline = Instant::now() + config.handshake_timeout;
            if let Some((code, reason)) = self.closed_door(tls_verified) {
                bump(&counters.refused, 1);
                tracing::warn!(?code, reason, "refusing a peer connection");
                let refusal = refuse_and_close(&mut framed, code, reason);
                let _ = or_cancel(cancel, async {
                    let _ = timeout_at(deadline, refusal).await;
                    Ok(())
                })
                .await;
                return Err(PeerError::Refused {
                    code,
                    reason: reason.to_string(),
                });
            }
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
    /// listener reads `Hello` itself and calls `serve_peer`. The stream counts as carrying no
    /// verified peer certificate.
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
                ..
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
        self.serve_peer(framed, remote, false, cancel).await
    }

    /// Delivers the dialer's envelopes until the connection ends.
    ///
    /// Only `accept_handshake`'s success leads here, so `dialer` is authenticated (with a key)
    /// and every envelope must come from it.
    async fn receive<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut framed: Framed<T, PeerCodec>,
        dialer: NodeId,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let me = self.inner.config.node_id;
        let counters = &self.inner.counters;
        // The snapshot offered on this connection, if any: its staging generation and the
        // leader's term.
        let mut offered: Option<(u64, Term)> = None;
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
                Some(Ok(Ok(PeerMessage::SnapshotOffer {
                    term,
                    meta,
                    size,
                    crc32,
                }))) => {
                    let staged = StagedMeta {
                        id: TransferId {
                            index: meta.index,
                            term: meta.term,
                            size,
                            crc32,
                        },
                        meta,
                    };
                    let step = self
                        .stage(move |staging| {
                            let (generation, held) = staging.offer(staged)?;
                            Ok((generation, held, staging.complete(generation)?))
                        })
                        .await;
                    let (generation, held, whole) = match step {
                        Ok(step) => step,
                        Err(reason) => return refuse_snapshot(&mut framed, reason).await,
                    };
                    tracing::debug!(held, size, "snapshot offered");
                    offered = Some((generation, term));
                    self.acknowledge(&mut framed, dialer, term, held, whole, cancel)
                        .await?;
                    continue;
                }
                Some(Ok(Ok(PeerMessage::SnapshotChunk {
                    offset,
                    data,
                    crc32,
                }))) => {
                    let Some((generation, term)) = offered else {
                        let reason = "SnapshotChunk before any SnapshotOffer".to_string();
                        return refuse_snapshot(&mut framed, reason).await;
                    };
                    let step = self
                        .stage(move |staging| {
                            let held = staging.write_chunk(generation, offset, &data, crc32)?;
                            Ok((held, staging.complete(generation)?))
                        })
                        .await;
                    let (held, whole) = match step {
                        Ok(step) => step,
                        Err(reason) => return refuse_snapshot(&mut framed, reason).await,
                    };
                    self.acknowledge(&mut framed, dialer, term, held, whole, cancel)
                        .await?;
                    continue;
                }
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
            let event = E::from(Envelope::from(envelope));
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

impl<E: From<Envelope> + Send + 'static> PeerAcceptor<E> {
    /// Runs `step` on the staging area, on a blocking thread (it syncs files); the staging is
    /// opened at the first call. The error is the reason to send the dialer.
    async fn stage<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut Staging) -> Result<T, StagingError> + Send + 'static,
    ) -> Result<T, String> {
        let Some(dir) = self.inner.config.snapshot_dir.clone() else {
            return Err("this node has no data directory to stage snapshots in".to_string());
        };
        let staging = self.inner.staging.clone();
        let run = move || {
            let mut guard = staging.lock().expect("staging lock poisoned");
            if guard.is_none() {
                *guard = Some(Staging::open(&dir)?);
            }
            step(guard.as_mut().expect("opened above"))
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                tracing::warn!(%error, "snapshot transfer refused");
                Err(error.to_string())
            }
            Err(error) => Err(format!("snapshot staging failed: {error}")),
        }
    }

    /// Acknowledges the `held` bytes of the offered snapshot and, once it is `whole`, hands it
    /// to the driver.
    async fn acknowledge<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: &mut Framed<T, PeerCodec>,
        dialer: NodeId,
        term: Term,
        held: u64,
        whole: Option<(WireSnapshotMeta, Bytes)>,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        framed
            .send(PeerMessage::SnapshotAck { received: held })
            .await?;
        if let Some(whole) = whole {
            self.deliver_snapshot(dialer, term, whole, cancel).await?;
        }
        Ok(())
    }

    /// Hands a whole, checked snapshot to the driver as the `InstallSnapshot` it stands for.
    /// Waits for room in the inbox: the snapshot is too costly to drop.
    async fn deliver_snapshot(
        &self,
        dialer: NodeId,
        term: Term,
        (meta, data): (WireSnapshotMeta, Bytes),
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        tracing::info!(index = meta.index, bytes = data.len(), "snapshot received");
        let envelope = Envelope {
            from: dialer,
            to: self.inner.config.node_id,
            term,
            message: Message::InstallSnapshot {
                snapshot: Snapshot {
                    meta: meta.into(),
                    data,
                },
            },
        };
        let sent = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PeerError::Cancelled),
            sent = self.inner.deliver.send(E::from(envelope)) => sent,
        };
        sent.map_err(|_| PeerError::Cancelled)?;
        bump(&self.inner.counters.received, 1);
        Ok(())
    }
}

/// Tells the dialer why its snapshot transfer cannot go on here, and ends the connection (the
/// dialer's next offer starts again from what is staged).
async fn refuse_snapshot<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    reason: String,
) -> Result<(), PeerError> {
    let told = framed.send(PeerMessage::error(ErrorCode::BadRequest, reason.clone()));
    let _ = timeout(Duration::from_millis(100), told).await;
    Err(PeerError::Refused {
        code: ErrorCode::BadRequest,
        reason,
    })
}

/// Sends the refusal, closes the sending half, and reads (and drops) whatever the dialer had
/// already sent until it closes too (at most a short while): closing with unread data would
/// reset the connection, and a reset may destroy the refusal before the dialer reads it.
async fn refuse_and_close<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    code: ErrorCode,
    reason: &str,
) {
    if framed.send(PeerMessage::error(code, reason)).await.is_err() {
        return;
    }
    let _ = framed.get_mut().shutdown().await;
    let drain = async { while let Some(Ok(_)) = framed.next().await {} };
    let _ = timeout(REFUSAL_DRAIN, drain).await;
}

/// How long a refused connection waits for the dialer to close after the refusal.
const REFUSAL_DRAIN: Duration = Duration::from_millis(500);
