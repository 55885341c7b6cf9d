//! Backups, against real processes: a node's durable snapshot file is the unit of backup.
//! `raftlock snapshot status` describes one offline; `raftlockd restore` makes a new one-node
//! cluster's data directory from it, and a node started there serves every session, lock and
//! file the backup holds, byte for byte. A damaged backup is refused by both with a clear
//! error, and restore never writes into a directory that holds anything.
//!
//! The first backups here are cold copies of a stopped node's `<data-dir>/snapshot`: the tests
//! assert, through `snapshot status`, that one covers the writes made before it, rather than
//! assuming when the node snapshotted. The last two are hot: the `SnapshotSave` stream at the
//! frame level, and `raftlock snapshot save` through the real CLI under a write load.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{Cluster, Daemon};
use serde_json::Value;

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");
const RAFTLOCKD: &str = env!("CARGO_BIN_EXE_raftlockd");

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

/// Asserts success and parses stdout (one JSON line).
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

/// `raftlock snapshot status --json FILE` (no server involved).
fn status(file: &Path) -> Output {
    Command::new(RAFTLOCK)
        .args(["--json", "snapshot", "status"])
        .arg(file)
        .env_remove("RAFTLOCK_SERVERS")
        .output()
        .expect("run raftlock snapshot status")
}

/// `raftlockd restore FILE --data-dir DIR --id 1 --peer 1=ADDR`.
fn restore(file: &Path, dir: &Path, addr: &str) -> Output {
    restore_as(file, dir, 1, &format!("1={addr}"))
}

