//! Deadlines the leader keeps in memory: session leases, bounded waits and hold limits.
//!
//! Time never enters the replicated state. Only the leader reads its clock (the shell passes
//! `now` in milliseconds): when a deadline in here passes, the replica proposes
//! `ExpireSession`, `ExpireWait` or `ExpireHold` through the log and every replica applies the
//! same decision. The table is checked on every tick (10 ms by default, which is the resolution
//! of every timeout). It is kept incrementally: applying a command sets or clears the deadlines
//! it creates or ends, a keep-alive moves a lease, and a new leader, which cannot know when the
//! last keep-alive reached the old one, refills the table with every deadline at `now + bound`.
//!
//! Entries may go stale (a wait that was granted, a hold that was released): the replica checks
//! the state machine before proposing, and the state machine ignores stale expiries anyway.

use std::collections::{BTreeMap, BTreeSet};

use super::pushes::warn_lead;
use super::Replica;
use crate::lockspace::{Applied, Command, Fence, Outcome, Seq, SessionId};
use crate::protocol::Response;

/// What a deadline bounds. Ordered so that every key of one session is contiguous.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The session the deadline belongs to.
    pub session: SessionId,
    /// Which of its timers.
    pub what: What,
}

/// The kinds of deadline: three that propose an expiry, two that only push a warning.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum What {
    /// The session's lease: no keep-alive for its TTL expires it. (First variant: the smallest
    /// key of a session, used to find the start of its range.)
    Lease,
    /// A queued acquire's wait bound.
    Wait {
        /// The acquire's sequence number.
        seq: Seq,
        /// The lock it waits for.
        lock: String,
    },
    /// A grant's hold limit.
    Hold {
        /// The lock held.
        lock: String,
        /// The grant's fencing token.
        fence: Fence,
    },
    /// When to push `SessionExpiring`: a lead time before the lease (moves with it).
    LeaseWarning,
    /// When to push `HoldExpiring`: a lead time before the hold limit of this grant.
    HoldWarning {
        /// The lock held.
        lock: String,
        /// The grant's fencing token.
        fence: Fence,
    },
}

/// The leader's deadline table (times in ms on the shell's clock), ordered by time for the
/// tick check and by key for updates.
#[derive(Debug, Default)]
pub struct Leases {
    by_key: BTreeMap<Key, u64>,
    by_time: BTreeSet<(u64, Key)>,
}

impl Leases {
    /// An empty table.
    pub fn new() -> Leases {
        Leases::default()
    }

    /// Sets (or moves) the deadline of `key` to `at`.
    pub fn set(&mut self, key: Key, at: u64) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// The deadline of `key`, if set.
    pub fn deadline(&self, key: &Key) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// Removes the deadline of `key`, if any.
    pub fn remove(&mut self, key: &Key) {
        if let Some(at) = self.by_key.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    /// Removes every deadline of `session` (it was closed or expired).
    pub fn remove_session(&mut self, session: SessionId) {
        let start = Key {
            session,
            what: What::Lease,
        };
        let keys: Vec<Key> = self
            .by_key
            .range(start..)
            .take_while(|(key, _)| key.session == session)
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            self.remove(&key);
        }
    }

    /// Removes and returns, earliest first, every deadline at or before `now`.
    pub fn take_due(&mut self, now: u64) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.by_time.pop_first().expect("first() was Some");
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    /// Forgets every deadline (this node stopped leading).
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_time.clear();
    }

    /// How many deadlines are set.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True if no deadline is set.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

fn key(session: SessionId, what: What) -> Key {
    Key { session, what }
}

