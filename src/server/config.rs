//! The daemon's configuration: command-line flags (each also read from a `RAFTLOCKD_*`
//! environment variable, so systemd's `EnvironmentFile=` can configure it) and the validated
//! [`ServerConfig`] the server runs with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::logging::LogFormat;
use super::peer::{ClusterKey, KeyError};
use super::tls::{PeerTlsFiles, ServerTls, TlsFiles};
use super::tokens::{TokenFile, TokenFileError};
use crate::protocol::{Limits, MAX_CLUSTER_ID_LEN};
use crate::raft::{self, NodeId};
use crate::tls::TlsError;

/// A flag combination that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Node ids start at 1 (0 means "none" in the Raft core).
    #[error("--id must be at least 1")]
    ZeroId,
    /// A duration or count that must be positive is 0.
    #[error("--{flag} must be at least 1")]
    Zero {
        /// The flag's name.
        flag: &'static str,
    },
    /// The election timeout range is empty or not longer than a heartbeat.
    #[error("election ticks must satisfy heartbeat ({heartbeat}) < min ({min}) < max ({max})")]
    ElectionRange {
        /// `--heartbeat-ticks`.
        heartbeat: u32,
        /// `--election-ticks-min`.
        min: u32,
        /// `--election-ticks-max`.
        max: u32,
    },
    /// The cluster key file cannot be used.
    #[error("cannot use --cluster-key-file")]
    ClusterKey(#[source] KeyError),
    /// `--auth-tokens` cannot be read or does not parse.
    #[error("--auth-tokens")]
    Tokens(#[source] TokenFileError),
    /// The cluster id is empty or too long.
    #[error("--cluster-id must be 1..={max} bytes")]
    ClusterId {
        /// The longest allowed.
        max: usize,
    },
    /// Two `--peer` entries name the same node with different addresses.
    #[error("--peer lists node {id} twice with different addresses")]
    DuplicatePeer {
        /// The node id.
        id: NodeId,
    },
    /// Peers configured, but no cluster key and no `--insecure-peers`.
    #[error(
        "--peer names other nodes but no --cluster-key-file (RAFTLOCKD_CLUSTER_KEY_FILE) is \
         given, so anyone who reaches this port could join the cluster: create a key (for \
         example `openssl rand -hex 32 > cluster.key`, mode 0600), give every node the same \
         --cluster-key-file, or authenticate peers with mutual TLS (--peer-tls-cert, \
         --peer-tls-key, --peer-tls-ca), or pass --insecure-peers (RAFTLOCKD_INSECURE_PEERS=true) \
         to run unauthenticated peers on purpose"
    )]
    ClusterKeyRequired,
    /// A TLS file cannot be used.
    #[error("cannot configure TLS")]
    Tls(#[source] TlsError),
    /// The port speaks TLS, but peers would dial it in plain TCP.
    #[error(
        "--tls-cert makes this port speak TLS, also to the other nodes: give --peer-tls-cert, \
         --peer-tls-key and --peer-tls-ca (RAFTLOCKD_PEER_TLS_*) so that nodes dial each other \
         over TLS"
    )]
    PeerTlsRequired,
    /// `--join` with no `--peer` to reach the cluster through.
    #[error("--join needs the current members as --peer ID=HOST:PORT (to answer the leader)")]
    JoinWithoutPeers,
}

/// One `--peer ID=HOST:PORT` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerArg {
    /// The member's node id.
    pub id: NodeId,
    /// The address peers and clients reach it at.
    pub addr: String,
}

impl std::str::FromStr for PeerArg {
    type Err = String;

    fn from_str(text: &str) -> Result<PeerArg, String> {
        let (id, addr) = text
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id"))?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        let addr = addr.trim();
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("{addr:?} is not HOST:PORT")),
        }
        Ok(PeerArg {
            id,
            addr: addr.to_string(),
        })
    }
}

