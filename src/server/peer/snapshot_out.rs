//! The leader's side of a snapshot transfer: one task per peer, on a connection of its own.
//!
//! The Raft core asks for a snapshot to be sent with an ordinary `InstallSnapshot` envelope.
//! [`Transport::send`](super::Transport::send) does not queue that one with the rest: it puts it
//! in the peer's snapshot slot (a `watch`, so only the latest request counts), and this task
//! streams it as `transfer.rs` describes, on a separate connection, so heartbeats, votes and
//! appends never wait behind snapshot bytes.
//!
//! - A request for the snapshot already on its way changes nothing (the core repeats its
//!   request while the follower shows no progress; the transfer simply goes on).
//! - A request for another snapshot abandons the current transfer for the new one.
//! - So does any envelope in a later term: this node is no longer the leader of the term the
//!   transfer was for, and what it would install could only be refused.
//! - A failed connection is redialed with backoff and the transfer resumes from the bytes the
//!   follower acknowledged, as its answer to the new offer says.
//!
//! What happens is counted in `raftlock_snapshot_transfers_total{peer, event}` (`started`,
//! `resumed`, `completed`, `abandoned`, `failed`) and
//! `raftlock_snapshot_sent_bytes_total{peer}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::outbound::{back_off, dial};
use super::transfer::{Outgoing, TransferError, WINDOW_BYTES};
use super::{or_cancel, PeerError, TransportConfig};
use crate::protocol::{ErrorCode, PeerMessage, WireSnapshotMeta};
use crate::raft::{Envelope, Message, NodeId, Term};

type Label = Vec<(&'static str, String)>;

/// The snapshot transfer counters of a node, by peer. Cheap to clone (the values are shared);
/// register them once with [`SnapshotMetrics::register`].
#[derive(Clone, Debug, Default)]
pub struct SnapshotMetrics {
    transfers: Family<Label, Counter>,
    sent_bytes: Family<Label, Counter>,
}

impl SnapshotMetrics {
    /// Adds the counters to `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "snapshot_transfers",
            "Snapshot transfers to a peer, by event: started, resumed (a connection that went on \
             from bytes the peer already held), completed, abandoned (a newer snapshot or term), \
             failed (a connection lost mid-transfer)",
            self.transfers.clone(),
        );
        registry.register(
            "snapshot_sent_bytes",
            "Snapshot bytes sent to a peer in chunks",
            self.sent_bytes.clone(),
        );
    }

    fn event(&self, peer: NodeId, event: &'static str) {
        self.transfers
            .get_or_create(&vec![
                ("peer", peer.to_string()),
                ("event", event.to_string()),
            ])
            .inc();
    }

    fn sent(&self, peer: NodeId, bytes: u64) {
        self.sent_bytes
            .get_or_create(&vec![("peer", peer.to_string())])
            .inc_by(bytes);
    }
}

/// The handle `Transport::send` keeps per peer: the snapshot slot and the latest term sent.
pub(super) struct SnapshotLane {
    slot: watch::Sender<Option<Envelope>>,
    term: Arc<AtomicU64>,
}

impl SnapshotLane {
    /// Notes the term of every envelope to the peer; takes the `InstallSnapshot` ones for the
    /// snapshot task and gives the others back.
    pub(super) fn route(&self, envelope: Envelope) -> Option<Envelope> {
        self.term.fetch_max(envelope.term, Ordering::Relaxed);
        if matches!(envelope.message, Message::InstallSnapshot { .. }) {
            self.slot.send_replace(Some(envelope));
            return None;
        }
        Some(envelope)
    }
}

/// Starts the snapshot task of `peer`: returns its lane, and the task to spawn.
pub(super) fn snapshot_lane(
    config: Arc<TransportConfig>,
    peer: NodeId,
    addr: String,
    cancel: CancellationToken,
) -> (SnapshotLane, impl std::future::Future<Output = ()>) {
    let (slot, requests) = watch::channel(None);
    let term = Arc::new(AtomicU64::new(0));
    let task = run_snapshots(config, peer, addr, requests, term.clone(), cancel);
    (SnapshotLane { slot, term }, task)
}

