//! Where push events go: for each session, the connections that have spoken for it.
//!
//! The replica decides pushes ([`crate::replica::Effect::Push`]); the driver only needs to
//! know which connections want them. A connection joins a session's list when the replica
//! answers one of its requests for that session with anything but an error: the answer proves
//! the request carried the session's valid token (an `OpenSession` joins through the session
//! its `SessionOpened` names). A closed connection leaves every list at the next push to it or
//! at the next sweep; a session leaves the map when it closes or its `SessionExpired` push has
//! gone out.
//!
//! A push never blocks the driver and never costs a connection: it is offered to the
//! connection's queue with `try_send`, and dropped if that would leave less room than the
//! answers of the requests in flight may need (an interim and a final one each; a full queue
//! for an answer disconnects the client). Pushes are hints.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::inbox::{ConnHandle, Outgoing};
use crate::lockspace::SessionId;
use crate::protocol::{Request, Response};

/// Session → the connections that spoke for it.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    by_session: HashMap<SessionId, Vec<ConnHandle>>,
    /// The map's size after the last sweep of closed connections; the next sweep runs when it
    /// has doubled (amortized constant cost per join).
    swept_at: usize,
}

impl Subscribers {
    /// Follows one answer to a request for `session` (from [`request_session`], or the session
    /// `SessionOpened` names): a successful answer joins the connection, a closed session
    /// leaves the map.
    pub(crate) fn answered(
        &mut self,
        session: Option<SessionId>,
        conn: &ConnHandle,
        response: &Response,
    ) {
        let session = match response {
            Response::SessionOpened { session, .. } => *session,
            Response::SessionClosed { .. } => {
                if let Some(session) = session {
                    self.by_session.remove(&session);
                }
                return;
            }
            Response::Error { .. } => return,
            _ => match session {
                Some(session) => session,
                None => return,
            },
        };
        let conns = self.by_session.entry(session).or_default();
        if !conns
            .iter()
            .any(|c| c.outgoing.same_channel(&conn.outgoing))
        {
            conns.push(conn.clone());
            if self.by_session.len() > self.swept_at.max(64) * 2 {
                self.sweep();
            }
        }
    }

