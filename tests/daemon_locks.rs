//! Lock semantics through a real `raftlockd` process: lease expiry frees a session's locks,
//! waiters are granted in turn, bounded waits time out, and a restart (after SIGKILL) recovers
//! every session, grant, fence and file from the log. Also: SIGTERM exits cleanly.

mod common;

use common::{error_code, Client, Daemon};
use raftlock::protocol::{ErrorCode, Request, Response};

async fn leader(daemon: &Daemon) -> Client {
    let mut client = Client::hello(daemon.addr).await;
    client.wait_leader().await;
    client
}

#[tokio::test]
async fn a_session_without_keep_alives_expires_and_its_locks_pass_to_the_waiter() {
    let daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let mut b = Client::hello(daemon.addr).await;
    let short = a.open_session(1_000).await;
    let long = b.open_session(30_000).await;
    let request = a.acquire(short, 1, "lease", Some(0));
    let Response::Granted { fence: first, .. } = a.call(request).await else {
        panic!("not granted")
    };

    // b waits without bound; a sends no keep-alive, so its lease runs out after ~1 s.
    let request = b.acquire(long, 1, "lease", None);
    let id = request.id();
    b.send(request).await;
    assert_eq!(b.recv().await, Response::Queued { id, position: 0 });
    let started = std::time::Instant::now();
    let Response::Granted {
        id: granted_id,
        fence,
    } = b.recv().await
    else {
        panic!("not granted")
    };
    assert_eq!(granted_id, id);
    assert!(fence > first, "fences increase");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "expired too early"
    );

    // The expired session is gone: its requests get SessionExpired.
    let id = a.id();
    let keep_alive = Request::KeepAlive {
        id,
        session: short.0,
        token: short.1,
    };
    assert_eq!(
        error_code(&a.call(keep_alive).await),
        Some(ErrorCode::SessionExpired)
    );
}

#[tokio::test]
async fn keep_alives_keep_a_session_alive_past_its_ttl() {
    let daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let session = a.open_session(1_000).await;
    let request = a.acquire(session, 1, "kept", Some(0));
    assert!(matches!(a.call(request).await, Response::Granted { .. }));
    let until = std::time::Instant::now() + std::time::Duration::from_millis(2_500);
    while std::time::Instant::now() < until {
        let id = a.id();
        let keep_alive = Request::KeepAlive {
            id,
            session: session.0,
            token: session.1,
        };
        assert_eq!(
            a.call(keep_alive).await,
            Response::KeptAlive { id, ttl_ms: 1_000 }
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // A wrong token is refused as if the session did not exist.
    let id = a.id();
    let keep_alive = Request::KeepAlive {
        id,
        session: session.0,
        token: session.1 ^ 1,
    };
    assert_eq!(
        error_code(&a.call(keep_alive).await),
        Some(ErrorCode::SessionExpired)
    );
    let id = a.id();
    let locks = a
        .call(Request::Locks {
            id,
            prefix: Some("kept".into()),
            stale: false,
        })
        .await;
    let Response::LockList { locks, .. } = locks else {
        panic!("{locks:?}")
    };
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].holders[0].session, session.0);
}

#[tokio::test]
async fn a_waiter_is_granted_when_the_holder_releases() {
    let daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let mut b = Client::hello(daemon.addr).await;
    let sa = a.open_session(30_000).await;
    let sb = b.open_session(30_000).await;
    let request = a.acquire(sa, 1, "fifo", Some(0));
    let Response::Granted { fence: first, .. } = a.call(request).await else {
        panic!("not granted")
    };

    let request = b.acquire(sb, 1, "fifo", Some(60_000));
    let id = request.id();
    b.send(request).await;
    assert_eq!(b.recv().await, Response::Queued { id, position: 0 });

    // A retry of the same acquire (same seq) from a new connection attaches to the same wait.
    let mut b2 = Client::hello(daemon.addr).await;
    let retry = Request::Acquire {
        id: 77,
        session: sb.0,
        token: sb.1,
        seq: 1,
        lock: "fifo".into(),
        mode: raftlock::client::LockMode::Exclusive,
        wait_ms: Some(60_000),
        hold_ms: None,
    };
    b2.send(retry).await;
    assert!(matches!(
        b2.recv().await,
        Response::Queued {
            id: 77,
            position: 0
        }
    ));

    let id_release = a.id();
    let release = Request::Release {
        id: id_release,
        session: sa.0,
        token: sa.1,
        seq: 2,
        lock: "fifo".into(),
    };
    assert_eq!(a.call(release).await, Response::Released { id: id_release });
    let Response::Granted { id: got, fence } = b.recv().await else {
        panic!("not granted")
    };
    assert_eq!(got, id);
    assert!(fence > first);
    assert_eq!(b2.recv().await, Response::Granted { id: 77, fence });
}

