//! systemd's notifications, against a fake `NOTIFY_SOCKET` (a unix datagram socket bound
//! here): `READY=1` only once the node serves (it accepts clients and knows a leader), and
//! `WATCHDOG=1` again and again when `WATCHDOG_USEC` asks for a watchdog.

mod common;
mod ops_support;

use std::time::Duration;

use common::{assert_served, cluster_key, free_addrs, try_status, Client, Daemon, DEADLINE};
use ops_support::{EnvDaemon, NotifySocket};

fn has(datagrams: &[Vec<String>], line: &str) -> bool {
    datagrams.iter().flatten().any(|l| l == line)
}

#[tokio::test]
async fn ready_comes_only_once_the_node_knows_a_leader() {
    let notify = NotifySocket::bind();
    let addrs = free_addrs(3);
    let peers: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let (_key_dir, key_args) = cluster_key();
    let data = tempfile::tempdir().expect("tempdir");
    let node_args = |id: usize| -> Vec<String> {
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--peer".to_string(),
            peers.clone(),
            "--bootstrap".to_string(),
        ];
        args.extend(key_args.iter().cloned());
        args
    };
    let mut first_args = node_args(1);
    first_args.extend([
        "--listen".to_string(),
        addrs[0].to_string(),
        "--data-dir".to_string(),
        data.path()
            .join("node1")
            .to_str()
            .expect("utf-8")
            .to_string(),
    ]);
    let log = data.path().join("node1.log");
    let first = EnvDaemon::start(
        &first_args,
        &[(
            "NOTIFY_SOCKET",
            notify.path.to_str().expect("utf-8").to_string(),
        )],
        &log,
        false,
    );
    // Alone, node 1 serves connections but can know no leader: it answers Status, and by then
    // a daemon that said READY=1 on listening would have sent it already.
    let status = try_status(first.addr, DEADLINE)
        .await
        .expect("node 1 answers");
    assert_eq!(
        status.leader, None,
        "a lone node of three has a leader: {status:?}"
    );
    let early = notify.drain();
    assert!(
        !has(&early, "READY=1"),
        "READY=1 before any leader is known: {early:?}"
    );

    // With its peers up, a leader is elected; READY=1 follows, and node 1 then knows it.
    let _others: Vec<Daemon> = (2..=3)
        .map(|id| Daemon::start_at(&addrs[id - 1].to_string(), &node_args(id)))
        .collect();
    let seen = notify.wait_for("READY=1");
    let status = try_status(first.addr, DEADLINE)
        .await
        .expect("node 1 answers");
    // Before it, the status said the node was waiting (drained early, or received since).
    assert!(
        has(&early, "STATUS=recovered; waiting for a leader")
            || has(&seen, "STATUS=recovered; waiting for a leader"),
        "no waiting status: {early:?} {seen:?}"
    );
    let leader = status.leader.expect("READY=1 but no leader known");
    assert!(
        seen.iter()
            .flatten()
            .any(|line| line == &format!("STATUS=serving; leader {leader}")),
        "READY=1 without the leader in STATUS: {seen:?}"
    );
    assert_served(addrs[leader as usize - 1], "after-ready").await;
}

#[tokio::test]
async fn a_node_that_waits_to_be_added_is_ready_at_once() {
    // An empty node without --bootstrap hears from no leader until it is added, which needs
    // it running: it must not wait for a leader to be ready.
    let notify = NotifySocket::bind();
    let (_key_dir, mut args) = cluster_key();
    let data = tempfile::tempdir().expect("tempdir");
    let addr = free_addrs(2);
    args.extend([
        "--id".to_string(),
        "2".to_string(),
        "--join".to_string(),
        "--peer".to_string(),
        format!("1={}", addr[1]),
        "--listen".to_string(),
        addr[0].to_string(),
        "--data-dir".to_string(),
        data.path()
            .join("node")
            .to_str()
            .expect("utf-8")
            .to_string(),
    ]);
    let _node = EnvDaemon::start(
        &args,
        &[(
            "NOTIFY_SOCKET",
            notify.path.to_str().expect("utf-8").to_string(),
        )],
        &data.path().join("node.log"),
        false,
    );
    let seen = notify.wait_for("READY=1");
    assert!(
        has(
            &seen,
            "STATUS=serving; empty and waiting to be added (raftlock cluster add)"
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_watchdog_is_pinged_repeatedly_at_half_its_interval() {
    let notify = NotifySocket::bind();
    let data = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.path().join("node").to_str().expect("utf-8"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let node = EnvDaemon::start(
        &args,
        &[
            (
                "NOTIFY_SOCKET",
                notify.path.to_str().expect("utf-8").to_string(),
            ),
            // 200 ms: a ping every 100 ms.
            ("WATCHDOG_USEC", "200000".to_string()),
        ],
        &data.path().join("node.log"),
        true,
    );
    Client::hello(node.addr).await.wait_leader().await;
    let mut pings = 0;
    let start = std::time::Instant::now();
    while pings < 5 {
        assert!(
            start.elapsed() < DEADLINE,
            "{pings} WATCHDOG=1 within {DEADLINE:?}"
        );
        if let Some(datagram) = notify.recv(Duration::from_millis(500)) {
            pings += datagram.iter().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    assert!(
        node.log().contains("systemd watchdog enabled every_ms=100"),
        "{}",
        node.log()
    );
}
