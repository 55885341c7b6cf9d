//! Unit tests: one scenario per rule of the state machine (see the module essay).

use super::*;

/// A test driver: applies commands at increasing indexes and hands out sequence numbers.
struct Harness {
    space: LockSpace,
    index: Index,
    seq: Seq,
}

use LockMode::{Exclusive as X, Shared as S};

impl Harness {
    fn new() -> Harness {
        Harness {
            space: LockSpace::new(),
            index: 0,
            seq: 0,
        }
    }

    fn apply(&mut self, command: Command) -> Applied {
        self.index += 1;
        self.space.apply(self.index, &command)
    }

    fn next_seq(&mut self) -> Seq {
        self.seq += 1;
        self.seq
    }

    fn open(&mut self) -> SessionId {
        let nonce = 1000 + self.index;
        match self
            .apply(Command::OpenSession {
                nonce,
                ttl_ms: 10_000,
                token: 7,
                owner: None,
                principal: None,
            })
            .outcome
        {
            Outcome::SessionOpened { session, .. } => session,
            other => panic!("open failed: {other:?}"),
        }
    }

    fn acquire_cmd(
        &mut self,
        session: SessionId,
        lock: &str,
        mode: LockMode,
        wait_ms: Option<u64>,
    ) -> Command {
        Command::Acquire {
            session,
            seq: self.next_seq(),
            lock: lock.into(),
            mode,
            wait_ms,
            hold_ms: None,
        }
    }

    fn acquire(
        &mut self,
        session: SessionId,
        lock: &str,
        mode: LockMode,
        wait_ms: Option<u64>,
    ) -> Applied {
        let command = self.acquire_cmd(session, lock, mode, wait_ms);
        self.apply(command)
    }

    fn release(&mut self, session: SessionId, lock: &str) -> Applied {
        let seq = self.next_seq();
        self.apply(Command::Release {
            session,
            seq,
            lock: lock.into(),
        })
    }

    fn append(&mut self, session: SessionId, lock: &str, fence: Fence, data: &[u8]) -> Outcome {
        let seq = self.next_seq();
        self.apply(Command::Append {
            session,
            seq,
            file: "f".into(),
            lock: lock.into(),
            fence,
            data: data.to_vec(),
            quota: None,
        })
        .outcome
    }

    fn fence(applied: &Applied) -> Fence {
        match applied.outcome {
            Outcome::Granted { fence } => fence,
            ref other => panic!("not granted: {other:?}"),
        }
    }

    fn holders(&self, lock: &str) -> Vec<SessionId> {
        self.space
            .lock(lock)
            .map(|l| l.holders.iter().map(|h| h.0).collect())
            .unwrap_or_default()
    }

    fn waiters(&self, lock: &str) -> Vec<SessionId> {
        self.space
            .lock(lock)
            .map(|l| l.waiters.iter().map(|w| w.session).collect())
            .unwrap_or_default()
    }
}

fn granted(session: SessionId, seq: Seq, fence: Fence) -> Notification {
    Notification {
        session,
        seq,
        outcome: Outcome::Granted { fence },
    }
}

/// A free lock is granted at once with a fence equal to the granting index.
#[test]
fn acquire_free_lock_grants_with_index_fence() {
    let mut h = Harness::new();
    let a = h.open();
    let applied = h.acquire(a, "l", X, None);
    assert_eq!(applied.outcome, Outcome::Granted { fence: h.index });
    assert!(applied.notifications.is_empty());
    let info = h.space.lock("l").unwrap();
    assert_eq!(info.mode, Some(X));
    assert_eq!(info.holders, vec![(a, h.index)]);
    assert_eq!(h.space.holds(a), vec![("l".to_string(), X, h.index)]);
}

/// Re-acquiring in the held mode returns the same grant and changes nothing.
#[test]
fn reacquire_same_mode_is_idempotent() {
    let mut h = Harness::new();
    let a = h.open();
    let fence = Harness::fence(&h.acquire(a, "l", X, None));
    assert_eq!(
        h.acquire(a, "l", X, Some(0)).outcome,
        Outcome::Granted { fence }
    );
    assert_eq!(h.space.last_fence(), fence);
    assert_eq!(h.holders("l"), vec![a]);
}

/// Holding in the other mode, or already waiting under another seq, is a conflict.
#[test]
fn other_mode_or_second_wait_conflicts() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    h.acquire(a, "l", S, None);
    assert_eq!(h.acquire(a, "l", X, None).outcome, Outcome::Conflict);
    h.acquire(b, "m", X, None);
    assert_eq!(
        h.acquire(a, "m", X, None).outcome,
        Outcome::Queued { position: 0 }
    );
    assert_eq!(h.acquire(a, "m", S, None).outcome, Outcome::Conflict);
    assert_eq!(h.acquire(a, "m", X, None).outcome, Outcome::Conflict);
    assert_eq!(h.waiters("m"), vec![a]);
}

