//! `--local N`: `raftlockd` processes started by the bench on 127.0.0.1, each with its own data
//! directory under a temporary root (removed at the end), and what `/proc` says about them.
//!
//! One node listens on port 0 and reports its address on stdout (`raftlockd listening on
//! ADDR`). A cluster of N > 1 needs every address before any node starts, so the bench picks N
//! free ports first and starts node `i` with `--id i --listen ADDR_i --cluster-id ID` and one
//! `--peer j=ADDR_j` per other node.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BenchError;
use crate::tls::ClientTls;

/// How long a node may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One local daemon.
#[derive(Debug)]
pub struct LocalNode {
    /// Its id in the cluster (1-based).
    pub id: u64,
    /// Its client address.
    pub addr: SocketAddr,
    args: Vec<OsString>,
    child: Option<Child>,
    log: PathBuf,
}

impl LocalNode {
    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The local daemons of one bench. Dropping it kills them and removes their data.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    root: PathBuf,
    /// The nodes, by id order.
    pub nodes: Vec<LocalNode>,
    /// With `--tls`: how clients reach the nodes (trusting the bench's throwaway CA).
    pub tls: Option<ClientTls>,
}

/// `raftlockd` next to the current executable (or one directory up, for test binaries in
/// `deps/`).
pub fn find_raftlockd() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe()?;
    let name = format!("raftlockd{}", std::env::consts::EXE_SUFFIX);
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(BenchError::Local(format!(
        "no {name} next to {} (build it, or pass --raftlockd PATH)",
        exe.display()
    )))
}

/// Free ports on 127.0.0.1, found by binding port 0 (the listeners are closed before return,
/// so another process could take one first: the node then fails to start, loudly).
fn free_addrs(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(TcpListener::local_addr).collect()
}

impl LocalCluster {
    /// Starts `n` nodes of `binary` with data under a fresh directory in `parent`, and returns
    /// once each printed its address (not once a leader is elected). With `tls`, the nodes
    /// serve TLS (and peer mutual TLS) with a certificate from a CA made for this run.
    pub fn start(
        binary: PathBuf,
        parent: &Path,
        n: usize,
        tls: bool,
    ) -> Result<LocalCluster, BenchError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let root = parent.join(format!("raftlock-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&root)?;
        let mut cluster = LocalCluster {
            binary,
            root,
            nodes: Vec::new(),
            tls: None,
        };
        let tls_args = if tls {
            let files = make_certificates(&cluster.root)?;
            cluster.tls = Some(
                ClientTls::from_files(&files.ca, None)
                    .map_err(|e| BenchError::Local(crate::error_chain(&e)))?,
            );
            files.args(n > 1)
        } else {
            Vec::new()
        };
        let addrs: Vec<Option<SocketAddr>> = if n == 1 {
            vec![None]
        } else {
            free_addrs(n)?.into_iter().map(Some).collect()
        };
        let cluster_id = format!("bench-{}-{nanos}", std::process::id());
        // Nodes of a multi-node cluster refuse to start without a key: make one for this run.
        let key = cluster.root.join("cluster.key");
        if n > 1 {
            crate::server::peer::ClusterKey::create_file(&key)
                .map_err(|e| BenchError::Local(crate::error_chain(&e)))?;
        }
        for i in 0..n {
            let id = i as u64 + 1;
            let data = cluster.root.join(format!("node{id}"));
            let mut args: Vec<OsString> = vec![
                "--id".into(),
                id.to_string().into(),
                "--data-dir".into(),
                data.into_os_string(),
                "--log-level".into(),
                "warn".into(),
                "--listen".into(),
                addrs[i]
                    .map_or("127.0.0.1:0".into(), |a| a.to_string())
                    .into(),
            ];
            args.extend(tls_args.iter().cloned());
            if n > 1 {
                args.push("--bootstrap".into());
                args.push("--cluster-id".into());
                args.push(cluster_id.clone().into());
                args.push("--cluster-key-file".into());
                args.push(key.clone().into_os_string());
                for (j, addr) in addrs.iter().enumerate() {
                    if let (true, Some(addr)) = (j != i, addr) {
                        args.push("--peer".into());
                        args.push(format!("{}={addr}", j + 1).into());
                    }
                }
            }
            let log = cluster.root.join(format!("node{id}.log"));
            let (child, addr) = spawn(&cluster.binary, &args, &log)?;
            // A restart must come back on the same port: pin it in the arguments.
            if let Some(pos) = args.iter().position(|a| a == "--listen") {
                args[pos + 1] = addr.to_string().into();
            }
            cluster.nodes.push(LocalNode {
                id,
                addr,
                args,
                child: Some(child),
                log,
            });
        }
        Ok(cluster)
    }

    /// Every node's client address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    /// The node with `id`.
    pub fn node(&self, id: u64) -> Option<&LocalNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// SIGKILLs node `id` and reaps it (a crash: nothing is flushed).
    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.id == id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts node `id` again with its arguments, data and port.
    pub fn restart(&mut self, id: u64) -> Result<(), BenchError> {
        self.kill(id);
        let binary = self.binary.clone();
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| BenchError::Local(format!("no node {id}")))?;
        let (child, addr) = spawn(&binary, &node.args, &node.log)?;
        if addr != node.addr {
            return Err(BenchError::Local(format!(
                "node {id} came back on {addr}, not {}",
                node.addr
            )));
        }
        node.child = Some(child);
        Ok(())
    }

