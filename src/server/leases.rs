//! Deadlines the leader keeps in memory: session leases, bounded waits and hold limits.
//!
//! Time never enters the replicated state. Only the leader reads its clock: when a deadline in
//! here passes, the driver proposes `ExpireSession`, `ExpireWait` or `ExpireHold` through the
//! log and every replica applies the same decision. The table is checked on every tick (10 ms by
//! default, which is the resolution of every timeout), so no separate timer task is needed and
//! nothing but the driver touches it. A new leader cannot know when the last keep-alive reached
//! the old one, so it refills the table with every deadline at `now + bound`.
//!
//! Entries may go stale (a wait that was granted, a hold that was released): the driver checks
//! the state machine before proposing, and the state machine ignores stale expiries anyway.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use crate::lockspace::{Fence, Seq, SessionId};

/// What a deadline bounds. Ordered so that every key of one session is contiguous.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The session the deadline belongs to.
    pub session: SessionId,
    /// Which of its timers.
    pub what: What,
}

/// The three kinds of deadline.
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
}

/// The leader's deadline table, ordered by time for the tick check and by key for updates.
#[derive(Debug, Default)]
pub struct Leases {
    by_key: BTreeMap<Key, Instant>,
    by_time: BTreeSet<(Instant, Key)>,
}

impl Leases {
    /// An empty table.
    pub fn new() -> Leases {
        Leases::default()
    }

    /// Sets (or moves) the deadline of `key` to `at`.
    pub fn set(&mut self, key: Key, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// The deadline of `key`, if set.
    pub fn deadline(&self, key: &Key) -> Option<Instant> {
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
    pub fn take_due(&mut self, now: Instant) -> Vec<Key> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lease(session: SessionId) -> Key {
        Key {
            session,
            what: What::Lease,
        }
    }

    #[test]
    fn due_deadlines_come_out_in_time_order_and_once() {
        let now = Instant::now();
        let mut leases = Leases::new();
        let wait = Key {
            session: 2,
            what: What::Wait {
                seq: 7,
                lock: "a".into(),
            },
        };
        leases.set(lease(1), now + Duration::from_millis(30));
        leases.set(wait.clone(), now + Duration::from_millis(10));
        leases.set(lease(3), now + Duration::from_millis(50));
        assert!(leases.take_due(now).is_empty());
        assert_eq!(
            leases.take_due(now + Duration::from_millis(30)),
            vec![wait, lease(1)]
        );
        assert!(leases.take_due(now + Duration::from_millis(30)).is_empty());
        assert_eq!(leases.len(), 1);
    }

    #[test]
    fn a_keep_alive_moves_the_deadline_instead_of_adding_one() {
        let now = Instant::now();
        let mut leases = Leases::new();
        leases.set(lease(1), now + Duration::from_millis(10));
        leases.set(lease(1), now + Duration::from_millis(100));
        assert_eq!(leases.len(), 1);
        assert!(leases.take_due(now + Duration::from_millis(50)).is_empty());
        assert_eq!(
            leases.take_due(now + Duration::from_millis(100)),
            vec![lease(1)]
        );
    }

    #[test]
    fn removing_a_session_removes_all_its_deadlines_only() {
        let now = Instant::now();
        let mut leases = Leases::new();
        let hold = Key {
            session: 5,
            what: What::Hold {
                lock: "l".into(),
                fence: 9,
            },
        };
        let wait = Key {
            session: 5,
            what: What::Wait {
                seq: 1,
                lock: "m".into(),
            },
        };
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