/// `raftlockd`'s subcommands (none: run one node).
#[derive(Clone, Debug, Subcommand)]
pub enum DaemonCommand {
    /// Run a local test cluster: N nodes as child processes on consecutive ports.
    #[command(after_help = "\
Each node is this same binary with --id N --listen 127.0.0.1:BASE+N-1 --data-dir DIR/nodeN,
the full --peer list and --cluster-key-file DIR/cluster.key (a random key made on the first run,
mode 0600). The supervisor prints each node's pid and prefixes each node's log lines with
[node N]. A node killed by a signal (kill -9 of the leader) is restarted after 1 s on the same
directory and port; a node that exits by itself is reported and left down while the others go
on. Ctrl-C or SIGTERM stops all of them.

Example:
  raftlockd dev-cluster --nodes 3
  RAFTLOCK_SERVERS=127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 raftlock cluster status")]
    DevCluster(DevClusterArgs),
    /// Create a data directory for a NEW cluster from a backup (`raftlock snapshot save`).
    #[command(after_help = "\
Like `etcdutl snapshot restore`: the backup is verified (length, checksum, lock space), then
installed into DIR, which must be empty or absent, with the membership --peer gives (every
member of the new cluster, this node included); the old cluster's membership is dropped. The
log starts after the snapshot. Start the node on DIR with the same --id and --peer list and
no --bootstrap: it serves every session, lock and file the backup holds. For a new
multi-node cluster, restore the same file on every member with its own --id.

Example:
  raftlockd restore backup.snap --data-dir /var/lib/raftlock --id 1 --peer 1=10.0.0.1:7400
  raftlockd --id 1 --listen 10.0.0.1:7400 --data-dir /var/lib/raftlock --peer 1=10.0.0.1:7400")]
    Restore(RestoreArgs),
}

/// Arguments of `raftlockd restore`.
#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The new data directory (must be empty or absent).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long, default_value_t = 1)]
    pub id: NodeId,
    /// A member of the new cluster, `ID=HOST:PORT` (repeat, or comma-separate); the list
    /// must name --id.
    #[arg(long = "peer", value_delimiter = ',', required = true)]
    pub peers: Vec<PeerArg>,
}

impl RestoreArgs {
    /// The new cluster's membership: every --peer a voter. Errors name what is wrong.
    pub fn membership(&self) -> Result<raft::Membership, String> {
        let mut membership = raft::Membership::default();
        for peer in &self.peers {
            if let Some(old) = membership.voters.insert(peer.id, peer.addr.clone()) {
                if old != peer.addr {
                    return Err(format!(
                        "--peer lists node {} twice with different addresses",
                        peer.id
                    ));
                }
            }
        }
        if !membership.voters.contains_key(&self.id) {
            return Err(format!(
                "--peer must name this node (--id {}) with its address",
                self.id
            ));
        }
        Ok(membership)
    }
}

/// Arguments of `raftlockd dev-cluster`.
#[derive(Clone, Debug, clap::Args)]
pub struct DevClusterArgs {
    /// How many nodes (ids 1..=N).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Port of node 1; node N listens on BASE+N-1.
    #[arg(long, default_value_t = 7401)]
    pub base_port: u16,
    /// Parent of the nodes' data directories (DIR/node1, DIR/node2, ...).
    #[arg(long, default_value = "./raftlock-dev")]
    pub data_dir: PathBuf,
    /// Host the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
}

