//! The peer transport over real loopback sockets, in process: envelopes flow between nodes both
//! ways, a restarted peer is redialed, the handshake refuses a wrong cluster id or key (and
//! accepts the right key), a node that admits no peers refuses every dialer, forged envelopes
//! are dropped, and a slow receiver stalls only its own connection. Every wait is bounded by a deadline; nothing sleeps to synchronize.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use raftlock::protocol::{
    mac, ClientCodec, ErrorCode, PeerCodec, PeerMessage, Request, Role, Side, PEER_MAX_FRAME,
    PEER_NONCE_LEN, VERSION,
};
use raftlock::raft::{Entry, EntryData, Envelope, Message, NodeId, Snapshot, SnapshotMeta};
use raftlock::server::peer::{ClusterKey, PeerAcceptor, Transport, TransportConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// The bound on every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(10);
const CLUSTER: &str = "test-cluster";

fn key(secret: &str) -> ClusterKey {
    ClusterKey::new(secret.as_bytes().to_vec()).expect("test keys are long enough")
}

/// A node's transport configuration; without a key it accepts unauthenticated peers on
/// purpose (`insecure_peers`), as the daemon does with `--insecure-peers`.
fn config(id: NodeId, cluster: &str, key: Option<ClusterKey>) -> TransportConfig {
    let mut config = TransportConfig::new(id, cluster);
    config.insecure_peers = key.is_none();
    config.key = key;
    config.connect_timeout = Duration::from_secs(1);
    config.handshake_timeout = Duration::from_secs(1);
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    config
}

/// A small envelope whose `read_seq` marks it.
fn heartbeat(from: NodeId, to: NodeId, mark: u64) -> Envelope {
    Envelope {
        from,
        to,
        term: 1,
        message: Message::Heartbeat {
            commit: 0,
            read_seq: mark,
        },
    }
}

fn mark(envelope: &Envelope) -> u64 {
    match envelope.message {
        Message::Heartbeat { read_seq, .. } => read_seq,
        ref other => panic!("unexpected message {other:?}"),
    }
}

/// Accepts connections on `listener` and serves each as a peer connection until `cancel`.
fn spawn_listener(
    listener: TcpListener,
    acceptor: PeerAcceptor<Envelope>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let acceptor = acceptor.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let _ = acceptor.serve_stream(stream, remote, &cancel).await;
            });
        }
    })
}

/// One node: its transport, its driver inbox and its listener.
struct TestNode {
    id: NodeId,
    /// Where a snapshot being received is staged (the daemon uses its data directory).
    _snapshot_dir: tempfile::TempDir,
    addr: SocketAddr,
    transport: Transport<Envelope>,
    inbox: mpsc::Receiver<Envelope>,
    serving: CancellationToken,
    listener: JoinHandle<()>,
}

impl TestNode {
    /// Starts a node on an already bound listener.
    fn start(
        mut config: TransportConfig,
        listener: TcpListener,
        peers: BTreeMap<NodeId, String>,
        inbox_capacity: usize,
    ) -> TestNode {
        let snapshot_dir = tempfile::tempdir().expect("tempdir");
        config.snapshot_dir = Some(snapshot_dir.path().to_path_buf());
        let id = config.node_id;
        let addr = listener.local_addr().unwrap();
        let (deliver, inbox) = mpsc::channel(inbox_capacity);
        let transport = Transport::new(config, peers, deliver).expect("valid config");
        let serving = CancellationToken::new();
        let listener = spawn_listener(listener, transport.acceptor(), serving.clone());
        TestNode {
            id,
            _snapshot_dir: snapshot_dir,
            addr,
            transport,
            inbox,
            serving,
            listener,
        }
    }

    /// Stops listening and serving; returns the address it listened on.
    async fn stop(self) -> SocketAddr {
        self.serving.cancel();
        self.listener.await.unwrap();
        self.transport.shutdown().await;
        self.addr
    }

    /// Waits (bounded) for the next envelope delivered to this node.
    async fn recv(&mut self) -> Envelope {
        timeout(DEADLINE, self.inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("node {} received nothing within the deadline", self.id))
            .expect("deliver channel open")
    }
}

