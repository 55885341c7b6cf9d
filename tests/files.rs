//! The file lifecycle against a real daemon: `Truncate` then `Read`, `Delete` then `Read`
//! (`NotFound`) and a new file by the next `Append`, stale fences refused, quotas refused with
//! nothing changed, retries answered from the exactly-once table, `Files` listings that survive
//! a restart through a snapshot; and `raftlock truncate`, `rm` and `files` through the real
//! binary.

mod common;

use std::process::{Command, Output};

use common::{error_code, Client, Daemon};
use raftlock::protocol::{ErrorCode, FileEntry, Request, Response};

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// A session holding lock `lock` exclusively, and the requests it makes.
struct Writer {
    client: Client,
    session: (u64, u64),
    lock: String,
    fence: u64,
    seq: u64,
}

impl Writer {
    async fn start(daemon: &Daemon, lock: &str) -> Writer {
        let mut client = Client::hello(daemon.addr).await;
        client.wait_leader().await;
        let session = client.open_session(60_000).await;
        let request = client.acquire(session, 1, lock, Some(0));
        let Response::Granted { fence, .. } = client.call(request).await else {
            panic!("the lock is free");
        };
        Writer {
            client,
            session,
            lock: lock.into(),
            fence,
            seq: 1,
        }
    }

    fn seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn append(&mut self, file: &str, data: &[u8]) -> Request {
        Request::Append {
            id: self.client.id(),
            session: self.session.0,
            token: self.session.1,
            seq: self.seq(),
            file: file.into(),
            lock: self.lock.clone(),
            fence: self.fence,
            data: data.to_vec(),
        }
    }

    fn truncate(&mut self, file: &str, size: u64, fence: u64) -> Request {
        Request::Truncate {
            id: self.client.id(),
            session: self.session.0,
            token: self.session.1,
            seq: self.seq(),
            file: file.into(),
            lock: self.lock.clone(),
            fence,
            size,
        }
    }

    fn delete(&mut self, file: &str, fence: u64) -> Request {
        Request::Delete {
            id: self.client.id(),
            session: self.session.0,
            token: self.session.1,
            seq: self.seq(),
            file: file.into(),
            lock: self.lock.clone(),
            fence,
        }
    }

    /// `request` again under a new id: a retry, as after a lost answer.
    fn retry(&mut self, request: &Request) -> Request {
        let id = self.client.id();
        let mut again = request.clone();
        match &mut again {
            Request::Append { id: old, .. }
            | Request::Truncate { id: old, .. }
            | Request::Delete { id: old, .. } => *old = id,
            other => panic!("not a file write: {other:?}"),
        }
        again
    }

    /// The answer to `request`, with its id checked and cleared (0) for comparisons.
    async fn call(&mut self, request: Request) -> Response {
        let id = request.id();
        let response = self.client.call(request).await;
        assert_eq!(response.id(), id, "{response:?}");
        match response {
            Response::Appended { offset, size, .. } => Response::Appended {
                id: 0,
                offset,
                size,
            },
            Response::Truncated { size, .. } => Response::Truncated { id: 0, size },
            Response::Deleted { size, .. } => Response::Deleted { id: 0, size },
            other => other,
        }
    }

    /// The whole file, or the error code of the read.
    async fn read(&mut self, file: &str) -> Result<Vec<u8>, Option<ErrorCode>> {
        let id = self.client.id();
        let read = Request::Read {
            id,
            file: file.into(),
            offset: 0,
            len: 1 << 20,
            stale: false,
        };
        match self.client.call(read).await {
            Response::Data { data, .. } => Ok(data),
            other => Err(error_code(&other)),
        }
    }

    async fn files(&mut self, prefix: Option<&str>) -> Vec<FileEntry> {
        let id = self.client.id();
        let list = Request::Files {
            id,
            prefix: prefix.map(str::to_string),
            stale: false,
        };
        match self.client.call(list).await {
            Response::FileList { files, .. } => files,
            other => panic!("Files answered {other:?}"),
        }
    }
}

fn appended(offset: u64, size: u64) -> Response {
    Response::Appended {
        id: 0,
        offset,
        size,
    }
}

