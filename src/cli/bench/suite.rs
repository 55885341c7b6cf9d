//! `raftlock bench suite`: issue 15's performance table in one command.
//!
//! The suite runs the rows of [`ROWS`] one after another (uncontended at 1, 16 and 64 workers,
//! contended at 16, append at 1, failover) with the scenarios' own code
//! (`super::scenarios`), measures the machine's floor before each row, and judges each row
//! against the
//! goals of [`GOALS`], which copy the issue's table. A row shows its throughput (median and
//! min–max over `--runs`), one latency that matters for it (the goal's, where the issue sets
//! one) also as a multiple of the floor, and the CPU per operation of each node and of the
//! client; the nodes' sum at 64 workers is the issue's "server CPU per pair" row.
//!
//! **A fresh cluster per row.** Every row starts its own `--local` cluster and tears it down
//! after. One shared cluster would save a second or so per row, but each row would then start
//! from what the previous rows left: a log hundreds of thousands of entries long, snapshots in
//! progress, sessions still being closed, and after failover nodes that were killed and
//! restarted (a restarted node catching up, a leader elsewhere). A fresh cluster gives every
//! row the same start as the single-scenario command (`raftlock bench uncontended --local 3
//! --workers 64`), so the suite's figures compare with those, and failover, which kills nodes,
//! cannot disturb any other row wherever it runs. The floor is measured again before each row
//! (about a second): on a shared machine one measurement can catch another process's burst of
//! I/O, and each row's latency is then compared with the floor of its own minutes.
//!
//! **Time.** With the defaults (`--duration 10s --runs 3 --kills 10`) five rows make three
//! 10 s runs each and failover makes one run of ten kills (about 3 s each): about four minutes
//! in all. `--quick` scales the worker counts down (1, 2, 4, contended 4, failover 2) for tests
//! and smoke checks; its figures are not judged against the goals.

use std::time::{Duration, Instant};

use super::floor::Floor;
use super::local;
use super::report::{ms, Report, Spread, SuiteReport, PERCENTILES};
use super::scenarios::{self, Target};
use super::{BenchArgs, BenchError, Plan, Scenario, Workload};

/// The latency a row is shown with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Headline {
    /// Percentile `percentile` (an index into [`PERCENTILES`]) of the latency `name` of the
    /// scenario's report.
    Latency {
        /// The latency's name in the scenario's report (`acquire`, `handoff_from_send`, ...).
        name: &'static str,
        /// Index into [`PERCENTILES`]: 0 is p50, 2 is p99.
        percentile: usize,
    },
    /// The failover gaps (the clients' longest stall around each kill), over all kills.
    Gap,
}

impl Headline {
    /// How the latency is named in the table (`acquire p99`, `failover gap`).
    pub fn label(self) -> String {
        match self {
            Headline::Latency { name, percentile } => {
                let name = match name {
                    "handoff_from_send" => "hand-off",
                    other => other,
                };
                format!("{name} {}", PERCENTILES[percentile].0)
            }
            Headline::Gap => "failover gap".to_string(),
        }
    }
}

/// One row of the suite: a scenario at a worker count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSpec {
    /// The row's name, which [`GOALS`] refer to (`uncontended@64`).
    pub key: &'static str,
    /// The workload.
    pub scenario: Scenario,
    /// Its workers.
    pub workers: usize,
    /// Its workers with `--quick`.
    pub quick_workers: usize,
    /// The latency the row is shown with.
    pub headline: Headline,
}

/// The suite's rows, in the order they run.
///
/// The latencies: the issue sets lock (acquire) p99 at 64 workers, the hand-off p50 contended
/// (measured from the release's sending to the next grant's arrival, the `handoff_from_send`
/// of the contended scenario, which the issue's 0.85 ms is) and the failover stall. The other
/// rows show their median operation latency, the figure closest to one commit, which the floor
/// bounds.
pub const ROWS: &[RowSpec] = &[
    RowSpec {
        key: "uncontended@1",
        scenario: Scenario::Uncontended,
        workers: 1,
        quick_workers: 1,
        headline: Headline::Latency {
            name: "acquire",
            percentile: 0,
        },
    },
    RowSpec {
        key: "uncontended@16",
        scenario: Scenario::Uncontended,
        workers: 16,
        quick_workers: 2,
        headline: Headline::Latency {
            name: "acquire",
            percentile: 0,
        },
    },
    RowSpec {
        key: "uncontended@64",
        scenario: Scenario::Uncontended,
        workers: 64,
        quick_workers: 4,
        headline: Headline::Latency {
            name: "acquire",
            percentile: 2,
        },
    },
    RowSpec {
        key: "contended@16",
        scenario: Scenario::Contended,
        workers: 16,
        quick_workers: 4,
        headline: Headline::Latency {
            name: "handoff_from_send",
            percentile: 0,
        },
    },
    RowSpec {
        key: "append@1",
        scenario: Scenario::Append,
        workers: 1,
        quick_workers: 1,
        headline: Headline::Latency {
            name: "cycle",
            percentile: 0,
        },
    },
    RowSpec {
        key: "failover",
        scenario: Scenario::Failover,
        workers: 4,
        quick_workers: 2,
        headline: Headline::Gap,
    },
];

