//! The replica on a single node whose writes are durable at once: admission, answers and the
//! two fixes (an unknown session beyond the applied log is `NotReady`; a learner that never
//! answers is not promoted and its add gives up).

use std::collections::BTreeMap;

use super::*;
use crate::protocol::ErrorCode;
use crate::raft::{Config as RaftConfig, Recovered};

/// A one-node replica (`voters`: the bootstrap membership; node 1 is this one).
pub(super) fn replica(voters: &[NodeId]) -> Replica {
    let mut raft = RaftConfig::new(1);
    raft.bootstrap = Some(Membership {
        voters: voters.iter().map(|&i| (i, format!("n{i}"))).collect(),
        learners: BTreeMap::new(),
    });
    let config = Config {
        id: 1,
        peers: BTreeMap::new(),
        tick_ms: 10,
        election_ticks_max: raft.election_ticks_max,
        snapshot_threshold: 1_000,
        snapshot_threshold_bytes: SNAPSHOT_THRESHOLD_BYTES,
        shutdown_timeout_ms: 1_000,
        add_timeout_ms: 2_000,
        limits: Limits::default(),
        seed: 7,
    };
    let node = Node::new(raft, Recovered::default(), 7);
    Replica::new(config, node, LockSpace::new(), 0)
}

/// Advances, makes every write durable at once, and returns the answers, by ticket.
pub(super) fn settle(replica: &mut Replica, now: u64) -> Vec<(Ticket, Response)> {
    settle_pushes(replica, now).0
}

/// Push events as a test sees them: (session, event), in order.
pub(super) type Pushes = Vec<(SessionId, Response)>;

/// [`settle`], also returning the push events, by session, in order.
pub(super) fn settle_pushes(replica: &mut Replica, now: u64) -> (Vec<(Ticket, Response)>, Pushes) {
    let mut answers = Vec::new();
    let mut pushes = Vec::new();
    loop {
        replica.advance(now).expect("advance");
        let effects = replica.take_effects();
        if effects.is_empty() {
            return (answers, pushes);
        }
        let mut last = None;
        for effect in effects {
            match effect {
                Effect::Persist { id, .. } => last = Some(id),
                Effect::Answer {
                    ticket, response, ..
                } => answers.push((ticket, response)),
                Effect::Push { session, event } => pushes.push((session, event)),
                Effect::BuildSnapshot(build) => {
                    replica.handle(now, Input::SnapshotBuilt(build.build()))
                }
                _ => {}
            }
        }
        if let Some(id) = last {
            replica.durable(now, id);
        }
    }
}

/// Ticks until the single node leads and has applied an entry of its term; returns the time.
pub(super) fn elect(replica: &mut Replica) -> u64 {
    let mut now = 0;
    while !replica.caught_up() {
        now += 10;
        assert!(now < 60_000, "no leader");
        replica.handle(now, Input::Tick);
        settle(replica, now);
    }
    now
}

pub(super) fn request(
    replica: &mut Replica,
    now: u64,
    ticket: Ticket,
    request: Request,
) -> Response {
    request_as(replica, now, ticket, request, None)
}

/// [`request`] from an authenticated principal.
pub(super) fn request_as(
    replica: &mut Replica,
    now: u64,
    ticket: Ticket,
    request: Request,
    principal: Option<&crate::auth::Principal>,
) -> Response {
    replica.handle(
        now,
        Input::Request {
            ticket,
            request,
            principal: principal.cloned(),
        },
    );
    let answers = settle(replica, now);
    let mine: Vec<Response> = answers
        .into_iter()
        .filter(|(t, _)| *t == ticket)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(mine.len(), 1, "one answer for ticket {ticket}: {mine:?}");
    mine.into_iter().next().expect("one answer")
}

pub(super) fn code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn a_session_is_opened_kept_alive_and_its_lock_granted() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let open = Request::OpenSession {
        id: 1,
        nonce: 9,
        ttl_ms: 5_000,
        owner: None,
    };
    let Response::SessionOpened { session, token, .. } = request(&mut replica, now, 1, open) else {
        panic!("no session");
    };
    let keep = Request::KeepAlive {
        id: 2,
        session,
        token,
    };
    assert_eq!(
        request(&mut replica, now, 2, keep),
        Response::KeptAlive {
            id: 2,
            ttl_ms: 5_000
        }
    );
    let acquire = Request::Acquire {
        id: 3,
        session,
        token,
        seq: 1,
        lock: "l".into(),
        mode: crate::protocol::LockMode::Exclusive,
        wait_ms: Some(0),
        hold_ms: None,
    };
    assert!(matches!(
        request(&mut replica, now, 3, acquire),
        Response::Granted { id: 3, .. }
    ));
    let wrong_token = Request::KeepAlive {
        id: 4,
        session,
        token: token ^ 1,
    };
    let refused = request(&mut replica, now, 4, wrong_token);
    assert_eq!(code(&refused), Some(ErrorCode::SessionExpired));
}