/// Binds `n` listeners, then starts nodes 1..=n, each with every other as a peer.
async fn cluster(configs: Vec<TransportConfig>) -> Vec<TestNode> {
    let mut listeners = Vec::new();
    for _ in &configs {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: BTreeMap<NodeId, String> = configs
        .iter()
        .zip(&listeners)
        .map(|(c, l)| (c.node_id, l.local_addr().unwrap().to_string()))
        .collect();
    configs
        .into_iter()
        .zip(listeners)
        .map(|(config, listener)| TestNode::start(config, listener, addrs.clone(), 1024))
        .collect()
}

/// Polls `condition` until it holds, bounded by [`DEADLINE`]; `what` names it on failure.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Opens a raw peer connection and sends `Hello{role: peer}`.
async fn raw_dial(addr: SocketAddr) -> Framed<TcpStream, PeerCodec> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut framed = Framed::new(stream, ClientCodec::default());
    framed
        .send(Request::Hello {
            version: VERSION,
            role: Role::Peer,
            token: None,
        })
        .await
        .unwrap();
    framed.map_codec(|_| PeerCodec::new(PEER_MAX_FRAME))
}

/// Reads the next frame, bounded.
async fn raw_next(framed: &mut Framed<TcpStream, PeerCodec>) -> Option<PeerMessage> {
    timeout(DEADLINE, framed.next())
        .await
        .expect("an answer within the deadline")
        .map(|frame| frame.expect("frame").expect("peer message"))
}

/// Expects an `Error` frame with `code`, then the connection closed.
async fn expect_refusal(framed: &mut Framed<TcpStream, PeerCodec>, code: ErrorCode) {
    match raw_next(framed).await {
        Some(PeerMessage::Error { code: got, .. }) => assert_eq!(got, code),
        other => panic!("expected Error {code:?}, got {other:?}"),
    }
    let end = timeout(DEADLINE, framed.next())
        .await
        .expect("closed in time");
    assert!(
        !matches!(end, Some(Ok(Ok(_)))),
        "no frame after the refusal"
    );
}

/// Three nodes with a cluster key exchange envelopes in every direction; each arrives once,
/// intact, from the right sender.
#[tokio::test]
async fn envelopes_flow_both_ways_between_three_nodes() {
    let k = || Some(key("correct horse battery staple"));
    let mut nodes = cluster(vec![
        config(1, CLUSTER, k()),
        config(2, CLUSTER, k()),
        config(3, CLUSTER, k()),
    ])
    .await;
    for from in 1..=3u64 {
        for to in 1..=3u64 {
            if from != to {
                nodes[from as usize - 1]
                    .transport
                    .send(heartbeat(from, to, from * 10 + to));
            }
        }
    }
    for node in &mut nodes {
        let mut got = [node.recv().await, node.recv().await];
        got.sort_by_key(|e| e.from);
        let others: Vec<u64> = (1..=3).filter(|&n| n != node.id).collect();
        for (envelope, from) in got.iter().zip(&others) {
            assert_eq!(envelope.from, *from);
            assert_eq!(envelope.to, node.id);
            assert_eq!(mark(envelope), from * 10 + node.id);
        }
    }
    // Outbound counters: two peers each, one message and one connection apiece.
    wait_until("sent counters", || {
        nodes
            .iter()
            .all(|n| n.transport.stats().peers.values().all(|p| p.sent == 1))
    })
    .await;
    for node in &nodes {
        let stats = node.transport.stats();
        assert_eq!(stats.peers.len(), 2);
        for peer in stats.peers.values() {
            assert_eq!(peer.connections, 1);
            assert_eq!(peer.dropped_queue_full + peer.dropped_connection, 0);
        }
        assert_eq!(stats.inbound.accepted, 2);
        assert_eq!(stats.inbound.received, 2);
        assert_eq!(stats.inbound.refused + stats.inbound.rejected, 0);
    }
}