/// What a goal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// The row's throughput (median over its runs), in the scenario's unit.
    Throughput,
    /// The row's headline latency (median), in milliseconds.
    Latency,
    /// The CPU per operation of every node summed (median over runs), in microseconds.
    NodesCpu,
}

impl Metric {
    /// The metric's name in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::Latency => "latency_ms",
            Metric::NodesCpu => "nodes_cpu_us_per_op",
        }
    }
}

/// Which side of its target a goal wants the figure on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// The figure must be at least the target.
    AtLeast,
    /// The figure must be at most the target.
    AtMost,
}

/// One goal of an issue's performance table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goal {
    /// The issue that sets it.
    pub issue: u32,
    /// The [`RowSpec::key`] of the row it judges.
    pub row: &'static str,
    /// What it judges.
    pub metric: Metric,
    /// Which way.
    pub cmp: Cmp,
    /// The target figure, in the metric's unit.
    pub target: f64,
}

/// The goals of issue 15's table ("Performance: a third of the CPU per operation, ..."), each
/// judged on the median of its row.
pub const GOALS: &[Goal] = &[
    Goal {
        issue: 15,
        row: "uncontended@1",
        metric: Metric::Throughput,
        cmp: Cmp::AtLeast,
        target: 800.0,
    },
    Goal {
        issue: 15,
        row: "uncontended@16",
        metric: Metric::Throughput,
        cmp: Cmp::AtLeast,
        target: 10_000.0,
    },
    Goal {
        issue: 15,
        row: "uncontended@64",
        metric: Metric::Throughput,
        cmp: Cmp::AtLeast,
        target: 20_000.0,
    },
    Goal {
        issue: 15,
        row: "uncontended@64",
        metric: Metric::Latency,
        cmp: Cmp::AtMost,
        target: 3.0,
    },
    Goal {
        issue: 15,
        row: "uncontended@64",
        metric: Metric::NodesCpu,
        cmp: Cmp::AtMost,
        target: 50.0,
    },
    Goal {
        issue: 15,
        row: "contended@16",
        metric: Metric::Throughput,
        cmp: Cmp::AtLeast,
        target: 1_500.0,
    },
    Goal {
        issue: 15,
        row: "contended@16",
        metric: Metric::Latency,
        cmp: Cmp::AtMost,
        target: 0.5,
    },
    Goal {
        issue: 15,
        row: "append@1",
        metric: Metric::Throughput,
        cmp: Cmp::AtLeast,
        target: 500.0,
    },
    Goal {
        issue: 15,
        row: "failover",
        metric: Metric::Latency,
        cmp: Cmp::AtMost,
        target: 100.0,
    },
];

impl Goal {
    /// The goal as the table shows it (`≥ 800 pairs/s`, `acquire p99 ≤ 3 ms`).
    pub fn describe(&self) -> String {
        let spec = row_spec(self.row);
        let op = match self.cmp {
            Cmp::AtLeast => "≥",
            Cmp::AtMost => "≤",
        };
        match (self.metric, spec) {
            (Metric::Throughput, Some(spec)) => {
                format!("{op} {} {}", grouped(self.target), spec.scenario.unit())
            }
            (Metric::Latency, Some(spec)) => {
                format!("{} {op} {} ms", spec.headline.label(), self.target)
            }
            (Metric::NodesCpu, _) => format!("{op} {} µs per op, nodes summed", self.target),
            (_, None) => format!("{op} {}", self.target),
        }
    }

