//! Real multi-process clusters: elections, redirects through a follower, peer frames refused
//! on client connections, and membership changes at run time.

mod common;

use std::time::Duration;

use common::{connect, error_code, Client as RawClient, Cluster};
use raftlock::client::LockMode;
use raftlock::client::Wait;
use raftlock::protocol::{ErrorCode, Request, Response, Role, VERSION};
use raftlock::raft::{Envelope, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_and_five_nodes_elect_one_leader() {
    for n in [3, 5] {
        let cluster = Cluster::start(n, &[]);
        let leader = cluster.wait_leader().await;
        let statuses = cluster.statuses().await;
        assert_eq!(statuses.len(), n, "every node answers");
        let leaders = statuses.iter().filter(|(_, s)| s.role == "leader").count();
        assert_eq!(leaders, 1, "exactly one leader among {n}");
        let (_, status) = statuses
            .iter()
            .find(|(id, _)| *id == leader)
            .expect("leader");
        assert_eq!(status.members.len(), n);
        assert!(status.members.iter().all(|m| m.voter));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_append_and_release_through_a_follower() {
    through_a_follower(&[]).await;
}

/// The same on nodes that run a single-threaded runtime (`--worker-threads 1`): nothing in the
/// daemon may need a second runtime thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_threaded_nodes_serve_the_same() {
    through_a_follower(&["--worker-threads", "1"]).await;
}

async fn through_a_follower(args: &[&str]) {
    let cluster = Cluster::start(3, args);
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    // The client knows only the follower: every write is redirected to the leader.
    let client = connect(vec![cluster.addr(follower).to_string()]).await;
    let session = client
        .open_session(Duration::from_secs(10))
        .await
        .expect("session");
    let guard = session
        .lock("journal", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    session
        .append("journal.log", &guard, b"through a follower\n".to_vec())
        .await
        .expect("append");
    guard.release().await.expect("release");
    assert_eq!(
        client.connected_to().await.as_deref(),
        Some(cluster.addr(leader).to_string().as_str()),
        "the client followed the redirect to the leader"
    );
    // Every node serves the file from its own state once it has applied the append.
    for id in 1..=3 {
        cluster.wait_caught_up(id).await;
        let reader = connect(vec![cluster.addr(id).to_string()]).await;
        let (data, _) = reader
            .read("journal.log", 0, 1024, true)
            .await
            .expect("stale read");
        assert_eq!(data, b"through a follower\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_frame_on_a_client_connection_is_refused() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader().await;
    let before = cluster.statuses().await;
    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut client = RawClient::hello(cluster.addr(target)).await;
    // A forged vote request with a huge term: if it reached the core, the term would jump.
    let raft = raftlock::protocol::PeerMessage::Raft {
        envelope: Envelope {
            from: leader,
            to: target,
            term: 1_000_000,
            message: Message::TimeoutNow,
        }
        .into(),
    };
    let body = rmp_serde::to_vec_named(&raft).expect("encode");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    client.write_raw(&frame).await;
    // protocol.md §3: a peer type on a client connection is an unknown type, answered with the
    // frame's id (0 here, a Raft frame has none) and harmless: the connection goes on serving.
    let refusal = client.recv().await;
    assert_eq!(
        error_code(&refusal),
        Some(ErrorCode::UnknownType),
        "expected UnknownType, got {refusal:?}"
    );
    assert_eq!(refusal.id(), 0, "the refusal echoes id 0");
    let id = client.id();
    match client.call(Request::Status { id }).await {
        Response::Status(status) => assert!(
            status.term < 1_000_000,
            "the forged term never reached the core: {status:?}"
        ),
        other => panic!("the same connection still serves Status, got {other:?}"),
    }
    // A client Hello that then claims to be a peer is not a peer either.
    let mut client = RawClient::connect(cluster.addr(target)).await;
    client
        .send(Request::Hello {
            version: VERSION,
            role: Role::Client,
            token: None,
        })
        .await;
    assert!(matches!(client.recv().await, Response::Welcome { .. }));
    let leader_after = cluster.wait_leader().await;
    assert_eq!(leader_after, leader, "leadership did not move");
    for (id, status) in cluster.statuses().await {
        let old = before.iter().find(|(b, _)| *b == id).expect("node").1.term;
        assert_eq!(status.term, old, "node {id}'s term is unchanged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_at_run_time() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;
    let client = connect(cluster.servers()).await;
    let session = client
        .open_session(Duration::from_secs(10))
        .await
        .expect("session");
    let guard = session
        .lock("data", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    for i in 0..20 {
        session
            .append("f", &guard, format!("{i}\n").into_bytes())
            .await
            .expect("append");
    }
    let (id, addr) = cluster.start_joiner();
    assert_eq!(id, 4);
    let (_, members) = client
        .add_member(id, &addr.to_string())
        .await
        .expect("add member");
    assert!(members.iter().any(|m| m.node_id == 4 && m.voter));
    cluster.wait_caught_up(4).await;
    let reader = connect(vec![addr.to_string()]).await;
    let (data, _) = reader.read("f", 0, 4096, true).await.expect("read");
    let expected: String = (0..20).map(|i| format!("{i}\n")).collect();
    assert_eq!(data, expected.as_bytes());
    let leader = cluster.wait_leader().await;
    let status = cluster
        .statuses()
        .await
        .into_iter()
        .find(|(n, _)| *n == leader)
        .expect("leader status")
        .1;
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 4);

    // Remove it again: the other three keep serving.
    let (_, members) = client.remove_member(4).await.expect("remove member");
    assert!(members.iter().all(|m| m.node_id != 4));
    cluster.node(4).kill();
    session
        .append("f", &guard, b"after removal\n".to_vec())
        .await
        .expect("append after removal");
    // Removing a non-member is a no-op answer.
    let (index, _) = client.remove_member(4).await.expect("idempotent remove");
    assert_eq!(index, 0);
}