/// A try-once acquire of an unavailable lock is Busy and leaves no trace.
#[test]
fn try_once_is_busy() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    h.acquire(a, "l", X, None);
    assert_eq!(h.acquire(b, "l", X, Some(0)).outcome, Outcome::Busy);
    assert_eq!(h.acquire(b, "l", S, Some(0)).outcome, Outcome::Busy);
    assert!(h.waiters("l").is_empty());
    assert!(h.space.holds(b).is_empty());
    assert!(h.space.session(b).is_some());
}

/// Waiters queue with their position and are granted one by one in FIFO order on release.
#[test]
fn release_grants_in_fifo_order() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.acquire(a, "l", X, None);
    let b_cmd = h.acquire_cmd(b, "l", X, Some(5_000));
    let Command::Acquire { seq: b_seq, .. } = b_cmd else {
        unreachable!()
    };
    assert_eq!(h.apply(b_cmd).outcome, Outcome::Queued { position: 0 });
    assert_eq!(
        h.acquire(c, "l", X, None).outcome,
        Outcome::Queued { position: 1 }
    );
    assert_eq!(h.space.bounded_waits().len(), 1);
    let applied = h.release(a, "l");
    assert_eq!(applied.outcome, Outcome::Released);
    assert_eq!(applied.notifications, vec![granted(b, b_seq, h.index)]);
    assert_eq!(h.holders("l"), vec![b]);
    assert_eq!(h.waiters("l"), vec![c]);
    let applied = h.release(b, "l");
    assert_eq!(applied.notifications.len(), 1);
    assert_eq!(applied.notifications[0].session, c);
    h.release(c, "l");
    assert!(h.space.lock("l").is_none(), "a free lock is dropped");
    assert_eq!(h.space.stats().locks, 0);
}

/// A shared front grants every consecutive shared waiter, with distinct increasing fences, and
/// stops at the first exclusive one.
#[test]
fn shared_front_grants_consecutive_readers() {
    let mut h = Harness::new();
    let [a, b, c, d, e] = [h.open(), h.open(), h.open(), h.open(), h.open()];
    h.acquire(a, "l", X, None);
    h.acquire(b, "l", S, None);
    h.acquire(c, "l", S, None);
    h.acquire(d, "l", X, None);
    h.acquire(e, "l", S, None);
    let applied = h.release(a, "l");
    let fences: Vec<Fence> = applied
        .notifications
        .iter()
        .map(|n| match n.outcome {
            Outcome::Granted { fence } => fence,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(fences, vec![h.index, h.index + 1]);
    assert_eq!(
        applied
            .notifications
            .iter()
            .map(|n| n.session)
            .collect::<Vec<_>>(),
        vec![b, c]
    );
    assert_eq!(h.space.lock("l").unwrap().mode, Some(S));
    assert_eq!(h.waiters("l"), vec![d, e]);
    // The next grant's fence continues above the batch even though the index moved by one.
    h.release(b, "l");
    let applied = h.release(c, "l");
    assert_eq!(
        applied
            .notifications
            .iter()
            .map(|n| n.session)
            .collect::<Vec<_>>(),
        vec![d]
    );
    assert_eq!(h.holders("l"), vec![d]);
}

/// A queued writer blocks readers that arrive after it, even while readers hold the lock.
#[test]
fn queued_writer_blocks_later_readers() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.acquire(a, "l", S, None);
    assert_eq!(
        h.acquire(b, "l", X, None).outcome,
        Outcome::Queued { position: 0 }
    );
    assert_eq!(h.acquire(c, "l", S, Some(0)).outcome, Outcome::Busy);
    assert_eq!(
        h.acquire(c, "l", S, None).outcome,
        Outcome::Queued { position: 1 }
    );
    let applied = h.release(a, "l");
    assert_eq!(applied.notifications.len(), 1);
    assert_eq!(h.holders("l"), vec![b]);
    assert_eq!(h.waiters("l"), vec![c]);
}

/// Releasing a lock one does not hold is NotHolder, for missing and foreign locks alike.
#[test]
fn release_by_non_holder() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    assert_eq!(h.release(a, "nothing").outcome, Outcome::NotHolder);
    h.acquire(a, "l", X, None);
    h.acquire(b, "l", X, None);
    assert_eq!(
        h.release(b, "l").outcome,
        Outcome::NotHolder,
        "a waiter is not a holder"
    );
    assert_eq!(h.holders("l"), vec![a]);
    assert_eq!(h.waiters("l"), vec![b]);
}

