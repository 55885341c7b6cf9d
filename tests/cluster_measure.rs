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

use std::time::{Duration, Instant};

use common::Cluster;
use raftlock::client::{Client, ClientOptions, Wait};
use raftlock::lockspace::LockMode;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand with --nocapture"]
async fn failover_time_after_kill_9() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;
    let client = Client::connect(cluster.servers(), ClientOptions::default())
        .await
        .expect("connect");
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
    let client = Client::connect(cluster.servers(), ClientOptions::default())
        .await
        .expect("connect");
    let session = client
        .open_session(Duration::from_secs(10))
        .await
        .expect("session");
    let mut samples = Vec::new();
    for round in 0..10 {
        let leader = cluster.wait_leader().await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worker = {
            let session = session.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut last = Instant::now();
                let mut worst = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let guard = session
                        .lock("rolling", LockMode::Exclusive, Wait::TryOnce)
                        .await
                        .expect("granted");
                    worst = worst.max(last.elapsed());
                    last = Instant::now();
                    guard.release().await.expect("release");
                }
                worst
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.node(leader).terminate();
        cluster.wait_leader_except(&[leader]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
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