/// A snapshot (an InstallSnapshot of 2 MiB, two chunks) and a burst of small messages all
/// arrive intact, the small ones in order. The snapshot travels on a connection of its own, so
/// the heartbeats may overtake it, which Raft tolerates; what must hold is that nothing is lost
/// and the burst keeps its order.
#[tokio::test]
async fn a_burst_and_a_large_snapshot_all_arrive_and_the_burst_in_order() {
    let mut nodes = cluster(vec![config(1, CLUSTER, None), config(2, CLUSTER, None)]).await;
    let snapshot = Envelope {
        from: 1,
        to: 2,
        term: 3,
        message: Message::InstallSnapshot {
            snapshot: Snapshot {
                data: (0..2 * 1024 * 1024).map(|i| i as u8).collect(),
                ..Snapshot::default()
            },
        },
    };
    nodes[0].transport.send(snapshot.clone());
    for i in 0..500 {
        nodes[0].transport.send(heartbeat(1, 2, i));
    }
    let mut snapshots = 0;
    let mut next_mark = 0;
    for _ in 0..501 {
        let envelope = nodes[1].recv().await;
        if matches!(envelope.message, Message::InstallSnapshot { .. }) {
            assert_eq!(envelope, snapshot);
            snapshots += 1;
        } else {
            assert_eq!(mark(&envelope), next_mark);
            next_mark += 1;
        }
    }
    assert_eq!((snapshots, next_mark), (1, 500));
}

/// A snapshot many times the frame limit arrives whole, in chunks: the sender's frames are
/// capped at 64 KiB and its chunks at 16 KiB, the snapshot is 1 MiB. Then the same snapshot
/// asked for again (the core repeats its request while the follower shows no progress) is
/// handed over again from the follower's staged copy, without its bytes being sent twice.
#[tokio::test]
async fn a_snapshot_larger_than_a_frame_arrives_in_chunks_and_is_not_sent_twice() {
    let mut sender = config(1, CLUSTER, None);
    sender.max_frame = 64 * 1024;
    sender.snapshot_chunk = 16 * 1024;
    let mut registry = Registry::with_prefix("raftlock");
    sender.snapshot_metrics.register(&mut registry);
    let mut receiver = config(2, CLUSTER, None);
    receiver.max_frame = 64 * 1024;
    let mut nodes = cluster(vec![sender, receiver]).await;
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let snapshot = Envelope {
        from: 1,
        to: 2,
        term: 5,
        message: Message::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 40,
                    term: 4,
                    ..SnapshotMeta::default()
                },
                data: data.into(),
            },
        },
    };
    nodes[0].transport.send(snapshot.clone());
    assert_eq!(nodes[1].recv().await, snapshot);
    nodes[0].transport.send(snapshot.clone());
    assert_eq!(nodes[1].recv().await, snapshot, "handed over again");
    let stats = nodes[0].transport.stats().peers[&2].clone();
    assert_eq!(stats.dropped_too_large, 0, "{stats:?}");
    let mut metrics = String::new();
    encode(&mut metrics, &registry).unwrap();
    assert!(
        metrics.contains("raftlock_snapshot_sent_bytes_total{peer=\"2\"} 1048576\n"),
        "the bytes went once: {metrics}"
    );
}

/// A peer that goes away (listener and connections dropped) and comes back on the same port is
/// redialed automatically, and messages flow again.
#[tokio::test]
async fn a_restarted_peer_is_redialed_and_messages_flow_again() {
    let mut nodes = cluster(vec![config(1, CLUSTER, None), config(2, CLUSTER, None)]).await;
    nodes[0].transport.send(heartbeat(1, 2, 1));
    assert_eq!(mark(&nodes[1].recv().await), 1);

    let old = nodes.pop().unwrap();
    let peers = BTreeMap::from([(1, nodes[0].addr.to_string())]);
    let addr = old.stop().await;
    // The dialer notices the closed connection.
    wait_until("the dialer to see the connection drop", || {
        !nodes[0].transport.stats().peers[&2].connected
    })
    .await;
    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let mut restarted = TestNode::start(config(2, CLUSTER, None), listener, peers, 1024);

    // Raft keeps sending (heartbeats); once the new node is dialed they arrive again.
    let start = Instant::now();
    let mut n = 100;
    let got = loop {
        assert!(start.elapsed() < DEADLINE, "no message after the restart");
        nodes[0].transport.send(heartbeat(1, 2, n));
        n += 1;
        if let Ok(Some(envelope)) = timeout(Duration::from_millis(50), restarted.inbox.recv()).await
        {
            break envelope;
        }
    };
    assert!(mark(&got) >= 100);
    let stats = nodes[0].transport.stats().peers[&2].clone();
    assert!(stats.connections >= 2, "reconnected: {stats:?}");
    // And the restarted node can answer over its own new connection.
    restarted.transport.send(heartbeat(2, 1, 7));
    assert_eq!(mark(&nodes[0].recv().await), 7);
}