    /// The last lines of node `id`'s log, for error messages.
    pub fn log_tail(&self, id: u64) -> String {
        self.node(id).map_or_else(String::new, |n| tail(&n.log, 20))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.kill(id);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The PEM files of `--tls`: a CA and one certificate for 127.0.0.1 that every node uses as its
/// listener and peer certificate.
struct CertFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    /// The daemon flags: the listener's certificate, and peer mutual TLS for a cluster.
    fn args(&self, cluster: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--tls-cert".into(),
            self.cert.clone().into(),
            "--tls-key".into(),
            self.key.clone().into(),
        ];
        if cluster {
            args.extend([
                "--peer-tls-cert".into(),
                self.cert.clone().into(),
                "--peer-tls-key".into(),
                self.key.clone().into(),
                "--peer-tls-ca".into(),
                self.ca.clone().into(),
            ]);
        }
        args
    }
}

/// Makes a throwaway CA and a node certificate (server and client use) under `root`.
fn make_certificates(root: &Path) -> Result<CertFiles, BenchError> {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let failed = |e: rcgen::Error| BenchError::Local(format!("cannot make a certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(failed)?;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(failed)?;
    let files = CertFiles {
        ca: root.join("ca.pem"),
        cert: root.join("node.pem"),
        key: root.join("node.key"),
    };
    std::fs::write(&files.ca, ca.pem())?;
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    Ok(files)
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts `binary args` with stderr to `log`, and waits for its `raftlockd listening on ADDR`.
fn spawn(binary: &Path, args: &[OsString], log: &Path) -> Result<(Child, SocketAddr), BenchError> {
    let stderr = File::options().create(true).append(true).open(log)?;
    let mut child = Command::new(binary)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| BenchError::Local(format!("cannot start {}: {e}", binary.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Local("no stdout pipe".into()))?;
    let (tx, rx) = mpsc::channel();
    // Reads stdout to its end (the daemon must never write into a closed pipe).
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("raftlockd listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let failed = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        BenchError::Local(format!(
            "{} {}: {why}\n{}",
            binary.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            tail(log, 20)
        ))
    };
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(addr) => match addr.parse() {
            Ok(addr) => Ok((child, addr)),
            Err(_) => Err(failed(&mut child, format!("unreadable address {addr:?}"))),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(failed(&mut child, "no listening line within 20s".into()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(failed(&mut child, "exited before listening".into()))
        }
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS` in KiB from the text of a `/proc/PID/status`.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) used so far by process `pid`, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, clock_ticks())
}

/// utime + stime from the text of a `/proc/PID/stat`, with `ticks` clock ticks per second.
pub fn parse_stat_cpu(stat: &str, ticks: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    if ticks == 0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// CPU time (user + system) used so far by this process, all threads.
pub fn self_cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::{TimeVal, TimeValLike};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let tv = |t: TimeVal| Duration::from_micros(u64::try_from(t.num_microseconds()).unwrap_or(0));
    tv(usage.user_time()) + tv(usage.system_time())
}

/// The machine's 1-minute load average (`/proc/loadavg`), if readable: on a shared machine it
/// tells how much the other processes competed for the cores during a run.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's resident memory in KiB.
pub fn self_rss_kib() -> u64 {
    rss_kib(std::process::id()).unwrap_or(0)
}