/// `raftlockd`'s flags. With none it serves one node on 127.0.0.1:7400 with its data in
/// `./raftlockd-data`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "raftlockd",
    version,
    about = "The raftlock daemon: a Raft-replicated lock manager"
)]
pub struct Args {
    /// Address to listen on for clients (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "RAFTLOCKD_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: String,
    /// Directory of the Raft log, hard state and snapshots (created if missing).
    #[arg(long, env = "RAFTLOCKD_DATA_DIR", default_value = "./raftlockd-data")]
    pub data_dir: PathBuf,
    /// This node's id in its cluster (at least 1).
    #[arg(long, env = "RAFTLOCKD_ID", default_value_t = 1)]
    pub id: NodeId,
    /// Log filter: a level (`info`, `debug`, ...) or a tracing directive such as
    /// `raftlock=debug,info`. `RUST_LOG` is not read; use this flag or its variable.
    #[arg(long, env = "RAFTLOCKD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// A file holding the log filter (the syntax of --log-level; `#` lines are comments),
    /// used instead of --log-level and read again on every SIGHUP, so that the filter can be
    /// changed without a restart.
    #[arg(long, env = "RAFTLOCKD_LOG_FILTER_FILE")]
    pub log_filter_file: Option<PathBuf>,
    /// Log lines as `text` or `json` (one object per line); each carries the node id.
    #[arg(long, env = "RAFTLOCKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Threads that run connections, peers and the driver: 0 for one per core; 1 for a
    /// single-threaded runtime, which spends less CPU per operation (no wake-ups across
    /// threads) and suits small machines and several nodes sharing one. Storage writes always
    /// have a thread of their own.
    #[arg(long, env = "RAFTLOCKD_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Most open client connections; more get `TooManyConnections` and are closed.
    #[arg(long, env = "RAFTLOCKD_MAX_CONNECTIONS", default_value_t = crate::protocol::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Largest frame body in bytes; a larger length prefix closes the connection.
    #[arg(long, env = "RAFTLOCKD_MAX_FRAME_BYTES", default_value_t = crate::protocol::MAX_FRAME)]
    pub max_frame_bytes: usize,
    /// The largest size in bytes one file may grow to: an append past it is refused with
    /// `QuotaExceeded` and writes nothing. The leader puts its limits in each append's log
    /// entry, so they rule wherever it applies; give every node the same value.
    #[arg(long, env = "RAFTLOCKD_MAX_FILE_BYTES", default_value_t = crate::protocol::MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// The largest total size in bytes of all files together (checked like --max-file-bytes).
    /// File bytes live in memory and in every snapshot; the default keeps a snapshot within
    /// the 64 MiB a peer frame carries.
    #[arg(long, env = "RAFTLOCKD_MAX_TOTAL_FILE_BYTES", default_value_t = crate::protocol::MAX_TOTAL_FILE_BYTES)]
    pub max_total_file_bytes: u64,
    /// Unanswered requests per connection before `TooManyRequests`.
    #[arg(long, env = "RAFTLOCKD_MAX_INFLIGHT", default_value_t = crate::protocol::MAX_IN_FLIGHT)]
    pub max_inflight: usize,
    /// Milliseconds a new connection has to send `Hello`.
    #[arg(long, env = "RAFTLOCKD_HANDSHAKE_TIMEOUT_MS", default_value_t = 5_000)]
    pub handshake_timeout_ms: u64,
    /// Milliseconds per Raft tick (the unit of the tick counts below).
    #[arg(long, env = "RAFTLOCKD_TICK_MS", default_value_t = 10)]
    pub tick_ms: u64,
    /// Ticks between leader heartbeats.
    #[arg(long, env = "RAFTLOCKD_HEARTBEAT_TICKS", default_value_t = 5)]
    pub heartbeat_ticks: u32,
    /// Shortest election timeout, in ticks.
    #[arg(long, env = "RAFTLOCKD_ELECTION_TICKS_MIN", default_value_t = 30)]
    pub election_ticks_min: u32,
    /// Longest election timeout (exclusive), in ticks.
    #[arg(long, env = "RAFTLOCKD_ELECTION_TICKS_MAX", default_value_t = 60)]
    pub election_ticks_max: u32,
    /// Applied entries between two snapshots of the state machine (which compact the log).
    #[arg(long, env = "RAFTLOCKD_SNAPSHOT_THRESHOLD", default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// Bytes of applied log (entry commands, file appends included) that also trigger a
    /// snapshot, so that a burst of big appends cannot fill the disk with log first.
    #[arg(long, env = "RAFTLOCKD_SNAPSHOT_THRESHOLD_BYTES", default_value_t = crate::replica::SNAPSHOT_THRESHOLD_BYTES)]
    pub snapshot_threshold_bytes: u64,
    /// Milliseconds a graceful shutdown waits for in-flight proposals before it stops anyway.
    #[arg(long, env = "RAFTLOCKD_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,
    /// The cluster's name. Stored in the data directory on first start; a node whose stored
    /// id differs refuses to start, and peers of another cluster are refused.
    #[arg(long, env = "RAFTLOCKD_CLUSTER_ID", default_value = "raftlock")]
    pub cluster_id: String,
    /// A member of the cluster, `ID=HOST:PORT` (repeat the flag, or comma-separate in the
    /// variable). Give every node the same list (it may include the node itself). With
    /// --bootstrap, a node with an empty data directory creates the cluster {itself + every
    /// --peer}; without it, it waits to be added.
    #[arg(long = "peer", env = "RAFTLOCKD_PEERS", value_delimiter = ',')]
    pub peers: Vec<PeerArg>,
    /// A file holding the cluster key (at least 16 bytes; trailing whitespace ignored). Peers
    /// must prove they hold the same key. Required on a node with other members unless
    /// --insecure-peers. Under systemd, `LoadCredential=cluster-key:/etc/raftlockd/cluster.key`
    /// and `RAFTLOCKD_CLUSTER_KEY_FILE=%d/cluster-key` let a DynamicUser unit read a root-only
    /// file.
    #[arg(long, env = "RAFTLOCKD_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// Run a multi-node node without a cluster key, accepting peers that prove nothing (any
    /// process that reaches the port can then join, vote and append entries). Only on a
    /// network where every reachable process is trusted; a warning is logged at every start.
    #[arg(long, env = "RAFTLOCKD_INSECURE_PEERS")]
    pub insecure_peers: bool,
    /// The listener's TLS certificate chain (PEM). With it (and --tls-key) the port speaks TLS
    /// to clients and peers alike; re-read on SIGHUP.
    #[arg(
        long,
        env = "RAFTLOCKD_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); re-read on SIGHUP.
    #[arg(
        long,
        env = "RAFTLOCKD_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by this CA (PEM bundle) on every connection; peers
    /// may present one from --peer-tls-ca instead. Re-read on SIGHUP.
    #[arg(
        long,
        env = "RAFTLOCKD_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// The certificate this node presents to other nodes (as a TLS client certificate when it
    /// dials them, and as the listener's certificate when no --tls-cert is given). With
    /// --peer-tls-key and --peer-tls-ca, peers authenticate each other by mutual TLS and the
    /// cluster key becomes optional. Re-read on SIGHUP.
    #[arg(
        long,
        env = "RAFTLOCKD_PEER_TLS_CERT",
        requires_all = ["peer_tls_key", "peer_tls_ca"],
        value_name = "FILE"
    )]
    pub peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert (PEM). Re-read on SIGHUP.
    #[arg(
        long,
        env = "RAFTLOCKD_PEER_TLS_KEY",
        requires = "peer_tls_cert",
        value_name = "FILE"
    )]
    pub peer_tls_key: Option<PathBuf>,
    /// The CA (PEM bundle) every node's certificate must chain to: a connection that says it is
    /// a peer is admitted only with a certificate from it, and this node verifies the nodes it
    /// dials against it. Re-read on SIGHUP.
    #[arg(
        long,
        env = "RAFTLOCKD_PEER_TLS_CA",
        requires = "peer_tls_cert",
        value_name = "FILE"
    )]
    pub peer_tls_ca: Option<PathBuf>,
    /// Require every client to authenticate with a token in `Hello`: a file of
    /// `NAME ROLE SHA256-OF-TOKEN [lock:PREFIX|file:PREFIX ...]` lines (roles admin, client,
    /// read; `printf %s "$TOKEN" | sha256sum` gives the digest), re-read on SIGHUP. Without it
    /// any client that reaches the port may do anything, membership changes included.
    #[arg(long, env = "RAFTLOCKD_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,
    /// The address other nodes and clients reach this node at (default: its --peer entry,
    /// else the bound listen address).
    #[arg(long, env = "RAFTLOCKD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Start with an empty data directory and wait to be added (`raftlock cluster add`)
    /// instead of bootstrapping. Give the current members as --peer.
    #[arg(long, env = "RAFTLOCKD_JOIN")]
    pub join: bool,
    /// Create a new cluster from the --peer list if the data directory is empty. Give it only
    /// when creating the cluster: without it, a node of a multi-node cluster whose disk was
    /// lost waits to be re-added and catches up instead of voting with an empty log (which
    /// could elect a leader that lacks committed entries). A node without --peer always
    /// bootstraps itself as a one-node cluster.
    #[arg(long, env = "RAFTLOCKD_BOOTSTRAP", conflicts_with = "join")]
    pub bootstrap: bool,
    /// Serve Prometheus metrics (`/metrics`) and the `/healthz` and `/readyz` probes over HTTP
    /// on HOST:PORT (off by default). No authentication: bind it to a private address, never
    /// the public internet.
    #[arg(long, env = "RAFTLOCKD_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// A subcommand instead of running a node.
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
}

