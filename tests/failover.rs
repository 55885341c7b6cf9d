//! Failover of real 3-node clusters, and the crash hint behind the fast path.
//!
//! When a leader's process dies, its kernel resets its connections and its port refuses new
//! ones; each follower's transport sees its link end and an immediate redial refused, and
//! reports the leader down (`peer reported down` in its log), so the followers campaign within
//! a heartbeat interval instead of the election timeout. These tests check the behaviour, not
//! the speed (docs/performance.md measures that):
//!
//! - kill -9 of the leader under load: the survivors are told by their transports, elect a new
//!   leader, and it serves;
//! - SIGSTOP of the leader: no reset, so no hint; the followers still fail over by the election
//!   timeout, and the resumed old leader steps down;
//! - a steady load: no spurious election (the term never moves) and no hint. It runs 20 s by
//!   default; `RAFTLOCK_STEADY_SECS=600` runs the 10-minute version;
//! - in process, the transport alone: a link that ends where the port then refuses is reported
//!   down; a link that ends but redials is not.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_served, connect, Cluster, DEADLINE};
use raftlock::client::{LockMode, Wait};
use raftlock::raft::{Envelope, Message, NodeId};
use raftlock::server::peer::{PeerAcceptor, Transport, TransportConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a daemon logs when its transport reports a peer down to the Raft core.
const HINT_LOG: &str = "peer reported down";

/// Starts `workers` clients that lock and unlock their own lock in a loop until `stop`;
/// returns their tasks and the count of completed pairs.
fn load(
    servers: Vec<String>,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicU64>) {
    let pairs = Arc::new(AtomicU64::new(0));
    let tasks = (0..workers)
        .map(|w| {
            let (servers, stop, pairs) = (servers.clone(), stop.clone(), pairs.clone());
            tokio::spawn(async move {
                let client = connect(servers).await;
                let session = client
                    .open_session(Duration::from_secs(10))
                    .await
                    .expect("session");
                let name = format!("load-{w}");
                while !stop.load(Ordering::Relaxed) {
                    let guard = session
                        .lock(&name, LockMode::Exclusive, Wait::Forever)
                        .await
                        .expect("lock (retried across failovers)");
                    guard.release().await.expect("release");
                    pairs.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (tasks, pairs)
}

/// Waits until `pairs` grew by at least `more` (bounded by [`DEADLINE`]).
async fn wait_progress(pairs: &AtomicU64, more: u64) {
    let start = Instant::now();
    let from = pairs.load(Ordering::Relaxed);
    while pairs.load(Ordering::Relaxed) < from + more {
        assert!(
            start.elapsed() < DEADLINE,
            "the load made no progress within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The term of node `id`'s status.
async fn term_of(cluster: &Cluster, id: u64) -> u64 {
    let statuses = cluster.statuses().await;
    let (_, status) = statuses
        .iter()
        .find(|(n, _)| *n == id)
        .unwrap_or_else(|| panic!("node {id} does not answer: {statuses:?}"));
    status.term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_reported_down_and_replaced_by_a_leader_that_serves() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader().await;
    let term = term_of(&cluster, old).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (workers, pairs) = load(cluster.servers(), 4, stop.clone());
    wait_progress(&pairs, 50).await;

    cluster.node(old).kill();
    let new = cluster.wait_leader_except(&[old]).await;
    assert_ne!(new, old);
    assert!(
        term_of(&cluster, new).await > term,
        "a new term was elected"
    );
    // The survivors' transports saw the reset link and the refused redial.
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let told = survivors
        .iter()
        .filter(|id| cluster.node(**id).log().contains(HINT_LOG))
        .count();
    assert!(told >= 1, "no survivor reported the dead leader down");
    // The new leader serves, and the load goes on through it.
    assert_served(cluster.addr(new), "after-failover").await;
    wait_progress(&pairs, 50).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_not_reported_down_but_still_fails_over_and_steps_down() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader().await;
    let term = term_of(&cluster, old).await;
    cluster.node(old).signal(libc::SIGSTOP);
    // No reset, no refused redial: the followers wait for the election timeout.
    let new = cluster.wait_leader_except(&[old]).await;
    assert_ne!(new, old);
    assert!(term_of(&cluster, new).await > term);
    for id in (1..=3).filter(|id| *id != old) {
        assert!(
            !cluster.node(id).log().contains(HINT_LOG),
            "node {id} took a pause for a crash"
        );
    }
    assert_served(cluster.addr(new), "while-paused").await;
    cluster.node(old).signal(libc::SIGCONT);
    // The old leader hears the new term and follows.
    assert_eq!(
        cluster.wait_leader().await,
        new,
        "the old leader stepped down"
    );
    let new_term = term_of(&cluster, new).await;
    assert_eq!(term_of(&cluster, old).await, new_term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_moves_no_term() {
    let secs: u64 = std::env::var("RAFTLOCK_STEADY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader().await;
    let term = term_of(&cluster, leader).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (workers, pairs) = load(cluster.servers(), 8, stop.clone());
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (id, status) in cluster.statuses().await {
            assert_eq!(
                (status.term, status.leader),
                (term, Some(leader)),
                "node {id} saw an election under steady load"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
    assert!(pairs.load(Ordering::Relaxed) > 0, "the load ran");
    let mut cluster = cluster;
    for id in 1..=3 {
        assert!(
            !cluster.node(id).log().contains(HINT_LOG),
            "node {id} reported a live peer down"
        );
    }
}

/// What the in-process transports deliver: envelopes, and peers reported down.
#[derive(Debug)]
enum Ev {
    Peer(Envelope),
    Down(NodeId),
}

impl From<Envelope> for Ev {
    fn from(envelope: Envelope) -> Ev {
        Ev::Peer(envelope)
    }
}

/// A transport configuration for in-process nodes (unauthenticated peers on purpose).
fn transport_config(id: NodeId) -> TransportConfig {
    let mut config = TransportConfig::new(id, "failover-test");
    config.insecure_peers = true;
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    config
}

/// A heartbeat from `from` to `to`.
fn heartbeat(from: NodeId, to: NodeId) -> Envelope {
    Envelope {
        from,
        to,
        term: 1,
        message: Message::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    }
}

/// Serves peer connections on `listener` until `stop`; each connection also ends when the
/// token it is given (a child of `links`) is cancelled, so a test can cut the links and keep
/// the listener.
fn serve(
    listener: TcpListener,
    acceptor: PeerAcceptor<Ev>,
    stop: CancellationToken,
    links: Arc<std::sync::Mutex<CancellationToken>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let acceptor = acceptor.clone();
            let link = links.lock().expect("links").child_token();
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = acceptor.serve_stream(stream, remote, &link) => {}
                }
            });
        }
    })
}

/// Waits (bounded) for the next event in `inbox`.
async fn next_event(inbox: &mut mpsc::Receiver<Ev>) -> Ev {
    tokio::time::timeout(DEADLINE, inbox.recv())
        .await
        .expect("an event within the deadline")
        .expect("inbox open")
}

/// Node 1 (reporting peers down) and node 2 (serving on a listener it controls); returns node
/// 1's transport and inbox, node 2's inbox, and node 2's controls (stop everything, cut links).
#[allow(clippy::type_complexity)]
async fn pair() -> (
    Transport<Ev>,
    mpsc::Receiver<Ev>,
    mpsc::Receiver<Ev>,
    Transport<Ev>,
    CancellationToken,
    Arc<std::sync::Mutex<CancellationToken>>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (deliver2, inbox2) = mpsc::channel(64);
    let two = Transport::new(
        transport_config(2),
        [(1, "127.0.0.1:1".to_string())].into(),
        deliver2,
    )
    .expect("node 2");
    let stop = CancellationToken::new();
    let links = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
    let serving = serve(listener, two.acceptor(), stop.clone(), links.clone());
    let (deliver1, inbox1) = mpsc::channel(64);
    let one = Transport::new(transport_config(1), [(2, addr)].into(), deliver1).expect("node 1");
    one.report_down(Ev::Down);
    (one, inbox1, inbox2, two, stop, links, serving)
}

#[tokio::test]
async fn a_link_that_ends_where_the_port_then_refuses_reports_the_peer_down() {
    let (one, mut inbox1, mut inbox2, two, stop, _links, serving) = pair().await;
    one.send(heartbeat(1, 2));
    assert!(matches!(next_event(&mut inbox2).await, Ev::Peer(e) if e.from == 1));
    // Node 2's process "dies": its connections end and its port closes.
    stop.cancel();
    serving.await.expect("listener task");
    two.shutdown().await;
    match next_event(&mut inbox1).await {
        Ev::Down(peer) => assert_eq!(peer, 2),
        other => panic!("expected node 2 reported down, got {other:?}"),
    }
    assert_eq!(one.stats().peers[&2].down_reports, 1);
}

#[tokio::test]
async fn a_link_that_ends_but_redials_is_not_a_hint() {
    let (one, mut inbox1, mut inbox2, _two, _stop, links, _serving) = pair().await;
    one.send(heartbeat(1, 2));
    assert!(matches!(next_event(&mut inbox2).await, Ev::Peer(e) if e.from == 1));
    // Node 2 ends the connection but keeps listening (as after a recycled link).
    {
        let mut links = links.lock().expect("links");
        links.cancel();
        *links = CancellationToken::new();
    }
    // Node 1 redials at once, without waiting for traffic.
    let start = Instant::now();
    while one.stats().peers[&2].connections < 2 {
        assert!(start.elapsed() < DEADLINE, "node 1 did not redial");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    one.send(heartbeat(1, 2));
    assert!(matches!(next_event(&mut inbox2).await, Ev::Peer(e) if e.from == 1));
    assert_eq!(one.stats().peers[&2].down_reports, 0);
    assert!(inbox1.try_recv().is_err(), "nothing reported");
}