/// Closing a session releases its grants (granting waiters), ends its waits with SessionExpired
/// notifications, frees its nonce, and later requests answer SessionExpired.
#[test]
fn close_releases_and_notifies() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.acquire(a, "l1", X, None);
    let b_wait = h.acquire_cmd(b, "l1", X, None);
    let Command::Acquire { seq: b_seq, .. } = b_wait else {
        unreachable!()
    };
    h.apply(b_wait);
    h.acquire(c, "l2", X, None);
    let a_wait = h.acquire_cmd(a, "l2", S, None);
    let Command::Acquire { seq: a_seq, .. } = a_wait else {
        unreachable!()
    };
    h.apply(a_wait);
    let seq = h.next_seq();
    let applied = h.apply(Command::CloseSession { session: a, seq });
    assert_eq!(applied.outcome, Outcome::SessionClosed);
    assert_eq!(
        applied.notifications,
        vec![
            granted(b, b_seq, h.index),
            Notification {
                session: a,
                seq: a_seq,
                outcome: Outcome::SessionExpired
            }
        ]
    );
    assert!(h.space.session(a).is_none());
    assert_eq!(h.holders("l1"), vec![b]);
    assert!(h.waiters("l2").is_empty());
    assert_eq!(h.acquire(a, "x", X, None).outcome, Outcome::SessionExpired);
    assert_eq!(h.release(a, "l1").outcome, Outcome::SessionExpired);
    let seq = h.next_seq();
    assert_eq!(
        h.apply(Command::CloseSession { session: a, seq }).outcome,
        Outcome::SessionExpired
    );
    assert!(h.space.nonces.values().all(|&id| id != a));
}

/// Expiring a session works like closing it; expiring a missing one is Ignored. Removing a
/// waiter that blocked others grants them.
#[test]
fn expire_session_releases_and_unblocks() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.acquire(a, "l", S, None);
    h.acquire(b, "l", X, None);
    let c_cmd = h.acquire_cmd(c, "l", S, None);
    let Command::Acquire { seq: c_seq, .. } = c_cmd else {
        unreachable!()
    };
    assert_eq!(h.apply(c_cmd).outcome, Outcome::Queued { position: 1 });
    // b's queued writer leaves: c's read fits beside a's.
    let applied = h.apply(Command::ExpireSession { session: b });
    assert_eq!(applied.outcome, Outcome::SessionClosed);
    assert_eq!(applied.notifications[0].outcome, Outcome::SessionExpired);
    assert_eq!(applied.notifications[1], granted(c, c_seq, h.index));
    assert_eq!(h.holders("l"), vec![a, c]);
    assert_eq!(
        h.apply(Command::ExpireSession { session: b }).outcome,
        Outcome::Ignored
    );
    assert_eq!(
        h.apply(Command::ExpireSession { session: 999 }).outcome,
        Outcome::Ignored
    );
}

/// ExpireWait ends a still-queued acquire (TimedOut, dedup updated, queue regranted) and is
/// ignored once the acquire was granted or already ended.
#[test]
fn expire_wait_times_out_only_queued_acquires() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.acquire(a, "l", S, None);
    let b_cmd = h.acquire_cmd(b, "l", X, Some(100));
    let Command::Acquire { seq: b_seq, .. } = b_cmd else {
        unreachable!()
    };
    h.apply(b_cmd.clone());
    let c_cmd = h.acquire_cmd(c, "l", S, None);
    let Command::Acquire { seq: c_seq, .. } = c_cmd else {
        unreachable!()
    };
    h.apply(c_cmd);
    let applied = h.apply(Command::ExpireWait {
        session: b,
        seq: b_seq,
        lock: "l".into(),
    });
    assert_eq!(applied.outcome, Outcome::TimedOut);
    assert_eq!(
        applied.notifications,
        vec![
            Notification {
                session: b,
                seq: b_seq,
                outcome: Outcome::TimedOut
            },
            granted(c, c_seq, h.index)
        ]
    );
    assert_eq!(
        h.apply(b_cmd).outcome,
        Outcome::TimedOut,
        "the replay sees the final outcome"
    );
    assert_eq!(
        h.apply(Command::ExpireWait {
            session: b,
            seq: b_seq,
            lock: "l".into()
        })
        .outcome,
        Outcome::Ignored
    );
    assert_eq!(
        h.apply(Command::ExpireWait {
            session: c,
            seq: c_seq,
            lock: "l".into()
        })
        .outcome,
        Outcome::Ignored
    );
    assert_eq!(
        h.apply(Command::ExpireWait {
            session: c,
            seq: c_seq,
            lock: "zz".into()
        })
        .outcome,
        Outcome::Ignored
    );
    assert!(h.space.bounded_waits().is_empty());
}

