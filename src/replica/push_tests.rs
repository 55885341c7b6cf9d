//! The leader's push events on a single node: the right `Revoked` for a hold limit, a lease
//! expiry and both revokes, the warnings before a hold limit or lease ends, and
//! `QueuePosition` exactly for the waiters that moved.

use super::tests::{acquire, elect, open, replica, request, settle_pushes, Pushes};
use super::*;
use crate::protocol::LockMode;
use crate::protocol::PushReason;

/// Sends `request` and returns its answer and the pushes it caused.
fn step(replica: &mut Replica, now: u64, ticket: Ticket, request: Request) -> (Response, Pushes) {
    replica.handle(
        now,
        Input::Request {
            ticket,
            request,
            principal: None,
        },
    );
    let (answers, pushes) = settle_pushes(replica, now);
    let mine = answers
        .into_iter()
        .find(|(t, _)| *t == ticket)
        .map(|(_, r)| r)
        .expect("an answer");
    (mine, pushes)
}

/// Ticks (10 ms each) until `done` holds for the pushes so far, for at most `limit` ms;
/// returns the time and every push, each with the time it came.
fn tick_until(
    replica: &mut Replica,
    mut now: u64,
    limit: u64,
    done: impl Fn(&[(u64, SessionId, Response)]) -> bool,
) -> (u64, Vec<(u64, SessionId, Response)>) {
    let end = now + limit;
    let mut seen = Vec::new();
    while !done(&seen) {
        now += 10;
        assert!(now <= end, "not done within {limit} ms; pushes: {seen:?}");
        replica.handle(now, Input::Tick);
        let (_, pushes) = settle_pushes(replica, now);
        seen.extend(pushes.into_iter().map(|(s, r)| (now, s, r)));
    }
    (now, seen)
}

fn granted(response: &Response) -> u64 {
    match response {
        Response::Granted { fence, .. } => *fence,
        other => panic!("not granted: {other:?}"),
    }
}

fn is_revoked(push: &Response) -> bool {
    matches!(push, Response::Revoked { .. })
}

#[test]
fn a_hold_limit_warns_then_pushes_revoked_hold_to_the_holder_only() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 30_000);
    let (b, b_token) = open(&mut replica, now, 2, 30_000);
    let mut limited = acquire(a, a_token, 3, "l");
    if let Request::Acquire { hold_ms, .. } = &mut limited {
        *hold_ms = Some(1_000);
    }
    let fence = granted(&request(&mut replica, now, 3, limited));
    let (queued, pushes) = step(&mut replica, now, 4, acquire(b, b_token, 4, "l"));
    assert!(matches!(queued, Response::Queued { position: 0, .. }));
    assert!(
        pushes.is_empty(),
        "queueing behind moves nobody: {pushes:?}"
    );
    let (end, seen) = tick_until(&mut replica, now, 5_000, |seen| {
        seen.iter().any(|(_, _, p)| is_revoked(p))
    });
    let warning = seen
        .iter()
        .find(|(_, _, p)| matches!(p, Response::HoldExpiring { .. }))
        .expect("a HoldExpiring before the end");
    // Lead time: half the 1 s limit.
    assert_eq!(
        warning.2,
        Response::HoldExpiring {
            id: 0,
            session: a,
            lock: "l".into(),
            fence,
            left_ms: 500
        }
    );
    assert_eq!(warning.0, now + 500);
    assert!(end >= now + 1_000, "revoked before the limit, at {end}");
    let revoked = seen.iter().find(|(_, _, p)| is_revoked(p)).expect("found");
    assert_eq!(revoked.1, a);
    assert_eq!(
        revoked.2,
        Response::Revoked {
            id: 0,
            session: a,
            lock: "l".into(),
            fence,
            reason: PushReason::Hold
        }
    );
    // B was granted (its answer); it gets no position push for leaving the queue.
    assert!(seen
        .iter()
        .all(|(_, s, p)| *s == a || !matches!(p, Response::QueuePosition { .. })));
}

#[test]
fn a_lease_expiry_warns_then_pushes_revoked_and_session_expired() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 2_000);
    let fence = granted(&request(&mut replica, now, 2, acquire(a, a_token, 2, "l")));
    let (end, seen) = tick_until(&mut replica, now, 5_000, |seen| {
        seen.iter()
            .any(|(_, _, p)| matches!(p, Response::SessionExpired { .. }))
    });
    assert!(end >= now + 2_000);
    let events: Vec<&Response> = seen.iter().map(|(_, _, p)| p).collect();
    assert_eq!(
        events,
        vec![
            &Response::SessionExpiring {
                id: 0,
                session: a,
                left_ms: 1_000
            },
            &Response::Revoked {
                id: 0,
                session: a,
                lock: "l".into(),
                fence,
                reason: PushReason::Expired
            },
            &Response::SessionExpired {
                id: 0,
                session: a,
                reason: PushReason::Expired
            },
        ]
    );
}

#[test]
fn a_keep_alive_moves_the_session_warning_with_the_lease() {
    let mut replica = replica(&[1]);
    let mut now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 2_000);
    let start = now;
    for ticket in 2..8 {
        now += 400;
        let keep = Request::KeepAlive {
            id: ticket,
            session: a,
            token: a_token,
        };
        let (_, pushes) = step(&mut replica, now, ticket, keep);
        assert!(pushes.is_empty());
        for _ in 0..40 {
            replica.handle(now, Input::Tick);
        }
        let (_, pushes) = settle_pushes(&mut replica, now);
        assert!(
            pushes.is_empty(),
            "warned at {} ms: {pushes:?}",
            now - start
        );
    }
}

