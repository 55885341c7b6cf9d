//! Every `raftlock --json` answer has the one field set docs/cli.md documents, in that order,
//! against a real daemon: a field renamed, dropped, added or made conditional fails here.
//! Failures under `--json` are one JSON object on stderr.

mod common;

use std::process::{Command, Output};

use common::{Cluster, Daemon};
use serde_json::Value;

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// Runs `raftlock --json ARGS` against `daemon`.
fn raftlock(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(RAFTLOCK)
        .arg("--json")
        .args(args)
        .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
        .env_remove("RAFTLOCK_SESSION")
        .env_remove("RAFTLOCK_TOKEN")
        .env_remove("RAFTLOCK_LOCK")
        .env_remove("RAFTLOCK_FENCE")
        .output()
        .expect("run raftlock")
}

/// Runs `raftlock --json ARGS` against `servers` (comma-separated), off the async runtime.
async fn raftlock_at(servers: &str, args: &[&str]) -> Output {
    let mut command = Command::new(RAFTLOCK);
    command
        .arg("--json")
        .args(["--servers", servers, "--timeout", "20s"])
        .args(args)
        .env_remove("RAFTLOCK_SERVERS")
        .env_remove("RAFTLOCK_SESSION")
        .env_remove("RAFTLOCK_TOKEN");
    tokio::task::spawn_blocking(move || command.output().expect("run raftlock"))
        .await
        .expect("join")
}

/// Asserts success and parses stdout, which must be exactly one JSON line.
fn answer(output: Output) -> Value {
    assert!(
        output.status.success(),
        "raftlock failed: {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 stdout");
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts that `value` is an object with exactly `fields`, in this order.
fn assert_fields(value: &Value, fields: &[&str]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"));
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, fields, "in {value}");
}

fn array(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
}

#[test]
fn every_command_prints_its_documented_shape() {
    let daemon = Daemon::start(&[]);

    let held = answer(raftlock(&daemon, &["acquire", "shape", "--ttl", "30s"]));
    assert_fields(&held, &["lock", "session", "token", "fence", "ttl_ms"]);
    assert_eq!(held["lock"], "shape");
    assert_eq!(held["ttl_ms"], 30_000);
    let session = held["session"].as_u64().expect("session id").to_string();
    let token = held["token"].as_u64().expect("token").to_string();
    let fence = held["fence"].as_u64().expect("fence").to_string();
    let creds = ["--session", session.as_str(), "--token", token.as_str()];
    let with_creds = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(creds.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        raftlock(&daemon, &args)
    };

    let renewed = answer(run(with_creds(&["keepalive"])));
    assert_fields(&renewed, &["session", "ttl_ms"]);
    assert_eq!(renewed["ttl_ms"], 30_000);

    let append = |data: &str| {
        answer(run(with_creds(&[
            "append",
            "shape.log",
            "--lock",
            "shape",
            "--fence",
            &fence,
            data,
        ])))
    };
    let appended = append("text");
    assert_fields(&appended, &["file", "offset", "len", "size"]);
    assert_eq!(appended["offset"], 0);
    assert_eq!(appended["len"], 4);
    assert_eq!(appended["size"], 4);

    // `read` has the same fields for text and for bytes that are not UTF-8.
    let read_fields = ["file", "offset", "len", "size", "encoding", "data"];
    let read = answer(raftlock(&daemon, &["read", "shape.log"]));
    assert_fields(&read, &read_fields);
    assert_eq!(read["encoding"], "utf-8");
    assert_eq!(read["data"], "text");
    let bytes = answer(run(with_creds(&[
        "append",
        "bytes.bin",
        "--lock",
        "shape",
        "--fence",
        &fence,
        "-e",
        r"\xff\x00A",
    ])));
    assert_eq!(bytes["len"], 3);
    let read = answer(raftlock(&daemon, &["read", "bytes.bin"]));
    assert_fields(&read, &read_fields);
    assert_eq!(read["encoding"], "hex");
    assert_eq!(read["data"], "ff0041");

    let files = answer(raftlock(&daemon, &["files"]));
    let files = array(&files);
    assert_eq!(files.len(), 2);
    assert_fields(&files[0], &["name", "size", "lock", "fence"]);
    assert_eq!(files[0]["name"], "bytes.bin");
    assert_eq!(files[1]["lock"], "shape");
    assert_eq!(files[1]["fence"].to_string(), fence);
    let writer = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--lock", "shape", "--fence", fence.as_str()]);
        answer(run(with_creds(&all)))
    };
    let truncated = writer(&["truncate", "shape.log", "2"]);
    assert_fields(&truncated, &["file", "size"]);
    assert_eq!(truncated["size"], 2);
    let deleted = writer(&["rm", "bytes.bin"]);
    assert_fields(&deleted, &["file", "deleted", "size"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["size"], 3);

    let locks = answer(raftlock(&daemon, &["locks"]));
    let locks = array(&locks);
    assert_eq!(locks.len(), 1);
    assert_fields(&locks[0], &["name", "mode", "holders", "waiters"]);
    assert_eq!(locks[0]["mode"], "exclusive");
    assert_fields(
        &array(&locks[0]["holders"])[0],
        &["session", "fence", "owner", "held_ms", "hold_left_ms"],
    );
    assert_eq!(array(&locks[0]["waiters"]).len(), 0);

    let sessions = answer(raftlock(&daemon, &["sessions"]));
    let sessions = array(&sessions);
    assert_eq!(sessions.len(), 1);
    assert_fields(
        &sessions[0],
        &["session", "owner", "ttl_ms", "since_renewal_ms"],
    );

    let status = answer(raftlock(&daemon, &["status"]));
    assert_fields(
        &status,
        &[
            "node_id",
            "role",
            "term",
            "leader",
            "leader_addr",
            "commit_index",
            "applied_index",
            "last_log_index",
            "sessions",
            "locks",
            "members",
        ],
    );
    assert_fields(
        &array(&status["members"])[0],
        &["node_id", "addr", "voter", "match_index"],
    );

    let cluster = answer(raftlock(&daemon, &["cluster", "status"]));
    assert_fields(&cluster, &["leader", "term", "members"]);
    assert_fields(
        &array(&cluster["members"])[0],
        &[
            "node_id",
            "addr",
            "kind",
            "reachable",
            "role",
            "term",
            "commit_index",
            "applied_index",
            "match_index",
            "lag",
        ],
    );

    let health = answer(raftlock(&daemon, &["cluster", "health"]));
    assert_fields(&health, &["healthy", "leader", "max_lag", "members"]);
    assert_eq!(health["healthy"], true);
    assert_fields(
        &array(&health["members"])[0],
        &[
            "node_id",
            "addr",
            "healthy",
            "reachable",
            "role",
            "term",
            "applied_index",
            "lag",
            "took_ms",
            "error",
        ],
    );

    // `release` and `close` agree: both say which session and whether it was closed.
    let released = answer(run(with_creds(&["release", "shape"])));
    assert_fields(&released, &["lock", "session", "released", "closed"]);
    assert_eq!(released["closed"], false);
    assert_eq!(released["session"], held["session"]);
    let closed = answer(run(with_creds(&["close"])));
    assert_fields(&closed, &["session", "closed"]);
    assert_eq!(closed["closed"], true);
    assert_eq!(closed["session"], held["session"]);

    let other = answer(raftlock(&daemon, &["acquire", "other", "--ttl", "30s"]));
    let id = other["session"].as_u64().expect("session id").to_string();
    let revoked = answer(raftlock(&daemon, &["revoke", &id]));
    assert_fields(&revoked, &["session", "revoked", "force"]);
    assert_eq!(revoked["force"], false);
}