/// ExpireHold revokes exactly the named grant and grants the waiters; a stale fence is ignored.
#[test]
fn expire_hold_revokes_only_the_named_grant() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    let seq = h.next_seq();
    let first = Harness::fence(&h.apply(Command::Acquire {
        session: a,
        seq,
        lock: "l".into(),
        mode: X,
        wait_ms: None,
        hold_ms: Some(500),
    }));
    assert_eq!(
        h.space.limited_holds(),
        vec![HoldInfo {
            session: a,
            lock: "l".into(),
            fence: first,
            hold_ms: 500,
            since: first,
        }]
    );
    h.acquire(b, "l", X, None);
    assert_eq!(
        h.apply(Command::ExpireHold {
            session: a,
            lock: "l".into(),
            fence: first + 100,
            since: None,
        })
        .outcome,
        Outcome::Ignored
    );
    assert_eq!(
        h.apply(Command::ExpireHold {
            session: b,
            lock: "l".into(),
            fence: first,
            since: None,
        })
        .outcome,
        Outcome::Ignored
    );
    let applied = h.apply(Command::ExpireHold {
        session: a,
        lock: "l".into(),
        fence: first,
        since: None,
    });
    assert_eq!(applied.outcome, Outcome::Released);
    assert_eq!(applied.notifications.len(), 1);
    assert_eq!(h.holders("l"), vec![b]);
    assert!(h.space.limited_holds().is_empty());
    // The same revoke again is stale: a now holds nothing.
    assert_eq!(
        h.apply(Command::ExpireHold {
            session: a,
            lock: "l".into(),
            fence: first,
            since: None,
        })
        .outcome,
        Outcome::Ignored
    );
    // A re-grant to a with a new fence is not revoked by the old one.
    h.release(b, "l");
    let second = Harness::fence(&h.acquire(a, "l", X, None));
    assert!(second > first);
    assert_eq!(
        h.apply(Command::ExpireHold {
            session: a,
            lock: "l".into(),
            fence: first,
            since: None,
        })
        .outcome,
        Outcome::Ignored
    );
    assert_eq!(h.holders("l"), vec![a]);
}

/// Cancel removes exactly the named queued acquire (which ends `Cancelled`), unblocks the
/// waiters behind it, and answers `NotWaiting` for anything else; a retry replays its result.
#[test]
fn cancel_removes_only_a_queued_acquire() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.acquire(a, "l", S, None);
    let b_cmd = h.acquire_cmd(b, "l", X, None);
    let Command::Acquire { seq: b_seq, .. } = b_cmd else {
        unreachable!()
    };
    h.apply(b_cmd.clone());
    let c_cmd = h.acquire_cmd(c, "l", S, None);
    let Command::Acquire { seq: c_seq, .. } = c_cmd else {
        unreachable!()
    };
    h.apply(c_cmd);
    assert_eq!(h.waiters("l"), vec![b, c]);

    // The wrong acquire seq, or another lock, cancels nothing.
    let cancel = |h: &mut Harness, session, lock: &str, acquire_seq| {
        let seq = h.next_seq();
        Command::Cancel {
            session,
            seq,
            lock: lock.into(),
            acquire_seq,
        }
    };
    let wrong = cancel(&mut h, b, "l", b_seq + 100);
    assert_eq!(h.apply(wrong).outcome, Outcome::NotWaiting);
    let elsewhere = cancel(&mut h, b, "other", b_seq);
    assert_eq!(h.apply(elsewhere).outcome, Outcome::NotWaiting);

    let right = cancel(&mut h, b, "l", b_seq);
    let applied = h.apply(right.clone());
    assert_eq!(applied.outcome, Outcome::Cancelled);
    assert_eq!(
        applied.notifications,
        vec![
            Notification {
                session: b,
                seq: b_seq,
                outcome: Outcome::Cancelled
            },
            granted(c, c_seq, h.index)
        ]
    );
    assert_eq!(h.holders("l"), vec![a, c]);
    assert!(h.space.holds(b).is_empty());
    // Retries of the cancel and of the acquire see the final outcomes and change nothing.
    let before = h.space.snapshot();
    assert_eq!(h.apply(right).outcome, Outcome::Cancelled);
    assert_eq!(h.apply(b_cmd).outcome, Outcome::Cancelled);
    let mut after = LockSpace::restore(&h.space.snapshot()).unwrap();
    after.applied_index = LockSpace::restore(&before).unwrap().applied_index;
    assert_eq!(after.snapshot(), before);
    // A granted acquire is not waiting: cancel does not release it.
    let granted_cancel = cancel(&mut h, c, "l", c_seq);
    assert_eq!(h.apply(granted_cancel).outcome, Outcome::NotWaiting);
    assert_eq!(h.holders("l"), vec![a, c]);
    // A dead session's cancel is SessionExpired.
    let seq = h.next_seq();
    h.apply(Command::CloseSession { session: b, seq });
    let dead = cancel(&mut h, b, "l", b_seq);
    assert_eq!(h.apply(dead).outcome, Outcome::SessionExpired);
}

/// RevokeSession ends a live session like an expiry (releasing, notifying waiters, granting
/// the next) and answers `SessionExpired` for one that does not live.
#[test]
fn revoke_session_ends_it_like_an_expiry() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    h.acquire(a, "l", X, None);
    let b_cmd = h.acquire_cmd(b, "l", X, None);
    let Command::Acquire { seq: b_seq, .. } = b_cmd else {
        unreachable!()
    };
    h.apply(b_cmd);
    let applied = h.apply(Command::RevokeSession { session: a });
    assert_eq!(applied.outcome, Outcome::SessionClosed);
    assert_eq!(applied.notifications, vec![granted(b, b_seq, h.index)]);
    assert_eq!(h.holders("l"), vec![b]);
    assert!(h.space.session(a).is_none());
    assert_eq!(
        h.apply(Command::RevokeSession { session: a }).outcome,
        Outcome::SessionExpired
    );
    assert_eq!(
        h.apply(Command::RevokeSession { session: 999 }).outcome,
        Outcome::SessionExpired
    );
}

