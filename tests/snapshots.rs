//! Snapshots larger than a peer frame, against real processes (issue 11, item 2).
//!
//! A node that joins, or falls too far behind, catches up through a snapshot of the whole state
//! machine, and file bytes live in that snapshot. Peer frames are limited to 64 MiB
//! (`PEER_MAX_FRAME`), so a snapshot sent as one frame stops working once the stored files
//! pass about 64 MiB: the leader logs "dropping a Raft message larger than a frame" at every
//! try and a fresh node never catches up, however long it waits. The cure is a snapshot sent
//! in chunks, resumable where a broken connection left it.
//!
//! Both tests run a 3-node cluster whose quotas allow 128 MiB of files, write 80 MiB (five
//! 16 MiB files of pseudo-random bytes, which no compression shrinks, appended 1 MiB at a time
//! under a lock), then add a fresh node 4 with `raftlock cluster add` (the real CLI) and check
//! that every node, node 4 included, serves every file with its size and CRC32, read with a
//! stale (local) read so each node answers from its own state.
//!
//! - [`a_fresh_node_catches_up_through_a_snapshot_larger_than_a_frame`]: node 4 is added at
//!   its own address; the leader's `/metrics` count a completed snapshot transfer to it.
//! - [`a_cut_snapshot_transfer_resumes_where_it_stopped`]: node 4 is added at the address of a
//!   TCP proxy (`common::proxy`), which resets every connection through it when the bytes it
//!   carried toward node 4 reach 30 % and again 60 % of the data. Node 4 still catches up, the
//!   proxy carried less than 1.5 times the data (a transfer that restarted from zero at both
//!   cuts carries at least 1.6 times), and the leader counts two resumed transfers.
//! - [`a_node_added_through_the_proxy_catches_up_and_survives_a_cut`] and
//!   [`the_proxy_cuts_at_the_armed_byte_count_and_then_carries_a_new_connection_whole`] check
//!   the proxy itself: with a cluster and little data (no snapshot larger than a frame), and
//!   alone between two sockets.
//!
//! The leader gives up an add after its own add timeout (10 s) and keeps the node a learner,
//! and a retried add resumes waiting for it (see `replica::admin`). Moving 80 MiB may take
//! longer than one try, so the CLI runs with a `--timeout` of the whole [`ADD_DEADLINE`] (it
//! retries a `Timeout` answer itself), and the tests run it again if it fails before then.
//!
//! The snapshot counters are read from the `/metrics` of nodes 1..=3 and summed: each counts
//! what it sent while it led, so the checks hold if leadership moved during the test.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{
    connect, free_addrs, http_get, start_with_metrics, try_status, Client, Daemon, DEADLINE,
};
use raftlock::client::{LockMode, Wait};
use raftlock::protocol::{Request, Response, StatusInfo, MAX_APPEND, MAX_READ, PEER_MAX_FRAME};

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// Files written, each of [`FILE_BYTES`].
const FILES: usize = 5;
/// Bytes per file: the per-file quota given to the nodes.
const FILE_BYTES: u64 = 16 << 20;
/// All the file bytes: past the 64 MiB peer frame.
const DATA_BYTES: u64 = FILES as u64 * FILE_BYTES;
/// The flags every node gets: frequent snapshots (the log is compacted long before node 4
/// joins, so it must take a snapshot) and quotas that allow the 80 MiB.
const FLAGS: [&str; 6] = [
    "--snapshot-threshold",
    "20",
    "--max-file-bytes",
    "16777216",
    "--max-total-file-bytes",
    "134217728",
];
/// How long `raftlock cluster add` may take, retries included: it has to move 80 MiB.
const ADD_DEADLINE: Duration = Duration::from_secs(60);
/// How long node 4 may take to apply the leader's commit index once it was added.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);

/// The two 80 MiB tests take turns: together they would hold eight nodes of 80 MiB at once
/// on a small machine.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A cluster of real nodes (ids 1..=3 bootstrapped, then a joiner 4), each serving metrics on
/// a pre-allocated port of its own.
struct Nodes {
    /// Node `id` is `nodes[id - 1]`.
    nodes: Vec<Daemon>,
    /// Node `id`'s `--metrics-listen` is `metrics[id - 1]`.
    metrics: Vec<SocketAddr>,
    /// The cluster key and [`FLAGS`] (every node's arguments besides id, peers and metrics).
    common: Vec<String>,
    _key: tempfile::TempDir,
}