impl Args {
    /// The TLS files the flags name.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.tls_cert.clone().zip(self.tls_key.clone()),
            client_ca: self.tls_client_ca.clone(),
            peer: match (&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca) {
                (Some(cert), Some(key), Some(ca)) => Some(PeerTlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                }),
                _ => None,
            },
        }
    }

    /// Validates the flags and turns them into a [`ServerConfig`].
    pub fn to_config(&self) -> Result<ServerConfig, ConfigError> {
        let positive = |flag: &'static str, value: u64| {
            if value == 0 {
                Err(ConfigError::Zero { flag })
            } else {
                Ok(())
            }
        };
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        positive("max-connections", self.max_connections as u64)?;
        positive("max-frame-bytes", self.max_frame_bytes as u64)?;
        positive("max-inflight", self.max_inflight as u64)?;
        positive("max-file-bytes", self.max_file_bytes)?;
        positive("max-total-file-bytes", self.max_total_file_bytes)?;
        positive("handshake-timeout-ms", self.handshake_timeout_ms)?;
        positive("tick-ms", self.tick_ms)?;
        positive("heartbeat-ticks", u64::from(self.heartbeat_ticks))?;
        positive("snapshot-threshold", self.snapshot_threshold)?;
        positive("snapshot-threshold-bytes", self.snapshot_threshold_bytes)?;
        if !(self.heartbeat_ticks < self.election_ticks_min
            && self.election_ticks_min < self.election_ticks_max)
        {
            return Err(ConfigError::ElectionRange {
                heartbeat: self.heartbeat_ticks,
                min: self.election_ticks_min,
                max: self.election_ticks_max,
            });
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(ConfigError::ClusterId {
                max: MAX_CLUSTER_ID_LEN,
            });
        }
        let mut peers = BTreeMap::new();
        for peer in &self.peers {
            if let Some(old) = peers.insert(peer.id, peer.addr.clone()) {
                if old != peer.addr {
                    return Err(ConfigError::DuplicatePeer { id: peer.id });
                }
            }
        }
        if self.join && peers.keys().all(|id| *id == self.id) {
            return Err(ConfigError::JoinWithoutPeers);
        }
        let cluster_key = match &self.cluster_key_file {
            Some(path) => Some(ClusterKey::from_file(path).map_err(ConfigError::ClusterKey)?),
            None => None,
        };
        let tls = ServerTls::load(self.tls_files()).map_err(ConfigError::Tls)?;
        let peer_tls = tls.as_ref().is_some_and(|tls| tls.peer_tls());
        let tokens = match &self.auth_tokens {
            Some(path) => Some(std::sync::Arc::new(
                TokenFile::load(path).map_err(ConfigError::Tokens)?,
            )),
            None => None,
        };
        let has_others = peers.keys().any(|id| *id != self.id);
        if has_others && cluster_key.is_none() && !self.insecure_peers && !peer_tls {
            return Err(ConfigError::ClusterKeyRequired);
        }
        if has_others && tls.is_some() && !peer_tls {
            return Err(ConfigError::PeerTlsRequired);
        }
        let limits = Limits {
            max_frame: self.max_frame_bytes,
            max_connections: self.max_connections,
            max_in_flight: self.max_inflight,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            max_file_bytes: self.max_file_bytes,
            max_total_file_bytes: self.max_total_file_bytes,
            ..Limits::default()
        };
        Ok(ServerConfig {
            id: self.id,
            data_dir: self.data_dir.clone(),
            limits,
            tick: Duration::from_millis(self.tick_ms),
            heartbeat_ticks: self.heartbeat_ticks,
            election_ticks_min: self.election_ticks_min,
            election_ticks_max: self.election_ticks_max,
            snapshot_threshold: self.snapshot_threshold,
            snapshot_threshold_bytes: self.snapshot_threshold_bytes,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            cluster_id: self.cluster_id.clone(),
            peers,
            cluster_key,
            insecure_peers: self.insecure_peers,
            tls,
            tokens,
            advertise: self.advertise.clone(),
            join: self.join,
            bootstrap: self.bootstrap,
            metrics_listen: self.metrics_listen.clone(),
        })
    }
}