/// Nodes of different clusters never talk: the handshake is refused on both sides and nothing
/// is delivered.
#[tokio::test]
async fn a_wrong_cluster_id_is_refused() {
    let mut nodes = cluster(vec![config(1, "alpha", None), config(2, "beta", None)]).await;
    nodes[0].transport.send(heartbeat(1, 2, 1));
    wait_until("the refusal", || {
        nodes[0].transport.stats().peers[&2].connect_failures >= 1
            && nodes[1].transport.stats().inbound.refused >= 1
    })
    .await;
    assert_eq!(nodes[0].transport.stats().peers[&2].connections, 0);
    assert_eq!(nodes[1].transport.stats().inbound.accepted, 0);
    assert!(nodes[1].inbox.try_recv().is_err(), "nothing delivered");

    // On the wire: an Error frame with WrongCluster, then the connection closes.
    let mut raw = raw_dial(nodes[1].addr).await;
    raw.send(PeerMessage::PeerHello {
        cluster_id: "alpha".into(),
        node_id: 1,
        nonce: None,
    })
    .await
    .unwrap();
    expect_refusal(&mut raw, ErrorCode::WrongCluster).await;
}

/// With cluster keys: different keys are refused in both directions, the same key is accepted,
/// and a dialer without a key is refused `Unauthorized` by a keyed node.
#[tokio::test]
async fn a_wrong_key_is_refused_and_the_right_key_accepted() {
    let right = || Some(key("the right cluster secret"));
    let mut nodes = cluster(vec![
        config(1, CLUSTER, right()),
        config(2, CLUSTER, Some(key("some other cluster secret"))),
        config(3, CLUSTER, right()),
        config(4, CLUSTER, None),
    ])
    .await;
    nodes[0].transport.send(heartbeat(1, 2, 12));
    nodes[1].transport.send(heartbeat(2, 1, 21));
    nodes[0].transport.send(heartbeat(1, 3, 13));
    nodes[3].transport.send(heartbeat(4, 1, 41));
    nodes[0].transport.send(heartbeat(1, 4, 14));

    // The right key works.
    let got = nodes[2].recv().await;
    assert_eq!((got.from, mark(&got)), (1, 13));
    wait_until("every refusal", || {
        let s1 = nodes[0].transport.stats();
        let s2 = nodes[1].transport.stats();
        let s4 = nodes[3].transport.stats();
        s1.peers[&2].connect_failures >= 1
            && s2.peers[&1].connect_failures >= 1
            && s4.peers[&1].connect_failures >= 1
            && s1.peers[&4].connect_failures >= 1
            && s1.inbound.refused >= 2
            && s2.inbound.refused >= 1
            && s4.inbound.refused >= 1
    })
    .await;
    let s1 = nodes[0].transport.stats();
    assert_eq!(s1.peers[&2].connections, 0);
    assert_eq!(s1.peers[&4].connections, 0);
    assert_eq!(s1.peers[&3].connections, 1);
    assert_eq!(s1.inbound.accepted, 0);
    for i in [0, 1, 3] {
        assert!(
            nodes[i].inbox.try_recv().is_err(),
            "node {} got nothing",
            i + 1
        );
    }

    // On the wire: no nonce (no key) → Unauthorized.
    let mut raw = raw_dial(nodes[0].addr).await;
    raw.send(PeerMessage::PeerHello {
        cluster_id: CLUSTER.into(),
        node_id: 4,
        nonce: None,
    })
    .await
    .unwrap();
    expect_refusal(&mut raw, ErrorCode::Unauthorized).await;

    // On the wire: a nonce but a MAC made with the wrong key → Unauthorized after PeerAuth.
    let mut raw = raw_dial(nodes[0].addr).await;
    raw.send(PeerMessage::PeerHello {
        cluster_id: CLUSTER.into(),
        node_id: 2,
        nonce: Some(vec![9; PEER_NONCE_LEN]),
    })
    .await
    .unwrap();
    let Some(PeerMessage::PeerWelcome {
        nonce: Some(challenge),
        mac: Some(_),
        ..
    }) = raw_next(&mut raw).await
    else {
        panic!("expected a PeerWelcome with a challenge and a MAC");
    };
    let wrong = mac(
        b"some other cluster secret",
        Side::Dialer,
        &challenge,
        CLUSTER,
        2,
    );
    raw.send(PeerMessage::PeerAuth { mac: Some(wrong) })
        .await
        .unwrap();
    expect_refusal(&mut raw, ErrorCode::Unauthorized).await;
}

