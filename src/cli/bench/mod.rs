//! `raftlock bench`: load generator and measurement harness for a raftlock cluster.
//!
//! A scenario drives a running cluster (`--servers`) or one it starts itself (`--local N`,
//! `raftlockd` processes found next to the current executable, each with its own temporary data
//! directory). Every latency goes into an HDR histogram; a run reports throughput and the
//! p50/p90/p99/p99.9/max of each latency, each also as a multiple of the *floor* of the machine
//! (one fdatasync of a 4 KiB write in the data directory plus one loopback TCP round trip, see
//! [`floor`]), which is what a single durable, acknowledged operation cannot beat.
//!
//! **Workers and connections.** Each worker owns one session; the sessions share
//! `min(workers, --connections)` [`Client`]s (default 8), worker `i` on client `i % C`. The
//! client library multiplexes requests on a connection, so this is how real applications with
//! many threads use it, and it keeps the daemon's per-connection cost out of the way of the
//! per-request cost being measured. `--connections` equal to `--workers` gives one each.
//!
//! **Client cost.** The bench runs on a single-threaded runtime by default (`--client-threads`),
//! so on a small machine it leaves the other cores to the daemons; it reports its own CPU time
//! per operation and utilisation (getrusage), so one can tell whether the client side bounds a
//! number (utilisation near 100% of its threads) or the daemon does (its CPU time per operation,
//! from `/proc/PID/stat`, for local nodes).
//!
//! Scenarios: see [`Scenario`]. Runs are bounded by `--duration` or `--ops`; `--runs R` repeats
//! the measurement and reports each run and the median and spread.
//!
//! **The suite.** `raftlock bench suite --local 3` runs the performance table of issue 15 in one
//! invocation (see [`suite`]): uncontended at 1, 16 and 64 workers, contended at 16, append at 1
//! and failover, each row printed beside its goal, its latency as a multiple of the floor and
//! the CPU per operation of every node and of the client, so that comparing two builds is one
//! command per build.

pub mod floor;
pub mod json;
pub mod local;
pub mod report;
mod scenarios;
pub mod suite;
#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use crate::cli::duration;
use crate::client::{error_chain, Client, ClientOptions};
use crate::tls::ClientTls;
pub use report::{Json, LatencyStats, Report, RunReport, SuiteReport};

/// A workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Each worker repeats acquire then release on its own lock (pairs/s, acquire latency).
    Uncontended,
    /// All workers wait forever on one lock (grants/s, hand-off and acquire latency).
    Contended,
    /// Each worker repeats lock, append (`--append-size`, 1 KiB), release (cycles/s).
    Append,
    /// Opens `--sessions` sessions, each holding one lock, keeps them alive for `--hold`, and
    /// reports every local node's resident memory.
    Sessions,
    /// Steady uncontended load while the leader is SIGKILLed and restarted `--kills` times
    /// (`--local 3` only): the clients' unavailability gap per kill.
    Failover,
}

impl Scenario {
    /// The scenario's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Uncontended => "uncontended",
            Scenario::Contended => "contended",
            Scenario::Append => "append",
            Scenario::Sessions => "sessions",
            Scenario::Failover => "failover",
        }
    }

    /// The unit its throughput is counted in.
    pub fn unit(self) -> &'static str {
        match self {
            Scenario::Uncontended => "pairs/s",
            Scenario::Contended => "grants/s",
            Scenario::Append => "cycles/s",
            Scenario::Sessions => "sessions/s",
            Scenario::Failover => "pairs/s",
        }
    }

    fn default_workers(self) -> usize {
        match self {
            Scenario::Contended => 16,
            Scenario::Failover => 4,
            Scenario::Uncontended | Scenario::Append | Scenario::Sessions => 1,
        }
    }
}

/// What `raftlock bench` runs: one scenario, or the whole table of issue 15 (`suite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One scenario, `--runs` times.
    Scenario(Scenario),
    /// Every row of [`suite::ROWS`], each against a fresh local cluster.
    Suite,
}

