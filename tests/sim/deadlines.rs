//! The deadline invariants, checked against one host's own clock.
//!
//! Time never enters the replicated state: only the leader reads its clock, and when a lease,
//! a bounded wait or a hold limit passes it proposes `ExpireSession`, `ExpireWait` or
//! `ExpireHold`. This module watches a host from outside the replica and says when each of
//! those deadlines is due, from what the host applied and answered, and then checks what the
//! leader proposes:
//!
//! - **never early**: an expiry comes at least its bound after the deadline started on this
//!   leader, and never before the leader took office (a new leader cannot know when the last
//!   keep-alive reached the old one, so it restarts every deadline);
//! - **exactly once**: in one term the leader proposes each expiry once (a lease again only
//!   after a keep-alive renewed it; a hold again only after an `Extend` restarted it);
//! - **an Extend wins**: an `ExpireHold` the leader proposed before an `Extend` of that hold
//!   was applied there never ends the grant (the holder was told `Extended`);
//! - **never lost**: a lease or hold limit that is due is proposed within [`LATE_BOUND_MS`] while
//!   this node still leads, counted from when it last resumed if it was paused. (Waits are checked for the first two only: a retried `Acquire` of a
//!   queued request restarts its wait on the leader, which a watcher cannot tell from here.)
//!
//! When a deadline starts, as the daemon's replica defines it: a lease when the `OpenSession`
//! is applied (a replayed open too) or a `KeepAlive` is answered; a wait when its `Acquire` is
//! applied `Queued`; a hold when its grant is applied (directly or as a waiter's notification)
//! or an `Extend` of it is, fresh (a retried acquire or extend answered from the exactly-once
//! table restarts no hold); all of them, at the latest, when this node took office.

use std::collections::BTreeMap;

use raftlock::lockspace::{Applied, Command, Fence, LockSpace, Outcome, Seq, SessionId};
use raftlock::raft::Index;

/// How long (ms, the host's clock) past its due time a lease or hold expiry may still be
/// unproposed on a node that leads. Longer than an aborted leadership transfer (at most an
/// election timeout, during which the leader can propose nothing), plus ticks and fsyncs.
pub const LATE_BOUND_MS: u64 = 2 * 600 + 100;

/// One deadline the leader keeps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Lease(SessionId),
    Wait(SessionId, Seq),
    Hold(SessionId, String, Fence),
}

/// What a host's deadlines started from, and what it proposed, on its own clock (ms).
#[derive(Debug, Default)]
pub struct Deadlines {
    /// When this host started leading its current term; `None` while it does not lead.
    lead_since: Option<u64>,
    /// The last time each deadline (re)started here.
    starts: BTreeMap<Timer, At>,
    /// The expiries proposed in the current term, with when; a hold's with its start index.
    proposed: BTreeMap<(Timer, Option<Index>), At>,
    /// When an `Extend` last restarted each hold (applied fresh: a replayed answer restarts
    /// nothing in the state).
    extended: BTreeMap<Timer, At>,
    /// Counts what this watch is told, to order events of the same millisecond.
    events: u64,
    /// When the host last resumed from a pause: lateness counts from then at the earliest (a
    /// paused node does nothing, and a leadership transfer it had begun, which blocks every
    /// proposal, only times out in ticks it has run since).
    resumed: u64,
}

/// When something happened: the host's clock (ms), and the order of events within it.
#[derive(Clone, Copy, Debug)]
struct At {
    ms: u64,
    event: u64,
}

impl Deadlines {
    fn at(&mut self, ms: u64) -> At {
        self.events += 1;
        At {
            ms,
            event: self.events,
        }
    }

    /// The host took office (`Some(now)`) or stopped leading (`None`).
    pub fn led(&mut self, now: Option<u64>) {
        self.lead_since = now;
        self.proposed.clear();
    }

    /// The host resumed from a pause at `now`.
    pub fn resumed(&mut self, now: u64) {
        self.resumed = now;
    }

