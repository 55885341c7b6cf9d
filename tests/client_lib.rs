//! The client library against real `raftlockd` processes: fences, busy locks, waiters, fenced
//! appends, session loss and reconnection across a daemon crash and restart.

mod common;

use std::time::Duration;

use common::{Daemon, DEADLINE};
use raftlock::client::LockMode;
use raftlock::client::{Client, ClientOptions, Error, Session, SessionState, Wait};
use raftlock::lockspace::SessionId;

fn options() -> ClientOptions {
    ClientOptions {
        retry_timeout: DEADLINE,
        ..ClientOptions::default()
    }
}

async fn client(daemon: &Daemon) -> Client {
    Client::connect(vec![daemon.addr.to_string()], options())
        .await
        .expect("connect")
}

async fn session(client: &Client, ttl: Duration) -> Session {
    client.open_session(ttl).await.expect("open session")
}

/// Waits (bounded) until `session` is queued for `lock`.
async fn wait_queued(client: &Client, lock: &str, session: SessionId) {
    let start = tokio::time::Instant::now();
    loop {
        let locks = client.locks(Some(lock), false).await.expect("locks");
        if locks
            .iter()
            .any(|l| l.name == lock && l.waiters.iter().any(|w| w.session == session))
        {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{session} never queued for {lock}"
        );
        tokio::task::yield_now().await;
    }
}

