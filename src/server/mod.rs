//! The tokio daemon around the pure core.
//!
//! Tasks and who owns what:
//! - the **driver** (`driver.rs`) runs the [`Replica`](crate::replica::Replica), which owns the
//!   Raft `Node` and the `LockSpace` and makes every decision, and reads one bounded inbox of
//!   events (`inbox.rs`); it is the only place state changes;
//! - the **storage writer** (`writer.rs`), a dedicated OS thread, owns `Storage` and does one
//!   fsync per batch of writes (group commit);
//! - the **ticker** sends a `Tick` every `--tick-ms`; on the leader each tick also checks the
//!   lease, wait and hold deadlines (in the replica) and turns passed ones into proposals;
//! - the **listener** (here) accepts connections under a connection-count semaphore, and one
//!   task per **connection** (`connection.rs`) reads frames and forwards requests to the driver,
//!   with a writer task fed by a bounded queue.
//!
//! Start-up first locks the data directory (one daemon per directory: `storage::DataDirLock`),
//! then recovers the log and snapshot, restores the lock space and replays the committed
//! entries after the snapshot. Shutdown stops accepting, lets in-flight proposals finish (up to
//! `--shutdown-timeout-ms`), syncs once more and returns. A storage or apply error is returned
//! from [`Server::serve`]: the process must exit non-zero (systemd restarts it; recovery replays).

mod backup;
mod config;
mod connection;
pub mod dev_cluster;
mod driver;
mod inbox;
pub mod logging;
mod metrics;
pub mod notify;
pub mod peer;
mod push;
pub mod signals;
pub mod tls;
pub mod tokens;
mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{
    Args, ConfigError, DaemonCommand, DevClusterArgs, PeerArg, RestoreArgs, ServerConfig,
};

pub use crate::error_chain;
use crate::lockspace::{self, LockSpace};
use crate::raft::{HardState, Node, NodeId};
use crate::storage::{self, DataDirLock, Storage};
use connection::Shared;
use driver::Driver;
use inbox::{Event, LeaderInfo};
use metrics::Metrics;
use peer::{PeerAcceptor, Transport, TransportConfig};
use writer::Writer;

/// The file in the data directory that records which cluster the node belongs to.
const CLUSTER_ID_FILE: &str = "cluster-id";

/// Capacity of the driver's inbox; senders wait when it is full (backpressure).
const INBOX_CAPACITY: usize = 4096;
/// Most connections being turned away (each answered `TooManyConnections`) at once; beyond
/// that an excess connection is closed without the error frame.
const MAX_REJECTING: usize = 1024;
/// How long shutdown waits for connection tasks to finish writing.
const CONNECTION_DRAIN: Duration = Duration::from_secs(2);