#[tokio::test]
async fn truncate_delete_quotas_and_retries_against_a_daemon() {
    // Small quotas to reach, and a low snapshot threshold so the restart below recovers the
    // file metadata through a snapshot.
    let mut daemon = Daemon::start(&[
        "--max-file-bytes",
        "8",
        "--max-total-file-bytes",
        "12",
        "--snapshot-threshold",
        "5",
    ]);
    let mut w = Writer::start(&daemon, "journal").await;
    let fence = w.fence;

    // Truncate, then read what is left.
    let request = w.append("log", b"abcdef");
    assert_eq!(w.call(request).await, appended(0, 6));
    let cut = w.truncate("log", 3, fence);
    assert_eq!(
        w.call(cut.clone()).await,
        Response::Truncated { id: 0, size: 3 }
    );
    assert_eq!(w.read("log").await.unwrap(), b"abc");
    // A size past the end cuts nothing and says the size.
    let request = w.truncate("log", 100, fence);
    assert_eq!(
        w.call(request).await,
        Response::Truncated { id: 0, size: 3 }
    );

    // A retried Truncate is answered from the exactly-once table: it cuts nothing again.
    let request = w.append("log", b"defgh");
    assert_eq!(w.call(request).await, appended(3, 8));
    let retry = w.retry(&cut);
    assert_eq!(w.call(retry).await, Response::Truncated { id: 0, size: 3 });
    assert_eq!(w.read("log").await.unwrap(), b"abcdefgh");

    // Past the per-file quota: refused, nothing written, the limit named; a retry answers
    // the same.
    let over = w.append("log", b"i");
    let response = w.call(over.clone()).await;
    let Response::Error { code, message, .. } = &response else {
        panic!("{response:?}");
    };
    assert_eq!(*code, ErrorCode::QuotaExceeded);
    assert!(
        message.contains("9 bytes") && message.contains("per-file limit of 8 bytes"),
        "{message}"
    );
    let retry = w.retry(&over);
    assert_eq!(
        error_code(&w.call(retry).await),
        Some(ErrorCode::QuotaExceeded)
    );
    assert_eq!(w.read("log").await.unwrap(), b"abcdefgh");
    // Past the total quota (8 + 4 = 12 fits, one more does not).
    let request = w.append("other", b"1234");
    assert_eq!(w.call(request).await, appended(0, 4));
    let request = w.append("other", b"5");
    let response = w.call(request).await;
    let Response::Error { code, message, .. } = &response else {
        panic!("{response:?}");
    };
    assert_eq!(*code, ErrorCode::QuotaExceeded);
    assert!(message.contains("total limit of 12 bytes"), "{message}");
    assert_eq!(w.read("other").await.unwrap(), b"1234");

    // A stale fence is refused and changes nothing, even for a missing file.
    for request in [
        w.truncate("log", 0, fence + 1),
        w.delete("log", fence + 1),
        w.delete("missing", fence + 1),
    ] {
        assert_eq!(
            error_code(&w.call(request).await),
            Some(ErrorCode::StaleFence)
        );
    }
    assert_eq!(w.read("log").await.unwrap(), b"abcdefgh");

    // The listing: sizes and last writes, by name, filtered by prefix.
    let entry = |name: &str, size| FileEntry {
        name: name.into(),
        size,
        lock: Some("journal".into()),
        fence: Some(fence),
    };
    assert_eq!(
        w.files(None).await,
        vec![entry("log", 8), entry("other", 4)]
    );
    assert_eq!(w.files(Some("oth")).await, vec![entry("other", 4)]);

    // Delete, then read: NotFound; a retried Delete answers its first result; the next
    // append creates the file anew at offset 0.
    let delete = w.delete("log", fence);
    assert_eq!(
        w.call(delete.clone()).await,
        Response::Deleted { id: 0, size: 8 }
    );
    assert_eq!(w.read("log").await, Err(Some(ErrorCode::NotFound)));
    let retry = w.retry(&delete);
    assert_eq!(w.call(retry).await, Response::Deleted { id: 0, size: 8 });
    let request = w.delete("log", fence);
    assert_eq!(
        error_code(&w.call(request).await),
        Some(ErrorCode::NotFound)
    );
    let request = w.append("log", b"new");
    assert_eq!(w.call(request).await, appended(0, 3));

    // Once the lock moved on, the old fence can no longer cut or delete.
    let id = w.client.id();
    let release = Request::Release {
        id,
        session: w.session.0,
        token: w.session.1,
        seq: w.seq(),
        lock: "journal".into(),
    };
    assert!(matches!(
        w.client.call(release).await,
        Response::Released { .. }
    ));
    let mut next = Writer::start(&daemon, "journal").await;
    assert!(next.fence > fence);
    let request = w.delete("log", fence);
    assert_eq!(
        error_code(&w.call(request).await),
        Some(ErrorCode::StaleFence)
    );
    let request = next.truncate("log", 1, next.fence);
    assert_eq!(
        next.call(request).await,
        Response::Truncated { id: 0, size: 1 }
    );
    drop((w, next));

    // The files and their last writes survive a restart (through a snapshot: more than five
    // entries were applied).
    daemon.restart();
    let mut after = Writer::start(&daemon, "elsewhere").await;
    let files = after.files(None).await;
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        (
            files[0].name.as_str(),
            files[0].size,
            files[0].lock.as_deref()
        ),
        ("log", 1, Some("journal"))
    );
    assert!(files[0].fence > Some(fence));
    assert_eq!(after.read("log").await.unwrap(), b"n");
}