/// Completes a keyed handshake by hand as node `me`, checking the acceptor's proof.
async fn raw_handshake(
    addr: SocketAddr,
    secret: &[u8],
    me: NodeId,
    acceptor: NodeId,
) -> Framed<TcpStream, PeerCodec> {
    let mut raw = raw_dial(addr).await;
    let my_nonce = vec![0x5a; PEER_NONCE_LEN];
    raw.send(PeerMessage::PeerHello {
        cluster_id: CLUSTER.into(),
        node_id: me,
        nonce: Some(my_nonce.clone()),
    })
    .await
    .unwrap();
    let Some(PeerMessage::PeerWelcome {
        cluster_id,
        node_id,
        nonce: Some(challenge),
        mac: Some(their_mac),
    }) = raw_next(&mut raw).await
    else {
        panic!("expected a keyed PeerWelcome");
    };
    assert_eq!((cluster_id.as_str(), node_id), (CLUSTER, acceptor));
    assert_eq!(
        their_mac,
        mac(secret, Side::Acceptor, &my_nonce, CLUSTER, acceptor),
        "the acceptor proves the key with the documented MAC"
    );
    let answer = mac(secret, Side::Dialer, &challenge, CLUSTER, me);
    raw.send(PeerMessage::PeerAuth { mac: Some(answer) })
        .await
        .unwrap();
    assert_eq!(raw_next(&mut raw).await, Some(PeerMessage::PeerAccepted {}));
    raw
}

/// After the handshake, envelopes must come from the authenticated dialer and be addressed to
/// the acceptor; others are dropped and counted, and the connection goes on.
#[tokio::test]
async fn an_envelope_with_a_forged_from_is_dropped() {
    let secret = b"a secret for the forged test";
    let mut nodes = cluster(vec![
        config(1, CLUSTER, Some(key("a secret for the forged test"))),
        config(2, CLUSTER, Some(key("a secret for the forged test"))),
    ])
    .await;
    let mut raw = raw_handshake(nodes[0].addr, secret, 3, 1).await;
    for envelope in [
        heartbeat(2, 1, 1), // forged sender
        heartbeat(3, 2, 2), // addressed to another node
        heartbeat(3, 1, 3), // genuine
    ] {
        raw.send(PeerMessage::Raft {
            envelope: envelope.into(),
        })
        .await
        .unwrap();
    }
    let got = nodes[0].recv().await;
    assert_eq!((got.from, got.to, mark(&got)), (3, 1, 3));
    let inbound = nodes[0].transport.stats().inbound;
    assert_eq!(inbound.rejected, 2);
    assert_eq!(inbound.received, 1);
    assert!(nodes[0].inbox.try_recv().is_err());
    // A handshake frame after the handshake is dropped too; the connection stays usable.
    raw.send(PeerMessage::PeerAuth { mac: None }).await.unwrap();
    raw.send(PeerMessage::Raft {
        envelope: heartbeat(3, 1, 4).into(),
    })
    .await
    .unwrap();
    assert_eq!(mark(&nodes[0].recv().await), 4);
    assert_eq!(nodes[0].transport.stats().inbound.rejected, 3);
}