/// Why the daemon stopped or could not start. Each is fatal for the process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory is in use by another daemon, or its lock file cannot be taken.
    #[error(transparent)]
    DataDirLock(storage::LockError),
    /// The data directory could not be opened or recovered.
    #[error("cannot recover the data directory {dir}")]
    Recover {
        /// The data directory.
        dir: std::path::PathBuf,
        /// What failed.
        #[source]
        source: storage::Error,
    },
    /// Writing or syncing the log failed while running.
    #[error("writing the Raft log failed")]
    Persist(#[source] storage::Error),
    /// The snapshot does not restore.
    #[error("cannot restore the lock space from the snapshot")]
    Restore(#[source] lockspace::Error),
    /// The replica failed while running (a snapshot that does not restore, a corrupt entry).
    #[error(transparent)]
    Replica(crate::replica::Error),
    /// The storage writer thread is gone (it panicked).
    #[error("the storage writer thread stopped")]
    WriterStopped,
    /// The driver task panicked.
    #[error("the driver task panicked")]
    DriverPanicked,
    /// The blocking task that serializes a snapshot panicked.
    #[error("building a snapshot failed")]
    SnapshotBuild(#[source] tokio::task::JoinError),
    /// The data directory belongs to another cluster.
    #[error(
        "the data directory {dir} belongs to cluster {stored:?}, not {configured:?} (--cluster-id)"
    )]
    WrongCluster {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The id stored in the data directory.
        stored: String,
        /// The id this node was started with.
        configured: String,
    },
    /// The peer transport refused its configuration.
    #[error("cannot start the peer transport")]
    Transport(#[source] peer::ConfigError),
    /// Reading or writing a file in the data directory failed.
    #[error("{op} {path} failed")]
    DataDir {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The `--metrics-listen` address cannot be bound.
    #[error("cannot listen for metrics on {addr}")]
    MetricsListen {
        /// The address given.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A socket or thread operation failed.
    #[error("{op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A recovered node ready to serve: returned by [`Server::start`], run by [`Server::serve`].
pub struct Server {
    config: ServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    inbox: mpsc::Sender<Event>,
    leader: watch::Receiver<LeaderInfo>,
    driver: JoinHandle<Result<(), Error>>,
    acceptor: PeerAcceptor<Event>,
    advertise: String,
    /// False for a node that starts empty without bootstrapping: no leader talks to it until
    /// it is added, so readiness cannot wait for one.
    expect_leader: bool,
    /// Held until the server is dropped: no other daemon opens this data directory meanwhile.
    dir_lock: DataDirLock,
    /// Every metric, shared by the driver, the writer, connections and the HTTP task.
    metrics: Arc<Metrics>,
    /// The `--metrics-listen` socket, served from `serve`.
    metrics_listener: Option<TcpListener>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.config.id)
            .field("local_addr", &self.local_addr)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Recovers from `config.data_dir` and serves on `listener` until `shutdown` completes.
    pub async fn run(
        config: ServerConfig,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        Server::start(config, listener).await?.serve(shutdown).await
    }

    /// Locks the data directory, recovers the node and starts its driver; clients are accepted
    /// once `serve` runs.
    pub async fn start(config: ServerConfig, listener: TcpListener) -> Result<Server, Error> {
        let dir_lock = DataDirLock::acquire(&config.data_dir).map_err(Error::DataDirLock)?;
        Server::start_locked(config, listener, dir_lock).await
    }

    /// Like [`Server::start`] with the data directory's lock already taken (`raftlockd` takes
    /// it before binding its port, so that a second daemon reports the directory in use rather
    /// than the address).
    pub async fn start_locked(
        config: ServerConfig,
        listener: TcpListener,
        dir_lock: DataDirLock,
    ) -> Result<Server, Error> {
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            op: "reading the listen address",
            source,
        })?;
        let metrics_listener = match &config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr.as_str()).await.map_err(|source| {
                Error::MetricsListen {
                    addr: addr.clone(),
                    source,
                }
            })?),
            None => None,
        };
        check_cluster_id(&config).await?;
        let data_dir = config.data_dir.clone();
        let (storage, recovered) = tokio::task::spawn_blocking(move || Storage::open(&data_dir))
            .await
            .map_err(|_| Error::WriterStopped)?
            .map_err(|source| Error::Recover {
                dir: config.data_dir.clone(),
                source,
            })?;
        let snapshot_index = recovered.snapshot.as_ref().map(|s| s.meta.index);
        tracing::info!(
            data_dir = %config.data_dir.display(),
            term = recovered.hard_state.term,
            vote = ?recovered.hard_state.vote,
            commit = recovered.hard_state.commit,
            snapshot_index,
            entries = recovered.entries.len(),
            last_index = recovered.entries.last().map(|e| e.index).or(snapshot_index).unwrap_or(0),
            "recovered"
        );
        let (lockspace, last_applied_term) = match &recovered.snapshot {
            Some(snapshot) => (
                LockSpace::restore(&snapshot.data).map_err(Error::Restore)?,
                snapshot.meta.term,
            ),
            None => (LockSpace::new(), 0),
        };
        let mut raft_config = config.raft_config();
        let empty = recovered.snapshot.is_none()
            && recovered.entries.is_empty()
            && recovered.hard_state == HardState::default();
        let advertise = config.advertise_addr(local_addr);
        let mut expect_leader = true;
        if empty {
            match config.bootstrap_membership(&advertise) {
                Some(membership) => {
                    tracing::info!(id = config.id, members = ?membership.voters, "empty data directory: bootstrapping a new cluster");
                    raft_config.bootstrap = Some(membership);
                }
                None => {
                    expect_leader = false;
                    tracing::info!(
                        id = config.id,
                        "empty data directory and no --bootstrap: waiting to be added by the leader"
                    )
                }
            }
        }
        let seed: u64 = rand::random();
        tracing::info!(seed, "raft node seeded from OS entropy");
        let node = Node::new(raft_config, recovered, seed);
        let metrics = Arc::new(Metrics::new());
        let writer =
            Writer::spawn(storage, metrics.storage.clone()).map_err(|source| Error::Io {
                op: "starting the storage writer thread",
                source,
            })?;

        let (inbox, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let mut transport_config = TransportConfig::new(config.id, config.cluster_id.clone());
        transport_config.key = config.cluster_key.clone();
        transport_config.insecure_peers = config.insecure_peers;
        transport_config.tls = config.tls.clone();
        transport_config.snapshot_dir = Some(config.data_dir.clone());
        transport_config.snapshot_metrics = metrics.snapshots.clone();
        let others = |id: &NodeId| *id != config.id;
        let clustered =
            config.peers.keys().any(others) || node.membership().voters.keys().any(others);
        transport_config
            .check_start(clustered)
            .map_err(Error::Transport)?;
        let transport = Transport::new(transport_config, config.peers.clone(), inbox.clone())
            .map_err(Error::Transport)?;
        let acceptor = transport.acceptor();
        let (leader_tx, leader) = watch::channel(LeaderInfo::default());
        let driver = Driver::new(
            config.clone(),
            node,
            lockspace,
            last_applied_term,
            writer,
            inbox_rx,
            leader_tx,
            transport,
            metrics.clone(),
        );
        let driver = tokio::spawn(driver.run());
        Ok(Server {
            config,
            listener,
            local_addr,
            inbox,
            leader,
            driver,
            acceptor,
            advertise,
            expect_leader,
            dir_lock,
            metrics,
            metrics_listener,
        })
    }

    /// The address other nodes and clients reach this node at.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address metrics and health are served on (`--metrics-listen`), if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Accepts and serves clients until `shutdown` completes (graceful: `Ok`) or the node fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            config,
            listener,
            local_addr,
            inbox,
            leader,
            mut driver,
            acceptor,
            advertise: _,
            expect_leader,
            dir_lock,
            metrics,
            metrics_listener,
        } = self;
        let tracker = TaskTracker::new();
        let closing = CancellationToken::new();
        tracker.spawn(ticker(inbox.clone(), config.tick));
        if let Some(listener) = metrics_listener {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "serving metrics, /healthz and /readyz over HTTP");
            }
            tracker.spawn(metrics::serve(listener, metrics.clone(), closing.clone()));
        }
        let readiness =
            notify::ready_when_serving(leader.clone(), expect_leader, notify::READY_WITHOUT_LEADER);
        let shared = Arc::new(Shared {
            limits: config.limits.clone(),
            node_id: config.id,
            inbox: inbox.clone(),
            leader,
            closing: closing.clone(),
            acceptor,
            tls: config.tls.clone(),
            metrics: metrics.connections.clone(),
            tokens: config.tokens.clone(),
        });
        match &config.tokens {
            Some(tokens) => {
                tracing::info!(
                    file = %tokens.path().display(),
                    principals = tokens.principals(),
                    "clients authenticate with a token (--auth-tokens); reloaded on SIGHUP"
                );
                tracker.spawn(tokens::reload_on_hangup(tokens.clone(), closing.clone()));
            }
            None => tracing::info!(
                "client authentication is off: any client that reaches the port may do \
                 anything, membership changes included (give --auth-tokens to require tokens)"
            ),
        }
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
        tracing::info!(addr = %local_addr, id = config.id, tls = config.tls.is_some(), "listening");
        // READY=1 once the node serves: it accepts from here on; readiness waits for a leader.
        tracker.spawn(readiness);

        tokio::pin!(shutdown);
        let early = loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break None,
                result = &mut driver => break Some(result),
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            match connections.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracker.spawn(connection::serve(stream, peer, shared.clone(), permit));
                }
                Err(_) => {
                    tracing::warn!(%peer, max = config.limits.max_connections, "connection limit reached");
                    if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                        let max_frame = config.limits.max_frame;
                        tracker.spawn(async move {
                            connection::reject(stream, max_frame).await;
                            drop(permit);
                        });
                    }
                }
            }
        };
        drop(listener);

        let result = match early {
            // The driver stopped on its own: a fatal error (or a bug).
            Some(joined) => joined.unwrap_or(Err(Error::DriverPanicked)),
            None => {
                tracing::info!("shutdown requested: no longer accepting connections");
                notify::notify_logged(&[sd_notify::NotifyState::Stopping]);
                // If the driver is already gone, awaiting it below reports why.
                let _ = inbox.send(Event::Shutdown).await;
                driver.await.unwrap_or(Err(Error::DriverPanicked))
            }
        };
        drop(inbox);
        closing.cancel();
        tracker.close();
        if tokio::time::timeout(CONNECTION_DRAIN, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        match &result {
            Ok(()) => tracing::info!("stopped"),
            Err(error) => tracing::error!(error = %error_chain(error), "stopped on a fatal error"),
        }
        // The driver (and with it the storage writer) is done: the directory is free.
        drop(dir_lock);
        result
    }
}

