//! The client-side lease: what this process knows, by its own monotonic clock, about how long
//! the cluster may still consider its session (and each of its grants) valid.
//!
//! # The deadline
//!
//! The leader renews a session's lease when a `KeepAlive` *reaches* it (`now + ttl` on the
//! leader's clock) and expires the session, through the log, only after that deadline passed
//! on its clock. A keep-alive is received after it was sent, so the client's estimate
//!
//! ```text
//! deadline = send instant of the last acknowledged keep-alive (or open) + ttl - margin(ttl)
//! margin(ttl) = ttl / 20 + 25 ms
//! ```
//!
//! ends no later than the leader's, provided the two clocks *run at rates* within 5 % of each
//! other over one TTL (the clocks' offsets do not matter: only instants of the local monotonic
//! clock are compared). Quartz oscillators differ by well under 0.01 %, NTP slews by at most
//! 0.05 %, so 5 % is a wide allowance for a virtual machine whose clock stalls or catches up;
//! the constant 25 ms covers the timer and scheduling lateness of whoever acts on the deadline
//! here. A new leader restarts every lease at its own `now + ttl`, which only moves the
//! cluster's deadline later. The same arithmetic bounds a grant's hold limit (see below), with
//! the hold instead of the TTL.
//!
//! # The guarantee
//!
//! If the rates of this process's monotonic clock and the leader's clock differ by less than
//! 5 % (and this machine is not suspended: the monotonic clock does not count suspend), then
//! until [`Lease::deadline`] the cluster has neither expired the session nor ended the grant
//! by its hold limit, so no other session can have been granted the lock in a conflicting mode
//! for those reasons. It says nothing about explicit ends (an administrative revoke, a release
//! or close by this client): those are reported as [`LostReason::Revoked`] or
//! [`LostReason::Closed`] as soon as this process learns of them. A caller that must never
//! overlap with the next holder stops its work before the deadline, and so must start stopping
//! at [`LeaseState::Jeopardy`].
//!
//! # States
//!
//! - [`LeaseState::Healthy`]: keep-alives are being confirmed in time.
//! - [`LeaseState::Jeopardy`]: no keep-alive was confirmed for [`JEOPARDY_FRACTION`] of the TTL
//!   (keep-alives are sent every third of it, so at least one attempt failed or is late), or a
//!   grant has used [`JEOPARDY_FRACTION`] of its hold limit. The lease may end at its deadline;
//!   a later confirmation returns it to `Healthy`.
//! - [`LeaseState::Lost`]: the deadline passed, or the server said the session expired or the
//!   grant was revoked, or this client closed it. Final: a lost lease never comes back.
//!
//! # Grants with a hold limit
//!
//! The leader starts a hold limit when it *applies* the grant, so the local start must be an
//! instant no later than that apply. For a grant answered at once, the acquire's first send
//! instant is such an instant. For a grant that waited in the queue the acquire's send instant
//! is still safe, but it may lie a whole hold limit in the past, leaving no time at all. The
//! library therefore renews such a hold at once with an `Extend` (exactly-once, like every
//! mutating request): the leader restarts the hold when it applies the `Extend`, which is after
//! that request was sent, so the `Extend`'s send instant becomes the hold's local start. Until
//! that `Extend` is answered the grant's lease counts from the acquire's send instant (and if
//! it fails, it stays so). Every later [`crate::client::LockGuard::extend`] moves the start
//! to its own send instant the same way.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The fraction of a TTL (or hold limit) after which, with no confirmed renewal, the lease is
/// in jeopardy.
pub const JEOPARDY_FRACTION: f64 = 0.5;

/// The fixed part of the drift margin: timer and scheduling lateness.
pub const DRIFT_MARGIN_FLOOR: Duration = Duration::from_millis(25);

/// How much earlier than `start + period` the local deadline falls: `period / 20` for a
/// clock-rate difference of up to 5 %, plus [`DRIFT_MARGIN_FLOOR`], never more than `period`.
pub fn drift_margin(period: Duration) -> Duration {
    (period / 20 + DRIFT_MARGIN_FLOOR).min(period)
}

