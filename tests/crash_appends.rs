//! Crash during a stream of appends: several clients append unique payloads concurrently while
//! the daemon is killed with SIGKILL and restarted on the same data directory. Afterwards every
//! acknowledged append is in its file exactly once, at the offset it was acknowledged with, and
//! nothing else is: the retries the clients made across the crash were deduplicated by their
//! (session, seq).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Daemon, DEADLINE};
use raftlock::client::LockMode;
use raftlock::client::{Client, ClientOptions, Wait};
use raftlock::protocol::MAX_READ;
use tokio::sync::Notify;

const WRITERS: usize = 4;
/// Crashes (kill -9, restart), each in the middle of the stream.
const CRASHES: usize = 3;
/// Acknowledged appends (all writers) between two crashes.
const BETWEEN: usize = 60;
/// Acknowledged appends per writer after the last restart.
const AFTER: usize = 10;

/// What one writer saw: each acknowledged payload with its offset, and the slowest append.
struct Report {
    acked: Vec<(Vec<u8>, u64)>,
    slowest: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_crash_exactly_once() {
    let mut daemon = Daemon::start(&[]);
    let servers = vec![daemon.addr.to_string()];
    let options = ClientOptions {
        retry_timeout: DEADLINE,
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let total = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let restarts = Arc::new(AtomicUsize::new(0));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = Client::connect(servers.clone(), options.clone())
            .await
            .unwrap();
        let session = client.open_session(Duration::from_secs(20)).await.unwrap();
        let guard = session
            .lock(&format!("lock-{w}"), LockMode::Exclusive, Wait::TryOnce)
            .await
            .unwrap();
        let (total, progress, restarts) = (total.clone(), progress.clone(), restarts.clone());
        writers.push(tokio::spawn(async move {
            let file = format!("file-{w}");
            let mut acked = Vec::new();
            let mut after = 0;
            let mut slowest = Duration::ZERO;
            for n in 0.. {
                let payload = format!("<w{w}-n{n}>").into_bytes();
                let started = Instant::now();
                let (offset, _) = session
                    .append(&file, &guard, payload.clone())
                    .await
                    .unwrap_or_else(|e| panic!("writer {w} append {n}: {e}"));
                slowest = slowest.max(started.elapsed());
                acked.push((payload, offset));
                total.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
                if restarts.load(Ordering::SeqCst) == CRASHES {
                    after += 1;
                    if after == AFTER {
                        break;
                    }
                }
            }
            guard.detach();
            Report { acked, slowest }
        }));
    }

    // Let the stream run, then crash the daemon in the middle of it, several times.
    let started = Instant::now();
    let mut restart_took = Duration::ZERO;
    for crash in 1..=CRASHES {
        while total.load(Ordering::SeqCst) < crash * BETWEEN {
            tokio::time::timeout(DEADLINE, progress.notified())
                .await
                .expect("appends progress between crashes");
        }
        let crashed = Instant::now();
        tokio::task::block_in_place(|| daemon.restart()); // SIGKILL, then start again
        restart_took = restart_took.max(crashed.elapsed());
        restarts.fetch_add(1, Ordering::SeqCst);
    }
    let before = total.load(Ordering::SeqCst);
    let rate = before as f64 / started.elapsed().as_secs_f64();

    let mut reports = Vec::new();
    for writer in writers {
        reports.push(
            tokio::time::timeout(DEADLINE, writer)
                .await
                .expect("writers finish after the restart")
                .unwrap(),
        );
    }

    let reader = Client::connect(servers, options).await.unwrap();
    for (w, report) in reports.iter().enumerate() {
        let mut content = Vec::new();
        loop {
            let (chunk, size) = reader
                .read(&format!("file-{w}"), content.len() as u64, MAX_READ, false)
                .await
                .unwrap();
            content.extend_from_slice(&chunk);
            if chunk.is_empty() || content.len() as u64 >= size {
                break;
            }
        }
        // Each writer's appends were sequential, so its file is exactly its acknowledged
        // payloads in order, each at the offset it was acknowledged with: nothing lost,
        // nothing doubled by a retry.
        let mut expected = Vec::new();
        for (payload, offset) in &report.acked {
            assert_eq!(
                *offset,
                expected.len() as u64,
                "writer {w}: offset of {payload:?}"
            );
            expected.extend_from_slice(payload);
        }
        assert_eq!(
            String::from_utf8_lossy(&content),
            String::from_utf8_lossy(&expected),
            "writer {w}"
        );
        assert!(report.acked.len() > AFTER);
    }
    let slowest = reports.iter().map(|r| r.slowest).max().unwrap_or_default();
    eprintln!(
        "crash_appends: {WRITERS} writers, {CRASHES} crashes, {before} appends until the last \
         ({rate:.0}/s including restarts); slowest restart {restart_took:?}; slowest append \
         {slowest:?}; {} appends in all",
        reports.iter().map(|r| r.acked.len()).sum::<usize>()
    );
}
