//! Five real `raftlockd` processes on loopback, each behind its own [`proxy`]: node `n` listens
//! on a private port, its peers and clients know only the proxy's public port (`--peer` lists
//! the public ports, `--advertise` is the public port). The harness itself watches the nodes
//! through their private ports, so faults never blind it.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raftlock::protocol::StatusInfo;
use tokio::sync::watch;

use crate::common::{cluster_key, free_addrs, try_status};
use crate::proxy::{self, Net};

/// How long a node may take to announce its listening address.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// One node: its process (if running), addresses and data directory.
pub struct Node {
    pub id: u64,
    /// Where the daemon listens (the harness's own way in).
    pub private: SocketAddr,
    /// Where its proxy listens (what peers and clients use).
    pub public: SocketAddr,
    data: tempfile::TempDir,
    log_path: PathBuf,
    child: Option<Child>,
    /// Stopped with SIGSTOP.
    pub paused: bool,
    /// The arguments of the next start.
    args: Vec<String>,
}

impl Node {
    /// True while the process exists (possibly paused).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// SIGKILLs the node (a crash: nothing is flushed) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Sends `signal` to the running process.
    pub fn signal(&mut self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
            match signal {
                libc::SIGSTOP => self.paused = true,
                libc::SIGCONT => self.paused = false,
                _ => {}
            }
        }
    }

    /// Starts the process with its current arguments; fails (with the log's tail) if it exits
    /// or does not announce its address in time (e.g. it refuses a corrupt log).
    pub fn start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("log file: {e}"))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
            .arg("--listen")
            .arg(self.private.to_string())
            .arg("--data-dir")
            .arg(self.data.path())
            .args(&self.args)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("spawn raftlockd: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, announced) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let start = Instant::now();
        loop {
            let left = START_DEADLINE.saturating_sub(start.elapsed());
            match announced.recv_timeout(left) {
                Ok(line) if line.starts_with("raftlockd listening on ") => {
                    self.child = Some(child);
                    self.paused = false;
                    return Ok(());
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.log_tail(8));
                }
            }
        }
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(n).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Deletes the data directory's contents (the node must be stopped).
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "wipe a stopped node only");
        if let Ok(entries) = std::fs::read_dir(self.data.path()) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// The cluster: nodes 1..=n (node `id` is `nodes[id - 1]`), their proxies and the network map.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The partition map every proxy obeys.
    pub net: watch::Sender<Net>,
    /// `--cluster-key-file` and the timing flags, given to every start.
    common: Vec<String>,
    _key_dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` proxies and `n` nodes that bootstrap one cluster. Must run in a tokio runtime
    /// (the proxies are tasks).
    pub async fn start(n: usize) -> Result<Cluster, String> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("bind proxy: {e}"))?,
            );
        }
        let public: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("proxy addr"))
            .collect();
        let private = free_addrs(n);
        let (net, net_rx) = watch::channel(Net {
            client_epoch: vec![0; n],
            ..Net::default()
        });
        for (i, listener) in listeners.into_iter().enumerate() {
            proxy::spawn(i as u64 + 1, listener, private[i], net_rx.clone());
        }
        let (key_dir, mut common) = cluster_key();
        common.extend(
            [
                "--log-level",
                "info",
                "--worker-threads",
                "1",
                "--snapshot-threshold",
                "2000",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let peers: Vec<String> = public
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let data = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
            let log_path = data.path().with_extension("log");
            let mut args = vec![
                "--id".to_string(),
                id.to_string(),
                "--peer".to_string(),
                peers.join(","),
                "--advertise".to_string(),
                public[i].to_string(),
                "--bootstrap".to_string(),
            ];
            args.extend(common.iter().cloned());
            nodes.push(Node {
                id,
                private: private[i],
                public: public[i],
                data,
                log_path,
                child: None,
                paused: false,
                args,
            });
        }
        for node in &mut nodes {
            node.start()?;
        }
        Ok(Cluster {
            nodes,
            net,
            common,
            _key_dir: key_dir,
        })
    }

    /// Node `id`.
    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// Every node's public (proxy) address, for clients.
    pub fn public_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.public.to_string()).collect()
    }

    /// Makes node `id`'s next start an empty node that waits to be added (`--join`).
    pub fn set_joiner(&mut self, id: u64) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| format!("{}={}", n.id, n.public))
            .collect();
        let public = self.node(id).public;
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--join".to_string(),
            "--peer".to_string(),
            peers.join(","),
            "--advertise".to_string(),
            public.to_string(),
        ];
        args.extend(self.common.iter().cloned());
        self.node(id).args = args;
    }

    /// The statuses of the running, unpaused nodes that answer, by id (through the private
    /// ports).
    pub async fn statuses(&self) -> Vec<(u64, StatusInfo)> {
        let asks = self
            .nodes
            .iter()
            .filter(|n| n.running() && !n.paused)
            .map(|n| {
                let (id, addr) = (n.id, n.private);
                async move { (id, try_status(addr, Duration::from_millis(400)).await) }
            });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .collect()
    }

    /// The node that leads in the highest term, if any answers as leader.
    pub async fn leader(&self) -> Option<(u64, StatusInfo)> {
        self.statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
    }

    /// Waits up to `within` for a leader.
    pub async fn wait_leader(&self, within: Duration) -> Option<(u64, StatusInfo)> {
        let start = Instant::now();
        loop {
            if let Some(leader) = self.leader().await {
                return Some(leader);
            }
            if start.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Blocks the directed edges `edges` (Raft messages from → to), stalling or dropping.
    pub fn partition(&self, edges: impl IntoIterator<Item = (u64, u64)>, stall: bool) {
        self.net.send_modify(|net| {
            net.blocked = edges.into_iter().collect();
            net.stall = stall;
        });
    }

    /// Clears every partition.
    pub fn heal_net(&self) {
        self.net.send_modify(|net| {
            net.blocked.clear();
            net.stall = false;
        });
    }

    /// Closes every client connection currently open through any proxy.
    pub fn drop_client_conns(&self) {
        self.net.send_modify(|net| {
            for epoch in &mut net.client_epoch {
                *epoch += 1;
            }
        });
    }
}
