//! The client-side lease against a real `raftlockd`: a session whose daemon stops answering
//! goes to jeopardy and then to lost before the daemon's TTL could end it, and a grant with a
//! hold limit is lost locally before the cluster grants the lock to anyone else.

mod common;

use std::time::Duration;

use common::{Daemon, DEADLINE};
use raftlock::client::{Client, ClientOptions, Lease, LeaseState, LostReason, Wait};
use raftlock::lockspace::LockMode;
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
