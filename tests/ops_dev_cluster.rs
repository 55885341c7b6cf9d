//! `raftlockd dev-cluster` survives its own demo: `kill -9` of the leader (its pid read from
//! the supervisor's output) leaves the other two serving under a new leader, and the
//! supervisor restarts the killed node, which is back as a follower of the new leader within
//! 10 s. The supervisor prefixes each node's log lines, and Ctrl-C (SIGTERM) stops them all.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_served, try_status, DEADLINE};
use raftlock::protocol::StatusInfo;

/// The supervisor process and what it printed; SIGTERMed (then SIGKILLed, with every node
/// it printed) on drop.
struct DevCluster {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    pids: HashMap<u64, u32>,
    log: std::path::PathBuf,
}

impl DevCluster {
    /// The next stdout line, bounded by [`DEADLINE`].
    fn line(&mut self) -> String {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("the supervisor printed nothing more: {:?}", self.seen));
        if let Some((id, pid)) = pid_line(&line) {
            self.pids.insert(id, pid);
        }
        self.seen.push(line.clone());
        line
    }

    /// Reads stdout up to a line starting with `prefix`.
    fn until(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let start = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            for pid in self.pids.values() {
                // SAFETY: kill(2) of a node this test's supervisor started (gone if stopped).
                unsafe {
                    libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("--- supervisor stdout ---\n{}", self.seen.join("\n"));
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- supervisor stderr (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// `node N: ADDR pid P data DIR` or `node N restarted: pid P`.
fn pid_line(line: &str) -> Option<(u64, u32)> {
    let rest = line.strip_prefix("node ")?;
    let (id, rest) = rest.split_once([':', ' '])?;
    let pid = rest.split(" pid ").nth(1)?.split_whitespace().next()?;
    Some((id.parse().ok()?, pid.parse().ok()?))
}

/// Every answering node's status, by id.
async fn statuses(addrs: &[SocketAddr]) -> Vec<(u64, StatusInfo)> {
    let asks = addrs.iter().enumerate().map(|(i, addr)| async move {
        (
            i as u64 + 1,
            try_status(*addr, Duration::from_millis(300)).await,
        )
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(id, s)| s.map(|s| (id, s)))
        .collect()
}

/// Waits (bounded) until the nodes `among` answer and agree on a leader other than `not`;
/// returns (leader, term).
async fn agreed_leader(addrs: &[SocketAddr], among: &[u64], not: Option<u64>) -> (u64, u64) {
    let start = Instant::now();
    loop {
        let all = statuses(addrs).await;
        let ours: Vec<&(u64, StatusInfo)> =
            all.iter().filter(|(id, _)| among.contains(id)).collect();
        if ours.len() == among.len() {
            let (_, first) = ours[0];
            if let Some(leader) = first.leader {
                let agree = ours
                    .iter()
                    .all(|(_, s)| s.leader == Some(leader) && s.term == first.term);
                if agree && Some(leader) != not && among.contains(&leader) {
                    return (leader, first.term);
                }
            }
        }
        assert!(start.elapsed() < DEADLINE, "no agreed leader: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `raftlockd dev-cluster --nodes 3` in `dir` and waits until it says it runs; returns
/// it and the nodes' client addresses.
fn start_dev_cluster(dir: &std::path::Path) -> (DevCluster, Vec<SocketAddr>) {
    let base = common::free_port_run(3);
    let log = dir.join("supervisor.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        .args([
            "dev-cluster",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(dir.join("dev"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RAFTLOCKD_LOG_PREFIXED")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .spawn()
        .expect("spawn raftlockd dev-cluster");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut dev = DevCluster {
        child,
        lines,
        seen: Vec::new(),
        pids: HashMap::new(),
        log,
    };
    dev.until("dev cluster running");
    assert_eq!(dev.pids.len(), 3, "a pid for every node: {:?}", dev.seen);
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
        .collect();
    (dev, addrs)
}

/// Waits (bounded) until the supervisor's stderr holds a line for which `found` is true.
fn wait_for_log_line(log: &std::path::Path, what: &str, found: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(&found) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "no log line {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn kill_9_of_the_leader_leaves_the_others_serving_and_the_node_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dev, addrs) = start_dev_cluster(dir.path());
    let log = dev.log.clone();

    let (leader, term) = agreed_leader(&addrs, &[1, 2, 3], None).await;
    assert_served(addrs[leader as usize - 1], "before-kill").await;
    let old_pid = dev.pids[&leader];
    // SAFETY: kill(2) of the leader, a process our supervisor started.
    unsafe {
        libc::kill(old_pid as libc::pid_t, libc::SIGKILL);
    }
    let killed_at = Instant::now();

    // The other two elect a new leader and serve.
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (new_leader, new_term) = agreed_leader(&addrs, &others, Some(leader)).await;
    assert!(
        new_term > term,
        "new leader {new_leader} in term {new_term} <= {term}"
    );
    assert_served(addrs[new_leader as usize - 1], "after-kill").await;

    // The supervisor said so, restarted the node under a new pid, and did not stop the others.
    let killed = dev.until(&format!(
        "node {leader} (pid {old_pid}) was killed by signal 9"
    ));
    assert!(killed.contains("restarting it"), "{killed}");
    dev.until(&format!("node {leader} restarted: pid"));
    let new_pid = dev.pids[&leader];
    assert_ne!(new_pid, old_pid);
    assert!(
        dev.child.try_wait().expect("try_wait").is_none(),
        "the supervisor exited"
    );

    // Back in the cluster within 10 s of the kill: it answers as a follower of the current
    // leader (the new one, unless yet another election happened meanwhile) in its term.
    let (back, current) = loop {
        let all = statuses(&addrs).await;
        let node = all
            .iter()
            .find(|(id, _)| *id == leader)
            .map(|(_, s)| s.clone());
        let current = all
            .iter()
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(id, s)| (*id, s.term));
        if let (Some(node), Some((current, term))) = (node, current) {
            if node.leader == Some(current) && node.term == term && node.role == "follower" {
                break (killed_at.elapsed(), current);
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "node {leader} not back within 10 s: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(back < Duration::from_secs(10));
    assert_served(addrs[current as usize - 1], "after-rejoin").await;

    // Each node's lines reached the supervisor's stderr under its prefix, which names the
    // node once: the node leaves out its own `node=N`.
    let text = std::fs::read_to_string(&log).expect("supervisor log");
    for id in 1..=3 {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("[node {id}] "))),
            "no prefixed line of node {id}"
        );
    }
    let twice: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("[node ") && line.contains(" node="))
        .collect();
    assert!(twice.is_empty(), "lines naming their node twice: {twice:?}");

    // Ctrl-C's SIGTERM stops every node, then the supervisor, exit 0.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(dev.child.id() as libc::pid_t, libc::SIGTERM);
    }
    for id in 1..=3 {
        dev.until(&format!("node {id} stopped"));
    }
    let start = Instant::now();
    let status = loop {
        if let Some(status) = dev.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "the supervisor did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "supervisor exited with {status}");
}

#[tokio::test]
async fn sighup_to_the_supervisor_reaches_every_node_and_stops_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dev, addrs) = start_dev_cluster(dir.path());
    let (leader, term) = agreed_leader(&addrs, &[1, 2, 3], None).await;
    let pids = dev.pids.clone();

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&dev.child),
        rustix::process::Signal::HUP,
    )
    .expect("SIGHUP the supervisor");
    // The supervisor passes it on to each node, by the pid it printed at start...
    for id in 1..=3 {
        dev.until(&format!(
            "SIGHUP passed on to node {id} (pid {})",
            pids[&id]
        ));
    }
    // ...and each node handles it (without --log-filter-file there is nothing to reload).
    for id in 1..=3 {
        wait_for_log_line(&dev.log, &format!("of node {id} handling SIGHUP"), |line| {
            line.starts_with(&format!("[node {id}] ")) && line.contains("SIGHUP: nothing to reload")
        });
    }

    // Nobody stopped: the supervisor runs, no node was restarted, the cluster serves under the
    // same leader and term.
    assert!(
        dev.child.try_wait().expect("try_wait").is_none(),
        "the supervisor exited on SIGHUP"
    );
    assert_eq!(
        agreed_leader(&addrs, &[1, 2, 3], None).await,
        (leader, term)
    );
    assert_served(addrs[leader as usize - 1], "after-sighup").await;
    assert_eq!(dev.pids, pids, "a node was restarted: {:?}", dev.seen);
    assert!(
        !dev.seen
            .iter()
            .any(|line| line.contains("killed by signal")),
        "{:?}",
        dev.seen
    );
}