/// Everything `Server::run` needs besides its listener and shutdown trigger.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id.
    pub id: NodeId,
    /// Where the Raft log, hard state and snapshots live.
    pub data_dir: PathBuf,
    /// Frame, name, connection and in-flight limits.
    pub limits: Limits,
    /// Wall-clock length of one Raft tick.
    pub tick: Duration,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: u32,
    /// Shortest election timeout in ticks.
    pub election_ticks_min: u32,
    /// Longest election timeout in ticks (exclusive).
    pub election_ticks_max: u32,
    /// Applied entries between snapshots.
    pub snapshot_threshold: u64,
    /// Applied log bytes that also trigger a snapshot.
    pub snapshot_threshold_bytes: u64,
    /// How long a graceful shutdown waits for in-flight proposals.
    pub shutdown_timeout: Duration,
    /// The cluster's name (stored in the data directory, stated to peers).
    pub cluster_id: String,
    /// `--peer` entries: members to bootstrap with and to reach before the log names them.
    pub peers: BTreeMap<NodeId, String>,
    /// The cluster key peers must prove they hold.
    pub cluster_key: Option<ClusterKey>,
    /// Accept unauthenticated peers when there is no key (`--insecure-peers`).
    pub insecure_peers: bool,
    /// TLS for the port and the peer links (`--tls-*`, `--peer-tls-*`), if configured.
    pub tls: Option<std::sync::Arc<ServerTls>>,
    /// The client token file (`--auth-tokens`); `None`: clients are not authenticated.
    pub tokens: Option<std::sync::Arc<TokenFile>>,
    /// The address others reach this node at, if set explicitly.
    pub advertise: Option<String>,
    /// Wait to be added instead of bootstrapping an empty disk.
    pub join: bool,
    /// Create the cluster from `peers` when the disk is empty (needed when there are peers).
    pub bootstrap: bool,
    /// Where to serve metrics and health over HTTP (`--metrics-listen`), if anywhere.
    pub metrics_listen: Option<String>,
}

