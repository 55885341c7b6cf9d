//! The peer door, against real `raftlockd` processes: a standalone node refuses every peer and
//! its term never moves; a keyed cluster refuses a wrong key, a replayed MAC and a forged sender
//! with every term unchanged; a multi-node node without a cluster key refuses to start and says
//! which flag it needs; `--insecure-peers` starts such a node and warns at every start.
//!
//! Terms are compared before and after each attack. The clusters here use election timeouts of
//! 3-6 s, so that a slow machine does not hold an honest election during the few hundred
//! milliseconds an attack takes; a forged heartbeat carries term 100, which would show at once.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_addrs, try_status, Client, Cluster, Daemon, DEADLINE};
use futures::{SinkExt, StreamExt};
use raftlock::protocol::{
    mac, ClientCodec, ErrorCode, PeerCodec, PeerMessage, Request, Role, Side, StatusInfo,
    PEER_MAX_FRAME, PEER_NONCE_LEN, VERSION,
};
use raftlock::raft::{Envelope, Message, NodeId};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Framed;

/// Election timeouts long enough that no honest election happens during an attack.
const CALM: [&str; 4] = ["--election-ticks-min", "300", "--election-ticks-max", "600"];

/// The cluster id every node here uses (the daemon's default).
const CLUSTER: &str = "raftlock";

/// A raw peer connection: `Hello{role: peer}` sent, then the peer codec.
async fn raw_dial(addr: SocketAddr) -> Framed<TcpStream, PeerCodec> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut framed = Framed::new(stream, ClientCodec::default());
    framed
        .send(Request::Hello {
            version: VERSION,
            role: Role::Peer,
            token: None,
        })
        .await
        .expect("send Hello");
    framed.map_codec(|_| PeerCodec::new(PEER_MAX_FRAME))
}

/// The next peer message, bounded by [`DEADLINE`]; `None` when the node closed.
async fn raw_next(framed: &mut Framed<TcpStream, PeerCodec>) -> Option<PeerMessage> {
    match timeout(DEADLINE, framed.next())
        .await
        .expect("an answer within the deadline")
    {
        Some(Ok(Ok(message))) => Some(message),
        Some(Ok(Err(bad))) => panic!("undecodable frame from the node: {bad}"),
        Some(Err(_)) | None => None,
    }
}

/// Expects an `Error` with `code`, then the connection closed by the node.
async fn expect_refusal(framed: &mut Framed<TcpStream, PeerCodec>, code: ErrorCode) {
    match raw_next(framed).await {
        Some(PeerMessage::Error { code: got, message }) => {
            assert_eq!(got, code, "refused with another code: {message}")
        }
        other => panic!("expected Error {code:?}, got {other:?}"),
    }
    assert_eq!(
        raw_next(framed).await,
        None,
        "the node closes after refusing"
    );
}

/// A heartbeat from `from` to `to` in `term`: what a forger sends to depose a leader.
fn heartbeat(from: NodeId, to: NodeId, term: u64) -> PeerMessage {
    PeerMessage::Raft {
        envelope: Envelope {
            from,
            to,
            term,
            message: Message::Heartbeat {
                commit: 0,
                read_seq: 0,
            },
        }
        .into(),
    }
}

/// The node's status, which must answer.
async fn status(addr: SocketAddr) -> StatusInfo {
    try_status(addr, DEADLINE)
        .await
        .expect("the node answers Status")
}

/// Every node's `(term, role)` in id order.
async fn terms(addrs: &[SocketAddr]) -> Vec<(u64, String)> {
    let mut terms = Vec::new();
    for addr in addrs {
        let s = status(*addr).await;
        terms.push((s.term, s.role));
    }
    terms
}

/// The key file named by `--cluster-key-file` in a cluster's common arguments.
fn key_of(cluster: &Cluster) -> Vec<u8> {
    let at = cluster
        .common
        .iter()
        .position(|a| a == "--cluster-key-file")
        .expect("the cluster has a key");
    let mut key = std::fs::read(&cluster.common[at + 1]).expect("read the key file");
    while key.last().is_some_and(u8::is_ascii_whitespace) {
        key.pop();
    }
    key
}