#[tokio::test]
async fn a_bounded_wait_times_out_with_wait_timeout() {
    let daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let mut b = Client::hello(daemon.addr).await;
    let sa = a.open_session(30_000).await;
    let sb = b.open_session(30_000).await;
    let request = a.acquire(sa, 1, "bounded", Some(0));
    assert!(matches!(a.call(request).await, Response::Granted { .. }));

    // Try-once finds it busy.
    let request = b.acquire(sb, 1, "bounded", Some(0));
    assert_eq!(error_code(&b.call(request).await), Some(ErrorCode::Busy));

    let started = std::time::Instant::now();
    let request = b.acquire(sb, 2, "bounded", Some(200));
    let id = request.id();
    b.send(request).await;
    assert_eq!(b.recv().await, Response::Queued { id, position: 0 });
    let response = b.recv().await;
    assert_eq!(response.id(), id);
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::WaitTimeout),
        "{response:?}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(190));
}

#[tokio::test]
async fn a_restart_after_sigkill_recovers_sessions_locks_fences_and_files() {
    // A low snapshot threshold so recovery goes through a snapshot plus the log after it.
    let mut daemon = Daemon::start(&["--snapshot-threshold", "5"]);
    let mut a = leader(&daemon).await;
    let session = a.open_session(60_000).await;
    let request = a.acquire(session, 1, "durable", Some(0));
    let Response::Granted { fence, .. } = a.call(request).await else {
        panic!("not granted")
    };
    let mut seq = 2;
    for chunk in [&b"hello "[..], b"world", b"!"] {
        let id = a.id();
        let append = Request::Append {
            id,
            session: session.0,
            token: session.1,
            seq,
            file: "notes".into(),
            lock: "durable".into(),
            fence,
            data: chunk.to_vec(),
        };
        seq += 1;
        assert!(matches!(a.call(append).await, Response::Appended { .. }));
    }
    for _ in 0..6 {
        let other = a.open_session(60_000).await;
        let request = a.acquire(other, 1, &format!("other-{}", other.0), Some(0));
        assert!(matches!(a.call(request).await, Response::Granted { .. }));
    }
    drop(a);

    daemon.restart();
    let mut a = leader(&daemon).await;
    let id = a.id();
    let locks = a
        .call(Request::Locks {
            id,
            prefix: Some("durable".into()),
            stale: false,
        })
        .await;
    let Response::LockList { locks, .. } = locks else {
        panic!("{locks:?}")
    };
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].holders.len(), 1);
    assert_eq!(
        (locks[0].holders[0].session, locks[0].holders[0].fence),
        (session.0, fence)
    );

    let id = a.id();
    let read = Request::Read {
        id,
        file: "notes".into(),
        offset: 0,
        len: 1024,
        stale: false,
    };
    assert_eq!(
        a.call(read).await,
        Response::Data {
            id,
            data: b"hello world!".to_vec(),
            size: 12
        }
    );

    // The session lives on with its token; re-acquiring returns the same grant.
    let id = a.id();
    let keep_alive = Request::KeepAlive {
        id,
        session: session.0,
        token: session.1,
    };
    assert_eq!(
        a.call(keep_alive).await,
        Response::KeptAlive { id, ttl_ms: 60_000 }
    );
    let request = a.acquire(session, seq, "durable", Some(0));
    let id = request.id();
    assert_eq!(a.call(request).await, Response::Granted { id, fence });

    let id = a.id();
    let read = Request::Read {
        id,
        file: "missing".into(),
        offset: 0,
        len: 1,
        stale: true,
    };
    assert_eq!(error_code(&a.call(read).await), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn sigterm_finishes_and_exits_zero() {
    let mut daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let session = a.open_session(30_000).await;
    let request = a.acquire(session, 1, "term", Some(0));
    assert!(matches!(a.call(request).await, Response::Granted { .. }));
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}\n{}", daemon.log());
    assert!(daemon.log().contains("final sync done"), "{}", daemon.log());
}
