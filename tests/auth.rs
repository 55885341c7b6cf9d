//! Client authentication and roles against a real daemon started with `--auth-tokens`: no
//! token or an unknown one is refused at `Hello` and closed; each role may make exactly its
//! requests, and a denied one changes nothing; grants limit lock and file names; a session is
//! usable only by its opener or an admin; SIGHUP reloads the file for new connections; the CLI
//! authenticates with `RAFTLOCK_AUTH_TOKEN` or `--auth-token-file`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{error_code, Client, Daemon, DEADLINE};
use raftlock::protocol::{ErrorCode, Request, Response, Role, VERSION};
use sha2::{Digest, Sha256};

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token file: an admin, a client limited to `build/` locks and `build/` files, another
/// unlimited client and a reader.
fn token_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    let text = format!(
        "# name role digest grants\nroot admin {}\nci client {} lock:build/ file:build/\n\
         app client {}\ngrafana read {}\n",
        digest("root-token"),
        digest("ci-token"),
        digest("app-token"),
        digest("read-token"),
    );
    std::fs::write(&path, text).expect("write tokens");
    path
}

/// Says `Hello` with `token`; returns the connection and the answer.
async fn hello(daemon: &Daemon, token: Option<&str>) -> (Client, Response) {
    let mut client = Client::connect(daemon.addr).await;
    client
        .send(Request::Hello {
            version: VERSION,
            role: Role::Client,
            token: token.map(str::to_owned),
        })
        .await;
    let answer = client.recv().await;
    (client, answer)
}

/// A connection authenticated with `token`.
async fn as_principal(daemon: &Daemon, token: &str) -> Client {
    let (client, answer) = hello(daemon, Some(token)).await;
    assert!(matches!(answer, Response::Welcome { .. }), "{answer:?}");
    client
}

fn start() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = token_file(dir.path());
    let daemon = Daemon::start(&["--auth-tokens", tokens.to_str().expect("utf-8 path")]);
    (dir, daemon)
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_refused_and_the_connection_closed() {
    let (_dir, daemon) = start();
    for token in [None, Some("wrong"), Some(digest("root-token").as_str())] {
        let (mut client, answer) = hello(&daemon, token).await;
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::Unauthenticated),
            "{token:?}: {answer:?}"
        );
        client.expect_closed().await;
    }
    as_principal(&daemon, "root-token")
        .await
        .wait_leader()
        .await;
    assert!(daemon.log().contains("clients authenticate with a token"));
}

#[tokio::test]
async fn each_role_may_make_its_requests_and_a_denied_one_changes_nothing() {
    let (_dir, daemon) = start();
    let mut root = as_principal(&daemon, "root-token").await;
    root.wait_leader().await;
    let mut reader = as_principal(&daemon, "read-token").await;
    let mut app = as_principal(&daemon, "app-token").await;

    // read: status and listings, no session.
    let id = reader.id();
    assert!(matches!(
        reader.call(Request::Status { id }).await,
        Response::Status(_)
    ));
    let id = reader.id();
    let open = reader
        .call(Request::OpenSession {
            id,
            nonce: 1,
            ttl_ms: 10_000,
            owner: None,
        })
        .await;
    assert_eq!(
        error_code(&open),
        Some(ErrorCode::PermissionDenied),
        "{open:?}"
    );
    assert!(matches!(open, Response::Error { id: got, .. } if got == id));

    // client: sessions and locks, no membership or revocation.
    let session = app.open_session(10_000).await;
    let acquire = app.acquire(session, 1, "deploy", Some(0));
    assert!(matches!(app.call(acquire).await, Response::Granted { .. }));
    for request in [
        Request::AddMember {
            id: app.id(),
            node_id: 9,
            addr: "127.0.0.1:1".into(),
        },
        Request::TransferLeader {
            id: app.id(),
            node_id: None,
        },
        Request::RevokeSession {
            id: app.id(),
            session_id: session.0,
            force: true,
        },
    ] {
        let answer = app.call(request).await;
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::PermissionDenied),
            "{answer:?}"
        );
    }
    // Nothing changed: the session lives and holds its lock, the membership is one node.
    let id = root.id();
    let Response::Status(status) = root.call(Request::Status { id }).await else {
        panic!("no status");
    };
    assert_eq!(
        (status.sessions, status.locks, status.members.len()),
        (1, 1, 1)
    );

    // admin: may revoke.
    let id = root.id();
    let revoked = root
        .call(Request::RevokeSession {
            id,
            session_id: session.0,
            force: true,
        })
        .await;
    assert!(!matches!(revoked, Response::Error { .. }), "{revoked:?}");
}