#[test]
fn an_unknown_session_beyond_the_applied_log_is_not_ready_not_expired() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let applied = replica.lockspace().applied_index();
    let ahead = Request::KeepAlive {
        id: 1,
        session: applied + 10,
        token: 1,
    };
    assert_eq!(
        code(&request(&mut replica, now, 1, ahead)),
        Some(ErrorCode::NotReady)
    );
    let gone = Request::KeepAlive {
        id: 2,
        session: applied,
        token: 1,
    };
    assert_eq!(
        code(&request(&mut replica, now, 2, gone)),
        Some(ErrorCode::SessionExpired)
    );
}

#[test]
fn a_learner_that_never_answers_is_not_promoted_and_the_add_gives_up() {
    let mut replica = replica(&[1]);
    let mut now = elect(&mut replica);
    let add = Request::AddMember {
        id: 1,
        node_id: 2,
        addr: "nowhere:1".into(),
    };
    replica.handle(
        now,
        Input::Request {
            ticket: 1,
            request: add,
            principal: None,
        },
    );
    let mut answer = None;
    while answer.is_none() {
        now += 10;
        assert!(now < 60_000, "the add never gave up");
        replica.handle(now, Input::Tick);
        answer = settle(&mut replica, now)
            .into_iter()
            .find(|(ticket, _)| *ticket == 1);
        assert!(
            !replica.node().membership().voters.contains_key(&2),
            "node 2 was promoted without answering"
        );
    }
    let (_, response) = answer.expect("answered");
    assert!(now >= 2_000, "gave up before its timeout");
    match response {
        Response::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Timeout);
            assert!(message.contains("did not answer"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(replica.node().membership().learners.contains_key(&2));
}

pub(super) fn open(replica: &mut Replica, now: u64, ticket: Ticket, ttl_ms: u64) -> (u64, u64) {
    let open = Request::OpenSession {
        id: ticket,
        nonce: 100 + ticket,
        ttl_ms,
        owner: None,
    };
    match request(replica, now, ticket, open) {
        Response::SessionOpened { session, token, .. } => (session, token),
        other => panic!("no session: {other:?}"),
    }
}

pub(super) fn acquire(session: u64, token: u64, id: u64, lock: &str) -> Request {
    Request::Acquire {
        id,
        session,
        token,
        seq: id,
        lock: lock.into(),
        mode: crate::protocol::LockMode::Exclusive,
        wait_ms: None,
        hold_ms: None,
    }
}

/// The safe revoke: the revoked session's keep-alives are refused with `Revoked` and do not
/// move its lease, and its lock goes to the next waiter only when the lease (renewed by the
/// last keep-alive before the revoke) runs out on the leader, never earlier.
#[test]
fn a_revoked_sessions_lock_moves_only_when_its_lease_runs_out() {
    let ttl = 2_000;
    let mut replica = replica(&[1]);
    let mut now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, ttl);
    let (b, b_token) = open(&mut replica, now, 2, 30_000);
    assert!(matches!(
        request(&mut replica, now, 3, acquire(a, a_token, 3, "l")),
        Response::Granted { .. }
    ));
    assert!(matches!(
        request(&mut replica, now, 4, acquire(b, b_token, 4, "l")),
        Response::Queued { .. }
    ));
    now += 500;
    let keep = |id| Request::KeepAlive {
        id,
        session: a,
        token: a_token,
    };
    assert!(matches!(
        request(&mut replica, now, 5, keep(5)),
        Response::KeptAlive { .. }
    ));
    let renewed = now;
    now += 100;
    let revoke = Request::RevokeSession {
        id: 6,
        session_id: a,
        force: false,
    };
    assert_eq!(
        request(&mut replica, now, 6, revoke),
        Response::SessionClosed { id: 6 }
    );
    now += 100;
    assert_eq!(
        code(&request(&mut replica, now, 7, keep(7))),
        Some(ErrorCode::Revoked)
    );
    let granted_at = loop {
        now += 10;
        assert!(
            now < renewed + 10 * ttl,
            "the revoked session never expired"
        );
        replica.handle(now, Input::Tick);
        let answers = settle(&mut replica, now);
        if answers
            .iter()
            .any(|(t, r)| *t == 4 && matches!(r, Response::Granted { .. }))
        {
            break now;
        }
        // Refused keep-alives along the way do not renew the lease.
        if now % 500 == 0 {
            assert_eq!(
                code(&request(&mut replica, now, 8, keep(now))),
                Some(ErrorCode::Revoked)
            );
        }
    };
    assert!(
        granted_at >= renewed + ttl,
        "the lock moved at {granted_at}, before the lease renewed at {renewed} ran out"
    );
    assert!(
        replica.lockspace().session(a).is_none(),
        "expired in the end"
    );
}

/// The forced revoke ends the session at once: its lock is free immediately.
#[test]
fn a_forced_revoke_frees_the_lock_at_once() {
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 10_000);
    request(&mut replica, now, 2, acquire(a, a_token, 2, "l"));
    let revoke = Request::RevokeSession {
        id: 3,
        session_id: a,
        force: true,
    };
    assert_eq!(
        request(&mut replica, now, 3, revoke),
        Response::SessionClosed { id: 3 }
    );
    assert!(replica.lockspace().lock("l").is_none());
    assert!(replica.lockspace().session(a).is_none());
}