impl Nodes {
    /// Starts nodes 1, 2 and 3, which bootstrap the cluster.
    fn start() -> Nodes {
        let started = start_with_metrics(3, &FLAGS);
        Nodes {
            nodes: started.nodes,
            metrics: started.metrics,
            common: started.common,
            _key: started.key,
        }
    }

    /// Starts node 4 with an empty data directory and `--join`, knowing nodes 1..=3 as peers;
    /// returns the address it listens on.
    fn start_joiner(&mut self) -> SocketAddr {
        let addrs = free_addrs(2);
        let peers: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{}={}", i + 1, d.addr))
            .collect();
        let mut args = vec![
            "--id".to_string(),
            "4".to_string(),
            "--join".to_string(),
            "--peer".to_string(),
            peers.join(","),
            "--metrics-listen".to_string(),
            addrs[1].to_string(),
        ];
        args.extend(self.common.iter().cloned());
        self.nodes
            .push(Daemon::start_at(&addrs[0].to_string(), &args));
        self.metrics.push(addrs[1]);
        addrs[0]
    }

    fn node(&self, id: u64) -> &Daemon {
        &self.nodes[id as usize - 1]
    }

    /// The client addresses of nodes 1..=3.
    fn servers(&self) -> Vec<String> {
        self.nodes[..3].iter().map(|d| d.addr.to_string()).collect()
    }