/// Runs `raftlock ARGS` against `daemon`, with `$RAFTLOCK_BIN` for commands run under `lock`.
fn raftlock(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(RAFTLOCK)
        .args(args)
        .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
        .env("RAFTLOCK_BIN", RAFTLOCK)
        .env_remove("RAFTLOCK_SESSION")
        .env_remove("RAFTLOCK_TOKEN")
        .env_remove("RAFTLOCK_LOCK")
        .env_remove("RAFTLOCK_FENCE")
        .output()
        .expect("run raftlock")
}

/// Asserts success and returns stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "raftlock failed: {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// `raftlock CMD` under `raftlock lock journal`, which hands it the lock, fence and session.
fn under_lock(daemon: &Daemon, script: &str) -> String {
    ok(raftlock(
        daemon,
        &["lock", "journal", "--", "sh", "-c", script],
    ))
}

#[test]
fn the_cli_truncates_deletes_and_lists_under_a_lock() {
    let daemon = Daemon::start(&["--max-file-bytes", "16"]);
    under_lock(
        &daemon,
        r#""$RAFTLOCK_BIN" append journal.log --lock journal --fence $RAFTLOCK_FENCE hello"#,
    );
    let said = under_lock(&daemon, r#""$RAFTLOCK_BIN" truncate journal.log 2"#);
    assert_eq!(said, "truncated journal.log to 2 bytes\n");
    assert_eq!(ok(raftlock(&daemon, &["read", "journal.log"])), "he");
    let said = under_lock(&daemon, r#""$RAFTLOCK_BIN" truncate journal.log 10"#);
    assert_eq!(
        said,
        "journal.log is 2 bytes, not longer than 10: nothing cut\n"
    );

    let listing = ok(raftlock(&daemon, &["files"]));
    let row: Vec<&str> = listing
        .lines()
        .find(|l| l.starts_with("journal.log"))
        .unwrap_or_else(|| panic!("no row: {listing}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], ["journal.log", "2", "journal"], "{listing}");
    assert_eq!(ok(raftlock(&daemon, &["files", "nothing/"])), "no files\n");

    // Past the quota: exit 1, the limit named, nothing written.
    let out = raftlock(
        &daemon,
        &[
            "lock",
            "journal",
            "--",
            "sh",
            "-c",
            r#""$RAFTLOCK_BIN" append journal.log --lock journal --fence $RAFTLOCK_FENCE 0123456789abcdef"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("per-file limit of 16 bytes"),
        "stderr: {stderr}"
    );
    assert_eq!(ok(raftlock(&daemon, &["read", "journal.log"])), "he");

    // A stale fence exits 5 and deletes nothing.
    let held = ok(raftlock(
        &daemon,
        &["--json", "acquire", "journal", "--ttl", "30s"],
    ));
    let held: serde_json::Value = serde_json::from_str(&held).expect("json");
    let (session, token) = (held["session"].to_string(), held["token"].to_string());
    let stale = (held["fence"].as_u64().expect("fence") + 1).to_string();
    let out = raftlock(
        &daemon,
        &[
            "rm",
            "journal.log",
            "--lock",
            "journal",
            "--fence",
            &stale,
            "--session",
            &session,
            "--token",
            &token,
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(ok(raftlock(&daemon, &["read", "journal.log"])), "he");
    ok(raftlock(
        &daemon,
        &["close", "--session", &session, "--token", &token],
    ));

    // rm, then the file is gone (read exits 1); an append starts it anew.
    let said = under_lock(&daemon, r#""$RAFTLOCK_BIN" rm journal.log"#);
    assert_eq!(said, "deleted journal.log (2 bytes)\n");
    let out = raftlock(&daemon, &["read", "journal.log"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    under_lock(
        &daemon,
        r#""$RAFTLOCK_BIN" append journal.log --lock journal --fence $RAFTLOCK_FENCE again"#,
    );
    assert_eq!(ok(raftlock(&daemon, &["read", "journal.log"])), "again");
}
