//! Measurements, not assertions (run by hand):
//!
//! ```text
//! cargo test --release --test cluster_measure -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - failover: time from kill -9 of the leader to the first lock granted through the new
//!   leader (a fresh try-once acquire on a client already connected to the cluster), median
//!   of 20 kills with the default timers;
//! - graceful restart: the longest gap between two consecutive granted acquires of a client
//!   acquiring and releasing in a loop while the leader is stopped with SIGTERM (it hands
//!   leadership over first), median of 10.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, Cluster};
use raftlock::client::LockMode;
use raftlock::client::Wait;

/// Grants the looping client must get before the leader stops, and again after a new leader
/// is known, so every gap is measured inside steady traffic.
const GRANTS_AROUND_RESTART: u64 = 20;

/// Waits until `grants` reaches `target` (bounded: the client retries for 30 s at most).
async fn wait_for_grants(grants: &AtomicU64, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while grants.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "only {} of {target} grants in 30 s",
            grants.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand with --nocapture"]
async fn failover_time_after_kill_9() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;
    let client = connect(cluster.servers()).await;
    let mut samples = Vec::new();
    for round in 0..20 {
        let session = client
            .open_session(Duration::from_secs(10))
            .await
            .expect("session");
        let leader = cluster.wait_leader().await;
        let lock = format!("failover-{round}");
        let killed = Instant::now();
        cluster.node(leader).kill();
        let guard = session
            .lock(&lock, LockMode::Exclusive, Wait::TryOnce)
            .await
            .expect("granted by the new leader");
        let took = killed.elapsed();
        println!("kill {round}: {took:?}");
        samples.push(took);
        guard.release().await.expect("release");
        cluster.node(leader).start_again();
        cluster.wait_caught_up(leader).await;
    }
    println!(
        "failover median over {}: {:?}",
        samples.len(),
        median(samples)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand with --nocapture"]
async fn client_pause_during_graceful_leader_restart() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;
    let client = connect(cluster.servers()).await;
    let session = client
        .open_session(Duration::from_secs(10))
        .await
        .expect("session");
    let mut samples = Vec::new();
    for round in 0..10 {
        let leader = cluster.wait_leader().await;
        let stop = Arc::new(AtomicBool::new(false));
        let grants = Arc::new(AtomicU64::new(0));
        let worker = {
            let session = session.clone();
            let stop = stop.clone();
            let grants = grants.clone();
            tokio::spawn(async move {
                let mut last = Instant::now();
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let guard = session
                        .lock("rolling", LockMode::Exclusive, Wait::TryOnce)
                        .await
                        .expect("granted");
                    worst = worst.max(last.elapsed());
                    last = Instant::now();
                    grants.fetch_add(1, Ordering::Relaxed);
                    guard.release().await.expect("release");
                }
                worst
            })
        };
        // Steady traffic before the stop, and again through the new leader after it.
        wait_for_grants(&grants, GRANTS_AROUND_RESTART).await;
        cluster.node(leader).terminate();
        cluster.wait_leader_except(&[leader]).await;
        let before = grants.load(Ordering::Relaxed);
        wait_for_grants(&grants, before + GRANTS_AROUND_RESTART).await;
        stop.store(true, Ordering::Relaxed);
        let worst = worker.await.expect("worker");
        println!("graceful restart {round}: longest gap {worst:?}");
        samples.push(worst);
        cluster.node(leader).start_again();
        cluster.wait_caught_up(leader).await;
    }
    println!(
        "graceful restart median over {}: {:?}",
        samples.len(),
        median(samples)
    );
}