/// One transfer: the request it serves and its progress.
struct Transfer {
    /// The envelope's term: the leader's term when the core asked.
    term: Term,
    meta: WireSnapshotMeta,
    outgoing: Outgoing,
}

/// What identifies a request: the snapshot's index, term and size.
type Key = (u64, u64, u64);

fn key_of(envelope: &Envelope) -> Option<Key> {
    match &envelope.message {
        Message::InstallSnapshot { snapshot } => Some((
            snapshot.meta.index,
            snapshot.meta.term,
            snapshot.data.len() as u64,
        )),
        _ => None,
    }
}

impl Transfer {
    fn new(envelope: Envelope, chunk: usize) -> Option<Transfer> {
        let Message::InstallSnapshot { snapshot } = envelope.message else {
            return None;
        };
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let meta = WireSnapshotMeta {
            index,
            term,
            membership: snapshot.meta.membership.into(),
        };
        Some(Transfer {
            term: envelope.term,
            meta,
            outgoing: Outgoing::new(snapshot.data, index, term, chunk, WINDOW_BYTES),
        })
    }

    fn key(&self) -> Key {
        let id = self.outgoing.id();
        (id.index, id.term, id.size)
    }
}

/// Why a connection's stream stopped without an error.
enum Stopped {
    /// The follower holds every byte.
    Done,
    /// A newer request or term came: look at it.
    Interrupted,
}

async fn run_snapshots(
    config: Arc<TransportConfig>,
    peer: NodeId,
    addr: String,
    mut requests: watch::Receiver<Option<Envelope>>,
    term: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let metrics = &config.snapshot_metrics;
    let mut current: Option<Transfer> = None;
    let mut backoff = config.backoff_min;
    // Set when `changed()` returned: it marks the new value seen, so `has_changed` no longer
    // says so.
    let mut woken = false;
    loop {
        if std::mem::take(&mut woken) || requests.has_changed().unwrap_or(false) {
            let request = requests.borrow_and_update().clone();
            if let Some(request) = request {
                let same = current
                    .as_ref()
                    .is_some_and(|t| Some(t.key()) == key_of(&request) && !t.outgoing.is_done());
                if !same {
                    if current.as_ref().is_some_and(|t| !t.outgoing.is_done()) {
                        metrics.event(peer, "abandoned");
                    }
                    current = Transfer::new(request, config.snapshot_chunk);
                    if let Some(transfer) = &current {
                        metrics.event(peer, "started");
                        tracing::info!(
                            index = transfer.meta.index,
                            bytes = transfer.outgoing.id().size,
                            "streaming a snapshot"
                        );
                    }
                }
            }
        }
        if let Some(transfer) = &current {
            if term.load(Ordering::Relaxed) > transfer.term && !transfer.outgoing.is_done() {
                metrics.event(peer, "abandoned");
                tracing::info!("snapshot transfer abandoned: this node's term moved on");
                current = None;
            }
        }
        let Some(transfer) = current.as_mut().filter(|t| !t.outgoing.is_done()) else {
            // Nothing to send: wait for a request.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                changed = requests.changed() => match changed {
                    Ok(()) => woken = true,
                    Err(_) => return,
                },
            }
            continue;
        };
        let streamed = or_cancel(
            &cancel,
            stream(&config, peer, &addr, transfer, &requests, &term),
        )
        .await;
        match streamed {
            Ok(Stopped::Done) => {
                metrics.event(peer, "completed");
                tracing::info!(
                    index = transfer.meta.index,
                    bytes = transfer.outgoing.id().size,
                    "snapshot delivered"
                );
                backoff = config.backoff_min;
            }
            Ok(Stopped::Interrupted) => {}
            Err(PeerError::Cancelled) => return,
            Err(error) => {
                metrics.event(peer, "failed");
                tracing::debug!(
                    error = %crate::error_chain(&error),
                    acked = transfer.outgoing.acked(),
                    "snapshot connection lost; resuming after a backoff"
                );
                if !back_off(&mut backoff, config.backoff_max, &cancel).await {
                    return;
                }
            }
        }
    }
}

