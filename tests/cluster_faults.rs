//! Real multi-process clusters under faults: kill -9 of the leader under load, restart and
//! catch-up, a wiped node re-added through a snapshot, a rolling restart under a held lock, a
//! paused (SIGSTOP) leader, a session that outlives a leader paused past its TTL, and a queued
//! acquire that keeps its place across a failover.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, Cluster, DEADLINE};
use raftlock::client::LockMode;
use raftlock::client::Wait;
use raftlock::protocol::{ErrorCode, Request, Response};

/// Every node's copy of `file` (stale reads, after each caught up).
async fn copies(cluster: &Cluster, ids: &[u64], file: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for id in ids {
        cluster.wait_caught_up(*id).await;
        let reader = connect(vec![cluster.addr(*id).to_string()]).await;
        let (data, _) = reader.read(file, 0, 1 << 20, true).await.expect("read");
        out.push(data);
    }
    out
}

/// Appends `"{i},"` to file `f` for each `i` of `numbers`, under `guard`.
async fn append_numbers(
    session: &raftlock::client::Session,
    guard: &raftlock::client::LockGuard,
    numbers: std::ops::Range<u32>,
) {
    for i in numbers {
        session
            .append("f", guard, format!("{i},").into_bytes())
            .await
            .expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_load_loses_and_duplicates_nothing_and_rejoins() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;
    let servers = cluster.servers();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let servers = servers.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let client = connect(servers).await;
            let session = client
                .open_session(Duration::from_secs(10))
                .await
                .expect("session");
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let guard = session
                    .lock("journal", LockMode::Exclusive, Wait::Forever)
                    .await
                    .expect("lock");
                let line = format!("w{w}-{n}\n");
                session
                    .append("journal.log", &guard, line.clone().into_bytes())
                    .await
                    .expect("append");
                acked.lock().unwrap().push(line);
                guard.release().await.expect("release");
                n += 1;
            }
        }));
    }
    let wait_acked = |count: usize| {
        let acked = acked.clone();
        async move {
            let start = Instant::now();
            while acked.lock().unwrap().len() < count {
                assert!(start.elapsed() < DEADLINE, "appends stalled at {count}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_acked(30).await;
    let old = cluster.wait_leader().await;
    cluster.node(old).kill();
    let before_kill = acked.lock().unwrap().len();
    wait_acked(before_kill + 30).await;
    let new = cluster.wait_leader_except(&[old]).await;
    assert_ne!(new, old);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        tokio::time::timeout(DEADLINE, writer)
            .await
            .expect("writer stopped")
            .expect("writer ok");
    }
    // The killed node comes back and catches up.
    cluster.node(old).start_again();
    let copies = copies(&cluster, &[1, 2, 3], "journal.log").await;
    assert!(copies.windows(2).all(|w| w[0] == w[1]), "replicas differ");
    let text = String::from_utf8(copies[0].clone()).expect("utf8");
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        *seen.entry(format!("{line}\n")).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a line was applied twice");
    for line in acked.lock().unwrap().iter() {
        assert_eq!(seen.get(line), Some(&1), "acknowledged {line:?} is missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_re_added_and_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::start(3, &["--snapshot-threshold", "20"]);
    cluster.wait_leader().await;
    let admin = connect(cluster.servers()).await;
    let session = admin
        .open_session(Duration::from_secs(10))
        .await
        .expect("session");
    let guard = session
        .lock("l", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    append_numbers(&session, &guard, 0..60).await;
    let leader = cluster.wait_leader().await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    admin.remove_member(victim).await.expect("remove");
    cluster.node(victim).kill();
    cluster.node(victim).wipe();
    append_numbers(&session, &guard, 60..100).await;
    let args = cluster.joiner_args(victim);
    cluster.node(victim).set_args(args);
    cluster.node(victim).start_again();
    let addr = cluster.addr(victim).to_string();
    admin.add_member(victim, &addr).await.expect("re-add");
    let copies = copies(&cluster, &[1, 2, 3], "f").await;
    let expected: String = (0..100).map(|i| format!("{i},")).collect();
    for copy in &copies {
        assert_eq!(copy, expected.as_bytes());
    }
    assert!(
        cluster
            .node(victim)
            .log()
            .contains("installed snapshot from the leader"),
        "the wiped node caught up through a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_the_session_and_the_lock() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;
    let holder = connect(cluster.servers()).await;
    let session = holder
        .open_session(Duration::from_secs(3))
        .await
        .expect("session");
    let guard = session
        .lock("held", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    for id in 1..=3 {
        let status = cluster.node(id).terminate();
        assert!(status.success(), "node {id} stopped cleanly: {status}");
        cluster.wait_leader_except(&[id]).await;
        cluster.node(id).start_again();
        cluster.wait_leader().await;
        cluster.wait_caught_up(id).await;
        session
            .append("f", &guard, format!("after restarting {id}\n").into_bytes())
            .await
            .expect("the holder still appends under its fence");
    }
    assert!(!session.is_lost(), "the session survived");
    let locks = holder.locks(Some("held"), false).await.expect("locks");
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].holders[0].session, session.id());
    assert_eq!(locks[0].holders[0].fence, guard.fence());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_steps_down_and_serves_nothing_stale() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader().await;
    let writer = connect(cluster.servers()).await;
    let session = writer
        .open_session(Duration::from_secs(10))
        .await
        .expect("session");
    let guard = session
        .lock("l", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    session
        .append("f", &guard, b"old".to_vec())
        .await
        .expect("append");
    cluster.node(old).signal(libc::SIGSTOP);
    let new = cluster.wait_leader_except(&[old]).await;
    // The session's keep-alives and this append go to the new leader.
    session
        .append("f", &guard, b"+new".to_vec())
        .await
        .expect("append to the new leader");
    cluster.node(old).signal(libc::SIGCONT);
    // Immediately ask the old leader for a linearizable read.
    let mut raw = common::Client::hello(cluster.addr(old)).await;
    let id = raw.id();
    let answer = raw
        .call(Request::Read {
            id,
            file: "f".into(),
            offset: 0,
            len: 100,
            stale: false,
        })
        .await;
    match answer {
        Response::Data { data, .. } => assert_eq!(data, b"old+new", "never the stale value"),
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::NotLeader),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        cluster.wait_leader().await,
        new,
        "the old leader stepped down"
    );
}

/// A leader paused for longer than a session's TTL keeps its TCP connections open, so the client
/// learns nothing from the socket: its keep-alive must give up on the paused node within a
/// renewal period and find the new leader (which restarted every lease when it took office)
/// while its own lease is still valid. Found by the nemesis harness: with the keep-alive waiting
/// the whole 5 s request timeout, a healthy 2 s session was lost at every leader pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_a_leader_paused_for_longer_than_its_ttl() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader().await;
    let holder = connect(cluster.servers()).await;
    // Long enough that, on a loaded machine, the retry after one renewal period (2 s) still has
    // well over a second to find the new leader; short enough that the old patience (the 5 s
    // request timeout, past the lease's end) loses it.
    let ttl = Duration::from_secs(6);
    let session = holder.open_session(ttl).await.expect("session");
    let guard = session
        .lock("l", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    let paused_at = tokio::time::Instant::now();
    cluster.node(old).signal(libc::SIGSTOP);
    // Wait (bounded) until a keep-alive sent a whole TTL after the pause began was confirmed:
    // the lease then spans more than a TTL in which the old leader answered nothing.
    let mut lease = session.lease();
    let renewed_past_ttl = tokio::time::timeout(
        DEADLINE,
        lease.wait_for(|l| l.state.is_lost() || l.deadline >= paused_at + 2 * ttl),
    )
    .await
    .expect("the lease moved on within the deadline")
    .map(|l| *l)
    .expect("the lease watch is open");
    assert!(
        !renewed_past_ttl.state.is_lost(),
        "the session was lost while the leader was paused: {renewed_past_ttl:?}"
    );
    cluster.node(old).signal(libc::SIGCONT);
    session
        .append("f", &guard, b"still mine".to_vec())
        .await
        .expect("the holder still appends under its fence");
    let locks = holder.locks(Some("l"), false).await.expect("locks");
    assert_eq!(locks[0].holders[0].session, session.id());
    assert_eq!(locks[0].holders[0].fence, guard.fence());
    assert!(!session.is_lost(), "the session survived the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_acquire_keeps_its_place_across_a_failover() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader().await;
    let servers = cluster.servers();
    let a = connect(servers.clone()).await;
    let a_session = a.open_session(Duration::from_secs(10)).await.expect("a");
    let a_fence = a_session
        .acquire("q", LockMode::Exclusive, Wait::TryOnce, None)
        .await
        .expect("a holds");
    let b = connect(servers.clone()).await;
    let b_session = b.open_session(Duration::from_secs(10)).await.expect("b");
    let b_wait = {
        let s = b_session.clone();
        tokio::spawn(async move {
            s.acquire("q", LockMode::Exclusive, Wait::Forever, None)
                .await
        })
    };
    // Wait until B is queued, then queue C behind it.
    let start = Instant::now();
    loop {
        let locks = a.locks(Some("q"), false).await.expect("locks");
        if locks.first().is_some_and(|l| l.waiters.len() == 1) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "B never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = connect(servers.clone()).await;
    let c_session = c.open_session(Duration::from_secs(10)).await.expect("c");
    let c_wait = {
        let s = c_session.clone();
        tokio::spawn(async move {
            s.acquire("q", LockMode::Exclusive, Wait::Forever, None)
                .await
        })
    };
    loop {
        let locks = a.locks(Some("q"), false).await.expect("locks");
        if locks.first().is_some_and(|l| l.waiters.len() == 2) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "C never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let old = cluster.wait_leader().await;
    cluster.node(old).kill();
    cluster.wait_leader_except(&[old]).await;
    // B and C re-send their acquires (same seq) to the new leader; A releases there.
    a_session.release("q").await.expect("a releases");
    let b_fence = tokio::time::timeout(DEADLINE, b_wait)
        .await
        .expect("B granted in time")
        .expect("task")
        .expect("B granted");
    assert!(b_fence > a_fence);
    assert!(!c_wait.is_finished(), "C stays queued behind B");
    b_session.release("q").await.expect("b releases");
    let c_fence = tokio::time::timeout(DEADLINE, c_wait)
        .await
        .expect("C granted in time")
        .expect("task")
        .expect("C granted");
    assert!(c_fence > b_fence);
}

/// Cuts the last `count` whole records off the last log segment in `data_dir` (records are
/// `u32 BE length | u32 BE crc32 | payload`, protocol-independent storage framing). A cut at a
/// record boundary leaves a valid, shorter log: acknowledged entries are simply gone, as with a
/// lying disk cache or a restored backup. Returns how many bytes were cut.
fn cut_last_records(data_dir: &std::path::Path, count: usize) -> u64 {
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let bytes = std::fs::read(last).expect("read segment");
    let mut starts = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        starts.push(at);
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    assert_eq!(at, bytes.len(), "the segment ends on a record boundary");
    assert!(
        starts.len() > count,
        "segment has only {} records",
        starts.len()
    );
    let cut_at = starts[starts.len() - count] as u64;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open segment");
    file.set_len(cut_at).expect("truncate");
    file.sync_all().expect("sync");
    bytes.len() as u64 - cut_at
}

/// A follower that lost the tail of its log (acknowledged, fsynced records) is repaired by
/// the current leader: back at the leader's commit index with no snapshot and no leader change,
/// and its files match. Without repair the leader's match index for it stays above its real
/// last index and nothing is ever resent (issue: lost tail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_log_tail_is_repaired_by_the_leader() {
    let mut cluster = Cluster::start(3, &["--snapshot-threshold", "100000"]);
    let leader = cluster.wait_leader().await;
    let client = connect(cluster.servers()).await;
    let session = client
        .open_session(Duration::from_secs(10))
        .await
        .expect("session");
    let guard = session
        .lock("l", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect("lock");
    append_numbers(&session, &guard, 0..60).await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let before = cluster.wait_caught_up(victim).await;
    let term = cluster
        .statuses()
        .await
        .into_iter()
        .find(|(id, _)| *id == leader)
        .expect("leader status")
        .1
        .term;
    cluster.node(victim).kill();
    let cut = cut_last_records(cluster.node(victim).data_dir(), 30);
    // The damaged log really is short (else the test proves nothing): read it as the
    // daemon will.
    let (storage, recovered) =
        raftlock::storage::Storage::open(cluster.node(victim).data_dir()).expect("open");
    drop(storage);
    let short = recovered.entries.last().map_or(0, |e| e.index);
    assert!(short < before, "the cut left {short} of {before} entries");
    let restarted = Instant::now();
    cluster.node(victim).start_again();
    let caught_up = cluster.wait_caught_up(victim).await;
    let took = restarted.elapsed();
    eprintln!(
        "cut {cut} bytes (30 records); restarted with last index {short} < {before}; \
         back at {caught_up} {took:?} after the restart"
    );
    assert!(caught_up >= before);
    let statuses = cluster.statuses().await;
    for (id, s) in &statuses {
        assert_eq!(s.term, term, "node {id} changed term: {statuses:?}");
        assert_eq!(s.leader, Some(leader), "the leader changed: {statuses:?}");
    }
    assert!(
        !cluster
            .node(victim)
            .log()
            .contains("installed snapshot from the leader"),
        "repaired by appends, not a snapshot"
    );
    let copies = copies(&cluster, &[1, 2, 3], "f").await;
    let expected: String = (0..60).map(|i| format!("{i},")).collect();
    for copy in &copies {
        assert_eq!(copy, expected.as_bytes());
    }
}
