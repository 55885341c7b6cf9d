//! Test helpers shared by the real-process tests: [`Daemon`] runs `raftlockd` on 127.0.0.1 with
//! a temporary data directory (killed on drop, restartable on the same directory and port), and
//! [`Client`] speaks raw frames through the protocol's codec.
#![allow(dead_code)]

pub mod proxy;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use raftlock::client::LockMode;
use raftlock::protocol::{ClientCodec, ErrorCode, Request, Response, Role, StatusInfo, VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long any single wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Raises this process's open-file soft limit to its hard limit (tests open many sockets).
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// A running `raftlockd` process.
pub struct Daemon {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    data_dir: tempfile::TempDir,
    log_path: PathBuf,
    args: Vec<String>,
}

impl Daemon {
    /// Starts a daemon listening on `listen` (a fixed address, e.g. pre-allocated for a
    /// cluster) with a fresh data directory and extra `args`.
    pub fn start_at(listen: &str, args: &[String]) -> Daemon {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let log_path = data_dir.path().with_extension("log");
        let (child, addr) = spawn(data_dir.path(), listen, args, &log_path);
        Daemon {
            child: Some(child),
            addr,
            data_dir,
            log_path,
            args: args.to_vec(),
        }
    }

    /// True while the process runs (it may be stopped with SIGSTOP).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` to the process (SIGSTOP, SIGCONT...).
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("daemon running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
    }

    /// The process id (the daemon must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Replaces the extra arguments used by later restarts.
    pub fn set_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    /// Deletes everything in the data directory (the node must be stopped).
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "wipe a stopped node only");
        for entry in std::fs::read_dir(self.data_dir.path()).expect("read data dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove dir");
            } else {
                std::fs::remove_file(&path).expect("remove file");
            }
        }
    }

    /// Starts a daemon on an ephemeral port with a fresh data directory and extra `args`.
    pub fn start(args: &[&str]) -> Daemon {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let log_path = data_dir.path().with_extension("log");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, addr) = spawn(data_dir.path(), "127.0.0.1:0", &args, &log_path);
        Daemon {
            child: Some(child),
            addr,
            data_dir,
            log_path,
            args,
        }
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// SIGKILLs the daemon and reaps it (a crash: nothing is flushed).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let (child, addr) = spawn(self.data_dir.path(), &listen, &self.args, &self.log_path);
        assert_eq!(addr, self.addr, "restarted on another address");
        self.child = Some(child);
    }

    /// Starts the daemon again (after `terminate` or `kill`) on the same directory and port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.restart();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "daemon ignored SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the process has not exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("daemon started");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("raftlockd exited with {status}\n{}", self.log());
        }
    }

    /// The daemon's log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- raftlockd log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

fn spawn(data_dir: &Path, listen: &str, args: &[String], log_path: &Path) -> (Child, SocketAddr) {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("daemon log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log-level", "raftlock=debug,info"])
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn raftlockd");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, announced) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading so the daemon never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match announced.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = line.strip_prefix("raftlockd listening on ") {
                    return (
                        child,
                        addr.trim().parse().expect("address in the listening line"),
                    );
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                panic!("raftlockd did not announce its address\n{log}");
            }
        }
    }
}

/// A raw-frame client: one connection, the protocol codec, every wait bounded by [`DEADLINE`].
pub struct Client {
    framed: Framed<TcpStream, ClientCodec>,
    next_id: u64,
}

