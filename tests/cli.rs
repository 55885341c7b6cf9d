//! The `raftlock` CLI against a real daemon: `lock` runs a command under a lock and propagates
//! its output and status, exports the fence; `acquire`/`keepalive`/`append`/`release` for
//! scripts; `read`, `locks` and `status` with and without `--json`; exit codes. (Every
//! `--json` shape is pinned in tests/cli_json.rs.)

mod common;

use std::process::{Command, Output};

use common::Daemon;

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// Runs `raftlock ARGS` against `daemon` and returns its output.
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

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

/// Asserts success and returns stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "raftlock failed: {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

#[test]
fn lock_runs_the_command_and_passes_on_its_output_and_status() {
    let daemon = Daemon::start(&[]);
    let out = raftlock(&daemon, &["lock", "demo", "--", "echo", "hi"]);
    assert_eq!(ok(out), "hi\n");

    let out = raftlock(&daemon, &["lock", "demo", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));

    let out = raftlock(
        &daemon,
        &["lock", "demo", "--", "sh", "-c", "kill -TERM $$"],
    );
    assert_eq!(out.status.code(), Some(128 + 15), "killed by SIGTERM");

    let out = raftlock(&daemon, &["lock", "demo", "--", "/nonexistent/command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run"));

    // Every run released the lock and closed its session.
    let locks = json(&ok(raftlock(&daemon, &["--json", "locks"])));
    assert_eq!(locks, Json::Array(vec![]));
    let status = json(&ok(raftlock(&daemon, &["--json", "status"])));
    assert_eq!(status.field("sessions"), &Json::from(0));
}

