//! What a bench measured and how it is shown: latency percentiles from an HDR histogram, the
//! per-run report, medians and spread over runs, text for people and JSON for machines; and
//! the suite's report ([`SuiteReport`], whose JSON schema its doc comment gives), which holds
//! one scenario report per row.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

pub use super::json::{num, object, Json};
pub use crate::cli::duration::ms;

use super::floor::Floor;
use super::suite::{bound_text, elapsed_text, grouped, judge, Cmp, GoalResult, Metric, SuiteRow};
use super::Scenario;

/// A new latency histogram in nanoseconds: 1 ns to 1 hour with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant, valid bounds")
}

/// Records `d` (clamped into the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(ns.max(1));
}

/// The percentiles the bench reports, in this order.
pub const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// Percentiles of one latency over one run.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyStats {
    /// What was timed (`acquire`, `pair`, `handoff`, ...).
    pub name: String,
    /// Samples.
    pub count: u64,
    /// p50, p90, p99 and p99.9 ([`PERCENTILES`]).
    pub percentiles: [Duration; 4],
    /// The largest sample.
    pub max: Duration,
    /// The mean.
    pub mean: Duration,
}

impl LatencyStats {
    /// Reads the percentiles of `histogram` (nanoseconds).
    pub fn from_histogram(name: &str, histogram: &Histogram<u64>) -> LatencyStats {
        let at = |q: f64| {
            if histogram.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_nanos(histogram.value_at_percentile(q))
            }
        };
        LatencyStats {
            name: name.to_string(),
            count: histogram.len(),
            percentiles: PERCENTILES.map(|(_, q)| at(q)),
            max: Duration::from_nanos(if histogram.is_empty() {
                0
            } else {
                histogram.max()
            }),
            mean: Duration::from_secs_f64(histogram.mean().max(0.0) / 1e9),
        }
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.percentiles[0]
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.percentiles[2]
    }

    fn to_json(&self, floor: Option<&Floor>) -> Json {
        let mut fields = vec![
            ("name".to_string(), Json::String(self.name.clone())),
            ("count".to_string(), Json::from(self.count)),
        ];
        for ((label, _), value) in PERCENTILES.iter().zip(self.percentiles) {
            fields.push((format!("{label}_ms"), num(ms(value))));
        }
        fields.push(("max_ms".into(), num(ms(self.max))));
        fields.push(("mean_ms".into(), num(ms(self.mean))));
        if let Some(floor) = floor {
            fields.push(("p50_x_floor".into(), num(floor.multiple(self.p50()))));
            fields.push(("p99_x_floor".into(), num(floor.multiple(self.p99()))));
        }
        Json::Object(fields.into_iter().collect())
    }
}

/// One local node's cost over a run.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSample {
    /// The node's id.
    pub id: u64,
    /// Its process id.
    pub pid: u32,
    /// CPU time (user + system) it used during the run.
    pub cpu: Duration,
    /// Resident memory at the end of the run, KiB.
    pub rss_kib: u64,
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// Operations completed or failed (the scenario's unit: pairs, grants, cycles, sessions).
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time from the first operation to the last worker's end.
    pub elapsed: Duration,
    /// Latencies, the scenario's headline first.
    pub latencies: Vec<LatencyStats>,
    /// Local nodes' CPU and memory (empty against a remote cluster).
    pub nodes: Vec<NodeSample>,
    /// The bench process's own CPU time during the run.
    pub client_cpu: Duration,
    /// The bench process's resident memory at the end, KiB.
    pub client_rss_kib: u64,
    /// Failover: the unavailability gap seen by the clients around each kill.
    pub gaps: Vec<Duration>,
    /// Scenario-specific counts (e.g. resident KiB per session).
    pub counters: Vec<(String, f64)>,
    /// Anything a reader must know to trust the numbers.
    pub notes: Vec<String>,
}

