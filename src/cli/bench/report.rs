//! What a bench measured and how it is shown: latency percentiles from an HDR histogram, the
//! per-run report, medians and spread over runs, text for people and JSON for machines.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

pub use super::json::{num, object, Json};
pub use crate::cli::duration::ms;

use super::floor::Floor;
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
