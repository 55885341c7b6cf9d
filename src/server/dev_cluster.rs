//! `raftlockd dev-cluster`: N nodes of this binary on consecutive local ports, sharing a
//! generated cluster key, supervised like a small init system.
//!
//! The supervisor prints each node's address, pid and data directory, forwards each node's
//! log lines to its own stderr (text lines prefixed `[node N] `, in place of the node's own
//! `node=N`; JSON lines pass unchanged, since each already carries `"node_id"`), and keeps the cluster up for the failover demo:
//! - a node **killed by a signal** (`kill -9` of the leader) is restarted after
//!   [`RESTART_DELAY`] on the same directory and port, and the others go on serving;
//! - a node that **exits by itself** (a bad flag, a storage error) is reported and left down,
//!   since starting it again would fail the same way; the supervisor exits with an error once
//!   no node is left;
//! - SIGHUP is passed on to every running node (each reloads what it can, see
//!   `signals.rs`), and the supervisor goes on: under a terminal that closes, or a `kill -HUP`
//!   meant for the cluster, no node is orphaned;
//! - Ctrl-C or SIGTERM stops every node gracefully (SIGKILL after 10 s) and then the
//!   supervisor.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{Args, DevClusterArgs};
use super::logging::{self, LogFormat};
use super::peer::ClusterKey;
use super::signals;
use crate::error_chain;

/// How long a node killed by a signal stays down before it is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How often the supervisor looks at its children.
const POLL: Duration = Duration::from_millis(100);
/// How long the final stop waits before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One supervised node.
struct Node {
    /// Its id.
    id: u64,
    /// Its arguments (after the executable).
    args: Vec<OsString>,
    /// The running process, if any.
    child: Option<Child>,
    /// When to start it again (it died by a signal).
    restart_at: Option<Instant>,
}

/// Runs the dev cluster until Ctrl-C or SIGTERM (`Ok`), or until every node has exited by
/// itself (`Err`).
pub async fn run(args: &Args, dev: DevClusterArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let addr = |n: u64| -> Result<String, String> {
        let port = u64::from(dev.base_port) + n - 1;
        if port > u64::from(u16::MAX) {
            return Err(format!(
                "--base-port {} leaves no room for {} nodes",
                dev.base_port, dev.nodes
            ));
        }
        Ok(format!("{}:{port}", dev.host))
    };
    let mut peers = Vec::new();
    for n in 1..=dev.nodes {
        peers.push(format!("{n}={}", addr(n)?));
    }
    let peers = peers.join(",");
    let key = cluster_key(&dev.data_dir)?;
    println!("cluster key: {}", key.display());
    let format = match args.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let mut nodes = Vec::new();
    for n in 1..=dev.nodes {
        let dir = dev.data_dir.join(format!("node{n}"));
        let mut node_args: Vec<OsString> = Vec::new();
        let mut arg = |a: &dyn AsRef<std::ffi::OsStr>| node_args.push(a.as_ref().to_owned());
        arg(&"--id");
        arg(&n.to_string());
        arg(&"--listen");
        arg(&addr(n)?);
        arg(&"--data-dir");
        arg(&dir);
        arg(&"--peer");
        arg(&peers);
        // Harmless after the first start: a node bootstraps only an empty data directory.
        arg(&"--bootstrap");
        arg(&"--cluster-id");
        arg(&args.cluster_id);
        arg(&"--cluster-key-file");
        arg(&key);
        arg(&"--log-level");
        arg(&args.log_level);
        arg(&"--log-format");
        arg(&format);
        if let Some(file) = &args.log_filter_file {
            arg(&"--log-filter-file");
            arg(file);
        }
        let mut node = Node {
            id: n,
            args: node_args,
            child: None,
            restart_at: None,
        };
        let pid = node
            .start(&exe, args.log_format)
            .map_err(|e| format!("cannot start node {n}: {e}"))?;
        println!("node {n}: {} pid {pid} data {}", addr(n)?, dir.display());
        nodes.push(node);
    }
    // Before the addresses are announced: a script that reads them and then signals us at
    // once reaches these handlers, not the default action.
    let mut hangups =
        signals::hangups().map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    let signal = signals::shutdown();
    let servers: Vec<String> = (1..=dev.nodes).map(addr).collect::<Result<_, _>>()?;
    println!("RAFTLOCK_SERVERS={}", servers.join(","));
    println!(
        "dev cluster running; a node killed by a signal is restarted after {} s; Ctrl-C stops \
         every node",
        RESTART_DELAY.as_secs()
    );
    tokio::pin!(signal);
    let mut poll = tokio::time::interval(POLL);
    let outcome = loop {
        tokio::select! {
            _ = &mut signal => break Ok(()),
            Some(()) = hangups.recv() => {
                for node in &nodes {
                    node.hang_up();
                }
                continue;
            }
            _ = poll.tick() => {}
        }
        for node in &mut nodes {
            node.supervise(&exe, args.log_format);
        }
        if nodes
            .iter()
            .all(|node| node.child.is_none() && node.restart_at.is_none())
        {
            break Err("every node has exited".to_string());
        }
    };
    stop(&mut nodes).await;
    outcome
}