    /// Whether `figure` meets the goal.
    pub fn met_by(&self, figure: f64) -> bool {
        match self.cmp {
            Cmp::AtLeast => figure >= self.target,
            Cmp::AtMost => figure <= self.target,
        }
    }
}

/// The row named `key`.
pub fn row_spec(key: &str) -> Option<&'static RowSpec> {
    ROWS.iter().find(|r| r.key == key)
}

/// `x` rounded to a whole number with thousands separated by commas (`20,000`).
pub fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// A validated `raftlock bench suite`.
#[derive(Clone, Debug)]
pub struct SuitePlan {
    /// The settings every row shares (its scenario and workers are replaced per row); its
    /// `runs` and `kills` are the suite's.
    pub base: Plan,
    /// `--connections`: the most client connections a row's workers share.
    pub connections: usize,
    /// `--quick`: smaller worker counts, goals not judged.
    pub quick: bool,
}

impl SuitePlan {
    /// Checks `args` (whose workload is `suite`) and fills in the suite's defaults: 3 runs
    /// per row, 10 kills.
    pub fn new(args: &BenchArgs, servers: &[String]) -> Result<SuitePlan, BenchError> {
        let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
        if args.workload != Workload::Suite {
            return usage("not a suite");
        }
        if !matches!(args.local, Some(n) if n >= 3) {
            return usage(
                "the suite needs --local 3 (or more): its failover row kills and restarts the \
                 leader, and every row starts a fresh cluster",
            );
        }
        if args.workers.is_some() {
            return usage("the suite sets each row's workers itself (--quick for fewer)");
        }
        let base = Plan::for_scenario(args, servers, Scenario::Uncontended)?;
        Ok(SuitePlan {
            base: Plan {
                runs: args.runs.unwrap_or(3),
                kills: args.kills.unwrap_or(10),
                ..base
            },
            connections: args.connections,
            quick: args.quick,
        })
    }

    /// The plan of one row.
    pub fn row_plan(&self, spec: &RowSpec) -> Plan {
        let workers = if self.quick {
            spec.quick_workers
        } else {
            spec.workers
        };
        Plan {
            scenario: spec.scenario,
            workers,
            clients: workers.min(self.connections),
            // A failover row's spread is over its kills (the issue asks for the median of at
            // least 10 kills), so it makes one run of --kills kills, not --runs of them.
            runs: if spec.scenario == Scenario::Failover {
                1
            } else {
                self.base.runs
            },
            ..self.base.clone()
        }
    }
}

/// What one row of the suite measured.
#[derive(Clone, Debug)]
pub struct SuiteRow {
    /// The row.
    pub spec: &'static RowSpec,
    /// The workers it ran with.
    pub workers: usize,
    /// The scenario's report, or why the row could not run.
    pub outcome: Result<Report, String>,
    /// The leader when the row ended (not for failover, whose leader changes by design).
    pub leader: Option<u64>,
    /// The machine's 1-minute load average when the row started.
    pub load: Option<f64>,
}

impl SuiteRow {
    /// The row's report, if it ran.
    pub fn report(&self) -> Option<&Report> {
        self.outcome.as_ref().ok()
    }

    /// Its throughput over the runs.
    pub fn throughput(&self) -> Option<Spread> {
        self.report()?.throughput()
    }

    /// Its headline latency over the runs (over the kills for failover), in milliseconds.
    pub fn latency(&self) -> Option<Spread> {
        let report = self.report()?;
        match self.spec.headline {
            Headline::Latency { name, percentile } => report.latency_spread(name, percentile),
            Headline::Gap => report.gaps(),
        }
    }

    /// Each node's CPU per operation over the runs, in microseconds, by node id.
    pub fn node_cpu(&self) -> Vec<(u64, Spread)> {
        let Some(report) = self.report() else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = report
            .runs
            .iter()
            .flat_map(|r| r.nodes.iter().map(|n| n.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let per_run = report.runs.iter().filter_map(|r| {
                    let node = r.nodes.iter().find(|n| n.id == id)?;
                    Some(r.per_op_us(node.cpu))
                });
                Some((id, Spread::of(per_run)?))
            })
            .collect()
    }

    /// The nodes' CPU per operation summed, over the runs that measured every node.
    pub fn nodes_cpu_sum(&self, nodes: usize) -> Option<Spread> {
        let report = self.report()?;
        Spread::of(
            report
                .runs
                .iter()
                .filter(|r| r.nodes.len() == nodes)
                .map(|r| r.nodes.iter().map(|n| r.per_op_us(n.cpu)).sum::<f64>()),
        )
    }