/// MarkRevoked (the safe revoke) keeps the session's grants: nobody else is granted them
/// until the holder closes or releases, or the session expires. Its queued acquire ends
/// `Revoked` (unblocking the waiter behind it); it may no longer acquire, extend or append;
/// it may release, cancel and close. The mark survives a snapshot.
#[test]
fn mark_revoked_keeps_the_grants_until_the_session_ends() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    let fence = match h.acquire(a, "l", X, None).outcome {
        Outcome::Granted { fence } => fence,
        other => panic!("{other:?}"),
    };
    h.acquire(b, "m", X, None);
    // a waits for m behind nobody but its holder b; c waits behind a.
    let a_wait = h.acquire_cmd(a, "m", X, None);
    let Command::Acquire { seq: a_seq, .. } = a_wait else {
        unreachable!()
    };
    h.apply(a_wait);
    h.acquire(c, "m", S, None);
    let c_wait = h.acquire_cmd(c, "l", X, None);
    let Command::Acquire { seq: c_seq, .. } = c_wait else {
        unreachable!()
    };
    h.apply(c_wait);

    let applied = h.apply(Command::MarkRevoked { session: a });
    assert_eq!(applied.outcome, Outcome::SessionClosed);
    assert_eq!(
        applied.notifications,
        vec![Notification {
            session: a,
            seq: a_seq,
            outcome: Outcome::Revoked,
        }]
    );
    assert!(h.space.session(a).is_some_and(|s| s.revoked));
    assert_eq!(
        h.holders("l"),
        vec![a],
        "the revoked holder keeps its grant"
    );
    // Refused: new acquires, extends and appends.
    assert_eq!(h.acquire(a, "n", X, None).outcome, Outcome::Revoked);
    let seq = h.next_seq();
    let extend = Command::Extend {
        session: a,
        seq,
        lock: "l".into(),
        fence,
        hold_ms: 1_000,
    };
    assert_eq!(h.apply(extend).outcome, Outcome::Revoked);
    let seq = h.next_seq();
    let append = Command::Append {
        session: a,
        seq,
        file: "f".into(),
        lock: "l".into(),
        fence,
        data: b"x".to_vec(),
        quota: None,
    };
    assert_eq!(h.apply(append).outcome, Outcome::Revoked);
    // Marking again changes nothing; an unknown session is SessionExpired.
    let again = h.apply(Command::MarkRevoked { session: a });
    assert_eq!(again.outcome, Outcome::SessionClosed);
    assert!(again.notifications.is_empty());
    assert_eq!(
        h.apply(Command::MarkRevoked { session: 999 }).outcome,
        Outcome::SessionExpired
    );
    let restored = LockSpace::restore(&h.space.snapshot()).expect("restore");
    assert!(restored.session(a).is_some_and(|s| s.revoked));
    // The holder's own close frees the lock for the next waiter.
    let seq = h.next_seq();
    let closed = h.apply(Command::CloseSession { session: a, seq });
    assert_eq!(closed.outcome, Outcome::SessionClosed);
    assert_eq!(closed.notifications, vec![granted(c, c_seq, h.index)]);
}

/// A revoked session's grant also ends by the normal expiry, and by its own release.
#[test]
fn a_revoked_sessions_grant_ends_by_expiry_or_release() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    h.acquire(a, "l", X, None);
    h.acquire(a, "k", X, None);
    let b_wait = h.acquire_cmd(b, "l", X, None);
    let Command::Acquire { seq: b_seq, .. } = b_wait else {
        unreachable!()
    };
    h.apply(b_wait);
    h.apply(Command::MarkRevoked { session: a });
    assert_eq!(h.release(a, "k").outcome, Outcome::Released);
    assert_eq!(h.holders("l"), vec![a]);
    let expired = h.apply(Command::ExpireSession { session: a });
    assert_eq!(expired.notifications, vec![granted(b, b_seq, h.index)]);
    assert!(h.space.session(a).is_none());
}

/// An owner given at open is kept, shown by queries, and survives a snapshot.
#[test]
fn owners_are_kept_and_restored() {
    let mut h = Harness::new();
    let applied = h.apply(Command::OpenSession {
        nonce: 5,
        ttl_ms: 1_000,
        token: 3,
        owner: Some("ann@box 42 make".into()),
        principal: None,
    });
    let Outcome::SessionOpened { session, .. } = applied.outcome else {
        panic!("{applied:?}")
    };
    let plain = h.open();
    assert_eq!(h.space.owner(session), Some("ann@box 42 make"));
    assert_eq!(h.space.owner(plain), None);
    let restored = LockSpace::restore(&h.space.snapshot()).unwrap();
    assert_eq!(
        restored.session(session).unwrap().owner.as_deref(),
        Some("ann@box 42 make")
    );
}