const TTL: Duration = Duration::from_secs(10);
const EX: LockMode = LockMode::Exclusive;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_increase_and_a_taken_lock_is_busy() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = session(&client, TTL).await;
    let b = session(&client, TTL).await;

    let first = a.lock("alpha", EX, Wait::TryOnce).await.unwrap();
    assert!(first.fence() > 0);
    assert_eq!(first.name(), "alpha");
    assert!(matches!(
        b.lock("alpha", EX, Wait::TryOnce).await,
        Err(Error::Busy)
    ));
    assert!(matches!(
        b.lock("alpha", EX, Wait::For(Duration::from_millis(200)))
            .await,
        Err(Error::WaitTimeout)
    ));
    // Re-acquiring a held lock in the same mode is idempotent: the same grant.
    assert_eq!(
        a.acquire("alpha", EX, Wait::TryOnce, None).await.unwrap(),
        first.fence()
    );
    let other = a.lock("beta", EX, Wait::TryOnce).await.unwrap();
    assert!(other.fence() > first.fence());

    let fence = first.fence();
    first.release().await.unwrap();
    let second = b.lock("alpha", EX, Wait::TryOnce).await.unwrap();
    assert!(
        second.fence() > other.fence(),
        "fences increase across all locks"
    );
    assert!(second.fence() > fence);

    // Shared holders share.
    let s1 = a
        .lock("gamma", LockMode::Shared, Wait::TryOnce)
        .await
        .unwrap();
    let s2 = b
        .lock("gamma", LockMode::Shared, Wait::TryOnce)
        .await
        .unwrap();
    assert_ne!(s1.fence(), s2.fence());
    let holders = &client.locks(Some("gamma"), false).await.unwrap()[0].holders;
    assert_eq!(holders.len(), 2);

    assert!(matches!(a.release("alpha").await, Err(Error::NotHolder)));
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert!(client.locks(None, false).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_granted_when_the_holders_guard_drops() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = session(&client, TTL).await;
    let b = session(&client, TTL).await;

    let held = a.lock("queue", EX, Wait::Forever).await.unwrap();
    let held_fence = held.fence();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.lock("queue", EX, Wait::Forever).await }
    });
    wait_queued(&client, "queue", b.id()).await;
    drop(held); // released in the background
    let granted = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("granted after the drop")
        .unwrap()
        .unwrap();
    assert!(granted.fence() > held_fence);
    let locks = client.locks(Some("queue"), false).await.unwrap();
    assert_eq!(locks[0].holders.len(), 1);
    assert_eq!(locks[0].holders[0].session, b.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_need_the_current_fence() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = session(&client, TTL).await;
    let b = session(&client, TTL).await;

    let guard = a.lock("journal", EX, Wait::TryOnce).await.unwrap();
    assert_eq!(
        a.append("journal.log", &guard, b"one\n".to_vec())
            .await
            .unwrap(),
        (0, 4)
    );
    let (data, size) = client.read("journal.log", 0, 100, false).await.unwrap();
    assert_eq!((data.as_slice(), size), (&b"one\n"[..], 4));
    assert!(matches!(
        client.read("missing.log", 0, 10, false).await,
        Err(Error::NotFound)
    ));

    let old = guard.fence();
    guard.release().await.unwrap();
    // The lock moved on: the old fence is refused, even before someone else takes it...
    assert!(matches!(
        a.append("journal.log", ("journal", old), b"late\n".to_vec())
            .await,
        Err(Error::StaleFence)
    ));
    let next = b.lock("journal", EX, Wait::TryOnce).await.unwrap();
    // ...and after.
    assert!(matches!(
        a.append("journal.log", ("journal", old), b"late\n".to_vec())
            .await,
        Err(Error::StaleFence)
    ));
    // The new holder cannot use the old fence either, only its own.
    assert!(matches!(
        b.append("journal.log", ("journal", old), b"x".to_vec())
            .await,
        Err(Error::StaleFence)
    ));
    assert_eq!(
        b.append("journal.log", &next, b"two\n".to_vec())
            .await
            .unwrap(),
        (4, 8)
    );
    let (data, _) = client.read("journal.log", 0, 100, false).await.unwrap();
    assert_eq!(data, b"one\ntwo\n");
    let (tail, size) = client.read("journal.log", 4, 2, true).await.unwrap();
    assert_eq!((tail.as_slice(), size), (&b"tw"[..], 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_lost_when_the_server_expires_it() {
    let daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = session(&client, Duration::from_secs(3)).await;
    let guard = a.lock("lease", EX, Wait::TryOnce).await.unwrap();

    // Another handle closes the session on the server; the keep-alives then learn it.
    let other = client.resume_session(a.credentials(), false);
    other.close().await.unwrap();
    let ended = tokio::time::timeout(DEADLINE, a.lost())
        .await
        .expect("the keep-alive notices");
    assert_eq!(ended, SessionState::Lost);
    assert!(a.is_lost());
    assert!(matches!(
        a.append("f", &guard, b"x".to_vec()).await,
        Err(Error::SessionExpired)
    ));
    assert!(matches!(
        a.lock("other", EX, Wait::TryOnce).await,
        Err(Error::SessionExpired)
    ));
    assert!(client.locks(Some("lease"), false).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_lost_when_the_daemon_is_gone_past_the_ttl() {
    let mut daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = session(&client, Duration::from_secs(1)).await;
    let _guard = a.lock("gone", EX, Wait::TryOnce).await.unwrap();
    let killed = tokio::time::Instant::now();
    daemon.kill();
    let ended = tokio::time::timeout(DEADLINE, a.lost())
        .await
        .expect("lost once no keep-alive got through for a TTL");
    assert_eq!(ended, SessionState::Lost);
    // Keep-alives go every ttl/3, so the last renewal was sent at most ~ttl/3 before the kill:
    // the local lease (a TTL less its 75 ms drift margin after that send) ends between 2/3 of
    // a TTL less the margin and a TTL (plus slack) after it.
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_secs(2),
        "lost {after:?} after the kill"
    );
    assert!(matches!(
        a.lock("gone", EX, Wait::TryOnce).await,
        Err(Error::SessionExpired)
    ));

    // After a restart the daemon expires it too (a TTL after its election), freeing the lock.
    tokio::task::block_in_place(|| daemon.restart());
    let b = session(&client, TTL).await;
    let granted = b
        .lock("gone", EX, Wait::For(DEADLINE))
        .await
        .expect("the lost session's lock is freed");
    assert!(granted.fence() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_a_crash_and_the_session_survives() {
    let mut daemon = Daemon::start(&[]);
    let client = client(&daemon).await;
    let a = session(&client, TTL).await;
    let b = session(&client, TTL).await;
    let guard = a.lock("crash", EX, Wait::TryOnce).await.unwrap();
    a.append("crash.log", &guard, b"before\n".to_vec())
        .await
        .unwrap();
    // B waits for the lock across the crash.
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.lock("crash", EX, Wait::Forever).await }
    });
    wait_queued(&client, "crash", b.id()).await;

    tokio::task::block_in_place(|| daemon.restart()); // kill -9, then start on the same port and data

    // The same session and fence still work: the client reconnected and the lease survived.
    assert_eq!(
        a.append("crash.log", &guard, b"after\n".to_vec())
            .await
            .unwrap(),
        (7, 13)
    );
    assert_eq!(a.state(), SessionState::Alive);
    a.keep_alive().await.unwrap();
    // The waiter re-attached to its queue place and is granted on release.
    guard.release().await.unwrap();
    let granted = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("waiter granted after the restart")
        .unwrap()
        .unwrap();
    assert!(granted.fence() > 0);
    let (data, _) = client.read("crash.log", 0, 100, false).await.unwrap();
    assert_eq!(data, b"before\nafter\n");
    assert!(!a.is_lost() && !b.is_lost());
}