/// A peer that stops reading (its driver's inbox is full) stalls only its own connection: the
/// sender's `send` keeps returning at once (dropping for that peer when its queue is full), and
/// its other peer keeps receiving.
#[tokio::test]
async fn a_slow_receiver_does_not_block_the_other_peers() {
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let addrs: BTreeMap<NodeId, String> = (1..=3)
        .zip(&listeners)
        .map(|(id, l)| (id, l.local_addr().unwrap().to_string()))
        .collect();
    let [l1, l2, l3] = listeners;
    let mut sender_config = config(1, CLUSTER, None);
    sender_config.queue_capacity = 8;
    let sender = TestNode::start(sender_config, l1, addrs.clone(), 1024);
    // Node 2's driver never reads and has room for one envelope.
    let slow = TestNode::start(config(2, CLUSTER, None), l2, addrs.clone(), 1);
    let mut fast = TestNode::start(config(3, CLUSTER, None), l3, addrs, 1024);

    let big = Envelope {
        from: 1,
        to: 2,
        term: 1,
        message: Message::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                index: 1,
                term: 1,
                data: EntryData::Command(vec![0xee; 1024 * 1024]),
            }],
            commit: 0,
        },
    };
    let start = Instant::now();
    let mut i = 0;
    while sender.transport.stats().peers[&2].dropped_queue_full == 0 {
        assert!(start.elapsed() < DEADLINE, "node 2's queue never filled");
        let before = Instant::now();
        sender.transport.send(big.clone());
        sender.transport.send(heartbeat(1, 3, i));
        assert!(
            before.elapsed() < Duration::from_millis(100),
            "send blocked"
        );
        assert_eq!(
            mark(&fast.recv().await),
            i,
            "the other peer keeps receiving"
        );
        i += 1;
    }
    // Still flowing to node 3 while node 2 is stuck.
    for j in 0..50 {
        sender.transport.send(heartbeat(1, 3, 1000 + j));
        assert_eq!(mark(&fast.recv().await), 1000 + j);
    }
    let slow_stats = slow.transport.stats().inbound;
    assert!(slow_stats.deliver_waits >= 1, "{slow_stats:?}");
    assert_eq!(slow_stats.rejected, 0);
    assert_eq!(sender.transport.stats().peers[&3].dropped_queue_full, 0);
}

/// Peers can be added and removed at run time; messages to a removed or unknown node are
/// dropped and counted.
#[tokio::test]
async fn set_peers_adds_and_removes_peers() {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr1 = l1.local_addr().unwrap().to_string();
    let addr2 = l2.local_addr().unwrap().to_string();
    let mut one = TestNode::start(config(1, CLUSTER, None), l1, BTreeMap::new(), 16);
    let mut two = TestNode::start(
        config(2, CLUSTER, None),
        l2,
        BTreeMap::from([(1, addr1.clone())]),
        16,
    );
    one.transport.send(heartbeat(1, 2, 1));
    assert_eq!(one.transport.stats().dropped_unknown_peer, 1);

    one.transport
        .set_peers(BTreeMap::from([(1, addr1), (2, addr2)]));
    assert_eq!(
        one.transport.peers().keys().copied().collect::<Vec<_>>(),
        [2]
    );
    one.transport.send(heartbeat(1, 2, 2));
    assert_eq!(mark(&two.recv().await), 2);
    two.transport.send(heartbeat(2, 1, 3));
    assert_eq!(mark(&one.recv().await), 3);

    one.transport.set_peers(BTreeMap::new());
    one.transport.send(heartbeat(1, 2, 4));
    let stats = one.transport.stats();
    assert!(stats.peers.is_empty());
    assert_eq!(stats.dropped_unknown_peer, 2);
}