impl RunReport {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.ops - self.errors) as f64 / secs
        } else {
            0.0
        }
    }

    /// Microseconds of `cpu` per successful operation.
    pub fn per_op_us(&self, cpu: Duration) -> f64 {
        let ok = self.ops.saturating_sub(self.errors);
        if ok == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / ok as f64
        }
    }

    /// `cpu` as a fraction of the run's wall time (1.0 = one core busy throughout).
    pub fn utilisation(&self, cpu: Duration) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            cpu.as_secs_f64() / secs
        } else {
            0.0
        }
    }

    /// The latency named `name`.
    pub fn latency(&self, name: &str) -> Option<&LatencyStats> {
        self.latencies.iter().find(|l| l.name == name)
    }

    fn to_json(&self, floor: Option<&Floor>) -> Json {
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                object([
                    ("id", Json::from(n.id)),
                    ("pid", Json::from(u64::from(n.pid))),
                    ("cpu_us_per_op", num(self.per_op_us(n.cpu))),
                    ("cpu_utilisation", num(self.utilisation(n.cpu))),
                    ("rss_kib", Json::from(n.rss_kib)),
                ])
            })
            .collect();
        object([
            ("ops", Json::from(self.ops)),
            ("errors", Json::from(self.errors)),
            ("elapsed_s", num(self.elapsed.as_secs_f64())),
            ("throughput", num(self.throughput())),
            (
                "latency",
                Json::Array(self.latencies.iter().map(|l| l.to_json(floor)).collect()),
            ),
            ("nodes", Json::Array(nodes)),
            (
                "client",
                object([
                    ("cpu_us_per_op", num(self.per_op_us(self.client_cpu))),
                    ("cpu_utilisation", num(self.utilisation(self.client_cpu))),
                    ("rss_kib", Json::from(self.client_rss_kib)),
                ]),
            ),
            (
                "gaps_ms",
                Json::Array(self.gaps.iter().map(|g| num(ms(*g))).collect()),
            ),
            (
                "counters",
                Json::Object(
                    self.counters
                        .iter()
                        .map(|(k, v)| (k.clone(), num(*v)))
                        .collect(),
                ),
            ),
            (
                "notes",
                Json::Array(self.notes.iter().map(|n| Json::String(n.clone())).collect()),
            ),
        ])
    }
}

/// Median, smallest and largest of some figures (the median of an even count is the mean of
/// the middle two).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` if there are none (or any is NaN).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }

    fn to_json(self) -> Json {
        object([
            ("median", num(self.median)),
            ("min", num(self.min)),
            ("max", num(self.max)),
        ])
    }
}

/// A bench's whole result: the setting, the floor and every run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The workload.
    pub scenario: Scenario,
    /// Workers.
    pub workers: usize,
    /// Client connections.
    pub clients: usize,
    /// Each run's bound, as text (`10s`, `20 ops`).
    pub bound: String,
    /// What was driven (`local 1 node`, or the server list).
    pub target: String,
    /// The machine's floor, if measured.
    pub floor: Option<Floor>,
    /// The runs.
    pub runs: Vec<RunReport>,
}