/// Ticks from `now` every 10 ms until the queued acquire `ticket` is answered `Granted`, and
/// returns that time; fails the test if it has not been granted by `give_up`.
fn tick_until_granted(replica: &mut Replica, mut now: u64, ticket: Ticket, give_up: u64) -> u64 {
    loop {
        now += 10;
        assert!(
            now < give_up,
            "ticket {ticket} was never granted (the hold never ended)"
        );
        replica.handle(now, Input::Tick);
        if settle(replica, now)
            .iter()
            .any(|(t, r)| *t == ticket && matches!(r, Response::Granted { .. }))
        {
            return now;
        }
    }
}

/// An `Extend` that is in the log but not yet applied when the hold limit passes on the leader:
/// the leader proposes `ExpireHold` behind it, and the Extend is applied first and answered
/// `Extended`. The expiry must then find the hold restarted and do nothing; before the fix it
/// revoked the grant the holder had just been told was extended, and granted the waiter.
#[test]
fn an_expiry_proposed_behind_an_extend_does_not_revoke_the_extended_grant() {
    let hold = 1_000;
    let mut replica = replica(&[1]);
    let mut now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 30_000);
    let (b, b_token) = open(&mut replica, now, 2, 30_000);
    let mut held = acquire(a, a_token, 3, "l");
    if let Request::Acquire { hold_ms, .. } = &mut held {
        *hold_ms = Some(hold);
    }
    let Response::Granted { fence, .. } = request(&mut replica, now, 3, held) else {
        panic!("no grant");
    };
    assert!(matches!(
        request(&mut replica, now, 4, acquire(b, b_token, 4, "l")),
        Response::Queued { .. }
    ));
    // Just before the limit, the holder extends; its entry is written but not yet durable.
    now += hold - 10;
    let extend = Request::Extend {
        id: 5,
        session: a,
        token: a_token,
        seq: 5,
        lock: "l".into(),
        fence,
        hold_ms: hold,
    };
    replica.handle(
        now,
        Input::Request {
            ticket: 5,
            request: extend,
            principal: None,
        },
    );
    replica.advance(now).expect("advance");
    let pending: Vec<Effect> = replica.take_effects();
    assert!(
        pending.iter().any(|e| matches!(e, Effect::Persist { .. })),
        "the Extend is being written"
    );
    // The limit passes on the leader while the Extend is still in flight.
    now += 20;
    replica.handle(now, Input::Tick);
    let answers = settle(&mut replica, now);
    assert!(
        answers
            .iter()
            .any(|(t, r)| *t == 5 && matches!(r, Response::Extended { .. })),
        "the Extend was applied and answered: {answers:?}"
    );
    assert!(
        !answers.iter().any(|(t, _)| *t == 4),
        "the waiter was granted the lock its holder had just extended: {answers:?}"
    );
    let holders = &replica.lockspace().lock("l").expect("held").holders;
    assert_eq!(holders, &vec![(a, fence)], "the extended grant stands");
    // The extended limit still ends the grant, a full hold after the Extend.
    let extended_at = now - 20;
    let granted_at = tick_until_granted(&mut replica, now, 4, extended_at + 10 * hold);
    assert!(
        granted_at >= extended_at + hold,
        "the waiter was granted at {granted_at}, before the hold extended at {extended_at} ended"
    );
}