/// Extend renews the hold limit of exactly the grant its fence names.
#[test]
fn extend_renews_only_the_current_grant() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    let seq = h.next_seq();
    let fence = Harness::fence(&h.apply(Command::Acquire {
        session: a,
        seq,
        lock: "l".into(),
        mode: X,
        wait_ms: None,
        hold_ms: Some(500),
    }));
    let extend = |h: &mut Harness, session, fence, hold_ms| {
        let seq = h.next_seq();
        h.apply(Command::Extend {
            session,
            seq,
            lock: "l".into(),
            fence,
            hold_ms,
        })
        .outcome
    };
    assert_eq!(
        extend(&mut h, a, fence, 2_000),
        Outcome::Extended { hold_ms: 2_000 }
    );
    assert_eq!(
        h.space.limited_holds(),
        vec![HoldInfo {
            session: a,
            lock: "l".into(),
            fence,
            hold_ms: 2_000,
            // The Extend is the entry right after the grant: the hold restarted there.
            since: fence + 1,
        }]
    );
    assert_eq!(extend(&mut h, a, fence + 1, 9), Outcome::StaleFence);
    assert_eq!(extend(&mut h, b, fence, 9), Outcome::StaleFence);
    // A grant without a limit gains one.
    let b_fence = Harness::fence(&h.acquire(b, "m", X, None));
    let seq = h.next_seq();
    let outcome = h
        .apply(Command::Extend {
            session: b,
            seq,
            lock: "m".into(),
            fence: b_fence,
            hold_ms: 300,
        })
        .outcome;
    assert_eq!(outcome, Outcome::Extended { hold_ms: 300 });
    assert_eq!(h.space.limited_holds().len(), 2);
    // After the grant ends, its fence is stale.
    h.release(a, "l");
    assert_eq!(extend(&mut h, a, fence, 2_000), Outcome::StaleFence);
}

/// Appends need the current exclusive grant with its exact fence; files grow by offset.
#[test]
fn append_is_fenced() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    let fence = Harness::fence(&h.acquire(a, "l", X, None));
    assert_eq!(
        h.append(a, "l", fence, b"abc"),
        Outcome::Appended { offset: 0, size: 3 }
    );
    assert_eq!(
        h.append(a, "l", fence, b"de"),
        Outcome::Appended { offset: 3, size: 5 }
    );
    assert_eq!(
        h.append(a, "l", fence + 1, b"x"),
        Outcome::StaleFence,
        "wrong fence"
    );
    assert_eq!(
        h.append(b, "l", fence, b"x"),
        Outcome::StaleFence,
        "not the holder"
    );
    assert_eq!(
        h.append(a, "other", fence, b"x"),
        Outcome::StaleFence,
        "wrong lock"
    );
    assert_eq!(
        h.space.read("f", 0, 100),
        Some((std::borrow::Cow::Borrowed(&b"abcde"[..]), 5))
    );
    assert_eq!(
        h.space.read("f", 9, 1),
        Some((std::borrow::Cow::Borrowed(&b""[..]), 5))
    );
    assert_eq!(h.space.read("g", 0, 1), None);
    // The lock moves on to b: a's fence is stale for ever, b's works.
    h.acquire(b, "l", X, None);
    let applied = h.release(a, "l");
    let Outcome::Granted { fence: b_fence } = applied.notifications[0].outcome else {
        panic!()
    };
    assert_eq!(h.append(a, "l", fence, b"late"), Outcome::StaleFence);
    assert_eq!(
        h.append(b, "l", b_fence, b"!"),
        Outcome::Appended { offset: 5, size: 6 }
    );
    // A shared grant cannot append.
    h.release(b, "l");
    let shared = Harness::fence(&h.acquire(a, "l", S, None));
    assert_eq!(h.append(a, "l", shared, b"x"), Outcome::StaleFence);
    assert_eq!(h.space.stats().file_bytes, 6);
    assert_eq!(h.space.files(None), vec![("f".to_string(), 6)]);
}