impl Report {
    /// Failed operations over all runs.
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.errors).sum()
    }

    /// Throughput over the runs.
    pub fn throughput(&self) -> Option<Spread> {
        Spread::of(self.runs.iter().map(RunReport::throughput))
    }

    /// The spread over runs of percentile `index` (see [`PERCENTILES`]; 4 is max) of latency
    /// `name`, in milliseconds.
    pub fn latency_spread(&self, name: &str, index: usize) -> Option<Spread> {
        Spread::of(self.runs.iter().filter_map(|r| {
            let l = r.latency(name)?;
            (l.count > 0).then(|| ms(l.percentiles.get(index).copied().unwrap_or(l.max)))
        }))
    }

    /// All failover gaps of all runs.
    pub fn gaps(&self) -> Option<Spread> {
        Spread::of(self.runs.iter().flat_map(|r| r.gaps.iter().map(|g| ms(*g))))
    }

    fn latency_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for run in &self.runs {
            for l in &run.latencies {
                if !names.contains(&l.name) {
                    names.push(l.name.clone());
                }
            }
        }
        names
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Json {
        let floor = self.floor.as_ref();
        let spread = |s: Option<Spread>| s.map_or(Json::Null, Spread::to_json);
        let latency_summary = self
            .latency_names()
            .into_iter()
            .map(|name| {
                let mut fields: Vec<(String, Json)> = PERCENTILES
                    .iter()
                    .enumerate()
                    .map(|(i, (label, _))| {
                        (format!("{label}_ms"), spread(self.latency_spread(&name, i)))
                    })
                    .collect();
                fields.push(("max_ms".into(), spread(self.latency_spread(&name, 4))));
                (name, Json::Object(fields.into_iter().collect()))
            })
            .collect();
        object([
            ("scenario", Json::String(self.scenario.name().into())),
            ("unit", Json::String(self.scenario.unit().into())),
            ("workers", Json::from(self.workers as u64)),
            ("connections", Json::from(self.clients as u64)),
            ("bound", Json::String(self.bound.clone())),
            ("target", Json::String(self.target.clone())),
            ("floor", floor.map_or(Json::Null, Floor::to_json)),
            (
                "runs",
                Json::Array(self.runs.iter().map(|r| r.to_json(floor)).collect()),
            ),
            (
                "summary",
                object([
                    ("runs", Json::from(self.runs.len() as u64)),
                    (
                        "ops",
                        Json::from(self.runs.iter().map(|r| r.ops).sum::<u64>()),
                    ),
                    ("errors", Json::from(self.errors())),
                    ("throughput", spread(self.throughput())),
                    ("latency", Json::Object(latency_summary)),
                    ("gap_ms", spread(self.gaps())),
                ]),
            ),
        ])
    }

    /// The report as text tables.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let unit = self.scenario.unit();
        let _ = writeln!(
            out,
            "raftlock bench {}: {} workers over {} connections, {} per run, {} run(s), {}",
            self.scenario.name(),
            self.workers,
            self.clients,
            self.bound,
            self.runs.len(),
            self.target
        );
        match &self.floor {
            Some(floor) => {
                let _ = writeln!(out, "floor: {floor}");
            }
            None => {
                let _ = writeln!(out, "floor: not measured");
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<5} {:>9} {:>6} {:>12} {:>22}  nodes: cpu/op (utilisation), RSS",
            "run", "ops", "errors", unit, "client cpu/op (util)"
        );
        for (i, run) in self.runs.iter().enumerate() {
            let nodes: Vec<String> = run
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "n{} {:.1} us ({:.0}%), {:.1} MiB",
                        n.id,
                        run.per_op_us(n.cpu),
                        run.utilisation(n.cpu) * 100.0,
                        n.rss_kib as f64 / 1024.0
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "{:<5} {:>9} {:>6} {:>12.1} {:>13.1} us ({:>3.0}%)  {}",
                i + 1,
                run.ops,
                run.errors,
                run.throughput(),
                run.per_op_us(run.client_cpu),
                run.utilisation(run.client_cpu) * 100.0,
                nodes.join("; ")
            );
        }
        if let Some(t) = self.throughput() {
            let _ = writeln!(
                out,
                "throughput: median {:.1} {unit} (min {:.1}, max {:.1})",
                t.median, t.min, t.max
            );
        }
        for name in self.latency_names() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{name} latency (ms) {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
                "p50", "p90", "p99", "p99.9", "max", "p50/floor", "p99/floor"
            );
            let pad = name.len() + " latency (ms)".len();
            for (i, run) in self.runs.iter().enumerate() {
                if let Some(l) = run.latency(&name) {
                    let mut row = format!("{:<pad$}", format!("  run {} (n={})", i + 1, l.count));
                    for p in l.percentiles.iter().chain([&l.max]) {
                        let _ = write!(row, " {:>8.3}", ms(*p));
                    }
                    if let Some(floor) = &self.floor {
                        let _ = write!(
                            row,
                            " {:>9.2} {:>9.2}",
                            floor.multiple(l.p50()),
                            floor.multiple(l.p99())
                        );
                    }
                    let _ = writeln!(out, "{row}");
                }
            }
            if self.runs.len() > 1 {
                let mut median = format!("{:<pad$}", "  median");
                let mut range = format!("{:<pad$}", "  spread");
                for i in 0..5 {
                    match self.latency_spread(&name, i) {
                        Some(s) => {
                            let _ = write!(median, " {:>8.3}", s.median);
                            let _ =
                                write!(range, " {:>8}", format!("±{:.0}%", s.relative() * 100.0));
                        }
                        None => {
                            let _ = write!(median, " {:>8}", "-");
                            let _ = write!(range, " {:>8}", "-");
                        }
                    }
                }
                let _ = writeln!(out, "{median}");
                let _ = writeln!(out, "{range}");
            }
        }
        if let Some(gaps) = self.gaps() {
            let all: Vec<String> = self
                .runs
                .iter()
                .flat_map(|r| r.gaps.iter().map(|g| format!("{:.0}", ms(*g))))
                .collect();
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "failover gaps (ms): {}; median {:.0}, min {:.0}, max {:.0}",
                all.join(", "),
                gaps.median,
                gaps.min,
                gaps.max
            );
        }
        for (i, run) in self.runs.iter().enumerate() {
            for (name, value) in &run.counters {
                let _ = writeln!(out, "run {}: {name} = {value:.1}", i + 1);
            }
            for note in &run.notes {
                let _ = writeln!(out, "run {}: note: {note}", i + 1);
            }
        }
        out
    }
}