#[test]
fn lock_exports_increasing_fences_and_appends_work_inside() {
    let daemon = Daemon::start(&[]);
    let fence = |daemon: &Daemon| -> u64 {
        let out = raftlock(
            daemon,
            &["lock", "demo", "--", "sh", "-c", "echo $RAFTLOCK_FENCE"],
        );
        ok(out).trim().parse().expect("fence is a number")
    };
    let first = fence(&daemon);
    let second = fence(&daemon);
    assert!(first > 0 && second > first, "{first} then {second}");

    let script = r#"test "$RAFTLOCK_LOCK" = journal && test -n "$RAFTLOCK_SESSION" &&
        "$RAFTLOCK_BIN" append journal.log --lock journal --fence $RAFTLOCK_FENCE 'hello ' &&
        printf 'world' | "$RAFTLOCK_BIN" --json append journal.log -"#;
    let out = ok(raftlock(
        &daemon,
        &["lock", "journal", "--", "sh", "-c", script],
    ));
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("appended 6 bytes to journal.log at offset 0 (size 6)")
    );
    let appended = json(lines.next().expect("json line"));
    assert_eq!(appended.field("offset"), &Json::from(6));
    assert_eq!(appended.field("size"), &Json::from(11));

    assert_eq!(
        ok(raftlock(&daemon, &["read", "journal.log"])),
        "hello world"
    );
    assert_eq!(
        ok(raftlock(
            &daemon,
            &[
                "read",
                "journal.log",
                "--offset",
                "6",
                "--len",
                "3",
                "--stale"
            ]
        )),
        "wor"
    );
    let read = json(&ok(raftlock(&daemon, &["--json", "read", "journal.log"])));
    assert_eq!(read.field("data"), &Json::from("hello world"));
    assert_eq!(read.field("size"), &Json::from(11));

    // A session that does not exist (wrong token): exit 4.
    let out = raftlock(
        &daemon,
        &[
            "append",
            "journal.log",
            "--lock",
            "journal",
            "--fence",
            "1",
            "--session",
            "1",
            "--token",
            "1",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

#[test]
fn scripts_acquire_keep_alive_and_release_across_processes() {
    let daemon = Daemon::start(&[]);
    let held = json(&ok(raftlock(
        &daemon,
        &["--json", "acquire", "nightly", "--ttl", "30s"],
    )));
    let session = held.field("session").num().to_string();
    let token = held.field("token").num().to_string();
    let fence = held.field("fence").num();
    assert!(fence > 0);
    assert_eq!(held.field("lock"), &Json::from("nightly"));

    // The lock outlives the acquiring process; others are refused with exit 3.
    let out = raftlock(&daemon, &["lock", "nightly", "--wait", "0", "--", "true"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
    let out = raftlock(
        &daemon,
        &["lock", "nightly", "--wait", "300ms", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let locks = json(&ok(raftlock(&daemon, &["--json", "locks", "night"])));
    let Json::Array(locks) = locks else {
        panic!("locks is not an array")
    };
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].field("name"), &Json::from("nightly"));
    assert_eq!(locks[0].field("mode"), &Json::from("exclusive"));
    let table = ok(raftlock(&daemon, &["locks"]));
    assert!(
        table.contains(&format!("nightly  exclusive  {session}:{fence}")),
        "{table}"
    );

    let creds = ["--session", session.as_str(), "--token", token.as_str()];
    let ka = json(&ok(raftlock(
        &daemon,
        &[&["--json", "keepalive"][..], &creds].concat(),
    )));
    assert_eq!(ka.field("ttl_ms"), &Json::from(30_000));
    let fence_arg = fence.to_string();
    ok(raftlock(
        &daemon,
        &[
            &[
                "append",
                "nightly.log",
                "--lock",
                "nightly",
                "--fence",
                &fence_arg,
            ][..],
            &creds,
            &["done"],
        ]
        .concat(),
    ));
    ok(raftlock(
        &daemon,
        &[&["release", "nightly"][..], &creds].concat(),
    ));
    // After the release the fence is stale, and the lock is no longer held: exit 5.
    let stale = [
        &[
            "append",
            "nightly.log",
            "--lock",
            "nightly",
            "--fence",
            &fence_arg,
        ][..],
        &creds,
        &["late"],
    ]
    .concat();
    assert_eq!(raftlock(&daemon, &stale).status.code(), Some(5));
    let again = [&["release", "nightly"][..], &creds].concat();
    assert_eq!(raftlock(&daemon, &again).status.code(), Some(5));
    ok(raftlock(&daemon, &[&["close"][..], &creds].concat()));
    let out = raftlock(&daemon, &[&["keepalive"][..], &creds].concat());
    assert_eq!(
        out.status.code(),
        Some(4),
        "the session was closed: {out:?}"
    );
    assert_eq!(ok(raftlock(&daemon, &["read", "nightly.log"])), "done");
    assert_eq!(
        json(&ok(raftlock(&daemon, &["--json", "locks"]))),
        Json::Array(vec![])
    );

    // Human output is shell assignments for eval.
    let out = ok(raftlock(&daemon, &["acquire", "second", "--ttl", "2s"]));
    assert!(
        out.starts_with("export RAFTLOCK_LOCK=second RAFTLOCK_SESSION="),
        "{out}"
    );
}

#[test]
fn status_reports_the_node() {
    let daemon = Daemon::start(&[]);
    // Status is answered by the node as it is, even mid-election: first let a linearizable
    // request (which the client retries until there is a leader) establish the leader.
    ok(raftlock(&daemon, &["locks"]));
    let status = json(&ok(raftlock(&daemon, &["--json", "status"])));
    assert_eq!(status.field("role"), &Json::from("leader"));
    assert_eq!(status.field("node_id"), &Json::from(1));
    assert_eq!(
        status.field("leader_addr"),
        &Json::from(daemon.addr.to_string())
    );
    assert!(status.field("commit_index").num() >= 1);
    let Json::Array(members) = status.field("members") else {
        panic!("members is not an array")
    };
    assert_eq!(members.len(), 1);
    let text = ok(raftlock(&daemon, &["status"]));
    assert!(text.contains("role:      leader"), "{text}");
}

#[test]
fn usage_and_connection_errors_have_distinct_exit_codes() {
    let daemon = Daemon::start(&[]);
    let out = raftlock(&daemon, &["lock", "x", "--wait", "soon", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let out = raftlock(&daemon, &["lock", "x"]);
    assert_eq!(out.status.code(), Some(2), "CMD is required");
    let help = ok(raftlock(&daemon, &["lock", "--help"]));
    assert!(help.contains("Example:"));
    let help = ok(raftlock(&daemon, &["--help"]));
    assert!(help.contains("Exit status:"));

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = Command::new(RAFTLOCK)
        .args(["--servers", &free, "--timeout", "300ms", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("raftlock: no server available"),
        "{stderr}"
    );
}

#[test]
fn lock_not_acquired_exits_3_or_the_conflict_exit_code() {
    let daemon = Daemon::start(&[]);
    let exports = ok(raftlock(&daemon, &["acquire", "busy", "--ttl", "60s"]));
    assert!(exports.contains("RAFTLOCK_FENCE="), "{exports}");
    let out = raftlock(&daemon, &["lock", "busy", "--wait", "0", "--", "true"]);
    assert_eq!(out.status.code(), Some(3));
    let out = raftlock(
        &daemon,
        &[
            "lock",
            "busy",
            "--wait",
            "0",
            "--conflict-exit-code",
            "42",
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(42));
    // A command that exists and fails keeps its own status.
    let out = raftlock(&daemon, &["lock", "free", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = raftlock(&daemon, &["lock", "free", "--", "/nonexistent/cmd"]);
    assert_eq!(out.status.code(), Some(127));
}

/// A `--json` answer.
type Json = serde_json::Value;

/// Parses one JSON document.
fn json(text: &str) -> Json {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Field access that fails the test on a missing field (indexing would give null).
trait Field {
    fn field(&self, key: &str) -> &Json;
    fn num(&self) -> u64;
}

impl Field for Json {
    fn field(&self, key: &str) -> &Json {
        self.as_object()
            .and_then(|o| o.get(key))
            .unwrap_or_else(|| panic!("no field {key:?} in {self}"))
    }

    fn num(&self) -> u64 {
        self.as_u64()
            .unwrap_or_else(|| panic!("not an unsigned number: {self}"))
    }
}

#[test]
fn lock_terminates_the_command_when_its_session_is_lost() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let daemon = Daemon::start(&[]);
    let mut child = Command::new(RAFTLOCK)
        .args(["lock", "lease", "--ttl", "1s", "--", "sh", "-c"])
        .arg("echo $RAFTLOCK_SESSION $RAFTLOCK_TOKEN; exec sleep 60")
        .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The credentials CMD saw, read on a thread so the wait is bounded.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(common::DEADLINE).expect("CMD started");
    let mut creds = line.split_whitespace();
    let (session, token) = (creds.next().unwrap(), creds.next().unwrap());

    // Closing the session behind raftlock's back: its keep-alive learns it, CMD is terminated.
    ok(raftlock(
        &daemon,
        &["close", "--session", session, "--token", token],
    ));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < common::DEADLINE,
            "raftlock did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(4));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("session lost"), "{stderr}");
}