/// A replayed request returns its original result and changes nothing (state bytes identical,
/// except for the applied index); a still-queued acquire reports its current position.
#[test]
fn dedup_replay_returns_original_and_changes_nothing() {
    let mut h = Harness::new();
    let (a, b, c) = (h.open(), h.open(), h.open());
    let a_cmd = h.acquire_cmd(a, "l", X, None);
    let fence = Harness::fence(&h.apply(a_cmd.clone()));
    h.acquire(b, "l", X, None);
    let c_cmd = h.acquire_cmd(c, "l", X, None);
    assert_eq!(
        h.apply(c_cmd.clone()).outcome,
        Outcome::Queued { position: 1 }
    );
    let seq = h.next_seq();
    let append = Command::Append {
        session: a,
        seq,
        file: "f".into(),
        lock: "l".into(),
        fence,
        data: b"x".to_vec(),
        quota: None,
    };
    assert_eq!(
        h.apply(append.clone()).outcome,
        Outcome::Appended { offset: 0, size: 1 }
    );
    let release = Command::Release {
        session: a,
        seq: h.next_seq(),
        lock: "l".into(),
    };
    assert_eq!(h.apply(release.clone()).outcome, Outcome::Released);
    // Now b holds, c is next (position 0).
    for (command, expected) in [
        (a_cmd, Outcome::Granted { fence }),
        (c_cmd, Outcome::Queued { position: 0 }),
        (append, Outcome::Appended { offset: 0, size: 1 }),
        (release, Outcome::Released),
    ] {
        let before = h.space.snapshot();
        let applied = h.apply(command);
        assert_eq!(applied.outcome, expected);
        assert!(applied.notifications.is_empty());
        h.space.applied_index -= 1;
        assert_eq!(h.space.snapshot(), before, "a replay changed the state");
        h.space.applied_index += 1;
    }
    assert_eq!(
        h.space.read("f", 0, 10),
        Some((std::borrow::Cow::Borrowed(&b"x"[..]), 1))
    );
}

/// After more than DEDUP_WINDOW requests, the oldest seqs answer SequenceTooOld with no effect.
#[test]
fn sequence_too_old_after_eviction() {
    let mut h = Harness::new();
    let a = h.open();
    let first = Command::Acquire {
        session: a,
        seq: 1,
        lock: "l".into(),
        mode: X,
        wait_ms: None,
        hold_ms: None,
    };
    h.apply(first.clone());
    let release = Command::Release {
        session: a,
        seq: 2,
        lock: "l".into(),
    };
    h.apply(release.clone());
    for seq in 3..=(DEDUP_WINDOW as u64 + 2) {
        h.apply(Command::Release {
            session: a,
            seq,
            lock: "none".into(),
        });
    }
    assert_eq!(h.space.sessions[&a].dedup.len(), DEDUP_WINDOW);
    assert_eq!(h.apply(first).outcome, Outcome::SequenceTooOld);
    assert_eq!(h.apply(release).outcome, Outcome::SequenceTooOld);
    assert!(
        h.space.lock("l").is_none(),
        "the too-old acquire was not applied"
    );
    let fresh = Command::Release {
        session: a,
        seq: DEDUP_WINDOW as u64 + 3,
        lock: "none".into(),
    };
    assert_eq!(h.apply(fresh).outcome, Outcome::NotHolder);
}

/// A retried open with the same nonce returns the live session; after it closes, the nonce
/// opens a new one.
#[test]
fn open_retry_with_nonce_returns_same_session() {
    let mut h = Harness::new();
    let open = Command::OpenSession {
        nonce: 42,
        ttl_ms: 3_000,
        token: 99,
        owner: None,
        principal: None,
    };
    let first = h.apply(open.clone()).outcome;
    assert_eq!(
        first,
        Outcome::SessionOpened {
            session: 1,
            token: 99,
            ttl_ms: 3_000
        }
    );
    let retry = Command::OpenSession {
        nonce: 42,
        ttl_ms: 5_000,
        token: 100,
        owner: None,
        principal: None,
    };
    assert_eq!(h.apply(retry.clone()).outcome, first);
    assert_eq!(h.space.sessions().len(), 1);
    assert_eq!(
        h.space.session(1),
        Some(SessionInfo {
            id: 1,
            token: 99,
            ttl_ms: 3_000,
            owner: None,
            revoked: false,
            principal: None,
        })
    );
    h.apply(Command::ExpireSession { session: 1 });
    assert!(h.space.nonces.is_empty());
    assert_eq!(
        h.apply(retry).outcome,
        Outcome::SessionOpened {
            session: 4,
            token: 100,
            ttl_ms: 5_000
        }
    );
}

/// Fences are unique and increasing across locks, and at least the granting index.
#[test]
fn fences_increase_across_locks_and_skips() {
    let mut h = Harness::new();
    let a = h.open();
    let f1 = Harness::fence(&h.acquire(a, "x", X, None));
    h.space.skip(10);
    h.index = 10;
    let f2 = Harness::fence(&h.acquire(a, "y", S, None));
    assert_eq!((f1, f2), (2, 11));
    assert_eq!(h.space.applied_index(), 11);
}

/// Applying at or below the applied index is a bug and panics.
#[test]
#[should_panic(expected = "at or below applied index")]
fn apply_requires_increasing_index() {
    let mut space = LockSpace::new();
    space.skip(5);
    space.apply(5, &Command::ExpireSession { session: 1 });
}

