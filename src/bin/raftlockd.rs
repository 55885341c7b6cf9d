//! `raftlockd`: the raftlock daemon. Flags (or `RAFTLOCKD_*` variables) → log → listener →
//! `Server`; SIGTERM/SIGINT shut it down gracefully, SIGHUP reloads the log filter and the TLS
//! files (and never stops it). Exits non-zero on any failure. `raftlockd dev-cluster`
//! supervises a local cluster of child processes instead (`raftlock::server::dev_cluster`);
//! `raftlockd restore FILE --data-dir DIR --peer ...` creates a new cluster's data directory
//! from a backup (`raftlock::storage::restore`) and exits.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use raftlock::backup;
use raftlock::server::logging::{self, LogControl, LogSettings};
use raftlock::server::{dev_cluster, signals, Args, DaemonCommand, RestoreArgs, Server};
use raftlock::storage::{self, DataDirLock};
use tokio::net::{lookup_host, TcpListener, TcpSocket};

/// Pending connections the kernel queues before `accept` (a burst of connects must not stall).
const LISTEN_BACKLOG: u32 = 4096;

fn main() -> ExitCode {
    match start(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}`: the error and each of its causes on one line, joined with ": ".
            eprintln!("raftlockd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the log and the runtime, then runs the node (or the dev cluster) until it stops.
fn start(args: Args) -> anyhow::Result<()> {
    if let Some(DaemonCommand::Restore(restore)) = &args.command {
        return restore_backup(restore);
    }
    let supervisor = args.command.is_some();
    let settings = LogSettings {
        // The dev-cluster supervisor is no node: its own lines carry no node id.
        node: (!supervisor).then_some(args.id),
        format: args.log_format,
        level: args.log_level.clone(),
        filter_file: args.log_filter_file.clone(),
    };
    // The log error names the filter or the file that is wrong.
    let log = logging::init(&settings)?;
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
    let runtime = runtime.context("cannot start the runtime")?;
    runtime.block_on(async {
        match args.command.clone() {
            // The dev cluster reports its failures as finished messages.
            Some(DaemonCommand::DevCluster(dev)) => dev_cluster::run(&args, dev)
                .await
                .map_err(anyhow::Error::msg),
            Some(DaemonCommand::Restore(_)) => unreachable!("restore returns before the runtime"),
            None => run(args, log).await,
        }
    })
}

/// Runs one node: configuration, data-directory lock, listener, recovery, then serving until
/// SIGTERM/SIGINT. Each error says what failed; the library's errors already name the flag,
/// the data directory or the file concerned, and are not wrapped again where they do.
async fn run(args: Args, log: LogControl) -> anyhow::Result<()> {
    // First of all, before recovery (which may take a while): from here on SIGHUP reloads
    // instead of ending the process.
    let hangups = signals::hangups().context("cannot take SIGHUP")?;
    // Likewise SIGTERM and SIGINT: from here on they stop the node gracefully (a SIGTERM sent
    // the moment the port is announced must not kill it mid-write).
    let stop = signals::shutdown();
    let config = args.to_config()?;
    // A SIGHUP that arrived meanwhile waits in `hangups` and is handled now.
    tokio::spawn(signals::reload_on_hangup(hangups, log, config.tls.clone()));
    // Before the port and before anything in the directory is read: a second daemon on this
    // directory stops here, naming the directory and the holder.
    let dir_lock = DataDirLock::acquire(&config.data_dir)?;
    let listener = bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = Server::start_locked(config, listener, dir_lock)
        .await
        .with_context(|| format!("cannot start node {}", args.id))?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("raftlockd listening on {}", server.local_addr());
    if let Some(addr) = server.metrics_addr() {
        println!("raftlockd metrics on http://{addr}");
    }
    tracing::info!(id = args.id, advertise = server.advertise(), cluster = %args.cluster_id, "node address");
    server
        .serve(stop)
        .await
        .with_context(|| format!("node {} stopped", args.id))
}

/// `raftlockd restore`: verifies the backup, then creates the new data directory from it.
fn restore_backup(args: &RestoreArgs) -> anyhow::Result<()> {
    let membership = args.membership().map_err(anyhow::Error::msg)?;
    let verified = backup::verify(&args.file)?;
    let meta = &verified.snapshot.meta;
    let index = storage::restore(&verified.snapshot, membership.clone(), &args.data_dir)
        .with_context(|| format!("cannot restore into {}", args.data_dir.display()))?;
    let stats = verified.space.stats();
    println!(
        "restored {} into {}: index {index}, term {}, {} sessions, {} locks, {} files ({} bytes); members {}",
        args.file.display(),
        args.data_dir.display(),
        meta.term,
        stats.sessions,
        stats.locks,
        stats.files,
        stats.file_bytes,
        membership
            .voters
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    Ok(())
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
