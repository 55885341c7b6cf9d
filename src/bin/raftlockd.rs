//! `raftlockd`: the raftlock daemon. Flags (or `RAFTLOCKD_*` variables) → tracing → listener
//! → `Server`; SIGTERM/SIGINT shut it down gracefully. Exits non-zero on any failure.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use raftlock::server::{error_chain, Args, DaemonCommand, DevClusterArgs, Server};
use raftlock::storage::DataDirLock;
use tokio::net::{lookup_host, TcpListener, TcpSocket};
use tracing_subscriber::EnvFilter;

/// Pending connections the kernel queues before `accept` (a burst of connects must not stall).
const LISTEN_BACKLOG: u32 = 4096;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!(
                "raftlockd: invalid --log-level {:?}: {error}",
                args.log_level
            );
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_fd_limit();
    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raftlockd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let work = async {
        match args.command.clone() {
            Some(DaemonCommand::DevCluster(dev)) => dev_cluster(&args, dev).await,
            None => run(args).await,
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("raftlockd: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = args.to_config().map_err(|e| error_chain(&e))?;
    // Before the port and before anything in the directory is read: a second daemon on this
    // directory stops here, naming the directory and the holder.
    let dir_lock = DataDirLock::acquire(&config.data_dir).map_err(|e| error_chain(&e))?;
    let listener = bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let server = Server::start_locked(config, listener, dir_lock)
        .await
        .map_err(|e| error_chain(&e))?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("raftlockd listening on {}", server.local_addr());
    tracing::info!(id = args.id, advertise = server.advertise(), cluster = %args.cluster_id, "node address");
    server
        .serve(shutdown_signal())
        .await
        .map_err(|e| error_chain(&e))
}

/// `raftlockd dev-cluster`: N nodes of this binary on consecutive local ports, sharing a
/// generated cluster key, stopped together.
async fn dev_cluster(args: &Args, dev: DevClusterArgs) -> Result<(), String> {
    use std::process::Stdio;
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
    let key = dev_cluster_key(&dev.data_dir)?;
    println!("cluster key: {}", key.display());
    let mut children = Vec::new();
    for n in 1..=dev.nodes {
        let dir = dev.data_dir.join(format!("node{n}"));
        let child = std::process::Command::new(&exe)
            .arg("--id")
            .arg(n.to_string())
            .arg("--listen")
            .arg(addr(n)?)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--peer")
            .arg(&peers)
            .arg("--bootstrap")
            .arg("--cluster-id")
            .arg(&args.cluster_id)
            .arg("--cluster-key-file")
            .arg(&key)
            .arg("--log-level")
            .arg(&args.log_level)
            .env_remove("RAFTLOCKD_PEERS")
            .env_remove("RAFTLOCKD_ID")
            .env_remove("RAFTLOCKD_JOIN")
            .env_remove("RAFTLOCKD_ADVERTISE")
            .env_remove("RAFTLOCKD_LISTEN")
            .env_remove("RAFTLOCKD_DATA_DIR")
            .env_remove("RAFTLOCKD_CLUSTER_KEY_FILE")
            .env_remove("RAFTLOCKD_INSECURE_PEERS")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start node {n}: {e}"))?;
        println!("node {n}: {} data {}", addr(n)?, dir.display());
        children.push((n, child));
    }
    let servers: Vec<String> = (1..=dev.nodes).map(addr).collect::<Result<_, _>>()?;
    println!("RAFTLOCK_SERVERS={}", servers.join(","));
    println!("dev cluster running; Ctrl-C stops every node");
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            _ = &mut signal => break Ok(()),
            _ = poll.tick() => {}
        }
        let exited = children
            .iter_mut()
            .find_map(|(n, child)| child.try_wait().ok().flatten().map(|status| (*n, status)));
        if let Some((n, status)) = exited {
            break Err(format!("node {n} exited ({status}); stopped the others"));
        }
    };
    for (_, child) in &children {
        // SAFETY: kill(2) on our own child's pid: a graceful stop.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    for (n, child) in &mut children {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    println!("node {n} stopped");
                    break;
                }
                Ok(None) if tokio::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    println!("node {n} killed (did not stop within 10 s)");
                    break;
                }
                Ok(None) => {
                    poll.tick().await;
                }
            }
        }
    }
    outcome
}

/// The dev cluster's key file, `DIR/cluster.key`: created with a fresh random key (mode 0600)
/// on the first run, reused afterwards so that the nodes' data directories and the key agree.
fn dev_cluster_key(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    use raftlock::server::peer::ClusterKey;
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

/// Binds with address reuse (a restarted daemon gets its port back at once) and a deep backlog.
async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in lookup_host(listen).await? {
        match bind_one(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        )
    }))
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        biased;
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

/// Raises the soft open-file limit to the hard one: every client connection is a descriptor,
/// and distributions default the soft limit to 1024.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read RLIMIT_NOFILE");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let old = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise RLIMIT_NOFILE");
            return;
        }
        tracing::debug!(
            from = old,
            to = limit.rlim_max,
            "raised the open-file limit"
        );
    }
}