/// The local deadline of a lease of `period` known to have started (on the cluster) no earlier
/// than `start`.
pub fn lease_deadline(start: Instant, period: Duration) -> Instant {
    start + (period - drift_margin(period))
}

/// When a lease of `period` started at `start` and not renewed since enters jeopardy (never
/// after its deadline).
pub fn jeopardy_at(start: Instant, period: Duration) -> Instant {
    (start + period.mul_f64(JEOPARDY_FRACTION)).min(lease_deadline(start, period))
}

/// Why a session or grant can no longer be relied on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The local lease deadline passed with no keep-alive confirmed (the cluster may have
    /// expired us).
    LeaseExpired,
    /// The server answered SessionExpired (or the session is otherwise gone on the server).
    SessionExpired,
    /// The grant's hold limit was reached (local deadline, or the server said so).
    HoldLimit,
    /// The server revoked the grant or the session (admin revoke, or Revoked push/answer).
    Revoked,
    /// This client closed the session / released the lock.
    Closed,
}

/// What the client knows, by its own clock, about a session or one grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Keep-alives are being confirmed in time.
    Healthy,
    /// No keep-alive confirmed for [`JEOPARDY_FRACTION`] of the TTL (or the hold limit is
    /// near): stop work now, the lease may end at `deadline`.
    Jeopardy,
    /// Gone: the cluster may already have granted the lock to someone else.
    Lost(LostReason),
}

impl LeaseState {
    /// True for [`LeaseState::Lost`].
    pub fn is_lost(self) -> bool {
        matches!(self, LeaseState::Lost(_))
    }
}

/// A snapshot of the local lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Healthy, in jeopardy, or lost (and why).
    pub state: LeaseState,
    /// The latest instant at which the cluster may still consider this session (grant) valid,
    /// conservatively early: send time of the last acknowledged keep-alive (or open) + ttl,
    /// less the documented drift margin; for a grant also capped by its hold limit.
    pub deadline: Instant,
}

/// What the session lease was last renewed with.
#[derive(Clone, Copy, Debug)]
struct Renewal {
    /// The send instant of the last confirmed keep-alive (or open); `None` until one is
    /// confirmed (a resumed session handle knows nothing yet).
    sent: Option<Instant>,
    /// The TTL the daemon confirmed.
    ttl: Duration,
}

/// A session's lease: the watch channel callers read and the renewal it is computed from.
#[derive(Debug)]
pub(crate) struct SessionLease {
    tx: watch::Sender<Lease>,
    renewal: Mutex<Renewal>,
}

impl SessionLease {
    /// A lease confirmed at `sent` (the open's send instant) for `ttl`; `None` for a handle that
    /// has no confirmation yet: in jeopardy with its deadline at `now` until one arrives.
    pub(crate) fn new(sent: Option<Instant>, ttl: Duration) -> SessionLease {
        let lease = match sent {
            Some(sent) => Lease {
                state: LeaseState::Healthy,
                deadline: lease_deadline(sent, ttl),
            },
            None => Lease {
                state: LeaseState::Jeopardy,
                deadline: Instant::now(),
            },
        };
        SessionLease {
            tx: watch::channel(lease).0,
            renewal: Mutex::new(Renewal { sent, ttl }),
        }
    }

    fn renewal(&self) -> Renewal {
        *self
            .renewal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current lease.
    pub(crate) fn current(&self) -> Lease {
        *self.tx.borrow()
    }

    /// A receiver of every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Lease> {
        self.tx.subscribe()
    }

    /// True once a keep-alive (or the open) was confirmed.
    pub(crate) fn confirmed(&self) -> bool {
        self.renewal().sent.is_some()
    }

    /// A keep-alive sent at `sent` was confirmed with `ttl`: healthy again, with a deadline
    /// counted from `sent` (never moved earlier by a late answer to an older keep-alive).
    /// A lost lease stays lost.
    pub(crate) fn renewed(&self, sent: Instant, ttl: Duration) {
        let deadline = lease_deadline(sent, ttl);
        self.tx.send_if_modified(|lease| {
            if lease.state.is_lost() {
                return false;
            }
            let mut renewal = self
                .renewal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if renewal.sent.is_some_and(|last| last > sent) {
                return false;
            }
            *renewal = Renewal {
                sent: Some(sent),
                ttl,
            };
            let next = Lease {
                state: LeaseState::Healthy,
                deadline,
            };
            let changed = *lease != next;
            *lease = next;
            changed
        });
    }

