//! Push events through a real `raftlockd`: a holder with a hold limit hears `HoldExpiring`
//! and then `Revoked{reason: hold}` on its own connection; a waiter behind two others hears
//! its position move 1 then 0 and is then granted; the Rust library's grant lease turns lost
//! at once after a forced revoke, long before its local deadline; the CLI's `lock --verbose`
//! reports queue moves and exits "revoked" on a forced revoke. Also `raftlock locks` with the
//! leader's held / left / waited times. Every wait is bounded.

mod common;

use std::time::Duration;

use common::{Client, Daemon};
use raftlock::client::LockMode;
use raftlock::client::{LeaseState, LostReason, Wait};
use raftlock::protocol::{PushReason, Request, Response};

async fn leader(daemon: &Daemon) -> Client {
    let mut client = Client::hello(daemon.addr).await;
    client.wait_leader().await;
    client
}

/// The next frame that is a push (answers are skipped); panics past the common deadline.
async fn next_push(client: &mut Client) -> Response {
    loop {
        let frame = client.recv().await;
        if frame.push_session().is_some() {
            return frame;
        }
    }
}

/// The next frame that is not a push.
async fn next_answer(client: &mut Client) -> Response {
    loop {
        let frame = client.recv().await;
        if frame.push_session().is_none() {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_hold_limit_is_pushed_as_hold_expiring_then_revoked_hold() {
    let daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let session = a.open_session(30_000).await;
    let mut acquire = a.acquire(session, 1, "build", Some(0));
    if let Request::Acquire { hold_ms, .. } = &mut acquire {
        *hold_ms = Some(1_500);
    }
    let Response::Granted { fence, .. } = a.call(acquire).await else {
        panic!("not granted")
    };
    let started = std::time::Instant::now();
    let warning = next_push(&mut a).await;
    let Response::HoldExpiring {
        id: 0,
        session: s,
        lock,
        fence: f,
        left_ms,
    } = warning
    else {
        panic!("expected HoldExpiring, got {warning:?}")
    };
    assert_eq!((s, lock.as_str(), f), (session.0, "build", fence));
    assert!(left_ms <= 1_000, "warned {left_ms} ms before the end");
    assert_eq!(
        next_push(&mut a).await,
        Response::Revoked {
            id: 0,
            session: session.0,
            lock: "build".into(),
            fence,
            reason: PushReason::Hold,
        }
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    // The push told the truth: the lock is free for someone else.
    let mut b = Client::hello(daemon.addr).await;
    let other = b.open_session(30_000).await;
    let request = b.acquire(other, 1, "build", Some(0));
    assert!(matches!(b.call(request).await, Response::Granted { .. }));
}

#[tokio::test]
async fn a_waiter_behind_two_others_hears_its_position_move_then_is_granted() {
    let daemon = Daemon::start(&[]);
    let mut clients = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let mut client = leader(&daemon).await;
        sessions.push(client.open_session(30_000).await);
        clients.push(client);
    }
    // Session 0 holds; 1 and 2 wait; 3 waits behind both.
    let request = clients[0].acquire(sessions[0], 1, "q", Some(0));
    assert!(matches!(
        clients[0].call(request).await,
        Response::Granted { .. }
    ));
    for (i, position) in [(1, 0), (2, 1), (3, 2)] {
        let request = clients[i].acquire(sessions[i], 1, "q", None);
        let id = request.id();
        clients[i].send(request).await;
        assert_eq!(clients[i].recv().await, Response::Queued { id, position });
    }
    let release = |client: &mut Client, session: (u64, u64)| Request::Release {
        id: client.id(),
        session: session.0,
        token: session.1,
        seq: 2,
        lock: "q".into(),
    };
    let mut ahead_seen = Vec::new();
    for holder in 0..2 {
        let request = release(&mut clients[holder], sessions[holder]);
        assert!(matches!(
            clients[holder].call(request).await,
            Response::Released { .. }
        ));
        // The next waiter is granted (its final answer), and the last one moves up.
        assert!(matches!(
            next_answer(&mut clients[holder + 1]).await,
            Response::Granted { .. }
        ));
        match next_push(&mut clients[3]).await {
            Response::QueuePosition {
                id: 0,
                session,
                lock,
                seq: 1,
                ahead,
                mode: Some(LockMode::Exclusive),
                holders: 1,
            } if session == sessions[3].0 && lock == "q" => ahead_seen.push(ahead),
            other => panic!("expected QueuePosition, got {other:?}"),
        }
    }
    assert_eq!(ahead_seen, vec![1, 0]);
    let request = release(&mut clients[2], sessions[2]);
    assert!(matches!(
        clients[2].call(request).await,
        Response::Released { .. }
    ));
    assert!(matches!(
        next_answer(&mut clients[3]).await,
        Response::Granted { .. }
    ));
}

#[tokio::test]
async fn the_librarys_grant_lease_is_lost_soon_after_a_forced_revoke() {
    let daemon = Daemon::start(&[]);
    let mut admin = leader(&daemon).await;
    let client = common::connect(vec![daemon.addr.to_string()]).await;
    let session = client
        .open_session(Duration::from_secs(30))
        .await
        .expect("open");
    let guard = session
        .lock("job", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    let mut lease = guard.lease();
    let deadline = lease.borrow().deadline;
    let id = admin.id();
    let revoke = Request::RevokeSession {
        id,
        session_id: session.id(),
        force: true,
    };
    assert!(matches!(
        admin.call(revoke).await,
        Response::SessionClosed { .. }
    ));
    // Keep-alives (every 10 s) would tell much later; the push tells at once.
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        lease.wait_for(|lease| lease.state.is_lost()),
    )
    .await
    .expect("the grant's lease was not lost within 5 s of the revoke")
    .expect("lease sender alive")
    .state;
    assert_eq!(lost, LeaseState::Lost(LostReason::Revoked));
    assert!(
        tokio::time::Instant::now() < deadline,
        "lost only at the local deadline"
    );
    assert!(
        session.is_lost(),
        "the SessionExpired push ends the session too"
    );
}

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// Spawns `raftlock ARGS` against `daemon`; returns it and channels of its stdout and stderr
/// lines (read on threads, so every wait on them is bounded).
fn spawn_cli(
    daemon: &Daemon,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(RAFTLOCK)
        .args(args)
        .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
        .env_remove("RAFTLOCK_SESSION")
        .env_remove("RAFTLOCK_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftlock");
    let lines = |stream: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let out = lines(Box::new(child.stdout.take().expect("stdout")));
    let err = lines(Box::new(child.stderr.take().expect("stderr")));
    (child, out, err)
}

/// Waits (bounded) for the process to exit; returns its status code.
async fn exit_code(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(
            start.elapsed() < within,
            "raftlock did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `lock` has `n` waiters.
async fn wait_for_waiters(client: &mut Client, lock: &str, n: usize) {
    let start = std::time::Instant::now();
    loop {
        let id = client.id();
        let request = Request::Locks {
            id,
            prefix: Some(lock.into()),
            stale: false,
        };
        if let Response::LockList { locks, .. } = client.call(request).await {
            if locks.iter().any(|l| l.name == lock && l.waiters.len() == n) {
                return;
            }
        }
        assert!(
            start.elapsed() < common::DEADLINE,
            "never {n} waiters on {lock}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_verbose_cli_lock_says_when_its_queue_position_moves() {
    let daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let mut b = Client::hello(daemon.addr).await;
    let (sa, sb) = (a.open_session(30_000).await, b.open_session(30_000).await);
    let request = a.acquire(sa, 1, "v", Some(0));
    assert!(matches!(a.call(request).await, Response::Granted { .. }));
    let request = b.acquire(sb, 1, "v", None);
    b.send(request).await;
    assert!(matches!(b.recv().await, Response::Queued { .. }));
    let (mut cli, _out, err) = spawn_cli(&daemon, &["lock", "v", "--verbose", "--", "true"]);
    wait_for_waiters(&mut a, "v", 2).await;
    let release = |client: &mut Client, session: (u64, u64)| Request::Release {
        id: client.id(),
        session: session.0,
        token: session.1,
        seq: 2,
        lock: "v".into(),
    };
    let request = release(&mut a, sa);
    assert!(matches!(a.call(request).await, Response::Released { .. }));
    let said = loop {
        let line = err
            .recv_timeout(common::DEADLINE)
            .expect("raftlock said nothing about its position");
        if line.contains("ahead") {
            break line;
        }
    };
    assert_eq!(said, "raftlock: waiting for v: 0 ahead (held exclusive)");
    let request = release(&mut b, sb);
    assert!(matches!(b.call(request).await, Response::Released { .. }));
    assert_eq!(exit_code(&mut cli, common::DEADLINE).await, Some(0));
}

#[tokio::test]
async fn a_forced_revoke_ends_the_cli_lock_as_revoked_long_before_its_ttl() {
    let daemon = Daemon::start(&[]);
    let mut admin = leader(&daemon).await;
    let (mut cli, out, err) = spawn_cli(
        &daemon,
        &[
            "lock",
            "r",
            "--ttl",
            "30s",
            "--",
            "sh",
            "-c",
            "echo $RAFTLOCK_SESSION; exec sleep 60",
        ],
    );
    let session: u64 = out
        .recv_timeout(common::DEADLINE)
        .expect("CMD started")
        .trim()
        .parse()
        .expect("a session id");
    let started = std::time::Instant::now();
    let id = admin.id();
    let revoke = Request::RevokeSession {
        id,
        session_id: session,
        force: true,
    };
    assert!(matches!(
        admin.call(revoke).await,
        Response::SessionClosed { .. }
    ));
    // Keep-alives every 10 s would report the session lost (4); the push says revoked (7).
    let code = exit_code(&mut cli, Duration::from_secs(10)).await;
    let stderr: Vec<String> = err.try_iter().collect();
    assert_eq!(code, Some(7), "stderr: {stderr:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `raftlock locks` shows the leader's times: per holder how long it has held and how much
/// of its hold limit is left, per waiter how long it has waited (table and `--json`).
#[tokio::test]
async fn cli_locks_shows_held_left_and_waited_times() {
    let daemon = Daemon::start(&[]);
    let mut a = leader(&daemon).await;
    let mut b = Client::hello(daemon.addr).await;
    let (sa, sb) = (a.open_session(30_000).await, b.open_session(30_000).await);
    let mut request = a.acquire(sa, 1, "t", Some(0));
    if let Request::Acquire { hold_ms, .. } = &mut request {
        *hold_ms = Some(600_000);
    }
    let Response::Granted { fence, .. } = a.call(request).await else {
        panic!("not granted")
    };
    let request = b.acquire(sb, 1, "t", None);
    b.send(request).await;
    assert!(matches!(b.recv().await, Response::Queued { .. }));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(RAFTLOCK)
            .args(args)
            .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
            .output()
            .expect("run raftlock");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let table = run(&["locks"]);
    assert!(
        table.contains("HOLDERS(session:fence (held, left))"),
        "{table}"
    );
    assert!(table.contains("WAITERS(session:mode (waited))"), "{table}");
    let holder = format!("{}:{fence} (", sa.0);
    let cell = table
        .split_once(&holder)
        .map(|(_, rest)| rest.split_once(')').expect("closed").0)
        .unwrap_or_else(|| panic!("no holder cell in {table}"));
    let (held, left) = cell.split_once(", ").expect("held, left");
    assert!(held.ends_with('s') && left.ends_with("s left"), "{cell}");
    assert!(table.contains(&format!("{}:exclusive (", sb.0)), "{table}");

    let json = run(&["--json", "locks", "t"]);
    let field = |name: &str| -> u64 {
        let at = json
            .find(&format!("\"{name}\":"))
            .unwrap_or_else(|| panic!("{name} in {json}"));
        let rest = &json[at + name.len() + 3..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {json}"))
    };
    let (held_ms, left_ms, waited_ms) =
        (field("held_ms"), field("hold_left_ms"), field("waited_ms"));
    assert!(held_ms < 600_000 && waited_ms <= held_ms, "{json}");
    assert!(left_ms <= 600_000 && left_ms + held_ms >= 599_000, "{json}");
}