impl Replica {
    /// Leader only, on every tick: proposes an expiry for every deadline that passed and still
    /// applies.
    pub(super) fn expire_deadlines(&mut self) {
        if !self.is_leader() || self.leases.is_empty() {
            return;
        }
        for due in self.leases.take_due(self.now) {
            let retry = due.clone();
            let session = due.session;
            // Skip what no longer applies; the state machine would ignore it anyway.
            let command = match due.what {
                What::Lease => {
                    if self.lockspace.session(session).is_none() {
                        continue;
                    }
                    tracing::info!(session, "session lease expired");
                    Command::ExpireSession { session }
                }
                What::Wait { seq, lock } => {
                    let waiting = self.lockspace.lock(&lock).is_some_and(|info| {
                        info.waiters
                            .iter()
                            .any(|w| w.session == session && w.seq == seq)
                    });
                    if !waiting {
                        continue;
                    }
                    Command::ExpireWait { session, seq, lock }
                }
                What::Hold { lock, fence } => {
                    let Some(hold) = self
                        .lockspace
                        .limited_hold(&lock, session)
                        .filter(|hold| hold.fence == fence)
                    else {
                        continue;
                    };
                    // Names the hold's start as applied here: an Extend still in the log
                    // behind us restarts it, and this expiry then does nothing.
                    Command::ExpireHold {
                        session,
                        lock,
                        fence,
                        since: Some(hold.since),
                    }
                }
                What::LeaseWarning => {
                    let lease = self.leases.deadline(&key(session, What::Lease));
                    if let (Some(at), Some(_)) = (lease, self.lockspace.session(session)) {
                        let left_ms = at.saturating_sub(self.now);
                        let event = Response::SessionExpiring {
                            id: 0,
                            session,
                            left_ms,
                        };
                        self.push(session, event);
                    }
                    continue;
                }
                What::HoldWarning { lock, fence } => {
                    let what = What::Hold {
                        lock: lock.clone(),
                        fence,
                    };
                    let hold = self.leases.deadline(&key(session, what));
                    if let (Some(at), true) = (hold, self.holding(session, &lock, fence)) {
                        let left_ms = at.saturating_sub(self.now);
                        let event = Response::HoldExpiring {
                            id: 0,
                            session,
                            lock,
                            fence,
                            left_ms,
                        };
                        self.push(session, event);
                    }
                    continue;
                }
            };
            if !self.propose_internal(command) {
                // Refused while a leadership transfer runs: if the transfer fails, this node
                // still leads and must not have forgotten the deadline. Due again next tick.
                self.leases.set(retry, self.now);
            }
        }
    }

    /// True if the entry just applied started (or restarted) the hold limit of the grant
    /// `fence` of `lock` to `session`. A retried `Acquire` or `Extend` is answered from the
    /// exactly-once table (`Granted`, `Extended`) but restarts nothing: moving the deadline
    /// then would end an extended hold early (a replayed acquire carries its first, shorter
    /// limit), while the holder's lease still counts on the extension.
    fn hold_started_here(&self, session: SessionId, lock: &str, fence: Fence) -> bool {
        self.lockspace
            .limited_hold(lock, session)
            .is_some_and(|hold| hold.fence == fence && hold.since == self.lockspace.applied_index())
    }

    /// True if `session` still holds the grant `fence` of `lock`.
    fn holding(&self, session: SessionId, lock: &str, fence: Fence) -> bool {
        self.lockspace.lock(lock).is_some_and(|info| {
            info.holders
                .iter()
                .any(|&(s, f)| s == session && f == fence)
        })
    }

    /// Moves a session's lease deadline to `now + ttl` (a keep-alive reached the leader).
    pub(super) fn renew_lease(&mut self, session: SessionId, ttl_ms: u64) {
        self.set_lease(session, ttl_ms);
    }

    /// Sets a session's lease deadline to `now + ttl_ms`, and its warning before it.
    fn set_lease(&mut self, session: SessionId, ttl_ms: u64) {
        let at = self.now.saturating_add(ttl_ms);
        self.leases.set(key(session, What::Lease), at);
        let lead = warn_lead(ttl_ms);
        if lead > 0 {
            self.leases.set(key(session, What::LeaseWarning), at - lead);
        }
    }

    /// Sets the hold limit of the grant `fence` of `lock` to end `hold_ms` from now, and its
    /// warning before it.
    fn set_hold(&mut self, session: SessionId, lock: &str, fence: Fence, hold_ms: u64) {
        let at = self.now.saturating_add(hold_ms);
        let hold = What::Hold {
            lock: lock.to_owned(),
            fence,
        };
        self.leases.set(key(session, hold), at);
        let lead = warn_lead(hold_ms);
        if lead > 0 {
            let warning = What::HoldWarning {
                lock: lock.to_owned(),
                fence,
            };
            self.leases.set(key(session, warning), at - lead);
        }
    }