/// The command line's names: the scenarios' own, then `suite`.
impl ValueEnum for Workload {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Workload::Scenario(Scenario::Uncontended),
            Workload::Scenario(Scenario::Contended),
            Workload::Scenario(Scenario::Append),
            Workload::Scenario(Scenario::Sessions),
            Workload::Scenario(Scenario::Failover),
            Workload::Suite,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            Workload::Scenario(scenario) => scenario.to_possible_value(),
            Workload::Suite => Some(PossibleValue::new("suite").help(
                "Issue 15's table in one run (--local 3): uncontended at 1, 16 and 64 workers, \
                 contended at 16, append at 1 and failover, each beside its goal",
            )),
        }
    }
}

/// How long a run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Until this much time has passed (operations under way then still complete and count).
    Duration(Duration),
    /// Exactly this many operations, over all workers.
    Ops(u64),
}

/// `raftlock bench`'s arguments (`--servers` and `--json` are the CLI's global flags).
#[derive(Clone, Debug, Args)]
#[command(after_help = "\
Examples:
  raftlock bench uncontended --local 1 --workers 64 --duration 10s --runs 3
  raftlock bench contended --servers 10.0.0.1:7400,10.0.0.2:7400 --workers 16
  raftlock bench sessions --local 1 --sessions 100000 --json
  raftlock bench failover --local 3 --kills 5
  raftlock bench suite --local 3 --duration 10s --runs 3 --kills 10")]
pub struct BenchArgs {
    /// The workload: one scenario, or `suite` for all of issue 15's table.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Concurrent workers, each with its own session (default: 16 for contended, 4 for
    /// failover, else 1; the suite sets its own).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Length of each run, e.g. 10s (default 10s unless --ops is given).
    #[arg(long, value_parser = duration::parse_finite, conflicts_with = "ops")]
    pub duration: Option<Duration>,
    /// Operations per run, over all workers, instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Start N local raftlockd processes (1, or 3 for a cluster) instead of using --servers.
    #[arg(long)]
    pub local: Option<usize>,
    /// With --local: the nodes serve TLS (and peer mutual TLS) with a certificate from a CA
    /// made for this run under the bench's temporary directory, and the clients use TLS.
    /// Against --servers, give the CLI's --ca (and --cert/--key) instead.
    #[arg(long, requires = "local")]
    pub tls: bool,
    /// Client connections the workers' sessions share (worker i uses connection i % C).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Repeat the measurement this many times and report the median and spread (default 1;
    /// 3 for the suite, whose failover row always makes one run of --kills kills).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Sessions to open in the `sessions` scenario (default: --ops, else 10000).
    #[arg(long)]
    pub sessions: Option<u64>,
    /// How long the `sessions` scenario keeps its sessions alive before measuring memory again.
    #[arg(long, default_value = "5s", value_parser = duration::parse_finite)]
    pub hold: Duration,
    /// Leader kills in the `failover` scenario (default 3; 10 for the suite).
    #[arg(long)]
    pub kills: Option<usize>,
    /// With `suite`: a short version for tests and smoke checks, with smaller worker counts
    /// (its figures do not compare with the goals).
    #[arg(long)]
    pub quick: bool,
    /// Bytes per append in the `append` scenario.
    #[arg(long, default_value_t = 1024)]
    pub append_size: usize,
    /// The sessions' lease.
    #[arg(long, default_value = "60s", value_parser = duration::parse_ttl)]
    pub ttl: Duration,
    /// Runtime threads of the bench itself (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// The raftlockd binary for --local (default: next to this executable).
    #[arg(long)]
    pub raftlockd: Option<PathBuf>,
    /// Where --local data directories and the fsync floor's file go (default: the system
    /// temporary directory).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Samples of the fsync floor (0 skips the floor).
    #[arg(long, default_value_t = 200)]
    pub fsync_samples: usize,
    /// Samples of the loopback round-trip floor.
    #[arg(long, default_value_t = 2000)]
    pub rtt_samples: usize,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Why a bench could not run (a run's failed operations are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments do not describe a runnable bench.
    #[error("{0}")]
    Usage(String),
    /// Starting, stopping or watching local daemons failed.
    #[error("local cluster: {0}")]
    Local(String),
    /// The client could not connect or set up sessions.
    #[error("client: {0}")]
    Client(String),
    /// A file or socket operation of the bench itself failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

impl From<crate::client::Error> for BenchError {
    fn from(error: crate::client::Error) -> Self {
        BenchError::Client(error_chain(&error))
    }
}

/// A validated bench configuration.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The workload.
    pub scenario: Scenario,
    /// Workers (sessions doing operations).
    pub workers: usize,
    /// Clients (connections) shared by the workers.
    pub clients: usize,
    /// How long each run lasts.
    pub bound: Bound,
    /// Runs to make.
    pub runs: usize,
    /// Local nodes to start, or none to use `servers`.
    pub local: Option<usize>,
    /// Local nodes serve TLS (`--tls`).
    pub local_tls: bool,
    /// How the clients reach `servers` over TLS (the CLI's `--ca`), if they do.
    pub tls: Option<ClientTls>,
    /// The cluster to drive when not local.
    pub servers: Vec<String>,
    /// Sessions of the `sessions` scenario.
    pub sessions: u64,
    /// Hold time of the `sessions` scenario.
    pub hold: Duration,
    /// Leader kills of the `failover` scenario.
    pub kills: usize,
    /// Bytes per append.
    pub append_size: usize,
    /// The sessions' lease.
    pub ttl: Duration,
    /// Bench runtime threads.
    pub client_threads: usize,
    /// The daemon binary for local nodes.
    pub raftlockd: Option<PathBuf>,
    /// Where local data and the floor's file go.
    pub data_root: PathBuf,
    /// fsync floor samples.
    pub fsync_samples: usize,
    /// RTT floor samples.
    pub rtt_samples: usize,
    /// Print a progress line every second.
    pub progress: bool,
}

impl Plan {
    /// Checks `args` (a single scenario; the suite's is [`suite::SuitePlan::new`]) and fills
    /// in the defaults.
    pub fn new(args: &BenchArgs, servers: &[String]) -> Result<Plan, BenchError> {
        match args.workload {
            Workload::Scenario(scenario) => {
                if args.quick {
                    return Err(BenchError::Usage("--quick is for `bench suite`".into()));
                }
                Plan::for_scenario(args, servers, scenario)
            }
            Workload::Suite => Err(BenchError::Usage(
                "`suite` is several scenarios: plan it with SuitePlan".into(),
            )),
        }
    }

