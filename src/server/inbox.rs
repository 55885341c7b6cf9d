//! The types the connections and the driver share, so neither imports the other: the events
//! of the driver's inbox, and the handles through which the driver answers a connection.
//!
//! A connection task turns each request into an [`Event::Client`] carrying a [`Reply`]; the
//! driver hands the request to the replica under a ticket and, when the replica answers that
//! ticket, sends the answer through the `Reply` into the connection's bounded queue.

use crate::auth::Principal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Request, Response};
use crate::raft::{Envelope, NodeId};
pub(crate) use crate::replica::LeaderInfo;

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
        /// Who sent it (`None` with authentication off).
        principal: Option<Principal>,
    },
    /// A Raft message from a peer (from the transport's inbound side).
    Peer(Envelope),
    /// Graceful shutdown: hand leadership over, refuse new requests, finish in-flight ones,
    /// sync, stop.
    Shutdown,
    /// A peer's process is gone (from the transport's outbound side: its connection ended and
    /// the immediate redial was refused).
    PeerDown(NodeId),
}

impl From<Envelope> for Event {
    fn from(envelope: Envelope) -> Event {
        Event::Peer(envelope)
    }
}

/// What the writer task receives.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A response to encode and send.
    Frame(Response),
    /// Flush what was queued before, then close the connection.
    Close,
}

/// The driver's way to answer a connection: a bounded queue it never waits on.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    pub(crate) outgoing: mpsc::Sender<Outgoing>,
    pub(crate) close: CancellationToken,
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) peer: SocketAddr,
}

impl ConnHandle {
    /// Queues `response` without waiting. A full queue means the client does not read its
    /// answers: it is disconnected rather than buffered for. A closed one is ignored.
    pub fn send(&self, response: Response) {
        match self.outgoing.try_send(Outgoing::Frame(response)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.close.is_cancelled() {
                    tracing::warn!(peer = %self.peer, "client does not read its answers; disconnecting");
                    self.close.cancel();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The handle through which the driver answers one request. It counts toward its connection's
/// in-flight limit until it is dropped (answered with [`Reply::finish`] or discarded).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) conn: ConnHandle,
}

impl Reply {
    /// Sends an interim answer (`Queued`); the request stays in flight.
    pub fn interim(&self, response: Response) {
        self.conn.send(response);
    }

    /// Sends the final answer.
    pub fn finish(self, response: Response) {
        self.conn.send(response);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
