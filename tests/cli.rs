//! The `raftlock` CLI against a real daemon: `lock` runs a command under a lock and propagates
//! its output and status, exports the fence; `acquire`/`keepalive`/`append`/`release` for
//! scripts; `read`, `locks` and `status` with and without `--json`; exit codes.

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
    assert_eq!(locks, Json::Arr(vec![]));
    let status = json(&ok(raftlock(&daemon, &["--json", "status"])));
    assert_eq!(status.get("sessions"), &Json::Num(0));
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
    assert_eq!(appended.get("offset"), &Json::Num(6));
    assert_eq!(appended.get("size"), &Json::Num(11));

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
    assert_eq!(read.get("data"), &Json::Str("hello world".into()));
    assert_eq!(read.get("size"), &Json::Num(11));

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
    let session = held.get("session").num().to_string();
    let token = held.get("token").num().to_string();
    let fence = held.get("fence").num();
    assert!(fence > 0);
    assert_eq!(held.get("lock"), &Json::Str("nightly".into()));

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
    let Json::Arr(locks) = locks else {
        panic!("locks is not an array")
    };
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].get("name"), &Json::Str("nightly".into()));
    assert_eq!(locks[0].get("mode"), &Json::Str("exclusive".into()));
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
    assert_eq!(ka.get("ttl_ms"), &Json::Num(30_000));
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
        Json::Arr(vec![])
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
    assert_eq!(status.get("role"), &Json::Str("leader".into()));
    assert_eq!(status.get("node_id"), &Json::Num(1));
    assert_eq!(
        status.get("leader_addr"),
        &Json::Str(daemon.addr.to_string())
    );
    assert!(status.get("commit_index").num() >= 1);
    let Json::Arr(members) = status.get("members") else {
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

/// A parsed JSON value (the crate has no JSON dependency; this reads the CLI's output).
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no field {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn num(&self) -> u64 {
        match self {
            Json::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
}

/// Parses one JSON document (unsigned integers only, which is all the CLI prints).
fn json(text: &str) -> Json {
    let bytes = text.trim().as_bytes();
    let mut pos = 0;
    let value = parse_value(bytes, &mut pos);
    assert_eq!(pos, bytes.len(), "trailing bytes in {text:?}");
    value
}

fn skip_ws(b: &[u8], pos: &mut usize) {
    while *pos < b.len() && b[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
}

fn expect(b: &[u8], pos: &mut usize, c: u8) {
    skip_ws(b, pos);
    assert_eq!(b.get(*pos), Some(&c), "expected {:?} at {pos}", c as char);
    *pos += 1;
}

fn parse_value(b: &[u8], pos: &mut usize) -> Json {
    skip_ws(b, pos);
    match b.get(*pos).copied() {
        Some(b'{') => {
            *pos += 1;
            let mut fields = Vec::new();
            skip_ws(b, pos);
            if b.get(*pos) == Some(&b'}') {
                *pos += 1;
                return Json::Obj(fields);
            }
            loop {
                skip_ws(b, pos);
                let Json::Str(key) = parse_value(b, pos) else {
                    panic!("object key is not a string")
                };
                expect(b, pos, b':');
                fields.push((key, parse_value(b, pos)));
                skip_ws(b, pos);
                match b.get(*pos) {
                    Some(b',') => *pos += 1,
                    Some(b'}') => {
                        *pos += 1;
                        return Json::Obj(fields);
                    }
                    other => panic!("bad object at {pos}: {other:?}"),
                }
            }
        }
        Some(b'[') => {
            *pos += 1;
            let mut items = Vec::new();
            skip_ws(b, pos);
            if b.get(*pos) == Some(&b']') {
                *pos += 1;
                return Json::Arr(items);
            }
            loop {
                items.push(parse_value(b, pos));
                skip_ws(b, pos);
                match b.get(*pos) {
                    Some(b',') => *pos += 1,
                    Some(b']') => {
                        *pos += 1;
                        return Json::Arr(items);
                    }
                    other => panic!("bad array at {pos}: {other:?}"),
                }
            }
        }
        Some(b'"') => {
            *pos += 1;
            let mut out = String::new();
            loop {
                let c = b[*pos];
                *pos += 1;
                match c {
                    b'"' => return Json::Str(out),
                    b'\\' => {
                        let e = b[*pos];
                        *pos += 1;
                        match e {
                            b'n' => out.push('\n'),
                            b't' => out.push('\t'),
                            b'r' => out.push('\r'),
                            b'u' => {
                                let hex = std::str::from_utf8(&b[*pos..*pos + 4]).unwrap();
                                *pos += 4;
                                out.push(
                                    char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap(),
                                );
                            }
                            other => out.push(other as char),
                        }
                    }
                    _ => {
                        // Copy a whole UTF-8 sequence.
                        let start = *pos - 1;
                        let mut end = *pos;
                        while end < b.len() && (b[end] & 0xC0) == 0x80 {
                            end += 1;
                        }
                        out.push_str(std::str::from_utf8(&b[start..end]).unwrap());
                        *pos = end;
                    }
                }
            }
        }
        Some(b't') if b[*pos..].starts_with(b"true") => {
            *pos += 4;
            Json::Bool(true)
        }
        Some(b'f') if b[*pos..].starts_with(b"false") => {
            *pos += 5;
            Json::Bool(false)
        }
        Some(b'n') if b[*pos..].starts_with(b"null") => {
            *pos += 4;
            Json::Null
        }
        Some(c) if c.is_ascii_digit() => {
            let start = *pos;
            while *pos < b.len() && b[*pos].is_ascii_digit() {
                *pos += 1;
            }
            Json::Num(
                std::str::from_utf8(&b[start..*pos])
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        }
        other => panic!("unexpected {other:?} at {pos}"),
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