/// A retried `Acquire` of a grant that was since extended is answered `Granted` again from the
/// exactly-once table; it must not restart the hold with the acquire's first, shorter limit.
/// Found by the simulation's deadline watch (seed 31056): the leader expired the extended hold
/// 184 ms after the replay, while the holder had been told its hold lasts 1,833 ms more.
#[test]
fn a_replayed_acquire_does_not_shorten_an_extended_hold() {
    let (hold, extended) = (1_000, 5_000);
    let mut replica = replica(&[1]);
    let mut now = elect(&mut replica);
    let (a, a_token) = open(&mut replica, now, 1, 60_000);
    let (b, b_token) = open(&mut replica, now, 2, 60_000);
    let mut held = acquire(a, a_token, 3, "l");
    if let Request::Acquire { hold_ms, .. } = &mut held {
        *hold_ms = Some(hold);
    }
    let Response::Granted { fence, .. } = request(&mut replica, now, 3, held.clone()) else {
        panic!("no grant");
    };
    assert!(matches!(
        request(&mut replica, now, 4, acquire(b, b_token, 4, "l")),
        Response::Queued { .. }
    ));
    now += 100;
    let extend = Request::Extend {
        id: 5,
        session: a,
        token: a_token,
        seq: 5,
        lock: "l".into(),
        fence,
        hold_ms: extended,
    };
    assert!(matches!(
        request(&mut replica, now, 5, extend),
        Response::Extended { .. }
    ));
    let extended_at = now;
    // The client retries its acquire (same seq): the same grant comes back.
    now += 100;
    let retried = request(&mut replica, now, 6, held);
    assert!(
        matches!(retried, Response::Granted { fence: f, .. } if f == fence),
        "{retried:?}"
    );
    let granted_at = tick_until_granted(&mut replica, now, 4, extended_at + 10 * extended);
    assert!(
        granted_at >= extended_at + extended,
        "the waiter was granted at {granted_at}, before the hold extended at {extended_at} for \
         {extended} ms ended"
    );
}

#[test]
fn a_session_is_usable_only_by_its_principal_or_an_admin() {
    use crate::auth::{Principal, Role};
    let a = Principal::new("a", Role::Client, vec![], vec![]);
    let b = Principal::new("b", Role::Client, vec![], vec![]);
    let admin = Principal::new("root", Role::Admin, vec![], vec![]);
    let mut replica = replica(&[1]);
    let now = elect(&mut replica);
    let open = Request::OpenSession {
        id: 1,
        nonce: 9,
        ttl_ms: 5_000,
        owner: None,
    };
    let Response::SessionOpened { session, token, .. } =
        request_as(&mut replica, now, 1, open, Some(&a))
    else {
        panic!("no session");
    };
    assert_eq!(
        replica.lockspace.session(session).and_then(|s| s.principal),
        Some("a".to_string()),
        "the opener is recorded in the replicated session"
    );
    let acquire = |id, seq| Request::Acquire {
        id,
        session,
        token,
        seq,
        lock: "l".into(),
        mode: crate::protocol::LockMode::Exclusive,
        wait_ms: Some(0),
        hold_ms: None,
    };
    let keep = |id| Request::KeepAlive { id, session, token };
    // Another principal, even with the right token: denied, and nothing is granted.
    let denied = request_as(&mut replica, now, 2, acquire(2, 1), Some(&b));
    assert_eq!(
        code(&denied),
        Some(ErrorCode::PermissionDenied),
        "{denied:?}"
    );
    assert!(
        replica.lockspace.lock("l").is_none(),
        "a denied acquire changed the lock"
    );
    let denied = request_as(&mut replica, now, 3, keep(3), Some(&b));
    assert_eq!(
        code(&denied),
        Some(ErrorCode::PermissionDenied),
        "{denied:?}"
    );
    // Its own principal, and an admin, may.
    assert!(matches!(
        request_as(&mut replica, now, 4, acquire(4, 1), Some(&a)),
        Response::Granted { id: 4, .. }
    ));
    assert!(matches!(
        request_as(&mut replica, now, 5, keep(5), Some(&admin)),
        Response::KeptAlive { id: 5, .. }
    ));
    let close = Request::CloseSession {
        id: 6,
        session,
        token,
        seq: 2,
    };
    let denied = request_as(&mut replica, now, 6, close.clone(), Some(&b));
    assert_eq!(code(&denied), Some(ErrorCode::PermissionDenied));
    assert!(matches!(
        request_as(&mut replica, now, 7, close, Some(&admin)),
        Response::SessionClosed { .. }
    ));
}