#[test]
fn a_forced_revoke_pushes_revoked_admin_and_session_expired() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 10_000);
    let fence = granted(&request(&mut replica, now, 2, acquire(a, a_token, 2, "l")));
    let revoke = Request::RevokeSession {
        id: 3,
        session_id: a,
        force: true,
    };
    let (_, pushes) = step(&mut replica, now, 3, revoke);
    assert_eq!(
        pushes,
        vec![
            (
                a,
                Response::Revoked {
                    id: 0,
                    session: a,
                    lock: "l".into(),
                    fence,
                    reason: PushReason::Admin
                }
            ),
            (
                a,
                Response::SessionExpired {
                    id: 0,
                    session: a,
                    reason: PushReason::Admin
                }
            ),
        ]
    );
}

#[test]
fn a_safe_revoke_tells_the_holder_to_stop_once() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 10_000);
    let fence = granted(&request(&mut replica, now, 2, acquire(a, a_token, 2, "l")));
    let revoke = |id| Request::RevokeSession {
        id,
        session_id: a,
        force: false,
    };
    let (_, pushes) = step(&mut replica, now, 3, revoke(3));
    assert_eq!(
        pushes,
        vec![(
            a,
            Response::Revoked {
                id: 0,
                session: a,
                lock: "l".into(),
                fence,
                reason: PushReason::Admin
            }
        )]
    );
    let (_, again) = step(&mut replica, now, 4, revoke(4));
    assert!(again.is_empty(), "a second revoke says nothing new");
}

#[test]
fn queue_positions_are_pushed_to_exactly_the_waiters_that_moved() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 30_000);
    let (b, b_token) = open(&mut replica, now, 2, 30_000);
    let (c, c_token) = open(&mut replica, now, 3, 30_000);
    let (d, d_token) = open(&mut replica, now, 4, 30_000);
    granted(&request(&mut replica, now, 5, acquire(a, a_token, 5, "l")));
    for (ticket, session, token) in [(6, b, b_token), (7, c, c_token), (8, d, d_token)] {
        let (queued, pushes) = step(
            &mut replica,
            now,
            ticket,
            acquire(session, token, ticket, "l"),
        );
        assert!(matches!(queued, Response::Queued { .. }));
        assert!(pushes.is_empty());
    }
    let position = |session, seq, ahead| {
        (
            session,
            Response::QueuePosition {
                id: 0,
                session,
                lock: "l".into(),
                seq,
                ahead,
                mode: Some(LockMode::Exclusive),
                holders: 1,
            },
        )
    };
    // A releases: B is granted, C and D move up by one.
    let release = Request::Release {
        id: 9,
        session: a,
        token: a_token,
        seq: 9,
        lock: "l".into(),
    };
    let (released, pushes) = step(&mut replica, now, 9, release);
    assert_eq!(released, Response::Released { id: 9 });
    assert_eq!(pushes, vec![position(c, 7, 0), position(d, 8, 1)]);
    // D cancels: it was last, nobody moves.
    let cancel = Request::Cancel {
        id: 10,
        session: d,
        token: d_token,
        seq: 10,
        lock: "l".into(),
        acquire_seq: 8,
    };
    let (cancelled, pushes) = step(&mut replica, now, 10, cancel);
    assert_eq!(cancelled, Response::Cancelled { id: 10 });
    assert!(pushes.is_empty(), "{pushes:?}");
    // B's session closes (its own close: no Revoked), and C is granted. Then E and F queue,
    // and a forced revoke of the waiting E moves F up.
    let close = Request::CloseSession {
        id: 11,
        session: b,
        token: b_token,
        seq: 11,
    };
    let (_, pushes) = step(&mut replica, now, 11, close);
    assert!(pushes.is_empty(), "{pushes:?}");
    let (e, e_token) = open(&mut replica, now, 12, 30_000);
    let (f, f_token) = open(&mut replica, now, 13, 30_000);
    step(&mut replica, now, 14, acquire(e, e_token, 14, "l"));
    step(&mut replica, now, 15, acquire(f, f_token, 15, "l"));
    let revoke = Request::RevokeSession {
        id: 16,
        session_id: e,
        force: true,
    };
    let (_, pushes) = step(&mut replica, now, 16, revoke);
    assert_eq!(
        pushes,
        vec![
            (
                e,
                Response::SessionExpired {
                    id: 0,
                    session: e,
                    reason: PushReason::Admin
                }
            ),
            position(f, 15, 0),
        ],
        "a waiter's session end: no Revoked (it held nothing), the one behind it moves"
    );
}

/// `Locks` on the leader says how long each holder has held (and has left of its hold
/// limit) and how long each waiter has waited, by the leader's clock; a stale read on a node
/// that keeps no times would say nil.
#[test]
fn the_leader_annotates_holders_and_waiters_with_its_own_times() {
    let mut replica = replica(&[1]);
    let start = elect(&mut replica);
    let (a, a_token) = open(&mut replica, start, 1, 30_000);
    let (b, b_token) = open(&mut replica, start, 2, 30_000);
    let mut limited = acquire(a, a_token, 3, "l");
    if let Request::Acquire { hold_ms, .. } = &mut limited {
        *hold_ms = Some(5_000);
    }
    granted(&request(&mut replica, start, 3, limited));
    request(&mut replica, start, 4, acquire(b, b_token, 4, "l"));
    let now = start + 1_230;
    replica.handle(now, Input::Tick);
    settle_pushes(&mut replica, now);
    let locks = Request::Locks {
        id: 5,
        prefix: None,
        stale: false,
    };
    let Response::LockList { locks, .. } = request(&mut replica, now, 5, locks) else {
        panic!("no lock list")
    };
    let holder = &locks[0].holders[0];
    assert_eq!(
        (holder.held_ms, holder.hold_left_ms),
        (Some(1_230), Some(3_770))
    );
    assert_eq!(locks[0].waiters[0].waited_ms, Some(1_230));
}