    /// Offers `event` to every live connection of `session`, dropping it where the queue is
    /// full; forgets closed connections, and the session after its `SessionExpired`.
    pub(crate) fn push(&mut self, session: SessionId, event: Response) {
        let ended = matches!(event, Response::SessionExpired { .. });
        let Some(conns) = self.by_session.get_mut(&session) else {
            return;
        };
        conns.retain(|conn| {
            if conn.close.is_cancelled() {
                return false;
            }
            let reserved = 2 * conn.in_flight.load(Ordering::Relaxed);
            if conn.outgoing.capacity() <= reserved {
                tracing::debug!(peer = %conn.peer, session, "push dropped: queue needed for answers");
                return !conn.outgoing.is_closed();
            }
            match conn.outgoing.try_send(Outgoing::Frame(event.clone())) {
                Ok(()) => true,
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(peer = %conn.peer, session, "push dropped: queue full");
                    true
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if ended || conns.is_empty() {
            self.by_session.remove(&session);
        }
    }

    /// Drops closed connections and the sessions left without any.
    fn sweep(&mut self) {
        self.by_session.retain(|_, conns| {
            conns.retain(|c| !c.close.is_cancelled() && !c.outgoing.is_closed());
            !conns.is_empty()
        });
        self.swept_at = self.by_session.len();
    }

    /// How many sessions have a connection listed (for tests).
    #[cfg(test)]
    pub(crate) fn sessions(&self) -> usize {
        self.by_session.len()
    }
}

/// The session a request speaks for with its token, if any.
pub(crate) fn request_session(request: &Request) -> Option<SessionId> {
    match request {
        Request::KeepAlive { session, .. }
        | Request::CloseSession { session, .. }
        | Request::Acquire { session, .. }
        | Request::Release { session, .. }
        | Request::Cancel { session, .. }
        | Request::Extend { session, .. }
        | Request::Append { session, .. }
        | Request::Truncate { session, .. }
        | Request::Delete { session, .. } => Some(*session),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn conn(capacity: usize) -> (ConnHandle, mpsc::Receiver<Outgoing>) {
        let (outgoing, rx) = mpsc::channel(capacity);
        let handle = ConnHandle {
            outgoing,
            close: CancellationToken::new(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            peer: "127.0.0.1:1".parse().expect("address"),
        };
        (handle, rx)
    }

    fn expiring(session: SessionId) -> Response {
        Response::SessionExpiring {
            id: 0,
            session,
            left_ms: 5,
        }
    }

    fn frames(rx: &mut mpsc::Receiver<Outgoing>) -> usize {
        let mut n = 0;
        while let Ok(Outgoing::Frame(_)) = rx.try_recv() {
            n += 1;
        }
        n
    }

    #[test]
    fn only_connections_with_a_successful_answer_get_pushes_once_each() {
        let mut subs = Subscribers::default();
        let (a, mut a_rx) = conn(8);
        let (b, mut b_rx) = conn(8);
        let kept = Response::KeptAlive { id: 1, ttl_ms: 10 };
        subs.answered(Some(7), &a, &kept);
        subs.answered(Some(7), &a, &kept);
        let refused = Response::error(2, crate::protocol::ErrorCode::SessionExpired, "no");
        subs.answered(Some(7), &b, &refused);
        subs.push(7, expiring(7));
        assert_eq!(frames(&mut a_rx), 1);
        assert_eq!(frames(&mut b_rx), 0);
    }

    #[test]
    fn a_full_queue_drops_the_push_and_keeps_the_connection() {
        let mut subs = Subscribers::default();
        let (a, mut a_rx) = conn(1);
        subs.answered(Some(3), &a, &Response::KeptAlive { id: 1, ttl_ms: 10 });
        subs.push(3, expiring(3));
        subs.push(3, expiring(3));
        assert!(!a.close.is_cancelled());
        assert_eq!(frames(&mut a_rx), 1);
        subs.push(3, expiring(3));
        assert_eq!(frames(&mut a_rx), 1);
    }

    #[test]
    fn a_push_never_takes_the_room_of_answers_in_flight() {
        let mut subs = Subscribers::default();
        let (a, mut a_rx) = conn(4);
        subs.answered(Some(3), &a, &Response::KeptAlive { id: 1, ttl_ms: 10 });
        a.in_flight.store(1, Ordering::Relaxed);
        subs.push(3, expiring(3));
        subs.push(3, expiring(3));
        subs.push(3, expiring(3));
        // Two of four slots stay free for the in-flight request's interim and final answer.
        assert_eq!(frames(&mut a_rx), 2);
        assert!(!a.close.is_cancelled());
    }

    #[test]
    fn closed_connections_and_ended_sessions_leave_the_map() {
        let mut subs = Subscribers::default();
        let (a, a_rx) = conn(4);
        let opened = Response::SessionOpened {
            id: 1,
            session: 9,
            token: 1,
            ttl_ms: 10,
        };
        subs.answered(None, &a, &opened);
        assert_eq!(subs.sessions(), 1);
        drop(a_rx);
        subs.push(9, expiring(9));
        assert_eq!(subs.sessions(), 0);

        let (b, _b_rx) = conn(4);
        subs.answered(Some(4), &b, &Response::KeptAlive { id: 1, ttl_ms: 10 });
        subs.push(
            4,
            Response::SessionExpired {
                id: 0,
                session: 4,
                reason: crate::protocol::PushReason::Expired,
            },
        );
        assert_eq!(subs.sessions(), 0);
        subs.answered(Some(5), &b, &Response::KeptAlive { id: 1, ttl_ms: 10 });
        subs.answered(Some(5), &b, &Response::SessionClosed { id: 2 });
        assert_eq!(subs.sessions(), 0);
    }
}
