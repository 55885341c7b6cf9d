//! Steady leadership under big writes (issue 11 item 3), against a real 3-node cluster.
//!
//! Four writers each hold a lock and append 1 MiB at a time (the largest append the protocol
//! allows) to their own file, deleting it every 8 MiB so the total stays under the default
//! quota; beside them one client locks and unlocks a small lock in a loop. A leader busy
//! shipping bulk data must not lose office: the append batches are bounded in bytes, the bytes
//! in flight per follower are bounded, and heartbeats and votes travel in their own lane on
//! the peer link, ahead of appends. The test asserts every node sees the same term and leader
//! throughout, and reports (does not assert: this machine is shared) the small lock's acquire
//! latencies.
//!
//! It runs 20 s by default; `RAFTLOCK_BIG_WRITES_SECS=120` runs the 2-minute version.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect, Cluster};
use raftlock::client::{LockMode, Session, Wait};

/// Bytes per append: the protocol's largest.
const CHUNK: usize = 1024 * 1024;
/// A writer deletes its file once it holds this much (4 writers stay under the 48 MiB quota).
const FILE_LIMIT: u64 = 8 * 1024 * 1024;

/// A session with a 30 s TTL on a new client of `servers`.
async fn open(servers: Vec<String>) -> Session {
    connect(servers)
        .await
        .open_session(Duration::from_secs(30))
        .await
        .expect("session")
}

/// One writer: holds `big-W`, appends `CHUNK`s to file `big-W` until `stop`.
fn writer(
    servers: Vec<String>,
    w: usize,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let session = open(servers).await;
        let name = format!("big-{w}");
        let guard = session
            .lock(&name, LockMode::Exclusive, Wait::Forever)
            .await
            .expect("lock");
        let data = vec![w as u8; CHUNK];
        while !stop.load(Ordering::Relaxed) {
            let (_, size) = session
                .append(&name, &guard, data.clone())
                .await
                .expect("append");
            bytes.fetch_add(CHUNK as u64, Ordering::Relaxed);
            if size >= FILE_LIMIT {
                session.delete(&name, &guard).await.expect("delete");
            }
        }
        guard.release().await.expect("release");
    })
}

/// The small-lock workload: lock and unlock `small` until `stop`, recording each acquire.
fn small_locks(
    servers: Vec<String>,
    stop: Arc<AtomicBool>,
    latencies: Arc<Mutex<Vec<Duration>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let session = open(servers).await;
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let guard = session
                .lock("small", LockMode::Exclusive, Wait::Forever)
                .await
                .expect("lock");
            let took = start.elapsed();
            guard.release().await.expect("release");
            latencies.lock().expect("latencies").push(took);
        }
    })
}

/// The `q` quantile of sorted `values`.
fn quantile(values: &[Duration], q: f64) -> Duration {
    let at = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[at.min(values.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_writers_of_1_mib_appends_move_no_term() {
    let secs: u64 = std::env::var("RAFTLOCK_BIG_WRITES_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader().await;
    let statuses = cluster.statuses().await;
    let term = statuses
        .iter()
        .find(|(id, _)| *id == leader)
        .map(|(_, status)| status.term)
        .expect("the leader answers");
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks: Vec<_> = (0..4)
        .map(|w| writer(cluster.servers(), w, stop.clone(), bytes.clone()))
        .collect();
    tasks.push(small_locks(
        cluster.servers(),
        stop.clone(),
        latencies.clone(),
    ));

    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (id, status) in cluster.statuses().await {
            assert_eq!(
                (status.term, status.leader),
                (term, Some(leader)),
                "node {id} saw an election during the big writes \
                 ({} MiB written so far)",
                bytes.load(Ordering::Relaxed) >> 20
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let written = bytes.load(Ordering::Relaxed);
    let mut latencies = latencies.lock().expect("latencies").clone();
    latencies.sort();
    assert!(written >= 4 * CHUNK as u64, "every writer wrote");
    assert!(!latencies.is_empty(), "the small-lock workload ran");
    println!(
        "big writes: {:.1} MiB/s for {elapsed:.0} s; small-lock acquires: {} \
         (p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms); term {term} throughout",
        written as f64 / (1 << 20) as f64 / elapsed,
        latencies.len(),
        quantile(&latencies, 0.5).as_secs_f64() * 1e3,
        quantile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().expect("one").as_secs_f64() * 1e3,
    );
}