/// Runs `raftlockd` with `args` (and a fresh port) to its exit, bounded by [`DEADLINE`].
fn run_to_exit(data_dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RAFTLOCKD_CLUSTER_KEY_FILE")
        .env_remove("RAFTLOCKD_INSECURE_PEERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftlockd");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "raftlockd did not exit: it started\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Asserts `output` is a refusal to start that names the key flag and the explicit way out.
fn assert_refused_for_want_of_a_key(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started without a key: {stderr}");
    assert!(
        stderr.contains("--cluster-key-file") && stderr.contains("--insecure-peers"),
        "the message does not name the flags: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it listened before refusing"
    );
}

/// The attack of issue 12 on a node started without `--peer`: `Hello{role: peer}`, a nonce-less
/// `PeerHello`, a MAC-less `PeerAuth` and a heartbeat of term 100, back to back. The node
/// answers `BadRequest`, closes, and stays the leader of the same term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_refuses_a_peer_and_keeps_its_term() {
    let daemon = Daemon::start(&[]);
    let before = Client::hello(daemon.addr).await.wait_leader().await;

    // Hello alone: refused at once, before the node reads anything else.
    let mut raw = raw_dial(daemon.addr).await;
    expect_refusal(&mut raw, ErrorCode::BadRequest).await;

    // The whole forged handshake and a heartbeat in one burst.
    let mut raw = raw_dial(daemon.addr).await;
    for frame in [
        PeerMessage::PeerHello {
            cluster_id: CLUSTER.into(),
            node_id: 2,
            nonce: None,
        },
        PeerMessage::PeerAuth { mac: None },
        heartbeat(2, 1, 100),
    ] {
        raw.feed(frame).await.expect("queue a frame");
    }
    raw.flush().await.expect("send the burst");
    expect_refusal(&mut raw, ErrorCode::BadRequest).await;

    let after = status(daemon.addr).await;
    assert_eq!(
        (after.term, after.role.as_str(), after.leader),
        (before.term, "leader", Some(1)),
        "the refused peer moved the node"
    );
    assert!(
        daemon.log().contains("not configured for a cluster"),
        "the refusal is logged"
    );
}