    /// The statuses of the nodes that answer, by id.
    async fn statuses(&self) -> Vec<(u64, StatusInfo)> {
        let asks = self.nodes.iter().enumerate().map(|(i, d)| {
            let addr = d.addr;
            async move {
                (
                    i as u64 + 1,
                    try_status(addr, Duration::from_millis(500)).await,
                )
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .collect()
    }

    /// Waits (bounded by [`DEADLINE`]) for a node that says it leads and that every other
    /// answering node of 1..=3 follows in its term; returns its id and status.
    async fn leader(&self) -> (u64, StatusInfo) {
        let start = Instant::now();
        loop {
            let statuses = self.statuses().await;
            let leader = statuses
                .iter()
                .filter(|(_, s)| s.role == "leader")
                .max_by_key(|(_, s)| s.term);
            if let Some((id, leader)) = leader {
                let agreed = statuses
                    .iter()
                    .filter(|(other, _)| *other <= 3)
                    .all(|(_, s)| s.term == leader.term && s.leader == Some(*id));
                if agreed {
                    return (*id, leader.clone());
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no agreed leader within {DEADLINE:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the logs of `ids`, for failure messages.
    fn logs(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|&id| {
                format!(
                    "--- node {id} log (last lines) ---\n{}",
                    tail(&self.node(id).log(), 30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until node `id` has applied `index`, for at most `within`; `context` is added to
    /// the failure message.
    async fn wait_applied(
        &self,
        id: u64,
        index: u64,
        within: Duration,
        context: impl Fn() -> String,
    ) {
        let start = Instant::now();
        loop {
            let status = try_status(self.node(id).addr, Duration::from_millis(500)).await;
            if status.as_ref().is_some_and(|s| s.applied_index >= index) {
                return;
            }
            if start.elapsed() >= within {
                let (leader, _) = self.leader().await;
                panic!(
                    "node {id} never caught up: it did not apply index {index} within \
                     {within:?} (its status: {status:?}); {}\n{}",
                    context(),
                    self.logs(&[leader, id])
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A deterministic pseudo-random byte stream (SplitMix64): incompressible test data that is
/// the same at every run.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A file as written: its name, size and CRC32.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    name: String,
    size: u64,
    crc: u32,
}

/// Writes [`FILES`] files of [`FILE_BYTES`] through the cluster, 1 MiB appends under one lock
/// held by one session; returns what was written.
async fn write_files(servers: Vec<String>) -> Vec<Written> {
    let client = connect(servers).await;
    let session = client
        .open_session(Duration::from_secs(60))
        .await
        .expect("open a session");
    let guard = session
        .lock("bulk", LockMode::Exclusive, Wait::Forever)
        .await
        .expect("lock bulk");
    let mut written = Vec::new();
    for f in 0..FILES {
        let name = format!("bulk-{f}");
        let mut bytes = Bytes(0x5eed_0000 + f as u64);
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0;
        while size < FILE_BYTES {
            let mut chunk = vec![0u8; MAX_APPEND];
            bytes.fill(&mut chunk);
            crc.update(&chunk);
            let (offset, new_size) = session
                .append(&name, &guard, chunk)
                .await
                .unwrap_or_else(|e| panic!("append to {name} at {size}: {e}"));
            assert_eq!(offset, size, "{name}: appended at the end");
            size = new_size;
        }
        assert_eq!(
            size, FILE_BYTES,
            "{name}: whole appends fill the quota exactly"
        );
        written.push(Written {
            name,
            size,
            crc: crc.finalize(),
        });
    }
    guard.release().await.expect("release bulk");
    session.close().await.expect("close the session");
    written
}

/// Reads `file` whole from the node at `addr` with stale reads (the node answers from its own
/// applied state); returns its size and CRC32.
async fn read_local(addr: SocketAddr, file: &str) -> Written {
    let mut client = Client::hello(addr).await;
    let mut crc = crc32fast::Hasher::new();
    let mut offset = 0u64;
    loop {
        let id = client.id();
        let read = Request::Read {
            id,
            file: file.to_string(),
            offset,
            len: MAX_READ,
            stale: true,
        };
        match client.call(read).await {
            Response::Data { data, size, .. } => {
                crc.update(&data);
                offset += data.len() as u64;
                if offset >= size || data.is_empty() {
                    assert_eq!(offset, size, "{file} at {addr}: read up to its size");
                    break;
                }
            }
            other => panic!("reading {file} at {offset} from {addr}: {other:?}"),
        }
    }
    Written {
        name: file.to_string(),
        size: offset,
        crc: crc.finalize(),
    }
}

/// Asserts node `id` serves every file of `written` with the same size and CRC32.
async fn assert_files(nodes: &Nodes, id: u64, written: &[Written]) {
    for file in written {
        let served = read_local(nodes.node(id).addr, &file.name).await;
        assert_eq!(&served, file, "node {id} serves {} as written", file.name);
    }
}

/// Runs `raftlock --servers SERVERS --timeout TIMEOUT cluster add ID ADDR` off the async
/// workers; returns whether it succeeded and its stderr.
async fn cluster_add(servers: &[String], timeout: Duration, id: u64, addr: &str) -> (bool, String) {
    let mut command = Command::new(RAFTLOCK);
    command
        .args(["--servers", &servers.join(",")])
        .args(["--timeout", &format!("{}ms", timeout.as_millis().max(1))])
        .args(["cluster", "add", &id.to_string(), addr]);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run raftlock"))
        .await
        .expect("join");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Adds node `id` at `addr` with the real CLI, retrying a failed add (the leader's own add
/// timeout may pass while a large snapshot is still moving) until [`ADD_DEADLINE`];
/// `context` is added to the failure message.
async fn add_node(nodes: &Nodes, id: u64, addr: &str, context: impl Fn() -> String) {
    let start = Instant::now();
    let mut tries = 0;
    loop {
        let left = ADD_DEADLINE.saturating_sub(start.elapsed());
        tries += 1;
        let (ok, stderr) = cluster_add(&nodes.servers(), left, id, addr).await;
        if ok {
            return;
        }
        if start.elapsed() >= ADD_DEADLINE {
            let (leader, _) = nodes.leader().await;
            panic!(
                "node {id} never caught up: `raftlock cluster add {id} {addr}` did not succeed \
                 within {ADD_DEADLINE:?} ({tries} tries; last stderr: {}); {}\n{}",
                stderr.trim(),
                context(),
                nodes.logs(&[leader, id])
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One sample line of the Prometheus text format: `name{label="value",...} value`.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The sample on `line`, or `None` for comments, blank lines and lines that do not parse.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, rest) = match line.find('{') {
        Some(_) => {
            // Neither the value nor a timestamp holds a brace; a label value may.
            let close = line.rfind('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_at(line.find(' ')?),
    };
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (values may hold escaped quotes, backslashes and commas).
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        rest = after[1 + end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(labels)
}

/// The sum of the samples of `name` whose labels include all of `labels` in a `/metrics`
/// body, or `None` if there is none.
fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = body
        .lines()
        .filter_map(parse_sample)
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Node `id`'s `/metrics` body.
fn scrape(nodes: &Nodes, id: u64) -> String {
    let addr = nodes.metrics[id as usize - 1];
    let (code, body) = http_get(addr, "/metrics")
        .unwrap_or_else(|| panic!("node {id} did not serve /metrics at {addr}"));
    assert_eq!(code, 200, "node {id} /metrics answered {code}: {body}");
    body
}

/// Waits until the leader holds a durable snapshot larger than a peer frame, and returns its
/// size. Snapshots are built off the driver, so the one covering the last appends may still
/// be in the making when they are acknowledged; waiting makes that snapshot the one a node
/// added next is sent (the cuts of the resume test fall inside it).
async fn wait_for_a_snapshot_past_a_frame(nodes: &Nodes) -> f64 {
    let (leader, _) = nodes.leader().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let size = metric(&scrape(nodes, leader), "raftlock_snapshot_size_bytes", &[]);
        match size {
            Some(size) if size > PEER_MAX_FRAME as f64 => return size,
            _ if Instant::now() > deadline => panic!(
                "node {leader}'s snapshot stayed at {size:?} bytes, not past a \
                 {PEER_MAX_FRAME}-byte frame, for {DEADLINE:?} after the writes"
            ),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The sum of the samples of `name` with `labels` over the `/metrics` of nodes 1..=3 (a
/// sender's counters live in the process that led while it sent: summing them keeps the check
/// true if leadership moved), and every node's snapshot samples for failure messages.
fn senders_metric(nodes: &Nodes, name: &str, labels: &[(&str, &str)]) -> (f64, String) {
    let mut sum = 0.0;
    let mut seen = Vec::new();
    for id in 1..=3 {
        let body = scrape(nodes, id);
        sum += metric(&body, name, labels).unwrap_or(0.0);
        let lines: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("raftlock_snapshot"))
            .collect();
        seen.push(format!("node {id}:\n{}", lines.join("\n")));
    }
    (sum, seen.join("\n"))
}

/// Asserts the senders counted at least `at_least` snapshot transfers to node 4 that ended
/// in `event` (`raftlock_snapshot_transfers_total{peer="4",event=EVENT}`).
fn assert_transfers(nodes: &Nodes, leader: u64, event: &str, at_least: f64) {
    let (count, seen) = senders_metric(
        nodes,
        "raftlock_snapshot_transfers_total",
        &[("peer", "4"), ("event", event)],
    );
    assert!(
        count >= at_least,
        "raftlock_snapshot_transfers_total{{peer=\"4\",event=\"{event}\"}} is {count} over \
         nodes 1..=3 (node {leader} led at the add), expected at least {at_least}; their \
         snapshot samples:\n{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_catches_up_through_a_snapshot_larger_than_a_frame() {
    let _turn = HEAVY.lock().await;
    let mut nodes = Nodes::start();
    nodes.leader().await;
    let written = write_files(nodes.servers()).await;
    let snapshot = wait_for_a_snapshot_past_a_frame(&nodes).await;

    let addr = nodes.start_joiner();
    let (leader, status) = nodes.leader().await;
    let commit = status.commit_index;
    add_node(&nodes, 4, &addr.to_string(), || {
        format!("the leader was node {leader}")
    })
    .await;
    nodes
        .wait_applied(4, commit, CATCH_UP_DEADLINE, || {
            format!("the leader was node {leader}")
        })
        .await;

    for id in 1..=4 {
        assert_files(&nodes, id, &written).await;
    }
    assert_transfers(&nodes, leader, "completed", 1.0);
    // The snapshot node 4 took covers all but the last few appends (those after it reach node
    // 4 as log entries), so a snapshot's size, not the file total, is what the leader sent:
    // one snapshot larger than a frame, once (a later snapshot differs from the one waited
    // for above only by metadata, and the log entries kept since the previous snapshot spare
    // node 4 a second transfer).
    let (sent, seen) = senders_metric(
        &nodes,
        "raftlock_snapshot_sent_bytes_total",
        &[("peer", "4")],
    );
    assert!(
        sent > PEER_MAX_FRAME as f64 && sent < 1.5 * snapshot,
        "raftlock_snapshot_sent_bytes_total{{peer=\"4\"}} is {sent} over nodes 1..=3, expected \
         one snapshot larger than a {PEER_MAX_FRAME}-byte frame, sent once (less than 1.5 \
         times the leader's {snapshot}-byte snapshot); their snapshot samples:\n{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_snapshot_transfer_resumes_where_it_stopped() {
    let _turn = HEAVY.lock().await;
    let mut nodes = Nodes::start();
    nodes.leader().await;
    let written = write_files(nodes.servers()).await;
    wait_for_a_snapshot_past_a_frame(&nodes).await;

    // Node 4 listens on its own port; the others reach it only through the proxy.
    let listen = nodes.start_joiner();
    let proxy = Proxy::start(listen);
    proxy.cut_when_carried(&[DATA_BYTES * 3 / 10, DATA_BYTES * 6 / 10]);
    let (leader, status) = nodes.leader().await;
    let commit = status.commit_index;
    let context = || {
        format!(
            "the leader was node {leader}; the proxy carried {} bytes toward node 4 over {} \
             connections and made {} of its 2 cuts",
            proxy.carried_to_upstream(),
            proxy.accepted(),
            proxy.cuts()
        )
    };
    add_node(&nodes, 4, &proxy.addr.to_string(), context).await;
    nodes
        .wait_applied(4, commit, CATCH_UP_DEADLINE, context)
        .await;

    assert_eq!(proxy.cuts(), 2, "both cuts happened: {}", context());
    assert_files(&nodes, 4, &written).await;
    let carried = proxy.carried_to_upstream();
    assert!(
        carried < DATA_BYTES * 3 / 2,
        "the proxy carried {carried} bytes toward node 4, not less than 1.5 times the \
         {DATA_BYTES} bytes of data: the transfer restarted instead of resuming"
    );
    assert_transfers(&nodes, leader, "resumed", 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_through_the_proxy_catches_up_and_survives_a_cut() {
    let mut nodes = Nodes::start();
    nodes.leader().await;
    let client = connect(nodes.servers()).await;
    let session = client
        .open_session(Duration::from_secs(60))
        .await
        .expect("open a session");
    let guard = session
        .lock("small", LockMode::Exclusive, Wait::Forever)
        .await
        .expect("lock small");
    let mut data = vec![0u8; 4096];
    Bytes(7).fill(&mut data);
    session
        .append("small", &guard, data.clone())
        .await
        .expect("append");

    let listen = nodes.start_joiner();
    let proxy = Proxy::start(listen);
    let (_, status) = nodes.leader().await;
    add_node(&nodes, 4, &proxy.addr.to_string(), String::new).await;
    nodes
        .wait_applied(4, status.commit_index, DEADLINE, String::new)
        .await;
    let expected = |data: &[u8]| Written {
        name: "small".to_string(),
        size: data.len() as u64,
        crc: crc32fast::hash(data),
    };
    assert_files(&nodes, 4, &[expected(&data)]).await;
    assert!(
        proxy.accepted() >= 1,
        "the leader dialed node 4 through the proxy"
    );
    assert!(
        proxy.carried_to_upstream() > data.len() as u64,
        "the file reached node 4 through the proxy"
    );

    // After a cut the leader dials again through the proxy, and node 4 keeps up.
    let accepted = proxy.accepted();
    proxy.cut_all();
    let mut more = vec![0u8; 4096];
    Bytes(8).fill(&mut more);
    session
        .append("small", &guard, more.clone())
        .await
        .expect("append after the cut");
    data.extend_from_slice(&more);
    let (_, status) = nodes.leader().await;
    nodes
        .wait_applied(4, status.commit_index, DEADLINE, || {
            format!("after a cut; the proxy accepted {}", proxy.accepted())
        })
        .await;
    assert_files(&nodes, 4, &[expected(&data)]).await;
    assert!(
        proxy.accepted() > accepted,
        "the leader dialed node 4 again after the cut"
    );
    guard.release().await.expect("release");
}

#[test]
fn prometheus_samples_parse_with_labels_in_any_order() {
    let body = "# HELP raftlock_snapshot_transfers_total Snapshot transfers.\n\
                # TYPE raftlock_snapshot_transfers_total counter\n\
                raftlock_snapshot_transfers_total{peer=\"4\",event=\"completed\"} 1\n\
                raftlock_snapshot_transfers_total{event=\"resumed\",peer=\"4\"} 2\n\
                raftlock_snapshot_transfers_total{event=\"resumed\",peer=\"5\"} 7\n\
                raftlock_snapshot_sent_bytes_total{peer=\"4\"} 8.388608e7 1700000000\n\
                raftlock_leader_id 2\n\
                odd{note=\"a \\\"quoted\\\", {comma}\",peer=\"4\"} 3\n";
    let transfers = "raftlock_snapshot_transfers_total";
    assert_eq!(
        metric(body, transfers, &[("peer", "4"), ("event", "completed")]),
        Some(1.0)
    );
    assert_eq!(
        metric(body, transfers, &[("peer", "4"), ("event", "resumed")]),
        Some(2.0)
    );
    assert_eq!(metric(body, transfers, &[("event", "resumed")]), Some(9.0));
    assert_eq!(
        metric(body, transfers, &[("peer", "4"), ("event", "abandoned")]),
        None
    );
    assert_eq!(
        metric(body, "raftlock_snapshot_sent_bytes_total", &[("peer", "4")]),
        Some(83_886_080.0)
    );
    assert_eq!(metric(body, "raftlock_leader_id", &[]), Some(2.0));
    let odd = parse_sample("odd{note=\"a \\\"quoted\\\", {comma}\",peer=\"4\"} 3").expect("odd");
    assert_eq!(odd.labels["note"], "a \"quoted\", {comma}");
    assert_eq!(odd.labels["peer"], "4");
    assert_eq!(parse_sample("# TYPE x counter"), None);
    assert_eq!(parse_sample(""), None);
}

#[test]
fn the_proxy_cuts_at_the_armed_byte_count_and_then_carries_a_new_connection_whole() {
    // The upstream: counts what each connection delivers until it ends (cleanly or not).
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let upstream_addr = upstream.local_addr().expect("upstream address");
    let (counts, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in upstream.incoming() {
            let Ok(mut stream) = stream else { return };
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    total += n as u64;
                }
                let _ = counts.send(total);
            });
        }
    });
    let proxy = Proxy::start(upstream_addr);
    const MIB: u64 = 1 << 20;
    proxy.cut_when_carried(&[MIB]);

    // A dialer that writes on and on sees its connection reset soon after 1 MiB went through.
    let mut dialer = TcpStream::connect(proxy.addr).expect("dial the proxy");
    let chunk = vec![7u8; 64 * 1024];
    let mut wrote = 0u64;
    let failed = loop {
        if let Err(error) = dialer.write_all(&chunk) {
            break error;
        }
        wrote += chunk.len() as u64;
        assert!(wrote < 256 * MIB, "the proxy never cut the connection");
    };
    assert!(
        matches!(
            failed.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "the cut resets the connection: {failed}"
    );
    let delivered = received
        .recv_timeout(DEADLINE)
        .expect("the upstream saw an end");
    assert_eq!(proxy.cuts(), 1);
    let carried = proxy.carried_to_upstream();
    assert!(
        (MIB..MIB + 64 * 1024).contains(&carried),
        "cut within one buffer of 1 MiB: carried {carried}"
    );
    assert!(
        delivered <= carried,
        "upstream got {delivered} of {carried}"
    );

    // The proxy still accepts, and carries a new connection whole up to its clean end.
    let mut dialer = TcpStream::connect(proxy.addr).expect("dial the proxy again");
    dialer.write_all(&chunk).expect("write through the proxy");
    dialer
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let delivered = received
        .recv_timeout(DEADLINE)
        .expect("the upstream saw the end");
    assert_eq!(
        delivered,
        chunk.len() as u64,
        "every byte reached the upstream"
    );
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(proxy.carried_to_upstream(), carried + chunk.len() as u64);
}