/// `raftlockd restore FILE --data-dir DIR --id ID --peer PEERS`.
fn restore_as(file: &Path, dir: &Path, id: u64, peers: &str) -> Output {
    Command::new(RAFTLOCKD)
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .args(["--id", &id.to_string(), "--peer", peers])
        .output()
        .expect("run raftlockd restore")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new one-node cluster made from `backup` by `raftlockd restore` (a node started once for
/// its address, stopped and emptied, restored, started again).
fn restore_new_node(backup: &Path) -> Daemon {
    let mut restored = Daemon::start(&[]);
    assert!(restored.terminate().success());
    restored.wipe();
    let addr = restored.addr.to_string();
    let done = restore(backup, restored.data_dir(), &addr);
    assert!(
        done.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    restored.start_again();
    restored
}

/// Asserts `daemon` serves each of `files` byte for byte.
fn assert_serves(daemon: &Daemon, files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        let read = answer(raftlock(daemon, &["read", name]));
        let served = match read["encoding"].as_str() {
            Some("utf-8") => hex(read["data"].as_str().expect("data").as_bytes()),
            _ => read["data"].as_str().expect("data").to_string(),
        };
        assert_eq!(served, hex(data), "{name} byte for byte");
        assert_eq!(read["size"], data.len() as u64);
    }
}

#[test]
fn a_restored_backup_serves_every_session_lock_and_file() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut source = Daemon::start(&["--snapshot-threshold", "5"]);

    // State to back up: a session holding a lock, and three files (one of arbitrary bytes).
    let held = answer(raftlock(&source, &["acquire", "backup", "--ttl", "120s"]));
    let session = held["session"].as_u64().expect("session").to_string();
    let token = held["token"].as_u64().expect("token").to_string();
    let fence = held["fence"].as_u64().expect("fence").to_string();
    let creds = ["--session", &session, "--token", &token];
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let binary_file = scratch.path().join("binary");
    std::fs::write(&binary_file, &binary).expect("write data file");
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, data) in [
        ("a.txt", &b"alpha"[..]),
        ("b.bin", &binary),
        ("c.txt", b"gamma"),
    ] {
        std::fs::write(&binary_file, data).expect("write data file");
        let mut args = vec!["append", name, "--lock", "backup", "--fence", &fence];
        args.extend(creds);
        args.push("--data-file");
        let path = binary_file.to_str().expect("utf-8 path");
        args.push(path);
        answer(raftlock(&source, &args));
        files.push((name.to_string(), data.to_vec()));
    }
    // More log entries than --snapshot-threshold after those writes (keep-alives are not
    // logged; appends are), so a snapshot taken after them exists.
    for _ in 0..12 {
        let mut args = vec!["append", "pad", "--lock", "backup", "--fence", &fence];
        args.extend(creds);
        args.push("p");
        answer(raftlock(&source, &args));
    }
    files.push(("pad".to_string(), vec![b'p'; 12]));
    assert!(source.terminate().success());
    let backup = scratch.path().join("backup.snap");
    std::fs::copy(source.data_dir().join("snapshot"), &backup).expect("copy the snapshot");

    let described = answer(status(&backup));
    let keys: Vec<&str> = described
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "index",
            "term",
            "size",
            "checksum",
            "checksum_ok",
            "sessions",
            "locks",
            "files",
            "file_bytes",
            "members"
        ]
    );
    assert_eq!(described["checksum_ok"], true);
    assert_eq!(described["sessions"], 1, "{described}");
    assert_eq!(described["locks"], 1, "{described}");
    // Snapshots come every 5 entries: the last one covers every file and all but at most the
    // last few pad appends. The restored node is checked against exactly what it holds.
    assert_eq!(described["files"], 4, "{described}");
    let pad = files.last().expect("pad").1.len();
    let total: usize = files[..3].iter().map(|(_, data)| data.len()).sum();
    let file_bytes = described["file_bytes"].as_u64().expect("file_bytes") as usize;
    assert!(
        file_bytes > total && file_bytes <= total + pad,
        "{described}"
    );
    // The pad file holds what the snapshot covered of it.
    files
        .last_mut()
        .expect("pad")
        .1
        .truncate(file_bytes - total);
    let size = std::fs::metadata(&backup).expect("metadata").len();
    assert_eq!(described["size"], size);
    assert_eq!(described["members"][0]["id"], 1);
    assert_eq!(described["members"][0]["voter"], true);

    // A damaged copy: refused by status and by restore, naming the file and the damage.
    let damaged = scratch.path().join("damaged.snap");
    let mut bytes = std::fs::read(&backup).expect("read backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, &bytes).expect("write damaged");
    let refused = status(&damaged);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&damaged.display().to_string()) && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    let target = scratch.path().join("from-damaged");
    let refused = restore(&damaged, &target, "127.0.0.1:1");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(!target.exists(), "nothing is created from a damaged backup");

    // A directory that holds anything is refused, and left as it was.
    let refused = restore(&backup, source.data_dir(), "127.0.0.1:1");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");

    // Restore into a new node's (emptied) directory and start it there.
    let restored = restore_new_node(&backup);
    assert_serves(&restored, &files);
    let locks = answer(raftlock(&restored, &["locks"]));
    assert_eq!(locks[0]["name"], "backup", "{locks}");
    assert_eq!(locks[0]["holders"][0]["session"].to_string(), session);
    // The session itself lives on: its token still renews it, and its fence still writes.
    let mut args = vec!["keepalive"];
    args.extend(creds);
    answer(raftlock(&restored, &args));
    let mut args = vec!["append", "a.txt", "--lock", "backup", "--fence", &fence];
    args.extend(creds);
    args.push("!");
    let appended = answer(raftlock(&restored, &args));
    assert_eq!(appended["size"], 6);
}