    /// The host answered `KeptAlive` for `session`: its lease restarts.
    pub fn kept_alive(&mut self, session: SessionId, now: u64) {
        let at = self.at(now);
        self.starts.insert(Timer::Lease(session), at);
    }

    /// The host applied `command` with `applied`, reaching `space`: records every deadline
    /// it (re)starts, and forgets those it ends. Fails if it ended a hold by an expiry that this
    /// host proposed before an `Extend` restarted the hold (the holder was told `Extended`).
    pub fn applied(
        &mut self,
        host: u64,
        now: u64,
        index: Index,
        command: &Command,
        applied: &Applied,
        space: &LockSpace,
    ) -> Result<(), String> {
        if let (
            Command::ExpireHold {
                session,
                lock,
                fence,
                since,
            },
            Outcome::Released,
        ) = (command, &applied.outcome)
        {
            let timer = Timer::Hold(*session, lock.clone(), *fence);
            let proposed = self.proposed.get(&(timer.clone(), *since));
            let restarted = self.extended.get(&timer);
            if let (Some(proposed), Some(restarted)) = (proposed, restarted) {
                if restarted.event > proposed.event {
                    return Err(format!(
                        "deadline: n{host} applied {command:?}, proposed at {} ms, after an \
                         Extend restarted the hold at {} ms: the holder was told Extended and \
                         its grant ended anyway",
                        proposed.ms, restarted.ms
                    ));
                }
            }
        }
        let now = self.at(now);
        match (command, &applied.outcome) {
            (_, Outcome::SessionOpened { session, .. }) => {
                self.starts.insert(Timer::Lease(*session), now);
            }
            (
                Command::CloseSession { session, .. }
                | Command::ExpireSession { session }
                | Command::RevokeSession { session },
                _,
            ) => {
                let session = *session;
                let other = |timer: &Timer, _: &mut At| match timer {
                    Timer::Lease(s) | Timer::Wait(s, _) | Timer::Hold(s, _, _) => *s != session,
                };
                self.starts.retain(other);
                self.extended.retain(other);
            }
            (
                Command::Acquire {
                    session,
                    lock,
                    hold_ms: Some(_),
                    ..
                },
                Outcome::Granted { fence },
            ) => {
                // A retried acquire is answered Granted again but starts nothing.
                let fresh = space
                    .limited_hold(lock, *session)
                    .is_some_and(|hold| hold.fence == *fence && hold.since == index);
                if fresh {
                    self.starts
                        .insert(Timer::Hold(*session, lock.clone(), *fence), now);
                }
            }
            (
                Command::Extend {
                    session,
                    lock,
                    fence,
                    ..
                },
                Outcome::Extended { .. },
            ) => {
                let timer = Timer::Hold(*session, lock.clone(), *fence);
                let fresh = space
                    .limited_hold(lock, *session)
                    .is_some_and(|hold| hold.since == index);
                if fresh {
                    self.extended.insert(timer.clone(), now);
                    self.starts.insert(timer, now);
                }
            }
            (Command::Acquire { session, seq, .. }, Outcome::Queued { .. }) => {
                self.starts.insert(Timer::Wait(*session, *seq), now);
            }
            _ => {}
        }
        for note in &applied.notifications {
            self.starts.remove(&Timer::Wait(note.session, note.seq));
            let Outcome::Granted { fence } = note.outcome else {
                continue;
            };
            // A granted waiter's hold limit, if it has one, starts now.
            let hold = space
                .limited_holds()
                .into_iter()
                .find(|h| h.session == note.session && h.fence == fence);
            if let Some(hold) = hold {
                self.starts
                    .insert(Timer::Hold(hold.session, hold.lock, fence), now);
            }
        }
        Ok(())
    }

