//! `--metrics-listen` against real `raftlockd` processes: `/metrics` counters move as the load
//! says (grants equal the acquires made, on every node; leader changes after a leader kill),
//! `/healthz` answers, `/readyz` waits until a joiner is added and caught up, and `raftlock
//! cluster health` exits 0 on a healthy cluster and 1 with a member down.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{cluster_key, connect, free_addrs, http_get, start_with_metrics, Daemon, DEADLINE};
use raftlock::client::{LockMode, Wait};

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// The value of the sample `series` (name and labels, as printed) in a `/metrics` scrape.
fn sample(addr: SocketAddr, series: &str) -> Option<f64> {
    let (code, body) = http_get(addr, "/metrics")?;
    assert_eq!(code, 200, "/metrics answered {code}: {body}");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Polls `check` until it gives a value, failing after [`DEADLINE`] with `what`.
async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `raftlock --servers SERVERS --timeout 5s ARGS`.
fn raftlock(servers: &[String], args: &[&str]) -> Output {
    Command::new(RAFTLOCK)
        .args(["--servers", &servers.join(","), "--timeout", "5s"])
        .args(args)
        .output()
        .expect("run raftlock")
}

/// A cluster whose nodes each serve metrics on their own port.
struct MetricsCluster {
    nodes: Vec<Daemon>,
    metrics: Vec<SocketAddr>,
    _key: tempfile::TempDir,
}

impl MetricsCluster {
    fn start(n: usize) -> MetricsCluster {
        let started = start_with_metrics(n, &[]);
        MetricsCluster {
            nodes: started.nodes,
            metrics: started.metrics,
            _key: started.key,
        }
    }

    fn servers(&self) -> Vec<String> {
        self.nodes.iter().map(|d| d.addr.to_string()).collect()
    }

    /// The node (index) whose metrics say it leads, agreed by every node in `among`.
    fn leader(&self, among: &[usize]) -> Option<usize> {
        let leader = among
            .iter()
            .find(|&&i| sample(self.metrics[i], "raftlock_role{role=\"leader\"}") == Some(1.0))?;
        let id = (*leader + 1) as f64;
        among
            .iter()
            .all(|&i| sample(self.metrics[i], "raftlock_leader_id") == Some(id))
            .then_some(*leader)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_the_load_and_a_leader_kill() {
    let mut cluster = MetricsCluster::start(3);
    let all = [0, 1, 2];
    let leader = wait_for("an agreed leader", || cluster.leader(&all)).await;
    for &i in &all {
        let addr = cluster.metrics[i];
        wait_for("/healthz 200", || {
            (http_get(addr, "/healthz")? == (200, "ok\n".to_string())).then_some(())
        })
        .await;
        wait_for("/readyz 200", || {
            (http_get(addr, "/readyz")?.0 == 200).then_some(())
        })
        .await;
    }
    assert_eq!(
        http_get(cluster.metrics[0], "/nothing").map(|(code, _)| code),
        Some(404)
    );

    let grants_before: Vec<f64> = all
        .iter()
        .map(|&i| sample(cluster.metrics[i], "raftlock_grants_total").expect("grants counter"))
        .collect();
    const ACQUIRES: usize = 20;
    let client = connect(cluster.servers()).await;
    let session = client
        .open_session(Duration::from_secs(30))
        .await
        .expect("open a session");
    for n in 0..ACQUIRES {
        session
            .acquire(
                &format!("metrics-{n}"),
                LockMode::Exclusive,
                Wait::TryOnce,
                None,
            )
            .await
            .expect("acquire a free lock");
    }
    // Every node applies the same log: each counts every grant once.
    for &i in &all {
        let want = grants_before[i] + ACQUIRES as f64;
        let addr = cluster.metrics[i];
        wait_for(&format!("node {} to count {want} grants", i + 1), || {
            (sample(addr, "raftlock_grants_total")? == want).then_some(())
        })
        .await;
        wait_for("the lock-space gauges", || {
            (sample(addr, "raftlock_locks")? >= ACQUIRES as f64).then_some(())
        })
        .await;
    }
    let leader_metrics = cluster.metrics[leader];
    assert!(
        sample(leader_metrics, "raftlock_answers_total{result=\"ok\"}").unwrap_or(0.0)
            >= ACQUIRES as f64
    );
    assert!(sample(leader_metrics, "raftlock_frames_received_total").unwrap_or(0.0) > 0.0);
    assert!(sample(leader_metrics, "raftlock_fsync_duration_seconds_count").unwrap_or(0.0) > 0.0);

    let healthy = raftlock(&cluster.servers(), &["cluster", "health"]);
    assert!(
        healthy.status.success(),
        "cluster health on a healthy cluster: {:?}\n{}{}",
        healthy.status,
        String::from_utf8_lossy(&healthy.stdout),
        String::from_utf8_lossy(&healthy.stderr)
    );

    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let changes_before: Vec<f64> = survivors
        .iter()
        .map(|&i| sample(cluster.metrics[i], "raftlock_leader_changes_total").expect("changes"))
        .collect();
    drop(session);
    drop(client);
    cluster.nodes[leader].kill();
    let new_leader = wait_for("a new leader", || cluster.leader(&survivors)).await;
    assert_ne!(new_leader, leader);
    for (&i, before) in survivors.iter().zip(changes_before) {
        let addr = cluster.metrics[i];
        wait_for("leader changes to go up", || {
            (sample(addr, "raftlock_leader_changes_total")? > before).then_some(())
        })
        .await;
    }

    let degraded = raftlock(&cluster.servers(), &["--json", "cluster", "health"]);
    let text = String::from_utf8_lossy(&degraded.stdout);
    assert_eq!(degraded.status.code(), Some(1), "{text}");
    let shape: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!(shape["healthy"], false);
    let down = shape["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["node_id"] == leader as u64 + 1)
        .expect("the killed node is listed");
    assert_eq!(down["reachable"], false);
    assert_eq!(down["healthy"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_until_a_joiner_is_added_and_caught_up() {
    let addrs = free_addrs(4);
    let (key, key_args) = cluster_key();
    let mut first_args = vec![
        "--id".to_string(),
        "1".to_string(),
        "--peer".to_string(),
        format!("1={}", addrs[0]),
        "--metrics-listen".to_string(),
        addrs[2].to_string(),
    ];
    first_args.extend(key_args.iter().cloned());
    let first = Daemon::start_at(&addrs[0].to_string(), &first_args);
    wait_for("node 1 ready", || {
        (http_get(addrs[2], "/readyz")?.0 == 200).then_some(())
    })
    .await;

    // Some history for the joiner to catch up with.
    let client = connect(vec![first.addr.to_string()]).await;
    let session = client
        .open_session(Duration::from_secs(30))
        .await
        .expect("open a session");
    for n in 0..10 {
        session
            .acquire(
                &format!("history-{n}"),
                LockMode::Shared,
                Wait::TryOnce,
                None,
            )
            .await
            .expect("acquire");
    }

    let mut joiner_args = vec![
        "--id".to_string(),
        "2".to_string(),
        "--join".to_string(),
        "--peer".to_string(),
        format!("1={}", addrs[0]),
        "--metrics-listen".to_string(),
        addrs[3].to_string(),
    ];
    joiner_args.extend(key_args.iter().cloned());
    let joiner = Daemon::start_at(&addrs[1].to_string(), &joiner_args);
    let (code, body) = wait_for("the joiner's /readyz", || http_get(addrs[3], "/readyz")).await;
    assert_eq!(
        code, 503,
        "an empty node waiting to be added is not ready: {body}"
    );
    assert_eq!(
        http_get(addrs[3], "/healthz").map(|(code, _)| code),
        Some(200)
    );

    // The leader's commit index as of joining: a ready joiner has applied at least that.
    let commit = sample(addrs[2], "raftlock_commit_index").expect("leader's commit index");
    client
        .add_member(2, &joiner.addr.to_string())
        .await
        .expect("add the joiner");
    wait_for("the joiner's /readyz 200", || {
        (http_get(addrs[3], "/readyz")?.0 == 200).then_some(())
    })
    .await;
    let applied = sample(addrs[3], "raftlock_applied_index").expect("joiner's applied index");
    assert!(
        applied >= commit,
        "ready with applied {applied} behind the leader's commit {commit} when it was added"
    );
    drop(key);
}