/// A dialer that sends `Hello` and then nothing is cut off at the handshake deadline with
/// `HandshakeTimeout`; a non-peer first frame is refused.
#[tokio::test]
async fn a_stalled_or_foreign_handshake_is_refused() {
    let nodes = cluster(vec![config(1, CLUSTER, None), config(2, CLUSTER, None)]).await;
    let started = Instant::now();
    let mut raw = raw_dial(nodes[0].addr).await;
    expect_refusal(&mut raw, ErrorCode::HandshakeTimeout).await;
    assert!(started.elapsed() >= Duration::from_secs(1));

    let stream = TcpStream::connect(nodes[0].addr).await.unwrap();
    let mut client = Framed::new(stream, ClientCodec::default());
    client
        .send(Request::Hello {
            version: VERSION,
            role: Role::Client,
            token: None,
        })
        .await
        .unwrap();
    match timeout(DEADLINE, client.next()).await.unwrap() {
        Some(Ok(Ok(raftlock::protocol::Response::Error { code, .. }))) => {
            assert_eq!(code, ErrorCode::BadRequest)
        }
        other => panic!("expected a BadRequest error, got {other:?}"),
    }
    assert_eq!(nodes[0].transport.stats().inbound.refused, 2);
}

/// A node with no peer (standalone) refuses every dialer at once with `BadRequest`, before
/// reading its `PeerHello`; a node with peers but neither a key nor `insecure_peers` refuses
/// with `Unauthorized`. Nothing reaches either driver, and the refusal leaves the connection
/// closed.
#[tokio::test]
async fn a_node_that_admits_no_peers_refuses_every_dialer() {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut standalone = TestNode::start(config(1, CLUSTER, None), l1, BTreeMap::new(), 16);
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut unkeyed_config = config(2, CLUSTER, None);
    unkeyed_config.insecure_peers = false;
    let peers = BTreeMap::from([(3, "127.0.0.1:1".to_string())]);
    let mut unkeyed = TestNode::start(unkeyed_config, l2, peers, 16);

    for (node, code) in [
        (&mut standalone, ErrorCode::BadRequest),
        (&mut unkeyed, ErrorCode::Unauthorized),
    ] {
        // Refused without a PeerHello at all...
        let mut raw = raw_dial(node.addr).await;
        expect_refusal(&mut raw, code).await;
        // ...and with a well-formed one followed by a Raft frame.
        let mut raw = raw_dial(node.addr).await;
        raw.send(PeerMessage::PeerHello {
            cluster_id: CLUSTER.into(),
            node_id: 3,
            nonce: None,
        })
        .await
        .unwrap();
        let _ = raw
            .send(PeerMessage::Raft {
                envelope: heartbeat(3, node.id, 1).into(),
            })
            .await;
        expect_refusal(&mut raw, code).await;
        let inbound = node.transport.stats().inbound;
        assert_eq!((inbound.refused, inbound.accepted), (2, 0), "{inbound:?}");
        assert!(node.inbox.try_recv().is_err(), "nothing was delivered");
    }

    // Once the standalone node gets a peer, the same dialer is admitted.
    standalone
        .transport
        .set_peers(BTreeMap::from([(3, "127.0.0.1:1".to_string())]));
    let mut raw = raw_dial(standalone.addr).await;
    raw.send(PeerMessage::PeerHello {
        cluster_id: CLUSTER.into(),
        node_id: 3,
        nonce: None,
    })
    .await
    .unwrap();
    assert!(matches!(
        raw_next(&mut raw).await,
        Some(PeerMessage::PeerWelcome { node_id: 1, .. })
    ));
}

/// Invalid configurations and keys are refused up front.
#[tokio::test]
async fn bad_configs_and_keys_are_refused() {
    let (deliver, _inbox) = mpsc::channel::<Envelope>(1);
    assert!(Transport::new(config(0, CLUSTER, None), BTreeMap::new(), deliver.clone()).is_err());
    assert!(Transport::new(config(1, "", None), BTreeMap::new(), deliver.clone()).is_err());
    let mut zero = config(1, CLUSTER, None);
    zero.queue_capacity = 0;
    assert!(Transport::new(zero, BTreeMap::new(), deliver).is_err());
    assert!(ClusterKey::new(b"short".to_vec()).is_err());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
    let from_file = ClusterKey::from_file(&path).unwrap();
    assert_eq!(format!("{from_file:?}"), "ClusterKey(20 bytes)");
    assert!(ClusterKey::from_file(&dir.path().join("missing")).is_err());
}