/// The same backup restored on every member of a new 3-node cluster (each with its own --id
/// and the same --peer list, as README says): the members elect a leader among themselves and
/// serve what the backup holds.
#[tokio::test]
async fn one_backup_restored_on_three_nodes_makes_a_new_cluster() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut source = Daemon::start(&["--snapshot-threshold", "3"]);
    let held = answer(raftlock(&source, &["acquire", "kept", "--ttl", "120s"]));
    let session = held["session"].as_u64().expect("session").to_string();
    let token = held["token"].as_u64().expect("token").to_string();
    let fence = held["fence"].as_u64().expect("fence").to_string();
    for _ in 0..6 {
        let args = [
            "append",
            "log",
            "--lock",
            "kept",
            "--fence",
            &fence,
            "--session",
            &session,
            "--token",
            &token,
            "x",
        ];
        answer(raftlock(&source, &args));
    }
    assert!(source.terminate().success());
    let backup = scratch.path().join("backup.snap");
    std::fs::copy(source.data_dir().join("snapshot"), &backup).expect("copy the snapshot");
    let described = answer(status(&backup));
    let size = described["file_bytes"].as_u64().expect("file_bytes");
    assert!(size >= 1, "{described}");

    let mut cluster = Cluster::start(3, &[]);
    let peers: Vec<String> = (1..=3)
        .map(|id| format!("{id}={}", cluster.addr(id)))
        .collect();
    let peers = peers.join(",");
    for id in 1..=3 {
        let node = cluster.node(id);
        assert!(node.terminate().success());
        node.wipe();
        let done = restore_as(&backup, node.data_dir(), id, &peers);
        assert!(
            done.status.success(),
            "restore node {id}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    for id in 1..=3 {
        cluster.node(id).start_again();
    }
    let leader = cluster.wait_leader().await;
    let read = answer(raftlock(cluster.node(leader), &["read", "log"]));
    assert_eq!(read["size"], size);
    assert_eq!(read["data"], "x".repeat(size as usize));
    let locks = answer(raftlock(cluster.node(leader), &["locks"]));
    assert_eq!(locks[0]["name"], "kept", "{locks}");
    assert_eq!(locks[0]["holders"][0]["session"].to_string(), session);
    let statuses = cluster.statuses().await;
    assert_eq!(statuses.len(), 3, "every restored member answers");
}

/// Runs `raftlock --json ARGS` against `servers`, off the async runtime.
async fn raftlock_at(servers: String, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(RAFTLOCK)
            .arg("--json")
            .args(["--servers", &servers, "--timeout", "20s"])
            .args(&args)
            .env_remove("RAFTLOCK_SERVERS")
            .env_remove("RAFTLOCK_SESSION")
            .env_remove("RAFTLOCK_TOKEN")
            .output()
            .expect("run raftlock")
    })
    .await
    .expect("join")
}