/// A three-node cluster with a key. Against the leader: a wrong key, no nonce, no MAC, a MAC
/// recorded from an accepted handshake and replayed on a new one, a MAC made for another node
/// id (speaking for node 2 as node 3), and, after an honest handshake, heartbeats of term 100
/// claiming to come from node 2. Every one is refused or dropped; no node's term or role
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_cluster_refuses_forged_peers_and_keeps_its_terms() {
    let cluster = Cluster::start(3, &CALM);
    let leader = cluster.wait_leader().await;
    let key = key_of(&cluster);
    let addrs: Vec<SocketAddr> = (1..=3).map(|id| cluster.addr(id)).collect();
    let before = terms(&addrs).await;
    let target = cluster.addr(leader);
    let other = if leader == 1 { 2 } else { 1 };
    let third = 6 - leader - other;

    // Opens a keyed handshake as `me` with nonce `nd`, returns the acceptor's challenge after
    // checking its proof.
    let open = |me: NodeId, nd: [u8; PEER_NONCE_LEN]| {
        let key = key.clone();
        async move {
            let mut raw = raw_dial(target).await;
            raw.send(PeerMessage::PeerHello {
                cluster_id: CLUSTER.into(),
                node_id: me,
                nonce: Some(nd.to_vec()),
            })
            .await
            .expect("send PeerHello");
            let Some(PeerMessage::PeerWelcome {
                node_id,
                nonce: Some(na),
                mac: Some(their_mac),
                ..
            }) = raw_next(&mut raw).await
            else {
                panic!("expected a keyed PeerWelcome");
            };
            assert_eq!(node_id, leader);
            assert_eq!(their_mac, mac(&key, Side::Acceptor, &nd, CLUSTER, leader));
            (raw, na)
        }
    };

    // A wrong key.
    let (mut raw, na) = open(other, [1; PEER_NONCE_LEN]).await;
    let wrong = mac(
        b"not the cluster key at all",
        Side::Dialer,
        &na,
        CLUSTER,
        other,
    );
    raw.send(PeerMessage::PeerAuth { mac: Some(wrong) })
        .await
        .expect("send PeerAuth");
    expect_refusal(&mut raw, ErrorCode::Unauthorized).await;

    // No MAC at all.
    let (mut raw, _) = open(other, [2; PEER_NONCE_LEN]).await;
    raw.send(PeerMessage::PeerAuth { mac: None })
        .await
        .expect("send PeerAuth");
    expect_refusal(&mut raw, ErrorCode::Unauthorized).await;

    // No nonce: the dialer proves nothing.
    let mut raw = raw_dial(target).await;
    raw.send(PeerMessage::PeerHello {
        cluster_id: CLUSTER.into(),
        node_id: other,
        nonce: None,
    })
    .await
    .expect("send PeerHello");
    expect_refusal(&mut raw, ErrorCode::Unauthorized).await;

    // A MAC the node accepted once, replayed on a new connection with the same dialer nonce:
    // the node's challenge is fresh, so the recorded answer is wrong.
    let nd = [3; PEER_NONCE_LEN];
    let (mut raw, na) = open(other, nd).await;
    let recorded = mac(&key, Side::Dialer, &na, CLUSTER, other);
    raw.send(PeerMessage::PeerAuth {
        mac: Some(recorded.clone()),
    })
    .await
    .expect("send PeerAuth");
    assert_eq!(raw_next(&mut raw).await, Some(PeerMessage::PeerAccepted {}));
    drop(raw);
    let (mut raw, fresh) = open(other, nd).await;
    assert_ne!(fresh, na, "the node's challenge is never reused");
    raw.send(PeerMessage::PeerAuth {
        mac: Some(recorded),
    })
    .await
    .expect("send PeerAuth");
    expect_refusal(&mut raw, ErrorCode::Unauthorized).await;

    // Speaking for node `other` with the MAC of node `third`: the MAC covers the claimed id.
    let (mut raw, na) = open(other, [4; PEER_NONCE_LEN]).await;
    let as_third = mac(&key, Side::Dialer, &na, CLUSTER, third);
    raw.send(PeerMessage::PeerAuth {
        mac: Some(as_third),
    })
    .await
    .expect("send PeerAuth");
    expect_refusal(&mut raw, ErrorCode::Unauthorized).await;

    // Authenticated as `third`, heartbeats of term 100 that claim to come from `other`, or
    // that are addressed to another node: all dropped.
    let (mut raw, na) = open(third, [5; PEER_NONCE_LEN]).await;
    let answer = mac(&key, Side::Dialer, &na, CLUSTER, third);
    raw.send(PeerMessage::PeerAuth { mac: Some(answer) })
        .await
        .expect("send PeerAuth");
    assert_eq!(raw_next(&mut raw).await, Some(PeerMessage::PeerAccepted {}));
    raw.send(heartbeat(other, leader, 100))
        .await
        .expect("send a forged heartbeat");
    raw.send(heartbeat(third, other, 100))
        .await
        .expect("send a misaddressed heartbeat");
    // The node drops both and keeps the connection; a status read afterwards on another
    // connection sees what the frames did. To know they were read, wait for the log line of
    // the second one.
    let node = &cluster.nodes[leader as usize - 1];
    let start = Instant::now();
    while node
        .log()
        .matches("dropping an envelope not from the authenticated dialer")
        .count()
        < 2
    {
        assert!(
            start.elapsed() < DEADLINE,
            "the forged envelopes were not dropped (or not logged)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(raw);

    assert_eq!(
        terms(&addrs).await,
        before,
        "an attack moved a term or a role"
    );
    assert!(
        before.iter().all(|(term, _)| *term < 100),
        "terms: {before:?}"
    );
}

/// A node started with other `--peer`s and no key does not start, and says which flag it needs;
/// so does a node whose data directory holds a membership with other voters, restarted with no
/// `--peer` and no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_node_node_without_a_key_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs = free_addrs(2);
    let peers = format!("1={},2={}", addrs[0], addrs[1]);
    let output = run_to_exit(dir.path(), &["--id", "1", "--peer", &peers, "--bootstrap"]);
    assert_refused_for_want_of_a_key(&output);

    // A member of a keyed two-node cluster, stopped, then started without --peer and key.
    let mut cluster = Cluster::start(2, &[]);
    cluster.wait_leader().await;
    let status = cluster.node(2).terminate();
    assert!(status.success(), "node 2 stopped cleanly: {status}");
    let data_dir = cluster.node(2).data_dir().to_path_buf();
    let output = run_to_exit(&data_dir, &["--id", "2"]);
    assert_refused_for_want_of_a_key(&output);
}

/// Two nodes without a key but with `--insecure-peers` form a cluster, and each warns at every
/// start (here: the first start, then a restart of node 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_peers_start_and_warn_at_every_start() {
    let addrs = free_addrs(2);
    let peers = format!("1={},2={}", addrs[0], addrs[1]);
    let mut nodes: Vec<Daemon> = (1..=2)
        .map(|id: u64| {
            let args: Vec<String> = [
                "--id",
                &id.to_string(),
                "--peer",
                &peers,
                "--bootstrap",
                "--insecure-peers",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            Daemon::start_at(&addrs[id as usize - 1].to_string(), &args)
        })
        .collect();
    let warning = "--insecure-peers: peer connections are not authenticated";

    // Both nodes agree on a leader: unauthenticated peers are admitted on purpose.
    let agreed = |nodes: &[Daemon]| {
        let addrs: Vec<SocketAddr> = nodes.iter().map(|d| d.addr).collect();
        async move {
            let start = Instant::now();
            loop {
                let mut statuses = Vec::new();
                for addr in &addrs {
                    statuses.extend(try_status(*addr, Duration::from_millis(300)).await);
                }
                let leaders: Vec<_> = statuses.iter().map(|s| (s.term, s.leader)).collect();
                if statuses.len() == 2
                    && leaders[0] == leaders[1]
                    && leaders[0].1.is_some()
                    && statuses.iter().any(|s| s.role == "leader")
                {
                    return;
                }
                assert!(start.elapsed() < DEADLINE, "no agreed leader: {statuses:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    agreed(&nodes).await;
    for node in &nodes {
        assert_eq!(node.log().matches(warning).count(), 1, "{}", node.log());
    }

    nodes[1].restart();
    agreed(&nodes).await;
    assert_eq!(
        nodes[1].log().matches(warning).count(),
        2,
        "warned again at the restart"
    );
}

/// `raftlockd dev-cluster` makes a private random key in its directory, its nodes elect a
/// leader with it, and a second run on the same directory reuses the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_generates_a_private_key_for_its_nodes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("cluster.key");
    let mut first_key = None;
    // The same ports both times: the nodes' stored membership names them.
    let base = common::free_port_run(2);
    for _run in 0..2 {
        let mut dev = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
            .args(["dev-cluster", "--nodes", "2", "--base-port"])
            .arg(base.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dev-cluster");
        let addrs: Vec<SocketAddr> = (0..2)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
            .collect();
        let start = Instant::now();
        loop {
            let mut statuses = Vec::new();
            for addr in &addrs {
                statuses.extend(try_status(*addr, Duration::from_millis(300)).await);
            }
            let agreed = statuses.len() == 2
                && statuses.iter().any(|s| s.role == "leader")
                && statuses[0].leader.is_some()
                && statuses
                    .iter()
                    .all(|s| (s.term, s.leader) == (statuses[0].term, statuses[0].leader));
            if agreed {
                break;
            }
            if start.elapsed() > DEADLINE {
                let _ = dev.kill();
                panic!("the dev cluster elected no leader: {statuses:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(dev.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while dev.try_wait().expect("try_wait").is_none() {
            assert!(start.elapsed() < DEADLINE, "dev-cluster ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mode = std::fs::metadata(&key_path)
            .expect("the key file exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        let key = std::fs::read(&key_path).expect("read the key");
        assert!(key.len() > 32, "a long random key: {} bytes", key.len());
        match &first_key {
            None => first_key = Some(key),
            Some(first) => assert_eq!(first, &key, "the second run reuses the key"),
        }
    }
}