    /// Ends the lease for `reason`, unless it already ended.
    pub(crate) fn lose(&self, reason: LostReason) {
        self.tx.send_if_modified(|lease| {
            if lease.state.is_lost() {
                return false;
            }
            lease.state = LeaseState::Lost(reason);
            true
        });
    }

    /// Marks the lease closed by this client, whatever it was (a closed session is closed).
    pub(crate) fn close(&self) {
        self.tx
            .send_modify(|lease| lease.state = LeaseState::Lost(LostReason::Closed));
    }

    /// Moves the lease to jeopardy at its jeopardy instant and to `Lost(LeaseExpired)` at its
    /// deadline, following renewals; returns once it is lost. Before the first confirmation
    /// it only waits for one (the keep-alive loop decides when to give up then).
    pub(crate) async fn watchdog(&self) {
        let mut rx = self.tx.subscribe();
        loop {
            let lease = *rx.borrow_and_update();
            if lease.state.is_lost() {
                return;
            }
            let Renewal { sent, ttl } = self.renewal();
            let Some(sent) = sent else {
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let jeopardy = jeopardy_at(sent, ttl);
            tokio::select! {
                biased;
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(lease.deadline) => {
                    self.expire_if_unrenewed(lease.deadline);
                }
                _ = tokio::time::sleep_until(jeopardy), if lease.state == LeaseState::Healthy => {
                    self.tx.send_if_modified(|now| {
                        let due = *now == lease;
                        if due {
                            now.state = LeaseState::Jeopardy;
                        }
                        due
                    });
                }
            }
        }
    }

    /// `Lost(LeaseExpired)`, unless a renewal moved the deadline past `deadline` meanwhile.
    fn expire_if_unrenewed(&self, deadline: Instant) {
        self.tx.send_if_modified(|now| {
            let due = !now.state.is_lost() && now.deadline <= deadline;
            if due {
                now.state = LeaseState::Lost(LostReason::LeaseExpired);
            }
            due
        });
    }
}

/// A grant's hold limit, as the client knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// No hold limit: the grant lasts as long as the session.
    Unlimited,
    /// The hold started on the cluster no earlier than `start` and lasts `limit`.
    Limited {
        /// An instant no later than the cluster's start of the hold.
        start: Instant,
        /// The hold limit.
        limit: Duration,
    },
    /// The grant ended for this reason.
    Ended(LostReason),
}

/// The lease of one grant at `now`: the session's lease combined with the hold limit, and the
/// next instant at which it changes by itself (`None`: only a new input changes it).
pub(crate) fn grant_lease(session: Lease, hold: Hold, now: Instant) -> (Lease, Option<Instant>) {
    let (start, limit) = match hold {
        Hold::Unlimited => return (session, None),
        Hold::Ended(reason) => {
            let lease = Lease {
                state: LeaseState::Lost(reason),
                deadline: session.deadline,
            };
            return (lease, None);
        }
        Hold::Limited { start, limit } => (start, limit),
    };
    let hold_deadline = lease_deadline(start, limit);
    let hold_jeopardy = jeopardy_at(start, limit);
    let deadline = session.deadline.min(hold_deadline);
    let state = match session.state {
        LeaseState::Lost(reason) => LeaseState::Lost(reason),
        _ if now >= hold_deadline => LeaseState::Lost(LostReason::HoldLimit),
        _ if now >= hold_jeopardy => LeaseState::Jeopardy,
        state => state,
    };
    let wake = match state {
        LeaseState::Lost(_) => None,
        LeaseState::Jeopardy => Some(hold_deadline),
        LeaseState::Healthy => Some(hold_jeopardy),
    };
    (Lease { state, deadline }, wake)
}

