//! `raftlock cluster add` against a real 3-node cluster: a node that never answers (an address
//! nobody listens on, or a node started with another `--cluster-id`, which its peers refuse at
//! the handshake) is not made a voter; the add fails with a message saying why and the voter
//! count stays 3. A real joiner is still added afterwards.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_addrs, Cluster, Daemon, DEADLINE};

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// Runs `raftlock --servers SERVERS --timeout TIMEOUT ARGS...` off the async workers.
async fn raftlock(servers: Vec<String>, timeout: &str, args: &[&str]) -> Output {
    let mut command = Command::new(RAFTLOCK);
    command
        .args(["--servers", &servers.join(",")])
        .args(["--timeout", timeout])
        .args(args);
    tokio::task::spawn_blocking(move || command.output().expect("run raftlock"))
        .await
        .expect("join")
}

/// The voters and learners in the leader's status (polled until a leader answers).
async fn members(cluster: &Cluster) -> (Vec<u64>, Vec<u64>) {
    let start = Instant::now();
    loop {
        let leader = cluster.wait_leader().await;
        let status = cluster
            .statuses()
            .await
            .into_iter()
            .find(|(id, _)| *id == leader);
        if let Some((_, status)) = status {
            let ids = |voter: bool| {
                status
                    .members
                    .iter()
                    .filter(|m| m.voter == voter)
                    .map(|m| m.node_id)
                    .collect()
            };
            return (ids(true), ids(false));
        }
        assert!(start.elapsed() < DEADLINE, "the leader never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_refused(output: &Output, id: u64) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "adding node {id} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains(&format!("node {id} at")) && stderr.contains("did not answer"),
        "unclear error: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_add_refuses_a_node_that_never_answers() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;

    // An address nobody listens on.
    let nowhere = free_addrs(1)[0].to_string();
    let output = raftlock(cluster.servers(), "12s", &["cluster", "add", "4", &nowhere]).await;
    assert_refused(&output, 4);
    let (voters, learners) = members(&cluster).await;
    assert_eq!(voters, vec![1, 2, 3]);
    assert_eq!(learners, vec![4], "the unreachable node stays a learner");

    // A live node of another cluster: its peers refuse it with WrongCluster.
    let mut args = cluster.joiner_args(5);
    args.extend(["--cluster-id".to_string(), "another-cluster".to_string()]);
    let stranger = Daemon::start_at(&free_addrs(1)[0].to_string(), &args);
    let addr = stranger.addr.to_string();
    let output = raftlock(cluster.servers(), "12s", &["cluster", "add", "5", &addr]).await;
    assert_refused(&output, 5);
    let (voters, _) = members(&cluster).await;
    assert_eq!(
        voters,
        vec![1, 2, 3],
        "a node of another cluster became a voter"
    );
    drop(stranger);

    // Take the learners out; a node of this cluster is still added as a voter.
    for id in ["4", "5"] {
        let output = raftlock(cluster.servers(), "10s", &["cluster", "remove", id]).await;
        assert!(output.status.success(), "remove {id}: {output:?}");
    }
    let joiner = Daemon::start_at(&free_addrs(1)[0].to_string(), &cluster.joiner_args(4));
    let addr = joiner.addr.to_string();
    let output = raftlock(cluster.servers(), "20s", &["cluster", "add", "4", &addr]).await;
    assert!(
        output.status.success(),
        "adding a live node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (voters, _) = members(&cluster).await;
    assert_eq!(voters, vec![1, 2, 3, 4]);
}