    /// The floor measured before the row, if it was.
    pub fn floor(&self) -> Option<&Floor> {
        self.report()?.floor.as_ref()
    }

    /// The headline latency's median as a multiple of the row's floor.
    pub fn x_floor(&self) -> Option<f64> {
        let floor = ms(self.floor()?.total());
        (floor > 0.0).then(|| self.latency().map(|l| l.median / floor))?
    }

    /// The client's (the bench's) CPU per operation over the runs.
    pub fn client_cpu(&self) -> Option<Spread> {
        let report = self.report()?;
        Spread::of(report.runs.iter().map(|r| r.per_op_us(r.client_cpu)))
    }

    /// Failed operations, counting a row that could not run as one.
    pub fn errors(&self) -> u64 {
        self.report().map_or(1, Report::errors)
    }
}

/// A goal beside what the suite measured for it.
#[derive(Clone, Debug)]
pub struct GoalResult {
    /// The goal.
    pub goal: &'static Goal,
    /// The figure (median and spread), if the row measured it.
    pub measured: Option<Spread>,
    /// Whether the median meets the goal; `None` if not measured or under `--quick`.
    pub met: Option<bool>,
}

/// Judges every goal of [`GOALS`] on `rows` (`nodes` local nodes per cluster).
pub fn judge(rows: &[SuiteRow], nodes: usize, quick: bool) -> Vec<GoalResult> {
    GOALS
        .iter()
        .map(|goal| {
            let row = rows.iter().find(|r| r.spec.key == goal.row);
            let measured = row.and_then(|row| match goal.metric {
                Metric::Throughput => row.throughput(),
                Metric::Latency => row.latency(),
                Metric::NodesCpu => row.nodes_cpu_sum(nodes),
            });
            GoalResult {
                goal,
                measured,
                met: measured.filter(|_| !quick).map(|m| goal.met_by(m.median)),
            }
        })
        .collect()
}

/// Runs every row of [`ROWS`], each against a fresh local cluster (see the module doc) and
/// after measuring the floor again.
pub async fn run(plan: &SuitePlan) -> Result<SuiteReport, BenchError> {
    let started = Instant::now();
    let load_start = local::load_average();
    let mut rows = Vec::with_capacity(ROWS.len());
    for (i, spec) in ROWS.iter().enumerate() {
        let row_plan = plan.row_plan(spec);
        if plan.base.progress {
            eprintln!(
                "[suite] row {}/{}: {} with {} workers",
                i + 1,
                ROWS.len(),
                spec.scenario.name(),
                row_plan.workers
            );
        }
        let load = local::load_average();
        let (outcome, leader) = match Target::start(&row_plan).await {
            Ok(target) => {
                let outcome = match scenarios::measure_floor(&row_plan).await {
                    Ok(floor) => scenarios::run_on(&row_plan, &target, floor).await,
                    Err(error) => Err(error),
                };
                let leader = match (&outcome, spec.scenario) {
                    (Ok(_), Scenario::Failover) | (Err(_), _) => None,
                    (Ok(_), _) => target.leader().await,
                };
                // Killing and reaping the nodes blocks: off the runtime's thread.
                let _ = tokio::task::spawn_blocking(move || drop(target)).await;
                (outcome, leader)
            }
            Err(error) => (Err(error), None),
        };
        let outcome = outcome.map_err(|e| crate::client::error_chain(&e));
        if let (Err(error), true) = (&outcome, plan.base.progress) {
            eprintln!("[suite] {} failed: {error}", spec.key);
        }
        rows.push(SuiteRow {
            spec,
            workers: row_plan.workers,
            outcome,
            leader,
            load,
        });
    }
    Ok(SuiteReport {
        nodes: plan.base.local.unwrap_or(0),
        bound: plan.base.bound,
        runs: plan.base.runs,
        kills: plan.base.kills,
        quick: plan.quick,
        rows,
        load_start,
        load_end: local::load_average(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        elapsed: started.elapsed(),
    })
}

/// A row's time bound, as text.
pub fn bound_text(bound: super::Bound) -> String {
    match bound {
        super::Bound::Duration(d) => format!("{d:?}"),
        super::Bound::Ops(n) => format!("{n} ops"),
    }
}

/// How long the whole suite took, as text (`3m 52s`).
pub fn elapsed_text(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}
