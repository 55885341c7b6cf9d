//! The client-side lease, cancels, extends and dropped calls against real `raftlockd`s: a
//! session whose daemon stops answering goes to jeopardy and then to lost before the daemon's
//! TTL could end it; a grant with a hold limit is lost locally before the cluster grants the
//! lock to anyone else, and `extend` keeps a short hold alive; a dropped waiting lock future
//! leaves the queue; a dropped release under failover still completes, so the next release
//! does not answer `NotHolder`.

mod common;

use std::time::Duration;

use common::{Cluster, Daemon, DEADLINE};
use futures::FutureExt;
use raftlock::client::lease::drift_margin;
use raftlock::client::LockMode;
use raftlock::client::{Client, ClientOptions, Error, Lease, LeaseState, LostReason, Wait};
use raftlock::lockspace::SessionId;
use tokio::sync::watch;
use tokio::time::Instant;

const EX: LockMode = LockMode::Exclusive;

async fn client(daemon: &Daemon) -> Client {
    let options = ClientOptions {
        retry_timeout: DEADLINE,
        request_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    Client::connect(vec![daemon.addr.to_string()], options)
        .await
        .expect("connect")
}

/// Waits (bounded by [`DEADLINE`]) until the waiters of `lock` satisfy `done`.
async fn wait_waiters(client: &Client, lock: &str, done: impl Fn(&[SessionId]) -> bool) {
    let start = Instant::now();
    loop {
        let locks = client.locks(Some(lock), false).await.expect("locks");
        let waiters: Vec<SessionId> = locks
            .iter()
            .filter(|l| l.name == lock)
            .flat_map(|l| l.waiters.iter().map(|w| w.session))
            .collect();
        if done(&waiters) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiters of {lock} stuck at {waiters:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sessions holding `lock` now.
async fn holders(client: &Client, lock: &str) -> Vec<SessionId> {
    let locks = client.locks(Some(lock), false).await.expect("locks");
    locks
        .iter()
        .filter(|l| l.name == lock)
        .flat_map(|l| l.holders.iter().map(|h| h.session))
        .collect()
}

/// Waits (bounded by [`DEADLINE`]) until the lease satisfies `done`; returns it and when.
async fn wait_lease(
    rx: &mut watch::Receiver<Lease>,
    what: &str,
    done: impl FnMut(&Lease) -> bool,
) -> (Lease, Instant) {
    let lease = tokio::time::timeout(DEADLINE, rx.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("the lease never became {what}"))
        .expect("the lease sender lives as long as the session");
    (*lease, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_daemon_puts_the_lease_in_jeopardy_then_loses_it_before_the_ttl() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let ttl = Duration::from_secs(2);
    let session = client.open_session(ttl).await.expect("open");
    let guard = session.lock("stop", EX, Wait::TryOnce).await.expect("lock");
    let mut rx = session.lease();
    let mut grant = guard.lease();
    assert_eq!(rx.borrow().state, LeaseState::Healthy);
    assert!(rx.borrow().deadline > Instant::now());

    daemon.signal(libc::SIGSTOP);
    // Every keep-alive the daemon answered was received before this instant, so the daemon
    // could expire the session no earlier than one TTL after it.
    let stopped = Instant::now();
    let (jeopardy, jeopardy_at) =
        wait_lease(&mut rx, "jeopardy", |l| l.state == LeaseState::Jeopardy).await;
    assert!(jeopardy.deadline < stopped + ttl);
    let (lost, lost_at) = wait_lease(&mut rx, "lost", |l| l.state.is_lost()).await;
    daemon.signal(libc::SIGCONT);

    assert_eq!(lost.state, LeaseState::Lost(LostReason::LeaseExpired));
    assert!(jeopardy_at <= lost_at);
    assert!(
        lost_at < stopped + ttl,
        "lost {:?} after the stop, the TTL is {ttl:?}",
        lost_at - stopped
    );
    // The grant's lease follows the session's.
    let (grant_lost, _) = wait_lease(&mut grant, "lost", |l| l.state.is_lost()).await;
    assert_eq!(grant_lost.state, LeaseState::Lost(LostReason::LeaseExpired));
    assert!(session.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_limit_is_lost_locally_before_anyone_else_is_granted() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = client.open_session(Duration::from_secs(10)).await.unwrap();
    let b = client.open_session(Duration::from_secs(10)).await.unwrap();
    let hold = Duration::from_millis(1500);
    let guard = a
        .lock_with_hold("held", EX, Wait::TryOnce, Some(hold))
        .await
        .expect("lock");
    let mut rx = guard.lease();
    assert!(rx.borrow().deadline <= Instant::now() + hold);
    // B waits; the cluster grants it once A's hold limit passes on the leader.
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.lock("held", EX, Wait::For(DEADLINE)).await }
    });
    let (_, jeopardy_at) =
        wait_lease(&mut rx, "jeopardy", |l| l.state == LeaseState::Jeopardy).await;
    let (lost, lost_at) = wait_lease(&mut rx, "lost", |l| l.state.is_lost()).await;
    assert_eq!(lost.state, LeaseState::Lost(LostReason::HoldLimit));
    assert!(jeopardy_at <= lost_at);
    let granted = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("B is granted after the hold limit")
        .unwrap()
        .expect("B's lock");
    // By the time B holds the lock, A's lease had long said so.
    assert!(granted.fence() > guard.fence());
    assert_eq!(
        guard.lease().borrow().state,
        LeaseState::Lost(LostReason::HoldLimit)
    );
    // The session itself is unaffected.
    assert_eq!(a.lease().borrow().state, LeaseState::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_waiting_lock_future_leaves_the_queue() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let ttl = Duration::from_secs(10);
    let (a, b, c) = (
        client.open_session(ttl).await.unwrap(),
        client.open_session(ttl).await.unwrap(),
        client.open_session(ttl).await.unwrap(),
    );
    let held = a.lock("q", EX, Wait::TryOnce).await.unwrap();
    {
        // B waits; once it is queued its future is dropped (as a timeout would).
        let waiting = b.lock("q", EX, Wait::Forever);
        tokio::pin!(waiting);
        tokio::select! {
            result = &mut waiting => panic!("B was answered while A holds: {result:?}"),
            _ = wait_waiters(&client, "q", |w| w.contains(&b.id())) => {}
        }
    }
    let c_waits = tokio::spawn({
        let c = c.clone();
        async move { c.lock("q", EX, Wait::Forever).await }
    });
    // The background cancel takes B out of the queue; C stays.
    wait_waiters(&client, "q", |w| w == [c.id()]).await;
    held.release().await.unwrap();
    let granted = tokio::time::timeout(DEADLINE, c_waits)
        .await
        .expect("C is granted when A releases")
        .unwrap()
        .expect("C's lock");
    assert_eq!(holders(&client, "q").await, vec![c.id()]);
    granted.release().await.unwrap();
    // B never got the lock: nothing is held, nobody waits.
    assert!(client.locks(Some("q"), false).await.unwrap().is_empty());
    assert!(!b.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_cancel_ends_the_wait_with_cancelled() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let ttl = Duration::from_secs(10);
    let a = client.open_session(ttl).await.unwrap();
    let b = client.open_session(ttl).await.unwrap();
    let held = a.lock("c", EX, Wait::TryOnce).await.unwrap();
    assert!(matches!(b.cancel("c").await, Err(Error::NotWaiting)));
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.lock("c", EX, Wait::Forever).await }
    });
    wait_waiters(&client, "c", |w| w.contains(&b.id())).await;
    b.cancel("c").await.expect("cancel");
    let ended = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("the wait ends")
        .unwrap();
    assert!(matches!(ended, Err(Error::Cancelled)), "{ended:?}");
    wait_waiters(&client, "c", <[SessionId]>::is_empty).await;
    held.release().await.unwrap();
    assert!(client.locks(Some("c"), false).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_a_short_hold_alive_past_its_limit() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = client.open_session(Duration::from_secs(10)).await.unwrap();
    let hold = Duration::from_millis(800);
    let started = Instant::now();
    let guard = a
        .lock_with_hold("x", EX, Wait::TryOnce, Some(hold))
        .await
        .unwrap();
    let mut rx = guard.lease();
    // Renew at every jeopardy until well past three original hold limits.
    while started.elapsed() < hold * 3 {
        wait_lease(&mut rx, "jeopardy", |l| l.state == LeaseState::Jeopardy).await;
        guard.extend(hold).await.expect("extend");
        assert_eq!(rx.borrow_and_update().state, LeaseState::Healthy);
    }
    // The grant is still the current one on the cluster: its fence still writes.
    a.append("x.log", &guard, b"still mine".to_vec())
        .await
        .expect("append under the extended grant");
    assert_eq!(holders(&client, "x").await, vec![a.id()]);
    // Left alone, the hold ends locally first, then on the cluster.
    let (lost, _) = wait_lease(&mut rx, "lost", |l| l.state.is_lost()).await;
    assert_eq!(lost.state, LeaseState::Lost(LostReason::HoldLimit));
    assert!(matches!(guard.extend(hold).await, Err(Error::StaleFence)));
    let b = client.open_session(Duration::from_secs(10)).await.unwrap();
    b.lock("x", EX, Wait::For(DEADLINE))
        .await
        .expect("the hold ends on the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_grant_with_a_hold_counts_it_from_an_extend_after_the_grant() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let ttl = Duration::from_secs(10);
    let a = client.open_session(ttl).await.unwrap();
    let b = client.open_session(ttl).await.unwrap();
    let held = a.lock("h", EX, Wait::TryOnce).await.unwrap();
    let hold = Duration::from_secs(2);
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.lock_with_hold("h", EX, Wait::Forever, Some(hold)).await }
    });
    wait_waiters(&client, "h", |w| w.contains(&b.id())).await;
    // The grant happens after this instant, and so does the Extend that follows it.
    let before_grant = Instant::now();
    held.release().await.unwrap();
    let guard = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("granted")
        .unwrap()
        .expect("B's lock");
    let lease = *guard.lease().borrow();
    assert!(
        lease.deadline >= before_grant + (hold - drift_margin(hold)),
        "the hold is counted from before the grant"
    );
    assert!(!lease.state.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_release_under_failover_completes_and_the_next_release_succeeds() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader().await;
    let options = ClientOptions {
        retry_timeout: DEADLINE,
        request_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let client = Client::connect(cluster.servers(), options).await.unwrap();
    let session = client.open_session(Duration::from_secs(10)).await.unwrap();
    session.acquire("f", EX, Wait::TryOnce, None).await.unwrap();
    // The release is sent, then its future is dropped before the answer is read.
    assert!(session.release("f").now_or_never().is_none());
    cluster.node(leader).signal(libc::SIGSTOP);
    let new = cluster.wait_leader_except(&[leader]).await;
    assert_ne!(new, leader);
    // The next release of the lock waits for the dropped one and answers as it did.
    session
        .release("f")
        .await
        .expect("the next release does not answer NotHolder");
    let other = client.open_session(Duration::from_secs(10)).await.unwrap();
    other
        .lock("f", EX, Wait::TryOnce)
        .await
        .expect("the lock is free");
    cluster.node(leader).signal(libc::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_show_in_locks_and_sessions_and_a_revoked_session_is_lost() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let ttl = Duration::from_secs(10);
    let a = client
        .open_session_as(ttl, Some("ann@build1 1 make".into()))
        .await
        .unwrap();
    let b = client
        .open_session_as(ttl, Some("bob@build2 2 test".into()))
        .await
        .unwrap();
    let plain = client.open_session(ttl).await.unwrap();
    let held = a.lock("o", EX, Wait::TryOnce).await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.lock("o", EX, Wait::Forever).await }
    });
    wait_waiters(&client, "o", |w| w.contains(&b.id())).await;
    let locks = client.locks(Some("o"), false).await.unwrap();
    assert_eq!(
        locks[0].holders[0].owner.as_deref(),
        Some("ann@build1 1 make")
    );
    assert_eq!(
        locks[0].waiters[0].owner.as_deref(),
        Some("bob@build2 2 test")
    );

    let sessions = client.sessions().await.unwrap();
    let ids: Vec<SessionId> = sessions.iter().map(|s| s.session).collect();
    assert_eq!(ids, vec![a.id(), b.id(), plain.id()]);
    assert_eq!(sessions[0].owner.as_deref(), Some("ann@build1 1 make"));
    assert_eq!(sessions[2].owner, None);
    for s in &sessions {
        assert_eq!(s.ttl_ms, 10_000);
        assert!(s.since_renewal_ms.is_some_and(|ms| ms <= 10_000), "{s:?}");
    }

    // Revoking A marks it through the log: A's handle learns it at its next keep-alive
    // (Lost(Revoked)), but A keeps the lock until it closes, so B is not granted before.
    let (sid_a, held_fence) = (a.id(), held.fence());
    let mut lease = a.lease();
    client.revoke_session(sid_a).await.expect("revoke");
    let (lost, _) = wait_lease(&mut lease, "lost", |l| l.state.is_lost()).await;
    assert_eq!(lost.state, LeaseState::Lost(LostReason::Revoked));
    assert!(
        !waiter.is_finished(),
        "B was granted while the revoked A had not closed"
    );
    assert!(a.append("o.log", &held, b"late".to_vec()).await.is_err());
    // Revoking it again is harmless.
    client.revoke_session(sid_a).await.expect("revoke again");
    drop(held);
    a.close().await.expect("a revoked session closes");
    let granted = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("B is granted once A closed")
        .unwrap()
        .unwrap();
    assert!(granted.fence() > held_fence);
    assert!(matches!(
        client.revoke_session(sid_a).await,
        Err(Error::SessionExpired)
    ));
    let left: Vec<SessionId> = client
        .sessions()
        .await
        .unwrap()
        .iter()
        .map(|s| s.session)
        .collect();
    assert_eq!(left, vec![b.id(), plain.id()]);
}