#[test]
fn failures_under_json_are_objects_on_stderr() {
    let daemon = Daemon::start(&[]);
    let failure = |output: Output, code: i32| -> Value {
        assert_eq!(output.status.code(), Some(code), "{output:?}");
        assert!(output.stdout.is_empty(), "{output:?}");
        let text = String::from_utf8(output.stderr).expect("utf-8 stderr");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let value: Value = serde_json::from_str(&text).expect("stderr is JSON");
        assert_fields(&value, &["error", "exit_code"]);
        assert_eq!(value["exit_code"], code);
        value
    };
    // A server answer: the session does not exist.
    let out = raftlock(&daemon, &["keepalive", "--session", "1", "--token", "1"]);
    let error = failure(out, 4);
    assert!(
        error["error"].as_str().unwrap().contains("expired"),
        "{error}"
    );
    // Revoking a session that does not live names it, in the terms of the command.
    let out = raftlock(&daemon, &["revoke", "987654"]);
    let error = failure(out, 4);
    assert_eq!(
        error["error"],
        "no live session 987654: it expired, was closed, or never existed"
    );
    // A usage error, found by the flag's parser.
    let out = raftlock(&daemon, &["acquire", "x", "--ttl", "500ms"]);
    let error = failure(out, 2);
    assert!(
        error["error"].as_str().unwrap().contains("--ttl"),
        "{error}"
    );
}

/// `cluster add`, `cluster transfer-leader` and `cluster remove` need a multi-node cluster:
/// their shapes are pinned here, against 3 nodes and a fourth that joins and leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_commands_print_their_documented_shapes() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader().await;
    let servers = cluster.servers().join(",");
    let (id, addr) = cluster.start_joiner();
    let id_arg = id.to_string();

    let added =
        answer(raftlock_at(&servers, &["cluster", "add", &id_arg, &addr.to_string()]).await);
    assert_fields(&added, &["index", "members"]);
    let members = array(&added["members"]);
    for member in members {
        assert_fields(member, &["node_id", "addr", "voter", "match_index"]);
    }
    let ids: Vec<u64> = members
        .iter()
        .filter_map(|m| m["node_id"].as_u64())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, id], "{added}");
    let new = &members[3];
    assert_eq!(new["addr"], addr.to_string());
    assert_eq!(new["voter"], true, "{added}");

    let target = (1..=3).find(|n| *n != leader).expect("a follower");
    let moved = answer(
        raftlock_at(
            &servers,
            &["cluster", "transfer-leader", &target.to_string()],
        )
        .await,
    );
    assert_fields(&moved, &["leader", "leader_addr"]);
    assert_eq!(moved["leader"], target, "{moved}");
    assert_eq!(moved["leader_addr"], cluster.addr(target).to_string());

    let removed = answer(raftlock_at(&servers, &["cluster", "remove", &id_arg]).await);
    assert_fields(&removed, &["index", "members"]);
    let ids: Vec<u64> = array(&removed["members"])
        .iter()
        .filter_map(|m| m["node_id"].as_u64())
        .collect();
    assert_eq!(ids, vec![1, 2, 3], "{removed}");
    assert!(
        removed["index"].as_u64() > added["index"].as_u64(),
        "{added} then {removed}"
    );
}