impl Spread {
    /// Half the range as a fraction of the median (0 for one run).
    pub fn relative(self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / 2.0 / self.median
        } else {
            0.0
        }
    }
}

/// What `raftlock bench suite` measured: one [`SuiteRow`] per row of [`super::suite::ROWS`],
/// each with the whole [`Report`] of its scenario (which holds the floor measured before it).
///
/// Its JSON (`--json`, one object on one line):
///
/// ```text
/// {"suite": {"local": 3, "bound": "10s", "runs": 3, "kills": 10, "quick": false},
///  "floor_ms": SPREAD or null,                   (over the rows' floors)
///  "load_average": {"start": 1.4, "rows": [1.4, ...], "end": 2.1, "cores": 2},
///  "elapsed_s": 231.5,
///  "rows": [{"row": "uncontended@64",            (the key the goals name)
///            "scenario": "uncontended", "unit": "pairs/s", "workers": 64,
///            "leader": 2 or null,                (at the row's end; null for failover)
///            "floor_ms": 0.27 or null,           (measured before the row)
///            "throughput": SPREAD or null,
///            "latency": {"name": "acquire p99", "ms": SPREAD or null,
///                        "x_floor": 12.3 or null},   (the median over the row's floor)
///            "cpu_us_per_op": {"nodes": [{"id": 1, "median": .., "min": .., "max": ..}],
///                              "nodes_sum": SPREAD or null, "client": SPREAD or null},
///            "goals": [GOAL, ...],               (this row's, in GOALS order)
///            "errors": 0,
///            "error": null or "why the row could not run",
///            "report": REPORT or null},          (the scenario's whole report)
///           ...],
///  "goals": [GOAL, ...],                         (every goal, in GOALS order)
///  "goals_met": 2 or null,                       (null under --quick)
///  "errors": 0}
/// ```
///
/// where SPREAD is `{"median": .., "min": .., "max": ..}` over the row's runs (over the kills
/// for failover's gap) and GOAL is `{"issue": 15, "row": "uncontended@64", "metric":
/// "throughput" | "latency_ms" | "nodes_cpu_us_per_op", "goal": "≥ 20,000 pairs/s", "cmp":
/// "at_least" | "at_most", "target": 20000, "measured": SPREAD or null, "met": true, false or
/// null}`.
#[derive(Clone, Debug)]
pub struct SuiteReport {
    /// Local nodes per cluster.
    pub nodes: usize,
    /// Each run's bound.
    pub bound: super::Bound,
    /// Runs per row (failover makes one).
    pub runs: usize,
    /// Leader kills of the failover row.
    pub kills: usize,
    /// `--quick`: smaller worker counts, goals not judged.
    pub quick: bool,
    /// The rows, in the order they ran.
    pub rows: Vec<SuiteRow>,
    /// The 1-minute load average when the suite started.
    pub load_start: Option<f64>,
    /// And when it ended.
    pub load_end: Option<f64>,
    /// The machine's cores.
    pub cores: usize,
    /// How long the whole suite took.
    pub elapsed: Duration,
}