    /// When `timer` started, as this host sees it: its own start, and no earlier than this
    /// host took office.
    fn from(&self, timer: &Timer, lead_since: u64) -> u64 {
        self.starts.get(timer).map_or(0, |at| at.ms).max(lead_since)
    }

    /// The host, leading, proposed `command` at `now`: checks it is neither early nor a
    /// repeat. `space` is the host's applied state when it proposed.
    pub fn proposed(
        &mut self,
        host: u64,
        command: &Command,
        space: &LockSpace,
        now: u64,
    ) -> Result<(), String> {
        let Some(lead_since) = self.lead_since else {
            return Ok(());
        };
        let (timer, since, bound) = match command {
            Command::ExpireSession { session } => {
                let Some(info) = space.session(*session) else {
                    return Ok(());
                };
                (Timer::Lease(*session), None, info.ttl_ms)
            }
            Command::ExpireWait { session, seq, .. } => {
                let wait = space
                    .bounded_waits()
                    .into_iter()
                    .find(|w| w.session == *session && w.seq == *seq);
                let Some(wait_ms) = wait.and_then(|w| w.wait_ms) else {
                    return Ok(());
                };
                (Timer::Wait(*session, *seq), None, wait_ms)
            }
            Command::ExpireHold {
                session,
                lock,
                fence,
                since,
            } => {
                let Some(hold) = space.limited_hold(lock, *session) else {
                    return Ok(());
                };
                if hold.fence != *fence {
                    return Ok(());
                }
                (
                    Timer::Hold(*session, lock.clone(), *fence),
                    *since,
                    hold.hold_ms,
                )
            }
            _ => return Ok(()),
        };
        let from = self.from(&timer, lead_since);
        if now < from + bound {
            return Err(format!(
                "deadline: n{host} proposed {command:?} at {now} ms, {} ms after it took office \
                 or the deadline last started (at {from} ms), before its bound of {bound} ms",
                now - from
            ));
        }
        let key = (timer, since);
        if let Some(&earlier) = self.proposed.get(&key) {
            let renewed = self
                .starts
                .get(&key.0)
                .is_some_and(|start| start.event > earlier.event);
            if !renewed {
                return Err(format!(
                    "deadline: n{host} proposed {command:?} again at {now} ms; it already did \
                     at {} ms in this term and nothing restarted the deadline since",
                    earlier.ms
                ));
            }
        }
        let at = self.at(now);
        self.proposed.insert(key, at);
        Ok(())
    }

    /// The host leads at `now` with applied state `space`: every lease and hold limit that
    /// is due by more than [`LATE_BOUND_MS`] must have had its expiry proposed.
    pub fn late(&self, host: u64, space: &LockSpace, now: u64) -> Result<(), String> {
        let Some(lead_since) = self.lead_since else {
            return Ok(());
        };
        // Due more than the bound ago, and not proposed since the deadline last started.
        let unproposed = |timer: &Timer, bound: u64| {
            let from = self.from(timer, lead_since);
            let due = from + bound;
            let proposed = self
                .proposed
                .iter()
                .any(|((t, _), at)| t == timer && at.ms >= from);
            (now > due.max(self.resumed) + LATE_BOUND_MS && !proposed).then_some(due)
        };
        for session in space.sessions() {
            let timer = Timer::Lease(session.id);
            if let Some(due) = unproposed(&timer, session.ttl_ms) {
                return Err(format!(
                    "deadline: n{host} leads at {now} ms and has not expired session {}, \
                     whose lease of {} ms was due at {due} ms",
                    session.id, session.ttl_ms
                ));
            }
        }
        for hold in space.limited_holds() {
            let timer = Timer::Hold(hold.session, hold.lock.clone(), hold.fence);
            if let Some(due) = unproposed(&timer, hold.hold_ms) {
                return Err(format!(
                    "deadline: n{host} leads at {now} ms and has not ended {hold:?}, due at \
                     {due} ms"
                ));
            }
        }
        Ok(())
    }
}