impl Client {
    /// Connects without saying `Hello`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            framed: Framed::new(stream, ClientCodec::new(raftlock::protocol::MAX_FRAME)),
            next_id: 1,
        }
    }

    /// Connects and completes the handshake.
    pub async fn hello(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr).await;
        client
            .send(Request::Hello {
                version: VERSION,
                role: Role::Client,
                token: None,
            })
            .await;
        match client.recv().await {
            Response::Welcome { version, .. } => assert_eq!(version, VERSION),
            other => panic!("expected Welcome, got {other:?}"),
        }
        client
    }

    /// A fresh request id.
    pub fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends one request.
    pub async fn send(&mut self, request: Request) {
        tokio::time::timeout(DEADLINE, self.framed.send(request))
            .await
            .expect("send timed out")
            .expect("send");
    }

    /// Writes raw bytes (a malformed frame).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        let stream = self.framed.get_mut();
        stream.write_all(bytes).await.expect("write");
        stream.flush().await.expect("flush");
    }

    /// The next response, or `None` if the server closed the connection.
    pub async fn next(&mut self) -> Option<Response> {
        match tokio::time::timeout(DEADLINE, self.framed.next()).await {
            Err(_) => panic!("no answer within {DEADLINE:?}"),
            Ok(None) | Ok(Some(Err(_))) => None,
            Ok(Some(Ok(Ok(response)))) => Some(response),
            Ok(Some(Ok(Err(bad)))) => panic!("server sent an undecodable frame: {bad}"),
        }
    }

    /// Asserts the server closes the connection, skipping any frames before (which need not
    /// be client responses: a peer handshake answers with peer frames).
    pub async fn expect_closed_skipping(&mut self) {
        loop {
            match tokio::time::timeout(DEADLINE, self.framed.next()).await {
                Err(_) => panic!("the connection stayed open for {DEADLINE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next response; panics if the connection closed.
    pub async fn recv(&mut self) -> Response {
        self.next().await.expect("connection closed by the server")
    }

    /// Asserts the server closes the connection (after any frames still queued).
    pub async fn expect_closed(&mut self) {
        if let Some(response) = self.next().await {
            panic!("expected the connection to close, got {response:?}");
        }
    }

    /// Sends a request and returns the first response with its id that is not `Queued`.
    pub async fn call(&mut self, request: Request) -> Response {
        let id = request_id(&request);
        self.send(request).await;
        loop {
            let response = self.recv().await;
            if response.id() == id && !matches!(response, Response::Queued { .. }) {
                return response;
            }
        }
    }

    /// Waits until the node says it leads (a fresh single node elects itself).
    pub async fn wait_leader(&mut self) -> StatusInfo {
        let start = Instant::now();
        loop {
            let id = self.id();
            match self.call(Request::Status { id }).await {
                Response::Status(status) if status.role == "leader" => return *status,
                Response::Status(_) => {}
                other => panic!("expected Status, got {other:?}"),
            }
            assert!(start.elapsed() < DEADLINE, "no leader within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens a session; returns (session, token).
    pub async fn open_session(&mut self, ttl_ms: u64) -> (u64, u64) {
        let id = self.id();
        let nonce = rand::random();
        match self
            .call(Request::OpenSession {
                id,
                nonce,
                ttl_ms,
                owner: None,
            })
            .await
        {
            Response::SessionOpened { session, token, .. } => (session, token),
            other => panic!("expected SessionOpened, got {other:?}"),
        }
    }

    /// An exclusive `Acquire` request with a fresh id.
    pub fn acquire(
        &mut self,
        session: (u64, u64),
        seq: u64,
        lock: &str,
        wait_ms: Option<u64>,
    ) -> Request {
        Request::Acquire {
            id: self.id(),
            session: session.0,
            token: session.1,
            seq,
            lock: lock.into(),
            mode: LockMode::Exclusive,
            wait_ms,
            hold_ms: None,
        }
    }
}

/// The id of a request (0 for Hello).
pub fn request_id(request: &Request) -> u64 {
    request.id()
}

/// The error code of a response, if it is an error.
pub fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// Proves the daemon still serves a well-behaved client: a new connection opens a session,
/// takes a lock and releases it.
pub async fn assert_served(addr: SocketAddr, lock: &str) {
    let mut client = Client::hello(addr).await;
    let session = client.open_session(10_000).await;
    let request = client.acquire(session, 1, lock, Some(0));
    match client.call(request).await {
        Response::Granted { .. } => {}
        other => panic!("expected Granted for {lock}, got {other:?}"),
    }
    let id = client.id();
    let release = Request::Release {
        id,
        session: session.0,
        token: session.1,
        seq: 2,
        lock: lock.into(),
    };
    assert_eq!(client.call(release).await, Response::Released { id });
}

/// Pre-allocates `n` free loopback ports: binds port 0 and releases it (peers need each
/// other's addresses before any of them starts).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

/// A base port with the `n - 1` ports after it free as well (for `dev-cluster --base-port`),
/// probed by binding them all at once. Drawn below Linux's ephemeral range (32768 and up), so
/// that outgoing connections, which take ephemeral ports, cannot grab one before the test
/// binds it.
pub fn free_port_run(n: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let base: u16 = rng.gen_range(20_000..32_000 - n);
        let held: Vec<_> = (0..n)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000..32000");
}

/// A node's `Status`, or `None` if it does not answer within `within` (killed, paused,
/// restarting).
pub async fn try_status(addr: SocketAddr, within: Duration) -> Option<StatusInfo> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let mut framed = Framed::new(stream, ClientCodec::new(raftlock::protocol::MAX_FRAME));
        framed
            .send(Request::Hello {
                version: VERSION,
                role: Role::Client,
                token: None,
            })
            .await
            .ok()?;
        framed.send(Request::Status { id: 1 }).await.ok()?;
        while let Some(Ok(Ok(response))) = framed.next().await {
            if let Response::Status(status) = response {
                return Some(*status);
            }
        }
        None
    };
    tokio::time::timeout(within, attempt).await.ok().flatten()
}

/// A cluster of real `raftlockd` processes on pre-allocated loopback ports, ids 1..=n
/// (node `id` is `nodes[id - 1]`), each with its own temporary data directory. The nodes share
/// a freshly generated cluster key (multi-node nodes refuse to start without one).
pub struct Cluster {
    /// The nodes, index = id - 1.
    pub nodes: Vec<Daemon>,
    /// Arguments every node gets (besides id, peers and listen), including the cluster key.
    pub common: Vec<String>,
    /// Holds the cluster key file for as long as the cluster lives.
    key_dir: tempfile::TempDir,
}

/// A new directory with a generated cluster key, and the `--cluster-key-file` arguments that
/// name it.
pub fn cluster_key() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir for the cluster key");
    let path = dir.path().join("cluster.key");
    raftlock::server::peer::ClusterKey::create_file(&path).expect("create the cluster key");
    let args = vec![
        "--cluster-key-file".to_string(),
        path.to_str().expect("utf-8 temp path").to_string(),
    ];
    (dir, args)
}

/// A plain HTTP/1.1 GET (for `/metrics`, `/readyz`): the status code and the body, or `None`
/// if the node does not answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Nodes 1..=n of a cluster they bootstrap, sharing a fresh cluster key, each serving
/// `/metrics` on a port of its own.
pub struct MetricsNodes {
    /// Node `id` is `nodes[id - 1]`.
    pub nodes: Vec<Daemon>,
    /// Node `id`'s `--metrics-listen` is `metrics[id - 1]`.
    pub metrics: Vec<SocketAddr>,
    /// The arguments every node got besides its id, peers and metrics port: the key's and
    /// the extra ones (for a joiner to get the same).
    pub common: Vec<String>,
    /// Holds the key file.
    pub key: tempfile::TempDir,
}

/// Starts [`MetricsNodes`] of `n` nodes, each also given `extra`.
pub fn start_with_metrics(n: usize, extra: &[&str]) -> MetricsNodes {
    let addrs = free_addrs(2 * n);
    let (listen, metrics) = addrs.split_at(n);
    let peers: Vec<String> = listen
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let (key, mut common) = cluster_key();
    common.extend(extra.iter().map(|a| a.to_string()));
    let nodes = (0..n)
        .map(|i| {
            let mut args = vec![
                "--id".to_string(),
                (i + 1).to_string(),
                "--peer".to_string(),
                peers.join(","),
                "--bootstrap".to_string(),
                "--metrics-listen".to_string(),
                metrics[i].to_string(),
            ];
            args.extend(common.iter().cloned());
            Daemon::start_at(&listen[i].to_string(), &args)
        })
        .collect();
    MetricsNodes {
        nodes,
        metrics: metrics.to_vec(),
        common,
        key,
    }
}

/// A library client with default options that knows `servers` (any member: followers
/// redirect).
pub async fn connect(servers: Vec<String>) -> raftlock::client::Client {
    raftlock::client::Client::connect(servers, raftlock::client::ClientOptions::default())
        .await
        .expect("connect")
}

impl Cluster {
    /// Starts `n` nodes that bootstrap one cluster, with `extra` arguments each.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let addrs = free_addrs(n);
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let (key_dir, mut common) = cluster_key();
        common.extend(extra.iter().map(|a| a.to_string()));
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut args = vec![
                    "--id".to_string(),
                    (i + 1).to_string(),
                    "--peer".to_string(),
                    peers.join(","),
                    "--bootstrap".to_string(),
                ];
                args.extend(common.iter().cloned());
                Daemon::start_at(&addr.to_string(), &args)
            })
            .collect();
        Cluster {
            nodes,
            common,
            key_dir,
        }
    }

    /// Starts one more node with id `nodes.len() + 1` and `--join`, knowing the current nodes
    /// as peers; it waits to be added.
    pub fn start_joiner(&mut self) -> (u64, SocketAddr) {
        let id = self.nodes.len() as u64 + 1;
        let addr = free_addrs(1)[0];
        let args = self.joiner_args(id);
        self.nodes.push(Daemon::start_at(&addr.to_string(), &args));
        (id, addr)
    }

    /// The arguments of node `id` restarted empty with `--join`.
    pub fn joiner_args(&self, id: u64) -> Vec<String> {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 + 1 != id)
            .map(|(i, d)| format!("{}={}", i + 1, d.addr))
            .collect();
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--join".to_string(),
            "--peer".to_string(),
            peers.join(","),
        ];
        args.extend(self.common.iter().cloned());
        args
    }

    /// Node `id`.
    pub fn node(&mut self, id: u64) -> &mut Daemon {
        &mut self.nodes[id as usize - 1]
    }

    /// The address of node `id`.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[id as usize - 1].addr
    }

    /// Every node's address as `host:port` strings (for the client library).
    pub fn servers(&self) -> Vec<String> {
        self.nodes.iter().map(|d| d.addr.to_string()).collect()
    }

    /// The statuses of the running nodes that answer, by id.
    pub async fn statuses(&self) -> Vec<(u64, StatusInfo)> {
        let asks = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_running())
            .map(|(i, d)| {
                let addr = d.addr;
                async move {
                    (
                        i as u64 + 1,
                        try_status(addr, Duration::from_millis(300)).await,
                    )
                }
            });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .collect()
    }

    /// Waits (bounded by [`DEADLINE`]) until some node leads and every answering node agrees
    /// on it in the leader's term, excluding `except`; returns the leader's id.
    pub async fn wait_leader_except(&self, except: &[u64]) -> u64 {
        let start = Instant::now();
        loop {
            let statuses = self.statuses().await;
            let leader = statuses
                .iter()
                .filter(|(id, s)| s.role == "leader" && !except.contains(id))
                .max_by_key(|(_, s)| s.term);
            if let Some((id, leader)) = leader {
                let agreed = statuses
                    .iter()
                    .filter(|(other, _)| !except.contains(other))
                    .all(|(_, s)| s.term == leader.term && s.leader == Some(*id));
                if agreed {
                    return *id;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no agreed leader within {DEADLINE:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for an agreed leader among the answering nodes.
    pub async fn wait_leader(&self) -> u64 {
        self.wait_leader_except(&[]).await
    }

    /// Waits until node `id` has applied at least the leader's commit index (read once the
    /// leader is known), and returns that index.
    pub async fn wait_caught_up(&self, id: u64) -> u64 {
        let start = Instant::now();
        loop {
            let statuses = self.statuses().await;
            let leader = statuses.iter().find(|(_, s)| s.role == "leader");
            let node = statuses.iter().find(|(n, _)| *n == id);
            if let (Some((_, leader)), Some((_, node))) = (leader, node) {
                if node.applied_index >= leader.commit_index && node.term == leader.term {
                    return node.applied_index;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "node {id} did not catch up within {DEADLINE:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