/// Snapshots round-trip byte for byte and the restored state behaves identically; garbage and
/// inconsistent snapshots are refused.
#[test]
fn snapshot_restore_roundtrip() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    let fence = Harness::fence(&h.acquire(a, "l", X, None));
    h.acquire(b, "l", S, Some(1_000));
    h.append(a, "l", fence, b"data");
    let bytes = h.space.snapshot();
    let mut restored = LockSpace::restore(&bytes).unwrap();
    assert_eq!(restored.snapshot(), bytes);
    assert_eq!(restored, h.space);
    assert_eq!(restored.applied_index(), h.space.applied_index());
    let release = Command::Release {
        session: a,
        seq: 100,
        lock: "l".into(),
    };
    let index = h.index + 1;
    assert_eq!(
        restored.apply(index, &release),
        h.space.apply(index, &release)
    );
    assert_eq!(restored.snapshot(), h.space.snapshot());
    assert!(matches!(
        LockSpace::restore(b"\xc1garbage"),
        Err(Error::CorruptSnapshot(_))
    ));
    // A holder without a session is refused.
    let mut broken = LockSpace::restore(&bytes).unwrap();
    broken.sessions.remove(&a);
    broken.nonces.retain(|_, id| *id != a);
    assert!(matches!(
        LockSpace::restore(&broken.snapshot()),
        Err(Error::InconsistentSnapshot(_))
    ));
}

/// Queries: prefix filtering and sorting.
#[test]
fn queries_sort_and_filter() {
    let mut h = Harness::new();
    let a = h.open();
    for name in ["b/2", "a/1", "b/1", "c"] {
        h.acquire(a, name, S, None);
    }
    let names = |prefix| {
        h.space
            .locks(prefix)
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(None), vec!["a/1", "b/1", "b/2", "c"]);
    assert_eq!(names(Some("b/")), vec!["b/1", "b/2"]);
    assert_eq!(names(Some("d")), Vec::<String>::new());
    assert_eq!(
        h.space.stats(),
        Stats {
            sessions: 1,
            locks: 4,
            waiters: 0,
            files: 0,
            file_bytes: 0
        }
    );
}

/// An `ExpireHold` names where the hold started: one proposed before an `Extend` was applied
/// (naming the grant's start) does nothing once the Extend restarted the hold; one naming the
/// Extend's start ends the grant.
#[test]
fn an_expiry_of_a_hold_restarted_by_an_extend_is_ignored() {
    let mut h = Harness::new();
    let (a, b) = (h.open(), h.open());
    let seq = h.next_seq();
    let fence = Harness::fence(&h.apply(Command::Acquire {
        session: a,
        seq,
        lock: "l".into(),
        mode: X,
        wait_ms: None,
        hold_ms: Some(500),
    }));
    let granted_at = h.space.limited_holds()[0].since;
    h.acquire(b, "l", X, None);
    let seq = h.next_seq();
    h.apply(Command::Extend {
        session: a,
        seq,
        lock: "l".into(),
        fence,
        hold_ms: 500,
    });
    let extended_at = h.space.limited_holds()[0].since;
    assert!(extended_at > granted_at, "the Extend restarted the hold");
    let expire = |since| Command::ExpireHold {
        session: a,
        lock: "l".into(),
        fence,
        since: Some(since),
    };
    assert_eq!(h.apply(expire(granted_at)).outcome, Outcome::Ignored);
    assert_eq!(h.holders("l"), vec![a], "the extended grant stands");
    let applied = h.apply(expire(extended_at));
    assert_eq!(applied.outcome, Outcome::Released);
    assert_eq!(h.holders("l"), vec![b]);
}

/// A remembered seq re-sent with a different request answers SequenceReused and changes
/// nothing; the identical request still replays its result; the digests survive a snapshot.
#[test]
fn a_seq_reused_by_another_request_is_refused() {
    let mut h = Harness::new();
    let a = h.open();
    let acquire = |lock: &str| Command::Acquire {
        session: a,
        seq: 1,
        lock: lock.into(),
        mode: X,
        wait_ms: Some(0),
        hold_ms: None,
    };
    let granted = h.apply(acquire("a")).outcome;
    assert!(matches!(granted, Outcome::Granted { .. }), "{granted:?}");
    let before = h.space.snapshot();
    assert_eq!(h.apply(acquire("b")).outcome, Outcome::SequenceReused);
    let release = Command::Release {
        session: a,
        seq: 1,
        lock: "a".into(),
    };
    assert_eq!(h.apply(release).outcome, Outcome::SequenceReused);
    assert!(h.space.lock("b").is_none(), "the reused seq was applied");
    assert_eq!(h.apply(acquire("a")).outcome, granted);
    let after = h.space.snapshot();
    // Only the applied index moved.
    let mut restored = LockSpace::restore(&after).expect("restore");
    restored.applied_index = LockSpace::restore(&before).unwrap().applied_index;
    assert_eq!(
        restored.snapshot(),
        before,
        "a refused or replayed request changed the state"
    );
    // A restored replica refuses the same reuse.
    let mut replica = LockSpace::restore(&after).expect("restore");
    let next = replica.applied_index() + 1;
    assert_eq!(
        replica.apply(next, &acquire("b")).outcome,
        Outcome::SequenceReused
    );
}
