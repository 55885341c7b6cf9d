//! The daemon's configuration: command-line flags (each also read from a `RAFTLOCKD_*`
//! environment variable, so systemd's `EnvironmentFile=` can configure it) and the validated
//! [`ServerConfig`] the server runs with.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::protocol::Limits;
use crate::raft::{self, NodeId};

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
    /// Most open client connections; more get `TooManyConnections` and are closed.
    #[arg(long, env = "RAFTLOCKD_MAX_CONNECTIONS", default_value_t = crate::protocol::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Largest frame body in bytes; a larger length prefix closes the connection.
    #[arg(long, env = "RAFTLOCKD_MAX_FRAME_BYTES", default_value_t = crate::protocol::MAX_FRAME)]
    pub max_frame_bytes: usize,
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
    /// Milliseconds a graceful shutdown waits for in-flight proposals before it stops anyway.
    #[arg(long, env = "RAFTLOCKD_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,
}

impl Args {
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
        positive("handshake-timeout-ms", self.handshake_timeout_ms)?;
        positive("tick-ms", self.tick_ms)?;
        positive("heartbeat-ticks", u64::from(self.heartbeat_ticks))?;
        positive("snapshot-threshold", self.snapshot_threshold)?;
        if !(self.heartbeat_ticks < self.election_ticks_min
            && self.election_ticks_min < self.election_ticks_max)
        {
            return Err(ConfigError::ElectionRange {
                heartbeat: self.heartbeat_ticks,
                min: self.election_ticks_min,
                max: self.election_ticks_max,
            });
        }
        let limits = Limits {
            max_frame: self.max_frame_bytes,
            max_connections: self.max_connections,
            max_in_flight: self.max_inflight,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
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
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
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
    /// How long a graceful shutdown waits for in-flight proposals.
    pub shutdown_timeout: Duration,
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

    /// The Raft core's configuration for this node (without bootstrap membership).
    pub fn raft_config(&self) -> raft::Config {
        raft::Config {
            heartbeat_ticks: self.heartbeat_ticks,
            election_ticks_min: self.election_ticks_min,
            election_ticks_max: self.election_ticks_max,
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
    }
}