    /// [`Plan::new`] for `scenario`, whatever `args` names (the suite plans each of its rows
    /// from the same arguments).
    pub(crate) fn for_scenario(
        args: &BenchArgs,
        servers: &[String],
        scenario: Scenario,
    ) -> Result<Plan, BenchError> {
        let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
        let workers = args.workers.unwrap_or(scenario.default_workers());
        let runs = args.runs.unwrap_or(1);
        let kills = args.kills.unwrap_or(3);
        if workers == 0 {
            return usage("--workers must be at least 1");
        }
        if args.connections == 0 {
            return usage("--connections must be at least 1");
        }
        if runs == 0 {
            return usage("--runs must be at least 1");
        }
        if args.client_threads == 0 {
            return usage("--client-threads must be at least 1");
        }
        let bound = match (args.duration, args.ops) {
            (_, Some(0)) => return usage("--ops must be at least 1"),
            (_, Some(n)) => Bound::Ops(n),
            (Some(d), None) if d.is_zero() => return usage("--duration must be positive"),
            (Some(d), None) => Bound::Duration(d),
            (None, None) => Bound::Duration(Duration::from_secs(10)),
        };
        match args.local {
            Some(0) => return usage("--local must be at least 1"),
            Some(n) if n > 9 => return usage("--local starts at most 9 nodes"),
            _ => {}
        }
        if scenario == Scenario::Failover && !matches!(args.local, Some(n) if n >= 3) {
            return usage("failover needs --local 3 (or more): it kills and restarts the leader");
        }
        if kills == 0 {
            return usage("--kills must be at least 1");
        }
        if args.append_size == 0 || args.append_size > crate::protocol::MAX_APPEND {
            return usage("--append-size must be between 1 and 1048576");
        }
        let sessions = args.sessions.or(args.ops).unwrap_or(10_000);
        if sessions == 0 {
            return usage("--sessions must be at least 1");
        }
        let servers: Vec<String> = servers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if args.local.is_none() && servers.is_empty() {
            return usage("give --servers or --local N");
        }
        Ok(Plan {
            scenario,
            workers,
            // The sessions scenario has no workers: its sessions spread over every connection.
            clients: match scenario {
                Scenario::Sessions => args
                    .connections
                    .min(sessions.try_into().unwrap_or(usize::MAX)),
                _ => workers.min(args.connections),
            },
            bound,
            runs,
            local: args.local,
            local_tls: args.tls,
            tls: None,
            servers,
            sessions,
            hold: args.hold,
            kills,
            append_size: args.append_size,
            ttl: args.ttl,
            client_threads: args.client_threads,
            raftlockd: args.raftlockd.clone(),
            data_root: args.data_root.clone().unwrap_or_else(std::env::temp_dir),
            fsync_samples: args.fsync_samples,
            rtt_samples: args.rtt_samples,
            progress: !args.quiet,
        })
    }
}

/// The client options of the bench: the library's defaults, with short backoffs so that the
/// failover gap measures the cluster, not the client's patience.
pub fn client_options(tls: Option<&ClientTls>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(30),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        clock_seq: false,
        tls: tls.cloned(),
        auth_token: None,
    }
}