impl ServerConfig {
    /// The defaults of every flag, for node `id` with data in `data_dir`.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> ServerConfig {
        let args = Args::parse_from(["raftlockd"]);
        let mut config = args
            .to_config()
            .expect("the default flags form a valid configuration");
        config.id = id;
        config.data_dir = data_dir.into();
        config
    }

    /// The address other nodes and clients reach this node at: `--advertise`, else its own
    /// `--peer` entry, else the bound listen address.
    pub fn advertise_addr(&self, local_addr: std::net::SocketAddr) -> String {
        self.advertise
            .clone()
            .or_else(|| self.peers.get(&self.id).cloned())
            .unwrap_or_else(|| local_addr.to_string())
    }

    /// The membership a node with an empty disk starts from: itself alone when it has no other
    /// `--peer`, itself plus every `--peer` (all voters) with `--bootstrap`, else `None`: it
    /// waits to be added (or re-added after losing its disk) and does not vote meanwhile.
    pub fn bootstrap_membership(&self, advertise: &str) -> Option<raft::Membership> {
        let has_others = self.peers.keys().any(|id| *id != self.id);
        if self.join || (has_others && !self.bootstrap) {
            return None;
        }
        let mut membership = raft::Membership::default();
        membership.voters.clone_from(&self.peers);
        membership.voters.insert(self.id, advertise.to_string());
        Some(membership)
    }

    /// The Raft core's configuration for this node (without bootstrap membership).
    pub fn raft_config(&self) -> raft::Config {
        raft::Config {
            heartbeat_ticks: self.heartbeat_ticks,
            election_ticks_min: self.election_ticks_min,
            election_ticks_max: self.election_ticks_max,
            // The next append or heartbeat tells followers of a commit: one message and one
            // answer fewer per follower and operation; only followers' own applying waits.
            eager_commit: false,
            ..raft::Config::new(self.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_one_node_on_the_documented_address() {
        let args = Args::try_parse_from(["raftlockd"]).expect("no flags parse");
        assert_eq!(args.listen, "127.0.0.1:7400");
        assert_eq!(args.data_dir, PathBuf::from("./raftlockd-data"));
        let config = args.to_config().expect("defaults are valid");
        assert_eq!(config.id, 1);
        assert_eq!(config.tick, Duration::from_millis(10));
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.snapshot_threshold, 10_000);
    }

    #[test]
    fn invalid_combinations_are_refused() {
        let parse = |flags: &[&str]| {
            let mut argv = vec!["raftlockd"];
            argv.extend_from_slice(flags);
            Args::try_parse_from(argv).expect("flags parse").to_config()
        };
        assert!(matches!(parse(&["--id", "0"]), Err(ConfigError::ZeroId)));
        assert!(matches!(
            parse(&["--tick-ms", "0"]),
            Err(ConfigError::Zero { flag: "tick-ms" })
        ));
        assert!(matches!(
            parse(&["--election-ticks-min", "60", "--election-ticks-max", "60"]),
            Err(ConfigError::ElectionRange { .. })
        ));
        let config =
            parse(&["--max-connections", "7", "--handshake-timeout-ms", "250"]).expect("valid");
        assert_eq!(config.limits.max_connections, 7);
        assert_eq!(config.limits.handshake_timeout, Duration::from_millis(250));
        let config =
            parse(&["--max-file-bytes", "10", "--max-total-file-bytes", "20"]).expect("valid");
        assert_eq!(
            (
                config.limits.max_file_bytes,
                config.limits.max_total_file_bytes
            ),
            (10, 20)
        );
        assert!(matches!(
            parse(&["--max-total-file-bytes", "0"]),
            Err(ConfigError::Zero {
                flag: "max-total-file-bytes"
            })
        ));
        assert!(matches!(
            parse(&["--peer", "2=a:1", "--peer", "2=b:1", "--insecure-peers"]),
            Err(ConfigError::DuplicatePeer { id: 2 })
        ));
        assert!(matches!(
            parse(&["--join"]),
            Err(ConfigError::JoinWithoutPeers)
        ));
        assert!(matches!(
            parse(&["--peer", "1=a:1,2=b:1"]),
            Err(ConfigError::ClusterKeyRequired)
        ));
        let insecure = parse(&["--peer", "1=a:1,2=b:1", "--insecure-peers"]).expect("valid");
        assert!(insecure.insecure_peers && insecure.cluster_key.is_none());
        // A --peer list naming only this node is still a standalone node.
        assert!(parse(&["--peer", "1=a:1"]).is_ok());
        assert!(matches!(
            parse(&["--cluster-id", ""]),
            Err(ConfigError::ClusterId { .. })
        ));
        assert!(Args::try_parse_from(["raftlockd", "--peer", "0=a:1"]).is_err());
        assert!(Args::try_parse_from(["raftlockd", "--peer", "2=nohost"]).is_err());
    }

    #[test]
    fn tls_flags_come_in_pairs_and_name_a_missing_file() {
        let parse = |flags: &[&str]| {
            let mut argv = vec!["raftlockd"];
            argv.extend_from_slice(flags);
            Args::try_parse_from(argv)
        };
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-client-ca", "ca.pem"]).is_err());
        assert!(parse(&["--peer-tls-cert", "c.pem", "--peer-tls-key", "k.pem"]).is_err());
        let missing = parse(&[
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k",
        ])
        .expect("flags parse")
        .to_config()
        .expect_err("a missing certificate file");
        let text = crate::error_chain(&missing);
        assert!(text.contains("/nonexistent/c.pem"), "{text}");
    }

    #[test]
    fn peers_give_the_bootstrap_membership_and_the_advertised_address() {
        let args = Args::try_parse_from([
            "raftlockd",
            "--id",
            "2",
            "--peer",
            "1=10.0.0.1:7400,2=10.0.0.2:7400",
            "--peer",
            "3=10.0.0.3:7400",
            "--bootstrap",
            "--insecure-peers",
        ])
        .expect("flags parse");
        let config = args.to_config().expect("valid");
        let local = "0.0.0.0:7400".parse().expect("addr");
        let advertise = config.advertise_addr(local);
        assert_eq!(advertise, "10.0.0.2:7400");
        let membership = config.bootstrap_membership(&advertise).expect("bootstraps");
        assert_eq!(
            membership.voters.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(membership.learners.is_empty());

        let join = Args::try_parse_from([
            "raftlockd",
            "--id",
            "4",
            "--join",
            "--peer",
            "1=h:1",
            "--insecure-peers",
        ])
        .expect("flags parse")
        .to_config()
        .expect("valid");
        assert_eq!(join.bootstrap_membership("h:4"), None);
        assert_eq!(join.advertise_addr(local), "0.0.0.0:7400");
    }

    /// A node of a multi-node cluster with an empty disk (a lost disk, restarted with the same
    /// flags) must not bootstrap, or it would vote with an empty log. A node with no other
    /// peer is a one-node cluster and bootstraps itself.
    #[test]
    fn peers_without_bootstrap_wait_to_be_added() {
        let wiped = Args::try_parse_from([
            "raftlockd",
            "--id",
            "2",
            "--peer",
            "1=h:1,2=h:2,3=h:3",
            "--insecure-peers",
        ])
        .expect("flags parse")
        .to_config()
        .expect("valid");
        assert_eq!(wiped.bootstrap_membership("h:2"), None);

        let single = Args::try_parse_from(["raftlockd"])
            .expect("flags parse")
            .to_config()
            .expect("valid");
        let membership = single.bootstrap_membership("h:1").expect("bootstraps");
        assert_eq!(
            membership.voters.keys().copied().collect::<Vec<_>>(),
            vec![1]
        );

        assert!(
            Args::try_parse_from(["raftlockd", "--join", "--bootstrap", "--peer", "1=h:1"])
                .is_err()
        );
    }
}
