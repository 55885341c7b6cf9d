//! `raftlockd`: the raftlock daemon. Flags (or `RAFTLOCKD_*` variables) → log → listener →
//! `Server`; SIGTERM/SIGINT shut it down gracefully, SIGHUP reloads the log filter and the TLS
//! files (and never stops it). Exits non-zero on any failure. `raftlockd dev-cluster`
//! supervises a local cluster of child processes instead (`raftlock::server::dev_cluster`).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use raftlock::server::logging::{self, LogControl, LogSettings};
use raftlock::server::{dev_cluster, error_chain, signals, Args, DaemonCommand, Server};
use raftlock::storage::DataDirLock;
use tokio::net::{lookup_host, TcpListener, TcpSocket};

/// Pending connections the kernel queues before `accept` (a burst of connects must not stall).
const LISTEN_BACKLOG: u32 = 4096;

fn main() -> ExitCode {
    let args = Args::parse();
    let supervisor = args.command.is_some();
    let settings = LogSettings {
        // The dev-cluster supervisor is no node: its own lines carry no node id.
        node: (!supervisor).then_some(args.id),
        format: args.log_format,
        level: args.log_level.clone(),
        filter_file: args.log_filter_file.clone(),
    };
    let log = match logging::init(&settings) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("raftlockd: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
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
            Some(DaemonCommand::DevCluster(dev)) => dev_cluster::run(&args, dev).await,
            None => run(args, log).await,
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

async fn run(args: Args, log: LogControl) -> Result<(), String> {
    // First of all, before recovery (which may take a while): from here on SIGHUP reloads
    // instead of ending the process.
    let hangups = signals::hangups().map_err(|e| format!("cannot take SIGHUP: {e}"))?;
    let config = args.to_config().map_err(|e| error_chain(&e))?;
    // A SIGHUP that arrived meanwhile waits in `hangups` and is handled now.
    tokio::spawn(signals::reload_on_hangup(hangups, log, config.tls.clone()));
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
    if let Some(addr) = server.metrics_addr() {
        println!("raftlockd metrics on http://{addr}");
    }
    tracing::info!(id = args.id, advertise = server.advertise(), cluster = %args.cluster_id, "node address");
    server
        .serve(signals::shutdown())
        .await
        .map_err(|e| error_chain(&e))
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

/// Raises the soft open-file limit to the hard one: every client connection is a descriptor,
/// and distributions default the soft limit to 1024.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // rustix says "unlimited" with `None`; as a number that is RLIM_INFINITY (the most).
    let number = |value: Option<u64>| value.unwrap_or(u64::MAX);
    let limit = getrlimit(Resource::Nofile);
    let (old, max) = (number(limit.current), number(limit.maximum));
    if old < max {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %std::io::Error::from(error), "cannot raise RLIMIT_NOFILE");
            return;
        }
        tracing::debug!(from = old, to = max, "raised the open-file limit");
    }
}