/// Connects `n` independent clients (one connection each) to `servers`.
pub async fn connect_clients(
    servers: &[String],
    tls: Option<&ClientTls>,
    n: usize,
) -> Result<Vec<Client>, BenchError> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Client::connect(servers.to_vec(), client_options(tls)).await?);
    }
    Ok(clients)
}

/// Runs the plan: starts local nodes if asked, measures the floor, makes the runs.
pub async fn run(plan: &Plan) -> Result<Report, BenchError> {
    scenarios::run(plan).await
}

/// `raftlock bench`: runs the bench described by `args` against `servers` (unless `--local`)
/// and prints the report, as text or (`json`) one JSON object on stdout. Exit status 0 when
/// every operation succeeded, 1 when some failed or the bench could not run, 2 for bad usage.
/// `tls` is how to reach `servers` over TLS (the CLI's `--ca`). Missed goals of the suite are
/// figures, not failures: they do not change the exit status.
pub fn main(args: &BenchArgs, servers: &[String], tls: Option<ClientTls>, json: bool) -> ExitCode {
    let planned = match args.workload {
        Workload::Scenario(_) => Plan::new(args, servers).map(|plan| {
            Planned::Scenario(Plan {
                tls: tls.clone(),
                ..plan
            })
        }),
        Workload::Suite => suite::SuitePlan::new(args, servers).map(Planned::Suite),
    };
    let planned = match planned {
        Ok(planned) => planned,
        Err(error) => {
            eprintln!("raftlock bench: {error}");
            return ExitCode::from(2);
        }
    };
    let client_threads = match &planned {
        Planned::Scenario(plan) => plan.client_threads,
        Planned::Suite(suite) => suite.base.client_threads,
    };
    let runtime = if client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(client_threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raftlock bench: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome = match &planned {
        Planned::Scenario(plan) => runtime.block_on(run(plan)).map(|report| {
            let text = if json {
                format!("{}\n", report.to_json())
            } else {
                report.to_text()
            };
            (text, report.errors())
        }),
        Planned::Suite(plan) => runtime.block_on(suite::run(plan)).map(|report| {
            let text = if json {
                format!("{}\n", report.to_json())
            } else {
                report.to_text()
            };
            (text, report.errors())
        }),
    };
    match outcome {
        Ok((text, errors)) => {
            // Not print!, which panics on a full stdout.
            let mut out = std::io::stdout().lock();
            if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("raftlock bench: cannot write to stdout: {error}");
                return ExitCode::from(1);
            }
            if errors == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!("raftlock bench: {errors} operations failed");
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("raftlock bench: {}", error_chain(&error));
            ExitCode::from(1)
        }
    }
}

/// A validated `raftlock bench` invocation.
enum Planned {
    Scenario(Plan),
    Suite(suite::SuitePlan),
}