    /// Leader only: keeps the deadline table in step with what was just applied.
    pub(super) fn track_deadlines(&mut self, command: &Command, applied: &Applied) {
        let now = self.now;
        let after = |ms: u64| now.saturating_add(ms);
        match (command, &applied.outcome) {
            (
                Command::OpenSession { .. },
                Outcome::SessionOpened {
                    session, ttl_ms, ..
                },
            ) => self.set_lease(*session, *ttl_ms),
            (
                Command::CloseSession { session, .. }
                | Command::ExpireSession { session }
                | Command::RevokeSession { session },
                _,
            ) => {
                self.leases.remove_session(*session);
                let keys: Vec<_> = self
                    .queued_holds
                    .range((*session, 0)..=(*session, Seq::MAX))
                    .map(|(key, _)| *key)
                    .collect();
                for key in keys {
                    self.queued_holds.remove(&key);
                }
            }
            (
                Command::Acquire {
                    session,
                    lock,
                    hold_ms: Some(hold_ms),
                    ..
                },
                Outcome::Granted { fence },
            ) if self.hold_started_here(*session, lock, *fence) => {
                self.set_hold(*session, lock, *fence, *hold_ms)
            }
            (
                Command::Extend {
                    session,
                    lock,
                    fence,
                    ..
                },
                Outcome::Extended { hold_ms },
            ) if self.hold_started_here(*session, lock, *fence) => {
                // The hold restarts now: no earlier than the Extend was sent.
                self.set_hold(*session, lock, *fence, *hold_ms);
            }
            (
                Command::Acquire {
                    session,
                    seq,
                    lock,
                    wait_ms,
                    hold_ms,
                    ..
                },
                Outcome::Queued { .. },
            ) => {
                if let Some(wait_ms) = wait_ms {
                    let what = What::Wait {
                        seq: *seq,
                        lock: lock.clone(),
                    };
                    self.leases.set(key(*session, what), after(*wait_ms));
                }
                self.queued_holds
                    .insert((*session, *seq), (lock.clone(), *hold_ms));
            }
            _ => {}
        }
        for notification in &applied.notifications {
            let (session, seq) = (notification.session, notification.seq);
            let hold_ms = self.queued_holds.remove(&(session, seq));
            let Outcome::Granted { fence } = notification.outcome else {
                continue;
            };
            // The wait is over: start the grant's hold limit, if it has one.
            let hold = match hold_ms {
                Some((lock, Some(hold_ms))) => Some((lock, hold_ms)),
                Some((_, None)) => None,
                // Queued before this node led: its hold limit is only in the state machine.
                None => self
                    .lockspace
                    .limited_holds()
                    .into_iter()
                    .find(|hold| hold.session == session && hold.fence == fence)
                    .map(|hold| (hold.lock, hold.hold_ms)),
            };
            if let Some((lock, hold_ms)) = hold {
                self.set_hold(session, &lock, fence, hold_ms);
            }
        }
    }

    /// A new leader cannot know when the last keep-alive arrived: every deadline restarts.
    pub(super) fn restart_deadlines(&mut self) {
        let now = self.now;
        let after = |ms: u64| now.saturating_add(ms);
        self.leases.clear();
        for session in self.lockspace.sessions() {
            self.set_lease(session.id, session.ttl_ms);
        }
        for wait in self.lockspace.bounded_waits() {
            if let Some(wait_ms) = wait.wait_ms {
                let what = What::Wait {
                    seq: wait.seq,
                    lock: wait.lock,
                };
                self.leases.set(key(wait.session, what), after(wait_ms));
            }
        }
        for hold in self.lockspace.limited_holds() {
            self.set_hold(hold.session, &hold.lock, hold.fence, hold.hold_ms);
        }
        tracing::info!(
            term = self.node.term(),
            commit = self.node.commit_index(),
            deadlines = self.leases.len(),
            "became leader; restarted every lease deadline"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(session: SessionId) -> Key {
        key(session, What::Lease)
    }

    #[test]
    fn due_deadlines_come_out_in_time_order_and_once() {
        let now = 1_000;
        let mut leases = Leases::new();
        let wait = key(
            2,
            What::Wait {
                seq: 7,
                lock: "a".into(),
            },
        );
        leases.set(lease(1), now + 30);
        leases.set(wait.clone(), now + 10);
        leases.set(lease(3), now + 50);
        assert!(leases.take_due(now).is_empty());
        assert_eq!(leases.take_due(now + 30), vec![wait, lease(1)]);
        assert!(leases.take_due(now + 30).is_empty());
        assert_eq!(leases.len(), 1);
    }

    #[test]
    fn a_keep_alive_moves_the_deadline_instead_of_adding_one() {
        let now = 1_000;
        let mut leases = Leases::new();
        leases.set(lease(1), now + 10);
        leases.set(lease(1), now + 100);
        assert_eq!(leases.len(), 1);
        assert!(leases.take_due(now + 50).is_empty());
        assert_eq!(leases.take_due(now + 100), vec![lease(1)]);
    }

    #[test]
    fn removing_a_session_removes_all_its_deadlines_only() {
        let now = 1_000;
        let mut leases = Leases::new();
        let hold = key(
            5,
            What::Hold {
                lock: "l".into(),
                fence: 9,
            },
        );
        let wait = key(
            5,
            What::Wait {
                seq: 1,
                lock: "m".into(),
            },
        );
        leases.set(lease(4), now);
        leases.set(lease(5), now);
        leases.set(hold, now);
        leases.set(wait, now);
        leases.set(lease(6), now);
        leases.remove_session(5);
        assert_eq!(leases.take_due(now), vec![lease(4), lease(6)]);
        assert!(leases.is_empty());
    }
}