/// Streams `transfer` on a new connection until the follower holds all of it, a newer request
/// or term interrupts, or the connection fails.
async fn stream(
    config: &TransportConfig,
    peer: NodeId,
    addr: &str,
    transfer: &mut Transfer,
    requests: &watch::Receiver<Option<Envelope>>,
    term: &AtomicU64,
) -> Result<Stopped, PeerError> {
    let metrics = &config.snapshot_metrics;
    let framed = dial(config, peer, addr).await?;
    let (mut sink, mut incoming) = framed.split();
    let id = transfer.outgoing.id();
    let offer = PeerMessage::SnapshotOffer {
        term: transfer.term,
        meta: transfer.meta.clone(),
        size: id.size,
        crc32: id.crc32,
    };
    timeout(config.write_timeout, sink.send(offer))
        .await
        .map_err(|_| PeerError::Timeout { during: "offer" })??;
    let held = next_ack(config, &mut incoming).await?;
    transfer.outgoing.resume(held).map_err(refused)?;
    if held > 0 {
        metrics.event(peer, "resumed");
        tracing::debug!(
            held,
            size = id.size,
            "the follower holds part of the snapshot"
        );
    }
    loop {
        if transfer.outgoing.is_done() {
            return Ok(Stopped::Done);
        }
        let newer_request = requests.has_changed().unwrap_or(false)
            && requests.borrow().as_ref().and_then(key_of) != Some(transfer.key());
        if newer_request || term.load(Ordering::Relaxed) > transfer.term {
            return Ok(Stopped::Interrupted);
        }
        let mut fed = 0u64;
        while let Some(chunk) = transfer.outgoing.next_chunk() {
            let len = chunk.data.len() as u64;
            let message = PeerMessage::SnapshotChunk {
                offset: chunk.offset,
                data: chunk.data.to_vec(),
                crc32: chunk.crc32,
            };
            timeout(config.write_timeout, sink.feed(message))
                .await
                .map_err(|_| PeerError::Timeout { during: "write" })??;
            fed += len;
        }
        if fed > 0 {
            timeout(config.write_timeout, sink.flush())
                .await
                .map_err(|_| PeerError::Timeout { during: "write" })??;
            metrics.sent(peer, fed);
        }
        let held = next_ack(config, &mut incoming).await?;
        transfer.outgoing.on_ack(held).map_err(refused)?;
    }
}

/// Waits for the follower's next `SnapshotAck`. The follower syncs each chunk before it
/// answers, and checks the whole snapshot before the last answer, so this allows twice the
/// write deadline.
async fn next_ack<S>(config: &TransportConfig, incoming: &mut S) -> Result<u64, PeerError>
where
    S: futures::Stream<
            Item = Result<Result<PeerMessage, crate::protocol::FrameError>, crate::protocol::Error>,
        > + Unpin,
{
    let frame = timeout(config.write_timeout * 2, incoming.next())
        .await
        .map_err(|_| PeerError::Timeout {
            during: "snapshot acknowledgement",
        })?;
    match frame {
        None => Err(PeerError::Closed),
        Some(Err(error)) => Err(PeerError::Codec(error)),
        Some(Ok(Ok(PeerMessage::SnapshotAck { received }))) => Ok(received),
        Some(Ok(Ok(PeerMessage::Error { code, message }))) => {
            Err(PeerError::RefusedByPeer { code, message })
        }
        Some(Ok(other)) => Err(PeerError::Refused {
            code: ErrorCode::BadRequest,
            reason: format!("expected SnapshotAck, got {other:?}"),
        }),
    }
}

fn refused(error: TransferError) -> PeerError {
    PeerError::Refused {
        code: ErrorCode::BadRequest,
        reason: error.to_string(),
    }
}
