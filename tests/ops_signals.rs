//! SIGHUP never stops the daemon: it reloads the log filter from `--log-filter-file` and logs
//! a line saying what it did. A node of a three-node cluster keeps serving through two
//! SIGHUPs, with the cluster's term and leader unchanged, and the new filter takes effect.

mod common;
mod ops_support;

use std::time::{Duration, Instant};

use common::{assert_served, Cluster, DEADLINE};
use ops_support::wait_for_text;
use raftlock::protocol::StatusInfo;

/// Every node's (id, term, leader), once all of them answer and agree on the term and a
/// leader.
async fn views(cluster: &Cluster) -> Vec<(u64, u64, Option<u64>)> {
    let start = Instant::now();
    loop {
        let statuses: Vec<(u64, StatusInfo)> = cluster.statuses().await;
        let views: Vec<(u64, u64, Option<u64>)> = statuses
            .iter()
            .map(|(id, s)| (*id, s.term, s.leader))
            .collect();
        let agreed = views.len() == cluster.nodes.len()
            && views[0].2.is_some()
            && views.iter().all(|v| (v.1, v.2) == (views[0].1, views[0].2));
        if agreed {
            return views;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the nodes do not agree: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_log_filter_and_leaves_the_node_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let filter = dir.path().join("log-filter");
    std::fs::write(&filter, "info\n").expect("write the filter file");
    let filter_arg = filter.to_str().expect("utf-8 path").to_string();
    // Long election timeouts: no election may happen for any reason but a failed node, so the
    // term before and after the signals must be equal.
    let mut cluster = Cluster::start(
        3,
        &[
            "--log-filter-file",
            &filter_arg,
            "--election-ticks-min",
            "100",
            "--election-ticks-max",
            "200",
        ],
    );
    let leader = cluster.wait_leader().await;
    let before = views(&cluster).await;

    // First SIGHUP, to the leader: the filter changes from info to debug.
    std::fs::write(&filter, "raftlock=debug,info\n").expect("rewrite the filter file");
    cluster.node(leader).signal(libc::SIGHUP);
    let log = wait_for_text(
        "the leader's log",
        "SIGHUP: reloaded the log filter",
        || cluster.nodes[leader as usize - 1].log(),
    );
    assert!(
        log.contains("from=info to=raftlock=debug,info"),
        "the reload line does not say what changed:\n{log}"
    );
    cluster.node(leader).assert_running();
    assert_eq!(views(&cluster).await, before, "term or leader changed");
    let addr = cluster.addr(leader);
    assert_served(addr, "after-first-hup").await;
    // The new filter is in force: a connection's debug lines appear after the reload line
    // (with `info` before it there were none).
    let start = Instant::now();
    loop {
        let log = cluster.nodes[leader as usize - 1].log();
        let after = log
            .split("SIGHUP: reloaded the log filter")
            .nth(1)
            .unwrap_or_default();
        if after.contains(" DEBUG ") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no debug line after the reload:\n{log}"
        );
        assert_served(addr, "make-debug-lines").await;
    }
    let before_reload = log
        .split("SIGHUP: reloaded the log filter")
        .next()
        .unwrap_or_default();
    assert!(
        !before_reload.contains(" DEBUG "),
        "debug lines under the info filter:\n{before_reload}"
    );

    // Second SIGHUP with the file unchanged: said so, and still nothing else changes.
    cluster.node(leader).signal(libc::SIGHUP);
    wait_for_text("the leader's log", "the log filter is unchanged", || {
        cluster.nodes[leader as usize - 1].log()
    });
    cluster.node(leader).assert_running();
    assert_eq!(views(&cluster).await, before, "term or leader changed");
    assert_served(addr, "after-second-hup").await;

    // A follower too, with an unreadable file: it keeps its filter and keeps running.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    std::fs::remove_file(&filter).expect("remove the filter file");
    cluster.node(follower).signal(libc::SIGHUP);
    wait_for_text("the follower's log", "cannot reload the log filter", || {
        cluster.nodes[follower as usize - 1].log()
    });
    cluster.node(follower).assert_running();
    assert_eq!(views(&cluster).await, before, "term or leader changed");
    // It still answers (views() above) and still replicates the leader's writes.
    assert_served(addr, "after-the-follower-hup").await;
}

/// Without --log-filter-file a SIGHUP has nothing to re-read: the node says so and serves on.
#[tokio::test]
async fn sighup_without_a_filter_file_says_there_is_nothing_to_reload() {
    let mut daemon = common::Daemon::start(&[]);
    common::Client::hello(daemon.addr).await.wait_leader().await;
    daemon.signal(libc::SIGHUP);
    wait_for_text("the log", "SIGHUP: nothing to reload", || daemon.log());
    daemon.assert_running();
    assert_served(daemon.addr, "after-hup").await;
}

/// A SIGTERM sent the moment the daemon announces its port stops it gracefully (exit status
/// 0), every time. The handlers used to be installed only when the serve loop first polled
/// them, so a supervisor (or a test) that signalled right after the "listening" line could
/// kill the process by the default action instead. The window was a few milliseconds wide
/// (about one start in thirty lost the race on an idle machine), so the test makes 100 starts,
/// four at a time; with the old code nearly every run of it fails.
#[test]
fn a_sigterm_right_after_the_listening_line_stops_the_daemon_gracefully() {
    let runners: Vec<_> = (0..4)
        .map(|runner| {
            std::thread::spawn(move || {
                for attempt in 1..=25 {
                    let mut daemon = common::Daemon::start(&[]);
                    let status = daemon.terminate();
                    assert!(
                        status.success(),
                        "runner {runner} attempt {attempt}: SIGTERM right after start ended \
                         the daemon with {status}\n{}",
                        daemon.log()
                    );
                }
            })
        })
        .collect();
    for runner in runners {
        runner.join().expect("a start was killed by SIGTERM");
    }
}
