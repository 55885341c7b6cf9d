//! Push events from the daemon, routed to the sessions they name.
//!
//! The leader pushes frames that answer no request (`id` 0: `Revoked`, `QueuePosition`,
//! `HoldExpiring`, `SessionExpiring`, `SessionExpired`; protocol.md §5). The connection's
//! reader hands each one to the client's [`PushRouter`], which broadcasts it to every handle of
//! the session it names. Pushes are hints that may be lost: a [`super::Session`] uses them to
//! end a lease *sooner* (a `Revoked` ends the grant's lease at once, a `SessionExpired` the
//! session's), never to keep one alive.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::lockspace::SessionId;
use crate::protocol::Response;

/// Events buffered per session for a slow subscriber; older ones are dropped (hints).
const CAPACITY: usize = 64;

/// Session → the broadcast its handles subscribe to.
#[derive(Debug, Default)]
pub(crate) struct PushRouter {
    routes: Mutex<HashMap<SessionId, broadcast::Sender<Response>>>,
}

impl PushRouter {
    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, broadcast::Sender<Response>>> {
        // A panic while holding this short lock is a bug; recover the data anyway.
        self.routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a push to the handles of the session it names (dropped if there are none).
    pub(crate) fn deliver(&self, event: Response) {
        let Some(session) = event.push_session() else {
            return;
        };
        if let Some(route) = self.routes().get(&session) {
            let _ = route.send(event);
        }
    }

    /// A receiver of `session`'s pushes from now on. Forgets sessions nobody listens to.
    pub(crate) fn subscribe(&self, session: SessionId) -> broadcast::Receiver<Response> {
        let mut routes = self.routes();
        routes.retain(|_, route| route.receiver_count() > 0);
        routes
            .entry(session)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_reaches_every_subscriber_of_its_session_only() {
        let router = PushRouter::default();
        let mut a1 = router.subscribe(1);
        let mut a2 = router.subscribe(1);
        let mut b = router.subscribe(2);
        let event = Response::SessionExpiring {
            id: 0,
            session: 1,
            left_ms: 10,
        };
        router.deliver(event.clone());
        router.deliver(Response::Released { id: 3 });
        assert_eq!(a1.try_recv().ok(), Some(event.clone()));
        assert_eq!(a2.try_recv().ok(), Some(event));
        assert!(b.try_recv().is_err());
        assert!(a1.try_recv().is_err(), "an answer is not a push");
    }
}