impl Node {
    /// Starts the node's process with its stderr forwarded; returns its pid.
    fn start(&mut self, exe: &Path, format: LogFormat) -> std::io::Result<u32> {
        let mut child = Command::new(exe)
            .args(&self.args)
            .env_remove("RAFTLOCKD_PEERS")
            .env_remove("RAFTLOCKD_ID")
            .env_remove("RAFTLOCKD_JOIN")
            .env_remove("RAFTLOCKD_ADVERTISE")
            .env_remove("RAFTLOCKD_LISTEN")
            .env_remove("RAFTLOCKD_DATA_DIR")
            .env_remove("RAFTLOCKD_CLUSTER_KEY_FILE")
            .env_remove("RAFTLOCKD_INSECURE_PEERS")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env(logging::PREFIXED_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(stderr) = child.stderr.take() {
            let prefix = match format {
                LogFormat::Text => format!("[node {}] ", self.id),
                LogFormat::Json => String::new(),
            };
            std::thread::spawn(move || forward(stderr, &prefix));
        }
        let pid = child.id();
        self.child = Some(child);
        self.restart_at = None;
        Ok(pid)
    }

    /// Passes a SIGHUP on to the node's process, if it runs.
    fn hang_up(&self) {
        let Some(child) = &self.child else { return };
        let pid = child.id();
        match rustix::process::kill_process(
            rustix::process::Pid::from_child(child),
            rustix::process::Signal::HUP,
        ) {
            Ok(()) => println!("SIGHUP passed on to node {} (pid {pid})", self.id),
            // It exited since the last poll: the next poll reaps and restarts it.
            Err(error) => println!(
                "node {} (pid {pid}): cannot pass SIGHUP on: {error}",
                self.id
            ),
        }
    }

    /// Reaps the node if it exited (scheduling a restart if a signal ended it) and restarts it
    /// when its delay has passed.
    fn supervise(&mut self, exe: &Path, format: LogFormat) {
        if let Some(child) = &mut self.child {
            let pid = child.id();
            match child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => {
                    self.child = None;
                    if let Some(signal) = status.signal() {
                        println!(
                            "node {} (pid {pid}) was killed by signal {signal}; restarting it in \
                             {} s",
                            self.id,
                            RESTART_DELAY.as_secs()
                        );
                        self.restart_at = Some(Instant::now() + RESTART_DELAY);
                    } else {
                        println!(
                            "node {} (pid {pid}) exited ({status}); not restarted (its log is \
                             above); the other nodes keep running",
                            self.id
                        );
                    }
                }
                Err(error) => {
                    println!("node {} (pid {pid}): cannot wait for it: {error}", self.id);
                    return;
                }
            }
        }
        let Some(at) = self.restart_at else { return };
        if Instant::now() < at {
            return;
        }
        match self.start(exe, format) {
            Ok(pid) => println!("node {} restarted: pid {pid}", self.id),
            Err(error) => {
                println!(
                    "cannot restart node {}: {error}; trying again in {} s",
                    self.id,
                    RESTART_DELAY.as_secs()
                );
                self.restart_at = Some(Instant::now() + RESTART_DELAY);
            }
        }
    }
}

/// Copies a node's stderr to ours line by line, each line after `prefix`, until it closes.
fn forward(stderr: std::process::ChildStderr, prefix: &str) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                let mut out = std::io::stderr().lock();
                // Our stderr gone (a closed terminal): the node's lines have nowhere to go.
                let _ = out.write_all(prefix.as_bytes());
                let _ = out.write_all(&line);
            }
        }
    }
}

/// SIGTERMs every running node and waits for each (SIGKILL after [`STOP_TIMEOUT`]).
async fn stop(nodes: &mut [Node]) {
    for child in nodes.iter().filter_map(|node| node.child.as_ref()) {
        // Our own child's pid (not yet reaped): a graceful stop. One already gone is waited
        // for below like the others.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(child),
            rustix::process::Signal::TERM,
        );
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for node in nodes.iter_mut() {
        let Some(child) = &mut node.child else {
            continue;
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    println!("node {} stopped ({})", node.id, describe(status));
                    break;
                }
                Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    println!(
                        "node {} killed (did not stop within {} s)",
                        node.id,
                        STOP_TIMEOUT.as_secs()
                    );
                    break;
                }
                Ok(None) => tokio::time::sleep(POLL).await,
            }
        }
        node.child = None;
    }
}

fn describe(status: ExitStatus) -> String {
    if status.success() {
        "exit 0".to_string()
    } else {
        status.to_string()
    }
}

/// The dev cluster's key file, `DIR/cluster.key`: created with a fresh random key (mode 0600)
/// on the first run, reused afterwards so that the nodes' data directories and the key agree.
fn cluster_key(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("cluster.key");
    let made = if path.exists() {
        ClusterKey::from_file(&path)
    } else {
        ClusterKey::create_file(&path)
    };
    made.map_err(|e| error_chain(&e))?;
    Ok(path)
}