impl SuiteReport {
    /// Failed operations over all rows (a row that could not run counts as one).
    pub fn errors(&self) -> u64 {
        self.rows.iter().map(SuiteRow::errors).sum()
    }

    /// Every goal beside its figure.
    pub fn goals(&self) -> Vec<GoalResult> {
        judge(&self.rows, self.nodes, self.quick)
    }

    /// The rows' floors, in milliseconds.
    pub fn floors(&self) -> Option<Spread> {
        Spread::of(
            self.rows
                .iter()
                .filter_map(|r| Some(ms(r.floor()?.total()))),
        )
    }

    /// The report as one JSON object (schema above).
    pub fn to_json(&self) -> Json {
        let spread = |s: Option<Spread>| s.map_or(Json::Null, Spread::to_json);
        let goals = self.goals();
        let goal_json = |g: &GoalResult| {
            object([
                ("issue", Json::from(g.goal.issue)),
                ("row", Json::String(g.goal.row.into())),
                ("metric", Json::String(g.goal.metric.name().into())),
                ("goal", Json::String(g.goal.describe())),
                (
                    "cmp",
                    Json::String(
                        match g.goal.cmp {
                            Cmp::AtLeast => "at_least",
                            Cmp::AtMost => "at_most",
                        }
                        .into(),
                    ),
                ),
                ("target", num(g.goal.target)),
                ("measured", spread(g.measured)),
                ("met", g.met.map_or(Json::Null, Json::Bool)),
            ])
        };
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let latency = row.latency();
                let nodes = row
                    .node_cpu()
                    .into_iter()
                    .map(|(id, s)| {
                        object([
                            ("id", Json::from(id)),
                            ("median", num(s.median)),
                            ("min", num(s.min)),
                            ("max", num(s.max)),
                        ])
                    })
                    .collect();
                object([
                    ("row", Json::String(row.spec.key.into())),
                    ("scenario", Json::String(row.spec.scenario.name().into())),
                    ("unit", Json::String(row.spec.scenario.unit().into())),
                    ("workers", Json::from(row.workers as u64)),
                    ("leader", row.leader.map_or(Json::Null, Json::from)),
                    (
                        "floor_ms",
                        row.floor().map_or(Json::Null, |f| num(ms(f.total()))),
                    ),
                    ("throughput", spread(row.throughput())),
                    (
                        "latency",
                        object([
                            ("name", Json::String(row.spec.headline.label())),
                            ("ms", spread(latency)),
                            ("x_floor", row.x_floor().map_or(Json::Null, num)),
                        ]),
                    ),
                    (
                        "cpu_us_per_op",
                        object([
                            ("nodes", Json::Array(nodes)),
                            ("nodes_sum", spread(row.nodes_cpu_sum(self.nodes))),
                            ("client", spread(row.client_cpu())),
                        ]),
                    ),
                    (
                        "goals",
                        Json::Array(
                            goals
                                .iter()
                                .filter(|g| g.goal.row == row.spec.key)
                                .map(goal_json)
                                .collect(),
                        ),
                    ),
                    ("errors", Json::from(row.errors())),
                    (
                        "error",
                        row.outcome
                            .as_ref()
                            .err()
                            .map_or(Json::Null, |e| Json::String(e.clone())),
                    ),
                    ("report", row.report().map_or(Json::Null, Report::to_json)),
                ])
            })
            .collect();
        let load = |l: Option<f64>| l.map_or(Json::Null, num);
        object([
            (
                "suite",
                object([
                    ("local", Json::from(self.nodes as u64)),
                    ("bound", Json::String(bound_text(self.bound))),
                    ("runs", Json::from(self.runs as u64)),
                    ("kills", Json::from(self.kills as u64)),
                    ("quick", Json::Bool(self.quick)),
                ]),
            ),
            ("floor_ms", spread(self.floors())),
            (
                "load_average",
                object([
                    ("start", load(self.load_start)),
                    (
                        "rows",
                        Json::Array(self.rows.iter().map(|r| load(r.load)).collect()),
                    ),
                    ("end", load(self.load_end)),
                    ("cores", Json::from(self.cores as u64)),
                ]),
            ),
            ("elapsed_s", num(self.elapsed.as_secs_f64())),
            ("rows", Json::Array(rows)),
            ("goals", Json::Array(goals.iter().map(goal_json).collect())),
            (
                "goals_met",
                if self.quick {
                    Json::Null
                } else {
                    Json::from(goals.iter().filter(|g| g.met == Some(true)).count() as u64)
                },
            ),
            ("errors", Json::from(self.errors())),
        ])
    }

    /// The report as text: a header, then one Markdown table (rows beside their goals, ready
    /// to paste into docs/performance.md), then the failover gaps and the rows' notes.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "raftlock bench suite: --local {}, a fresh cluster per row, {} per run, {} run(s) per row \
             (failover: one run of {} leader kills){}; took {}",
            self.nodes,
            bound_text(self.bound),
            self.runs,
            self.kills,
            if self.quick {
                ", --quick: fewer workers, goals not judged"
            } else {
                ""
            },
            elapsed_text(self.elapsed)
        );
        let floors: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| {
                let f = r.floor()?;
                Some(format!(
                    "{} ({} + {})",
                    ms_text(ms(f.total())),
                    ms_text(ms(f.fsync)),
                    ms_text(ms(f.rtt))
                ))
            })
            .collect();
        if floors.is_empty() {
            let _ = writeln!(out, "floor: not measured");
        } else {
            let _ = writeln!(
                out,
                "floor before each row (ms; fdatasync of a 4 KiB overwrite + loopback RTT): {}",
                floors.join(" / ")
            );
        }
        let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
        let _ = writeln!(
            out,
            "machine load average (1 min): {} at the start, {} at each row's start, {} at the end; {} cores",
            load(self.load_start),
            self.rows
                .iter()
                .map(|r| load(r.load))
                .collect::<Vec<_>>()
                .join(" / "),
            load(self.load_end),
            self.cores
        );
        let goals = self.goals();
        let _ = writeln!(out);
        let node_ids: Vec<String> = (1..=self.nodes).map(|i| format!("n{i}")).collect();
        let _ = writeln!(
            out,
            "| row | throughput, median (min–max) | latency (ms), median (min–max) | × floor | goal (issue) | met | CPU µs/op {} (* leader) | nodes Σ | client |",
            node_ids.join(" / ")
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        let met_text = |m: Option<bool>| match m {
            Some(true) => "yes",
            Some(false) => "no",
            None => "–",
        };
        for row in &self.rows {
            let label = if self.quick {
                format!("{}@{} (quick)", row.spec.scenario.name(), row.workers)
            } else {
                row.spec.key.to_string()
            };
            if let Err(error) = &row.outcome {
                let _ = writeln!(out, "| {label} | failed: {error} | | | | | | | |");
                continue;
            }
            // The nodes' sum has a row of its own below, as in the issue's table.
            let mine: Vec<&GoalResult> = goals
                .iter()
                .filter(|g| g.goal.row == row.spec.key && g.goal.metric != Metric::NodesCpu)
                .collect();
            let latency = row.latency();
            let cpu = row
                .node_cpu()
                .into_iter()
                .map(|(id, s)| {
                    let star = if row.leader == Some(id) { "*" } else { "" };
                    format!("{}{star}", us_text(s.median))
                })
                .collect::<Vec<_>>();
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.throughput().map_or("–".into(), |t| format!(
                    "{} {}",
                    spread_text(t, grouped),
                    row.spec.scenario.unit()
                )),
                latency.map_or("–".into(), |l| format!(
                    "{} {}",
                    row.spec.headline.label(),
                    spread_text(l, ms_text)
                )),
                row.x_floor().map_or("–".into(), |x| format!("{x:.1}")),
                if mine.is_empty() {
                    "–".to_string()
                } else {
                    mine.iter()
                        .map(|g| format!("{} (#{})", g.goal.describe(), g.goal.issue))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                if mine.is_empty() {
                    "–".to_string()
                } else {
                    mine.iter()
                        .map(|g| met_text(g.met))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                if cpu.is_empty() {
                    "–".to_string()
                } else {
                    cpu.join(" / ")
                },
                row.nodes_cpu_sum(self.nodes)
                    .map_or("–".into(), |s| spread_text(s, us_text)),
                row.client_cpu().map_or("–".into(), |s| us_text(s.median)),
            );
        }
        for g in goals.iter().filter(|g| g.goal.metric == Metric::NodesCpu) {
            let _ = writeln!(
                out,
                "| server CPU per op at {} ({} nodes summed) | | | | {} (#{}) | {} | | {} | |",
                g.goal.row,
                self.nodes,
                g.goal.describe(),
                g.goal.issue,
                met_text(g.met),
                g.measured.map_or("–".into(), |s| spread_text(s, us_text)),
            );
        }
        if !self.quick {
            let _ = writeln!(
                out,
                "\ngoals met: {} of {}",
                goals.iter().filter(|g| g.met == Some(true)).count(),
                goals.len()
            );
        }
        for row in &self.rows {
            let Some(report) = row.report() else { continue };
            let gaps: Vec<String> = report
                .runs
                .iter()
                .flat_map(|r| r.gaps.iter().map(|g| format!("{:.0}", ms(*g))))
                .collect();
            if !gaps.is_empty() {
                let _ = writeln!(out, "{}: gaps (ms) {}", row.spec.key, gaps.join(", "));
            }
            for (i, run) in report.runs.iter().enumerate() {
                for note in run.notes.iter().filter(|n| !n.starts_with(LOAD_NOTE)) {
                    let _ = writeln!(out, "{} run {}: note: {note}", row.spec.key, i + 1);
                }
                if run.errors > 0 {
                    let _ = writeln!(
                        out,
                        "{} run {}: {} of {} operations failed",
                        row.spec.key,
                        i + 1,
                        run.errors,
                        run.ops
                    );
                }
            }
        }
        out
    }
}

/// How each run's note on the machine's load begins (the suite prints the load once, itself).
pub const LOAD_NOTE: &str = "machine load average (1 min):";

/// `s` as `median (min–max)`, or just the median when every run gave the same figure.
fn spread_text(s: Spread, f: impl Fn(f64) -> String) -> String {
    if s.min == s.max {
        f(s.median)
    } else {
        format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
    }
}

/// Milliseconds with three significant figures or so.
fn ms_text(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.3}")
    } else if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// Microseconds: whole from 100 up, one decimal below.
fn us_text(x: f64) -> String {
    if x >= 100.0 {
        grouped(x)
    } else {
        format!("{x:.1}")
    }
}