#[tokio::test]
async fn grants_limit_names_and_sessions_belong_to_their_opener() {
    let (_dir, daemon) = start();
    as_principal(&daemon, "root-token")
        .await
        .wait_leader()
        .await;
    let mut ci = as_principal(&daemon, "ci-token").await;
    let mut app = as_principal(&daemon, "app-token").await;
    let mut root = as_principal(&daemon, "root-token").await;

    let session = ci.open_session(10_000).await;
    let outside = ci.acquire(session, 1, "deploy", Some(0));
    let answer = ci.call(outside).await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::PermissionDenied),
        "{answer:?}"
    );
    let inside = ci.acquire(session, 2, "build/cache", Some(0));
    let Response::Granted { fence, .. } = ci.call(inside).await else {
        panic!("build/cache not granted");
    };
    let append = |id, seq, file: &str| Request::Append {
        id,
        session: session.0,
        token: session.1,
        seq,
        file: file.into(),
        lock: "build/cache".into(),
        fence,
        data: b"x".to_vec(),
    };
    let id = ci.id();
    let answer = ci.call(append(id, 3, "etc/passwd")).await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::PermissionDenied),
        "{answer:?}"
    );
    let id = ci.id();
    assert!(matches!(
        ci.call(append(id, 4, "build/log")).await,
        Response::Appended { .. }
    ));

    // Another client principal with the session's own token: refused, the lock stays ci's.
    let release = |id, seq| Request::Release {
        id,
        session: session.0,
        token: session.1,
        seq,
        lock: "build/cache".into(),
    };
    let id = app.id();
    let answer = app.call(release(id, 5)).await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::PermissionDenied),
        "{answer:?}"
    );
    let id = app.id();
    let keep = Request::KeepAlive {
        id,
        session: session.0,
        token: session.1,
    };
    assert_eq!(
        error_code(&app.call(keep).await),
        Some(ErrorCode::PermissionDenied)
    );
    let id = root.id();
    let Response::LockList { locks, .. } = root
        .call(Request::Locks {
            id,
            prefix: None,
            stale: false,
        })
        .await
    else {
        panic!("no lock list");
    };
    assert_eq!(locks.len(), 1, "{locks:?}");
    // An admin may use it.
    let id = root.id();
    assert!(matches!(
        root.call(release(id, 6)).await,
        Response::Released { .. }
    ));
}

#[tokio::test]
async fn sighup_reloads_the_token_file_for_new_connections() {
    let (dir, daemon) = start();
    let mut old = as_principal(&daemon, "app-token").await;
    old.wait_leader().await;
    let path = dir.path().join("tokens");
    let text = std::fs::read_to_string(&path).expect("read tokens");
    let text = text.replace(&digest("app-token"), &digest("app-token-2"));
    std::fs::write(&path, text).expect("rewrite tokens");
    daemon.signal(libc::SIGHUP);
    let start = Instant::now();
    loop {
        let (_, answer) = hello(&daemon, Some("app-token-2")).await;
        if matches!(answer, Response::Welcome { .. }) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the new token never worked: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, answer) = hello(&daemon, Some("app-token")).await;
    assert_eq!(error_code(&answer), Some(ErrorCode::Unauthenticated));
    // The connection made before the reload keeps its principal.
    let id = old.id();
    assert!(matches!(
        old.call(Request::Status { id }).await,
        Response::Status(_)
    ));

    // A file that no longer parses is refused; the table in force stays.
    std::fs::write(&path, "broken line\n").expect("break tokens");
    daemon.signal(libc::SIGHUP);
    let start = Instant::now();
    while !daemon.log().contains("cannot reload the token file") {
        assert!(start.elapsed() < DEADLINE, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    as_principal(&daemon, "app-token-2").await;
}

#[test]
fn the_cli_authenticates_from_the_environment_or_a_file() {
    let (dir, daemon) = start();
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut command = Command::new(RAFTLOCK);
        command
            .args(["--servers", &daemon.addr.to_string(), "--timeout", "10s"])
            .args(args)
            .env_remove("RAFTLOCK_AUTH_TOKEN")
            .env_remove("RAFTLOCK_AUTH_TOKEN_FILE");
        for (k, v) in envs {
            command.env(k, v);
        }
        command.output().expect("run raftlock")
    };
    let ok = run(
        &[("RAFTLOCK_AUTH_TOKEN", "ci-token")],
        &["lock", "build/x", "--", "true"],
    );
    assert!(ok.status.success(), "{ok:?}");
    let denied = run(
        &[("RAFTLOCK_AUTH_TOKEN", "ci-token")],
        &["lock", "deploy", "--", "true"],
    );
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("may not use lock \"deploy\""), "{stderr}");
    let file = dir.path().join("my-token");
    std::fs::write(&file, "root-token\n").expect("token file");
    let status = run(
        &[],
        &["--auth-token-file", file.to_str().expect("utf-8"), "status"],
    );
    assert!(status.status.success(), "{status:?}");
    // Without a token it fails at once, saying why, instead of retrying for --timeout.
    let started = Instant::now();
    let refused = run(&[], &["status"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("authentication token"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "retried until --timeout"
    );
}