/// Keeps `out` equal to the grant lease of `session` and `hold` as time passes; returns once
/// it is lost (or an input is gone).
pub(crate) async fn watch_grant(
    mut session: watch::Receiver<Lease>,
    mut hold: watch::Receiver<Hold>,
    out: &watch::Sender<Lease>,
) {
    loop {
        let (lease, wake) = grant_lease(
            *session.borrow_and_update(),
            *hold.borrow_and_update(),
            Instant::now(),
        );
        out.send_if_modified(|current| {
            // Lost is final, whatever the inputs say later.
            let changed = !current.state.is_lost() && *current != lease;
            if changed {
                *current = lease;
            }
            changed
        });
        if out.borrow().state.is_lost() {
            return;
        }
        tokio::select! {
            changed = session.changed() => if changed.is_err() { return },
            changed = hold.changed() => if changed.is_err() { return },
            _ = sleep_until_opt(wake) => {}
        }
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    /// Lets spawned tasks run after the paused clock moved.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn the_margin_is_a_twentieth_plus_the_floor_and_never_exceeds_the_period() {
        assert_eq!(drift_margin(TTL), Duration::from_millis(525));
        assert_eq!(
            drift_margin(Duration::from_millis(1000)),
            Duration::from_millis(75)
        );
        assert_eq!(
            drift_margin(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_and_jeopardy_count_from_the_send_instant() {
        let sent = Instant::now();
        assert_eq!(
            lease_deadline(sent, TTL),
            sent + Duration::from_millis(9475)
        );
        assert_eq!(jeopardy_at(sent, TTL), sent + Duration::from_secs(5));
        // A tiny period: jeopardy never comes after the deadline.
        let tiny = Duration::from_millis(20);
        assert_eq!(jeopardy_at(sent, tiny), lease_deadline(sent, tiny));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrenewed_session_goes_jeopardy_then_lost_at_the_deadline() {
        let opened = Instant::now();
        let lease = std::sync::Arc::new(SessionLease::new(Some(opened), TTL));
        let mut rx = lease.subscribe();
        let watchdog = tokio::spawn({
            let lease = lease.clone();
            async move { lease.watchdog().await }
        });
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Healthy);

        tokio::time::advance(Duration::from_millis(4999)).await;
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Healthy);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Jeopardy);
        assert_eq!(
            lease.current().deadline,
            opened + Duration::from_millis(9475)
        );

        tokio::time::advance(Duration::from_millis(4474)).await;
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Jeopardy);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(
            lease.current().state,
            LeaseState::Lost(LostReason::LeaseExpired)
        );
        assert!(rx.has_changed().unwrap());
        watchdog.await.unwrap();

        // A late confirmation does not bring it back.
        lease.renewed(Instant::now(), TTL);
        assert_eq!(
            lease.current().state,
            LeaseState::Lost(LostReason::LeaseExpired)
        );
        rx.mark_unchanged();
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_restores_health_and_moves_the_deadline_from_its_send_instant() {
        let opened = Instant::now();
        let lease = std::sync::Arc::new(SessionLease::new(Some(opened), TTL));
        let watchdog = tokio::spawn({
            let lease = lease.clone();
            async move { lease.watchdog().await }
        });
        tokio::time::advance(Duration::from_secs(6)).await;
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Jeopardy);

        // A keep-alive sent at 3 s and answered now.
        let sent = opened + Duration::from_secs(3);
        lease.renewed(sent, TTL);
        settle().await;
        assert_eq!(
            lease.current(),
            Lease {
                state: LeaseState::Healthy,
                deadline: sent + Duration::from_millis(9475),
            }
        );
        // An older keep-alive answered later changes nothing.
        lease.renewed(opened + Duration::from_secs(1), TTL);
        assert_eq!(lease.current().deadline, sent + Duration::from_millis(9475));

        // Jeopardy at 3 s + 5 s, lost at 3 s + 9.475 s, and not at the old deadline.
        tokio::time::advance(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Jeopardy);
        tokio::time::advance(Duration::from_millis(4474)).await;
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Jeopardy);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(
            lease.current().state,
            LeaseState::Lost(LostReason::LeaseExpired)
        );
        watchdog.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_handle_waits_for_its_first_renewal() {
        let lease = std::sync::Arc::new(SessionLease::new(None, TTL));
        assert_eq!(lease.current().state, LeaseState::Jeopardy);
        assert!(!lease.confirmed());
        let watchdog = tokio::spawn({
            let lease = lease.clone();
            async move { lease.watchdog().await }
        });
        tokio::time::advance(TTL * 2).await;
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Jeopardy);
        let sent = Instant::now();
        lease.renewed(sent, TTL);
        settle().await;
        assert_eq!(lease.current().state, LeaseState::Healthy);
        assert!(lease.confirmed());
        lease.lose(LostReason::SessionExpired);
        lease.lose(LostReason::LeaseExpired);
        assert_eq!(
            lease.current().state,
            LeaseState::Lost(LostReason::SessionExpired)
        );
        watchdog.await.unwrap();
        lease.close();
        assert_eq!(lease.current().state, LeaseState::Lost(LostReason::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_lease_is_capped_by_its_hold_limit() {
        let now = Instant::now();
        let session = Lease {
            state: LeaseState::Healthy,
            deadline: now + Duration::from_millis(9475),
        };
        let hold = Hold::Limited {
            start: now,
            limit: Duration::from_secs(2),
        };
        // 2 s hold: margin 125 ms, jeopardy at 1 s.
        let hold_deadline = now + Duration::from_millis(1875);
        assert_eq!(
            grant_lease(session, hold, now),
            (
                Lease {
                    state: LeaseState::Healthy,
                    deadline: hold_deadline
                },
                Some(now + Duration::from_secs(1))
            )
        );
        assert_eq!(
            grant_lease(session, hold, now + Duration::from_secs(1)),
            (
                Lease {
                    state: LeaseState::Jeopardy,
                    deadline: hold_deadline
                },
                Some(hold_deadline)
            )
        );
        assert_eq!(
            grant_lease(session, hold, hold_deadline).0.state,
            LeaseState::Lost(LostReason::HoldLimit)
        );
        // A session in jeopardy makes the grant so; a lost session makes it lost first.
        let shaky = Lease {
            state: LeaseState::Jeopardy,
            ..session
        };
        assert_eq!(grant_lease(shaky, hold, now).0.state, LeaseState::Jeopardy);
        let gone = Lease {
            state: LeaseState::Lost(LostReason::SessionExpired),
            ..session
        };
        assert_eq!(
            grant_lease(gone, hold, hold_deadline).0.state,
            LeaseState::Lost(LostReason::SessionExpired)
        );
        // A hold longer than the session: the session's deadline rules.
        let long = Hold::Limited {
            start: now,
            limit: Duration::from_secs(60),
        };
        assert_eq!(grant_lease(session, long, now).0.deadline, session.deadline);
        assert_eq!(grant_lease(session, Hold::Unlimited, now), (session, None));
        assert_eq!(
            grant_lease(session, Hold::Ended(LostReason::Revoked), now)
                .0
                .state,
            LeaseState::Lost(LostReason::Revoked)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_grant_watcher_follows_the_clock_and_renewed_holds() {
        let start = Instant::now();
        let (session_tx, session_rx) = watch::channel(Lease {
            state: LeaseState::Healthy,
            deadline: start + Duration::from_secs(60),
        });
        let (hold_tx, hold_rx) = watch::channel(Hold::Limited {
            start,
            limit: Duration::from_secs(2),
        });
        let out = std::sync::Arc::new(watch::channel(session_rx.borrow().to_owned()).0);
        let watcher = tokio::spawn({
            let out = out.clone();
            async move { watch_grant(session_rx, hold_rx, &out).await }
        });
        settle().await;
        assert_eq!(out.borrow().state, LeaseState::Healthy);
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(out.borrow().state, LeaseState::Jeopardy);

        // Renewed (an Extend sent at 1.5 s): healthy until 2.5 s, lost at 3.375 s.
        let renewed = start + Duration::from_millis(1500);
        hold_tx.send_replace(Hold::Limited {
            start: renewed,
            limit: Duration::from_secs(2),
        });
        settle().await;
        assert_eq!(out.borrow().state, LeaseState::Healthy);
        assert_eq!(out.borrow().deadline, renewed + Duration::from_millis(1875));
        tokio::time::advance(Duration::from_millis(2374)).await;
        settle().await;
        assert_eq!(out.borrow().state, LeaseState::Jeopardy);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(out.borrow().state, LeaseState::Lost(LostReason::HoldLimit));
        watcher.await.unwrap();
        drop(session_tx);
    }
}