/// A write load: appends of "x" to file `load` under `creds` (`--lock L --fence F --session S
/// --token T`), one at a time, until `stop`; counts the acknowledged ones. Returns once 3 are.
async fn start_load(
    servers: String,
    creds: Vec<String>,
) -> (Arc<AtomicU64>, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let mut args = vec!["append".to_string(), "load".to_string()];
                args.extend(creds.iter().cloned());
                args.push("x".into());
                answer(raftlock_at(servers.clone(), args).await);
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let start = std::time::Instant::now();
    while acked.load(Ordering::SeqCst) < 3 {
        assert!(
            start.elapsed() < common::DEADLINE,
            "the write load makes no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (acked, stop, writer)
}

/// `SnapshotSave` against a 3-node cluster under a write load: a follower redirects to the
/// leader; the leader streams a header and chunks whose bytes match the header's size and
/// checksum, and the file covers every append acknowledged before the request.
#[tokio::test]
async fn the_leader_streams_a_backup_covering_every_acknowledged_write() {
    use raftlock::protocol::{ErrorCode, Request, Response};
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader().await;
    let servers = cluster.servers().join(",");
    let held = answer(
        raftlock_at(
            servers.clone(),
            vec!["acquire".into(), "w".into(), "--ttl".into(), "120s".into()],
        )
        .await,
    );
    let creds: Vec<String> = [
        "--lock".to_string(),
        "w".to_string(),
        "--fence".to_string(),
        held["fence"].to_string(),
        "--session".to_string(),
        held["session"].to_string(),
        "--token".to_string(),
        held["token"].to_string(),
    ]
    .to_vec();
    // Some writes land before the backup is asked for.
    let (acked, stop, writer) = start_load(servers.clone(), creds.clone()).await;

    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut client = common::Client::hello(cluster.addr(follower)).await;
    let id = client.id();
    match client.call(Request::SnapshotSave { id }).await {
        Response::Error {
            code: ErrorCode::NotLeader,
            leader_addr,
            ..
        } => assert_eq!(leader_addr, Some(cluster.addr(leader).to_string())),
        other => panic!("a follower redirects: {other:?}"),
    }

    let mut client = common::Client::hello(cluster.addr(leader)).await;
    let id = client.id();
    let before = acked.load(Ordering::SeqCst);
    client.send(Request::SnapshotSave { id }).await;
    let Response::SnapshotHeader {
        index,
        size,
        checksum,
        ..
    } = client.recv().await
    else {
        panic!("a header first");
    };
    let mut file = Vec::new();
    loop {
        match client.recv().await {
            Response::SnapshotChunk {
                id: chunk_id,
                offset,
                data,
                last,
            } => {
                assert_eq!(chunk_id, id);
                assert_eq!(offset, file.len() as u64, "chunks in order");
                file.extend_from_slice(&data);
                if last {
                    break;
                }
            }
            other => panic!("a chunk: {other:?}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    assert_eq!(file.len() as u64, size);
    assert_eq!(raftlock::backup::file_checksum(&file), checksum);
    let snapshot = raftlock::backup::decode(&file).expect("a valid snapshot");
    assert_eq!(snapshot.meta.index, index);
    let space = raftlock::lockspace::LockSpace::restore(&snapshot.data).expect("restores");
    let (_, load_size) = space
        .read("load", 0, 0)
        .expect("the load file is in the backup");
    assert!(
        load_size >= before,
        "{load_size} bytes in the backup, {before} appends acknowledged before the save"
    );
}

/// `raftlock snapshot save` through the real CLI, against a 3-node cluster under a write load
/// (the servers listed in an order that usually starts at a follower, which redirects): the
/// backup restores into a new node that serves every file and lock acknowledged before the
/// save started, byte for byte, and no scratch file is left behind.
#[tokio::test]
async fn a_saved_backup_restores_every_file_and_lock_acknowledged_before_the_save() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader().await;
    let mut order: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    order.push(leader);
    let servers: Vec<String> = order
        .iter()
        .map(|id| cluster.addr(*id).to_string())
        .collect();
    let servers = servers.join(",");
    let held = answer(
        raftlock_at(
            servers.clone(),
            vec!["acquire".into(), "w".into(), "--ttl".into(), "120s".into()],
        )
        .await,
    );
    let session = held["session"].to_string();
    let creds: Vec<String> = [
        "--lock",
        "w",
        "--fence",
        &held["fence"].to_string(),
        "--session",
        &session,
        "--token",
        &held["token"].to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Files of arbitrary bytes, acknowledged before the save.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for n in 0..3u32 {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * (n + 3) % 251) as u8).collect();
        let path = scratch.path().join(format!("data{n}"));
        std::fs::write(&path, &data).expect("write data file");
        let name = format!("bin{n}");
        let mut args = vec!["append".to_string(), name.clone()];
        args.extend(creds.iter().cloned());
        args.push("--data-file".into());
        args.push(path.to_str().expect("utf-8 path").into());
        answer(raftlock_at(servers.clone(), args).await);
        files.push((name, data));
    }
    let (acked, stop, writer) = start_load(servers.clone(), creds.clone()).await;

    let backup = scratch.path().join("backup.snap");
    let before = acked.load(Ordering::SeqCst);
    let saved = answer(
        raftlock_at(
            servers.clone(),
            vec![
                "snapshot".into(),
                "save".into(),
                backup.to_str().expect("utf-8 path").into(),
            ],
        )
        .await,
    );
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let keys: Vec<&str> = saved
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["file", "index", "term", "size", "checksum"]);
    assert_eq!(saved["file"], backup.to_str().expect("utf-8 path"));
    let size = std::fs::metadata(&backup).expect("the backup exists").len();
    assert_eq!(saved["size"], size);
    let described = answer(status(&backup));
    assert_eq!(described["checksum"], saved["checksum"]);
    assert_eq!(described["index"], saved["index"]);
    let leftovers: Vec<String> = std::fs::read_dir(scratch.path())
        .expect("read scratch")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "scratch files left: {leftovers:?}");

    // A new one-node cluster from the backup serves what was acknowledged before the save.
    let restored = restore_new_node(&backup);
    assert_serves(&restored, &files);
    let load = answer(raftlock(&restored, &["read", "load"]));
    let load_size = load["size"].as_u64().expect("size");
    assert!(
        load_size >= before,
        "{load_size} bytes restored, {before} appends acknowledged before the save"
    );
    assert_eq!(load["data"], "x".repeat(load_size as usize));
    let locks = answer(raftlock(&restored, &["locks"]));
    assert_eq!(locks[0]["name"], "w", "{locks}");
    assert_eq!(locks[0]["holders"][0]["session"].to_string(), session);
}
