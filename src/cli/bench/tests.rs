//! Unit tests of the bench's pure parts: arguments, percentiles, spread, hand-off pairing,
//! failover gaps, `/proc` parsing and the JSON shape.

use std::time::{Duration, Instant};

use clap::Parser;

use super::floor::Floor;
use super::local::{parse_stat_cpu, parse_vm_rss};
use super::report::{histogram, record, LatencyStats, NodeSample, Report, RunReport, Spread};
use super::scenarios::{gaps, handoffs, Grant, Release};
use super::suite::{self, judge, row_spec, SuitePlan, SuiteRow, GOALS, ROWS};
use super::{BenchError, Bound, Plan, Scenario, SuiteReport};
use crate::cli::{Cli, Command};

fn plan(args: &[&str]) -> Result<Plan, BenchError> {
    let mut argv = vec!["raftlock"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| BenchError::Usage(e.to_string()))?;
    match cli.command {
        Command::Bench(args) => Plan::new(&args, &cli.servers),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn arguments_parse_with_per_scenario_defaults() {
    let p = plan(&["bench", "uncontended"]).expect("valid");
    assert_eq!(p.scenario, Scenario::Uncontended);
    assert_eq!(p.workers, 1);
    assert_eq!(p.clients, 1);
    assert_eq!(p.bound, Bound::Duration(Duration::from_secs(10)));
    assert_eq!(p.servers, vec!["127.0.0.1:7400".to_string()]);
    assert_eq!(p.local, None);
    assert_eq!(p.runs, 1);

    let p = plan(&["bench", "contended", "--local", "1", "--ops", "500"]).expect("valid");
    assert_eq!(p.workers, 16);
    assert_eq!(p.clients, 8, "16 workers share min(16, 8) connections");
    assert_eq!(p.bound, Bound::Ops(500));
    assert_eq!(p.local, Some(1));

    let p = plan(&[
        "--servers",
        "a:1,b:2",
        "bench",
        "uncontended",
        "--workers",
        "64",
        "--connections",
        "64",
        "--duration",
        "2s",
        "--runs",
        "3",
    ])
    .expect("valid");
    assert_eq!(p.workers, 64);
    assert_eq!(p.clients, 64);
    assert_eq!(p.bound, Bound::Duration(Duration::from_secs(2)));
    assert_eq!(p.servers, vec!["a:1".to_string(), "b:2".to_string()]);
    assert_eq!(p.runs, 3);

    let p = plan(&["bench", "sessions", "--ops", "20"]).expect("valid");
    assert_eq!(p.sessions, 20, "--ops stands for --sessions");
    let p = plan(&["bench", "sessions", "--sessions", "100000", "--hold", "1s"]).expect("valid");
    assert_eq!(p.sessions, 100_000);
    assert_eq!(p.clients, 8, "sessions spread over every connection");
    assert_eq!(p.hold, Duration::from_secs(1));

    let p = plan(&["bench", "failover", "--local", "3", "--kills", "5"]).expect("valid");
    assert_eq!(p.workers, 4);
    assert_eq!(p.kills, 5);
}

#[test]
fn unrunnable_arguments_are_refused() {
    for bad in [
        &["bench", "uncontended", "--workers", "0"][..],
        &["bench", "uncontended", "--ops", "0"],
        &["bench", "uncontended", "--duration", "0s"],
        &["bench", "uncontended", "--duration", "1s", "--ops", "5"],
        &["bench", "uncontended", "--local", "0"],
        &["bench", "uncontended", "--connections", "0"],
        &["bench", "uncontended", "--runs", "0"],
        &["bench", "failover"],
        &["bench", "failover", "--local", "1"],
        &["bench", "append", "--append-size", "0"],
        &["bench", "append", "--append-size", "2000000"],
        &["bench", "nosuchscenario"],
        &["bench", "uncontended", "--duration", "soon"],
        &["bench", "uncontended", "--quick"],
        &["bench", "suite", "--local", "3"],
    ] {
        assert!(plan(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn percentiles_come_from_the_histogram() {
    let mut h = histogram();
    for ms in 1..=1000u64 {
        record(&mut h, Duration::from_millis(ms));
    }
    let stats = LatencyStats::from_histogram("acquire", &h);
    assert_eq!(stats.count, 1000);
    let close = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() <= ms * 0.002;
    assert!(close(stats.percentiles[0], 500.0), "{stats:?}");
    assert!(close(stats.percentiles[1], 900.0), "{stats:?}");
    assert!(close(stats.percentiles[2], 990.0), "{stats:?}");
    assert!(close(stats.percentiles[3], 999.0), "{stats:?}");
    assert!(close(stats.max, 1000.0), "{stats:?}");
    assert!(close(stats.mean, 500.5), "{stats:?}");

    let empty = LatencyStats::from_histogram("none", &histogram());
    assert_eq!(empty.count, 0);
    assert_eq!(empty.max, Duration::ZERO);
    assert_eq!(empty.p50(), Duration::ZERO);
}

#[test]
fn spread_is_median_min_and_max() {
    let s = Spread::of([3.0, 1.0, 2.0]).expect("values");
    assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    let s = Spread::of([4.0, 1.0, 2.0, 3.0]).expect("values");
    assert_eq!(s.median, 2.5);
    assert_eq!(s.relative(), 1.5 / 2.5);
    assert!(Spread::of([]).is_none());
    assert!(Spread::of([1.0, f64::NAN]).is_none());
}

#[test]
fn handoffs_pair_each_release_with_the_next_grant() {
    let t = Instant::now();
    let at = |us: u64| t + Duration::from_micros(us);
    // Grants 10, 20, 30 (arriving out of order across workers); 20's grant arrives before
    // 10's release acknowledgement is seen; 30 was never released (the run ended).
    let grants = vec![
        Grant {
            fence: 20,
            at: at(1_000),
        },
        Grant {
            fence: 10,
            at: at(0),
        },
        Grant {
            fence: 30,
            at: at(3_500),
        },
    ];
    let releases = vec![
        Release {
            fence: 20,
            sent: at(2_000),
            acked: at(3_000),
        },
        Release {
            fence: 10,
            sent: at(500),
            acked: at(1_100),
        },
    ];
    let h = handoffs(grants, releases);
    assert_eq!(h.from_send.len(), 2);
    assert_eq!(h.from_ack.len(), 2);
    assert_eq!(h.grant_first, 1);
    // 10 -> 20: sent at 500, granted at 1000: 500 us. 20 -> 30: sent 2000, granted 3500.
    let send = LatencyStats::from_histogram("s", &h.from_send);
    assert!(
        (send.percentiles[0].as_micros() as i64 - 500).abs() <= 1,
        "{send:?}"
    );
    assert!((send.max.as_micros() as i64 - 1_500).abs() <= 2, "{send:?}");
    // From the ack: 0 (grant first) and 3500 - 3000 = 500 us.
    let ack = LatencyStats::from_histogram("a", &h.from_ack);
    assert!((ack.max.as_micros() as i64 - 500).abs() <= 1, "{ack:?}");
}

#[test]
fn failover_gap_is_the_longest_silence_around_each_kill() {
    let t = Instant::now() + Duration::from_secs(10);
    let at = |ms: u64| t + Duration::from_millis(ms);
    // Steady every 10 ms, a kill at 1000 with one answer already on its way (1001), silence
    // until 1700; a second kill at 5000, silence from 4990 to 5300.
    let mut times: Vec<Instant> = (0..=100).map(|i| at(i * 10)).collect();
    times.push(at(1_001));
    times.extend((0..=300).map(|i| at(1_700 + i * 10)));
    times.extend((0..100).map(|i| at(4_000 + i * 10)));
    times.extend((0..100).map(|i| at(5_300 + i * 10)));
    times.sort_unstable();
    let g = gaps(&times, &[at(1_000), at(5_000)]);
    assert_eq!(
        g,
        vec![Duration::from_millis(699), Duration::from_millis(310)]
    );
    assert_eq!(gaps(&[], &[at(0)]), vec![Duration::ZERO]);
}

#[test]
fn proc_files_parse() {
    let status = "Name:\traftlockd\nVmPeak:\t  12345 kB\nVmRSS:\t    5920 kB\nThreads:\t5\n";
    assert_eq!(parse_vm_rss(status), Some(5920));
    assert_eq!(parse_vm_rss("Name: x\n"), None);
    let stat = "1234 (raft lockd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0";
    assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(3)));
    assert_eq!(parse_stat_cpu("garbage", 100), None);
    assert_eq!(parse_stat_cpu("1 (x) S 1", 100), None);
}

fn sample_report() -> Report {
    let mut h = histogram();
    for us in [100u64, 200, 300, 400] {
        record(&mut h, Duration::from_micros(us));
    }
    let run = |ops: u64, secs: u64| RunReport {
        ops,
        errors: 0,
        elapsed: Duration::from_secs(secs),
        latencies: vec![LatencyStats::from_histogram("acquire", &h)],
        nodes: vec![NodeSample {
            id: 1,
            pid: 42,
            cpu: Duration::from_millis(500),
            rss_kib: 2048,
        }],
        client_cpu: Duration::from_millis(100),
        client_rss_kib: 1024,
        gaps: vec![],
        counters: vec![("answer".into(), 42.0)],
        notes: vec!["a \"quoted\" note".into()],
    };
    Report {
        scenario: Scenario::Uncontended,
        workers: 4,
        clients: 2,
        bound: "20 ops".into(),
        target: "--local 1".into(),
        floor: Some(Floor {
            fsync: Duration::from_micros(900),
            fsync_append: Duration::from_millis(2),
            fsync_samples: 200,
            rtt: Duration::from_micros(100),
            rtt_samples: 2000,
            dir: std::env::temp_dir(),
        }),
        runs: vec![run(1000, 1), run(3000, 1), run(2000, 1)],
    }
}

#[test]
fn json_report_has_the_documented_shape() {
    let report = sample_report();
    let json = report.to_json();
    let text = json.to_string();
    assert!(text.starts_with("{\"scenario\":\"uncontended\",\"unit\":\"pairs/s\","));
    assert!(text.contains("\"a \\\"quoted\\\" note\""), "{text}");
    for key in [
        "workers",
        "connections",
        "bound",
        "target",
        "floor",
        "runs",
        "summary",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {text}");
    }
    let floor = json.get("floor").expect("floor");
    assert_eq!(
        floor.get("floor_ms").map(ToString::to_string).as_deref(),
        Some("1")
    );
    let summary = json.get("summary").expect("summary");
    assert_eq!(
        summary.get("ops").map(ToString::to_string).as_deref(),
        Some("6000")
    );
    assert_eq!(
        summary.get("errors").map(ToString::to_string).as_deref(),
        Some("0")
    );
    assert_eq!(
        summary
            .get("throughput")
            .map(ToString::to_string)
            .as_deref(),
        Some("{\"median\":2000,\"min\":1000,\"max\":3000}")
    );
    let p50 = summary
        .get("latency")
        .and_then(|l| l.get("acquire"))
        .and_then(|a| a.get("p50_ms"))
        .expect("summary latency");
    assert!(p50.get("median").is_some() && p50.get("min").is_some());
    let super::Json::Array(runs) = json.get("runs").expect("runs") else {
        panic!("runs is not an array");
    };
    assert_eq!(runs.len(), 3);
    let first = &runs[0];
    for key in [
        "ops",
        "errors",
        "elapsed_s",
        "throughput",
        "latency",
        "nodes",
        "client",
    ] {
        assert!(first.get(key).is_some(), "no {key} in a run");
    }
    let super::Json::Array(latency) = first.get("latency").expect("latency") else {
        panic!("latency is not an array");
    };
    for key in [
        "name",
        "count",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p99.9_ms",
        "max_ms",
        "p50_x_floor",
        "p99_x_floor",
    ] {
        assert!(latency[0].get(key).is_some(), "no {key} in a latency");
    }
    // 0.5 s of node CPU over 1000 ops is 500 us per op.
    let node = match first.get("nodes") {
        Some(super::Json::Array(nodes)) => nodes[0].clone(),
        other => panic!("nodes: {other:?}"),
    };
    assert_eq!(
        node.get("cpu_us_per_op")
            .map(ToString::to_string)
            .as_deref(),
        Some("500")
    );
}

#[test]
fn text_report_names_every_run_and_the_median() {
    let text = sample_report().to_text();
    assert!(text.contains("raftlock bench uncontended: 4 workers over 2 connections"));
    assert!(text.contains("throughput: median 2000.0 pairs/s (min 1000.0, max 3000.0)"));
    assert!(text.contains("  run 3 (n=4)"), "{text}");
    assert!(text.contains("  median"), "{text}");
    assert!(
        text.contains("floor: fdatasync of a 4 KiB write 0.900 ms"),
        "{text}"
    );
}

fn suite_plan(args: &[&str]) -> Result<SuitePlan, BenchError> {
    let mut argv = vec!["raftlock", "bench", "suite"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| BenchError::Usage(e.to_string()))?;
    match cli.command {
        Command::Bench(args) => SuitePlan::new(&args, &cli.servers),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn suite_arguments_parse_with_the_suites_defaults() {
    let s = suite_plan(&["--local", "3"]).expect("valid");
    assert_eq!(s.base.runs, 3);
    assert_eq!(s.base.kills, 10);
    assert_eq!(s.base.bound, Bound::Duration(Duration::from_secs(10)));
    assert_eq!(s.base.local, Some(3));
    assert!(!s.quick);
    let workers: Vec<(Scenario, usize, usize)> = ROWS
        .iter()
        .map(|r| {
            let p = s.row_plan(r);
            (p.scenario, p.workers, p.runs)
        })
        .collect();
    assert_eq!(
        workers,
        vec![
            (Scenario::Uncontended, 1, 3),
            (Scenario::Uncontended, 16, 3),
            (Scenario::Uncontended, 64, 3),
            (Scenario::Contended, 16, 3),
            (Scenario::Append, 1, 3),
            (Scenario::Failover, 4, 1),
        ],
        "failover makes one run of --kills kills"
    );
    assert_eq!(
        s.row_plan(&ROWS[2]).clients,
        8,
        "64 workers over 8 connections"
    );

    let s = suite_plan(&[
        "--local",
        "3",
        "--duration",
        "1s",
        "--runs",
        "1",
        "--kills",
        "1",
        "--quick",
    ])
    .expect("valid");
    assert_eq!((s.base.runs, s.base.kills, s.quick), (1, 1, true));
    assert_eq!(s.row_plan(&ROWS[2]).workers, 4);
    assert_eq!(s.row_plan(&ROWS[3]).workers, 4);

    for bad in [
        &[][..],
        &["--local", "1"],
        &["--servers", "a:1", "--local", "2"],
        &["--local", "3", "--workers", "8"],
        &["--local", "3", "--runs", "0"],
        &["--local", "3", "--kills", "0"],
        &["--local", "3", "--duration", "0s"],
    ] {
        assert!(suite_plan(bad).is_err(), "suite {bad:?} was accepted");
    }
}

#[test]
fn every_goal_names_a_row_of_the_suite() {
    assert_eq!(GOALS.len(), 9, "issue 15's table: 8 goals and append's");
    for goal in GOALS {
        assert_eq!(goal.issue, 15);
        assert!(row_spec(goal.row).is_some(), "{goal:?} names no row");
    }
    let keys: Vec<&str> = ROWS.iter().map(|r| r.key).collect();
    let mut unique = keys.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(keys.len(), unique.len(), "row keys are unique: {keys:?}");
    let described: Vec<String> = GOALS.iter().map(|g| g.describe()).collect();
    assert_eq!(described[2], "≥ 20,000 pairs/s");
    assert_eq!(described[3], "acquire p99 ≤ 3 ms");
    assert_eq!(described[6], "hand-off p50 ≤ 0.5 ms");
    assert_eq!(described[8], "failover gap ≤ 100 ms");
    assert_eq!(suite::grouped(1_234_567.4), "1,234,567");
    assert_eq!(suite::grouped(999.6), "1,000");
    assert_eq!(suite::grouped(12.0), "12");
}

/// A suite report whose every row is `sample_report()` (4 latencies of 0.1-0.4 ms, 1000 to
/// 3000 ops/s over 3 runs, one node at 500 ms of CPU), the failover row with gaps.
fn sample_suite(quick: bool) -> SuiteReport {
    let rows = ROWS
        .iter()
        .map(|spec| {
            let mut report = sample_report();
            report.scenario = spec.scenario;
            if spec.scenario == Scenario::Failover {
                report.runs.truncate(1);
                report.runs[0].gaps = vec![Duration::from_millis(80), Duration::from_millis(120)];
                report.runs[0].nodes.clear();
            }
            for run in &mut report.runs {
                run.latencies = ["acquire", "handoff_from_send", "cycle"]
                    .iter()
                    .map(|name| LatencyStats {
                        name: (*name).into(),
                        ..run.latencies[0].clone()
                    })
                    .collect();
            }
            SuiteRow {
                spec,
                workers: spec.workers,
                outcome: Ok(report),
                leader: Some(1),
                load: Some(1.5),
            }
        })
        .collect();
    SuiteReport {
        nodes: 1,
        bound: Bound::Duration(Duration::from_secs(1)),
        runs: 3,
        kills: 2,
        quick,
        rows,
        load_start: Some(1.0),
        load_end: Some(2.0),
        cores: 2,
        elapsed: Duration::from_secs(75),
    }
}

#[test]
fn goals_are_judged_on_the_rows_medians() {
    let report = sample_suite(false);
    let results = judge(&report.rows, 1, false);
    let met: Vec<Option<bool>> = results.iter().map(|g| g.met).collect();
    // Throughput median 2000/s: meets 800, 1500 and 500, misses 10,000 and 20,000. Acquire
    // p99 0.4 ms meets 3 ms; hand-off p50 0.2 ms meets 0.5 ms; 500 us of one node's CPU per op
    // misses 50 us; the failover gaps' median (80, 120) is 100 ms, which meets <= 100.
    assert_eq!(
        met,
        [true, false, false, true, false, true, true, true, true].map(Some)
    );
    let gap = results[8].measured.expect("gaps");
    assert_eq!((gap.median, gap.min, gap.max), (100.0, 80.0, 120.0));
    assert!(judge(&report.rows, 1, true).iter().all(|g| g.met.is_none()));
    assert!(
        judge(&report.rows, 3, false)[4].measured.is_none(),
        "no run measured 3 nodes"
    );
}

#[test]
fn suite_json_has_the_documented_shape() {
    let report = sample_suite(false);
    let json = report.to_json();
    let text = json.to_string();
    assert!(text.starts_with("{\"suite\":{\"local\":1,\"bound\":\"1s\",\"runs\":3,"));
    for key in [
        "suite",
        "floor_ms",
        "load_average",
        "elapsed_s",
        "rows",
        "goals",
        "goals_met",
        "errors",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {text}");
    }
    assert_eq!(json.get("goals_met"), Some(&super::Json::from(6)));
    let super::Json::Array(rows) = json.get("rows").expect("rows") else {
        panic!("rows is not an array");
    };
    assert_eq!(rows.len(), ROWS.len());
    let row = &rows[2];
    for key in [
        "row",
        "scenario",
        "unit",
        "workers",
        "leader",
        "floor_ms",
        "throughput",
        "latency",
        "cpu_us_per_op",
        "goals",
        "errors",
        "error",
        "report",
    ] {
        assert!(row.get(key).is_some(), "no {key} in a row");
    }
    assert_eq!(row.get("row"), Some(&super::Json::from("uncontended@64")));
    // acquire p99 0.4 ms over a 1 ms floor.
    assert_eq!(
        row.get("latency").map(ToString::to_string).as_deref(),
        Some("{\"name\":\"acquire p99\",\"ms\":{\"median\":0.4,\"min\":0.4,\"max\":0.4},\"x_floor\":0.4}")
    );
    let cpu = row.get("cpu_us_per_op").expect("cpu");
    // 500 ms of CPU over 1000, 3000 and 2000 ops: 500, 166.667 and 250 us per op.
    assert_eq!(
        cpu.get("nodes").map(ToString::to_string).as_deref(),
        Some("[{\"id\":1,\"median\":250,\"min\":166.667,\"max\":500}]")
    );
    assert!(cpu.get("nodes_sum").is_some() && cpu.get("client").is_some());
    let super::Json::Array(goals) = row.get("goals").expect("goals") else {
        panic!("goals is not an array");
    };
    assert_eq!(
        goals.len(),
        3,
        "throughput, p99 and the nodes' CPU at 64 workers"
    );
    for key in [
        "issue", "row", "metric", "goal", "cmp", "target", "measured", "met",
    ] {
        assert!(goals[0].get(key).is_some(), "no {key} in a goal");
    }
    assert_eq!(
        row.get("report")
            .and_then(|r| r.get("scenario"))
            .map(ToString::to_string)
            .as_deref(),
        Some("\"uncontended\"")
    );
}

#[test]
fn suite_text_is_one_table_with_every_row_and_goal() {
    let text = sample_suite(false).to_text();
    assert!(
        text.contains("+ loopback RTT): 1.00 (0.900 + 0.100) / 1.00 (0.900 + 0.100) / "),
        "{text}"
    );
    assert!(
        text.contains("1.00 at the start, 1.50 / 1.50 / 1.50 / 1.50 / 1.50 / 1.50 at each row's start, 2.00 at the end; 2 cores"),
        "{text}"
    );
    for row in ROWS {
        assert!(
            text.contains(&format!("| {} | ", row.key)),
            "no {} in {text}",
            row.key
        );
    }
    assert!(
        text.contains("| uncontended@64 | 2,000 (1,000–3,000) pairs/s | acquire p99 0.400 | 0.4 | ≥ 20,000 pairs/s (#15); acquire p99 ≤ 3 ms (#15) | no; yes | 250* | 250 (167–500) | 50.0 |"),
        "{text}"
    );
    assert!(
        text.contains("| server CPU per op at uncontended@64 (1 nodes summed) |"),
        "{text}"
    );
    assert!(text.contains("goals met: 6 of 9"), "{text}");
    assert!(text.contains("failover: gaps (ms) 80, 120"), "{text}");
    let quick = sample_suite(true).to_text();
    assert!(quick.contains("| uncontended@64 (quick) |"), "{quick}");
    assert!(!quick.contains("goals met"), "{quick}");
}