/// Records the cluster id in the data directory on first start; refuses to start when the
/// stored one differs, so a node can never join the wrong cluster.
async fn check_cluster_id(config: &ServerConfig) -> Result<(), Error> {
    let dir = config.data_dir.clone();
    let configured = config.cluster_id.clone();
    let io = |op, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::DataDir { op, path, source }
    };
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(io("creating the data directory", &dir))?;
        let path = dir.join(CLUSTER_ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(stored) => {
                let stored = stored.trim_end().to_string();
                if stored != configured {
                    return Err(Error::WrongCluster {
                        dir,
                        stored,
                        configured,
                    });
                }
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let tmp = dir.join(format!("{CLUSTER_ID_FILE}.tmp"));
                std::fs::write(&tmp, format!("{configured}\n")).map_err(io("writing", &tmp))?;
                std::fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io("syncing", &tmp))?;
                std::fs::rename(&tmp, &path).map_err(io("renaming into place", &path))?;
                std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("syncing the directory", &dir))?;
                Ok(())
            }
            Err(source) => Err(Error::DataDir {
                op: "reading",
                path,
                source,
            }),
        }
    })
    .await
    .map_err(|_| Error::WriterStopped)?
}

/// Sends a `Tick` every `tick` until the driver is gone. Late ticks are delayed, not bunched.
async fn ticker(inbox: mpsc::Sender<Event>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if inbox.send(Event::Tick).await.is_err() {
            return;
        }
    }
}
