//! `raftlock bench --local 1` end to end, with tiny op counts: every single-node scenario runs
//! against a daemon the bench starts itself, and its JSON report counts exactly the operations
//! asked for, with no errors; and a short `raftlock bench suite --local 3` reports every row of
//! issue 15's table. Timings are not asserted (the machine is shared).

use std::process::Command;

/// Runs `raftlock bench ARGS --local 1 --json` with a small floor and returns its stdout.
fn bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_raftlock"))
        .arg("bench")
        .args(args)
        .args([
            "--local",
            "1",
            "--json",
            "--quiet",
            "--fsync-samples",
            "5",
            "--rtt-samples",
            "50",
        ])
        .output()
        .expect("run raftlock bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "raftlock bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    stdout
}

fn assert_has(report: &str, needle: &str) {
    assert!(report.contains(needle), "{needle} not in {report}");
}

#[test]
fn uncontended_counts_every_pair() {
    let r = bench(&["uncontended", "--workers", "3", "--ops", "20"]);
    assert_has(&r, "\"scenario\":\"uncontended\"");
    assert_has(&r, "\"summary\":{\"runs\":1,\"ops\":20,\"errors\":0");
    assert_has(&r, "{\"name\":\"acquire\",\"count\":20,");
    assert_has(&r, "{\"name\":\"pair\",\"count\":20,");
    assert_has(&r, "\"floor\":{\"fsync_ms\":");
    assert_has(&r, "\"nodes\":[{\"id\":1,");
}

#[test]
fn uncontended_over_tls_counts_every_pair() {
    let r = bench(&["uncontended", "--tls", "--workers", "3", "--ops", "20"]);
    assert_has(&r, "\"summary\":{\"runs\":1,\"ops\":20,\"errors\":0");
}

#[test]
fn contended_counts_every_grant_and_hand_off() {
    let r = bench(&["contended", "--workers", "4", "--ops", "20"]);
    assert_has(&r, "\"summary\":{\"runs\":1,\"ops\":20,\"errors\":0");
    assert_has(&r, "{\"name\":\"acquire\",\"count\":20,");
    // 20 grants of one lock, each released: 19 hand-offs between them.
    assert_has(&r, "{\"name\":\"handoff\",\"count\":19,");
    assert_has(&r, "{\"name\":\"handoff_from_send\",\"count\":19,");
}

#[test]
fn append_counts_every_cycle() {
    let r = bench(&["append", "--ops", "20", "--runs", "2"]);
    assert_has(&r, "\"summary\":{\"runs\":2,\"ops\":40,\"errors\":0");
    assert_has(&r, "{\"name\":\"cycle\",\"count\":20,");
    assert_has(&r, "{\"name\":\"append\",\"count\":20,");
}

#[test]
fn sessions_holds_every_session_and_reports_memory() {
    let r = bench(&["sessions", "--ops", "20", "--hold", "1s"]);
    assert_has(&r, "\"summary\":{\"runs\":1,\"ops\":20,\"errors\":0");
    assert_has(&r, "{\"name\":\"open+acquire\",\"count\":20,");
    assert_has(&r, "\"node1_rss_mib\":");
    assert_has(&r, "\"node1_rss_bytes_per_session\":");
}

/// `raftlock bench suite` in its shortest form: every row once, 1 s each, one leader kill, the
/// worker counts scaled down (`--quick`), against fresh `--local 3` clusters.
#[test]
fn suite_reports_every_row_of_the_table() {
    let output = Command::new(env!("CARGO_BIN_EXE_raftlock"))
        .args(["bench", "suite", "--local", "3", "--quick"])
        .args(["--duration", "1s", "--runs", "1", "--kills", "1"])
        .args([
            "--json",
            "--quiet",
            "--fsync-samples",
            "5",
            "--rtt-samples",
            "50",
        ])
        .output()
        .expect("run raftlock bench suite");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "raftlock bench suite failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let get = |v: &serde_json::Value, key: &str| -> serde_json::Value {
        v.get(key)
            .unwrap_or_else(|| panic!("no {key} in {v}"))
            .clone()
    };
    assert_eq!(
        get(&report, "suite"),
        serde_json::json!({"local": 3, "bound": "1s", "runs": 1, "kills": 1, "quick": true})
    );
    assert!(get(&get(&report, "floor_ms"), "median").is_number());
    assert!(get(&report, "load_average").get("cores").is_some());
    assert_eq!(get(&report, "errors"), 0);
    assert!(
        get(&report, "goals_met").is_null(),
        "--quick judges no goal"
    );

    let rows = get(&report, "rows");
    let rows = rows.as_array().expect("rows is an array");
    let keys: Vec<&str> = rows
        .iter()
        .map(|r| r.get("row").and_then(|k| k.as_str()).expect("row key"))
        .collect();
    assert_eq!(
        keys,
        [
            "uncontended@1",
            "uncontended@16",
            "uncontended@64",
            "contended@16",
            "append@1",
            "failover"
        ]
    );
    for row in rows {
        let key = get(row, "row");
        assert!(get(row, "floor_ms").is_number(), "{key}: floor measured");
        assert_eq!(get(row, "error"), serde_json::Value::Null, "{key} failed");
        assert_eq!(get(row, "errors"), 0, "{key}");
        let throughput = get(&get(row, "throughput"), "median");
        assert!(
            throughput.as_f64().is_some_and(|t| t > 0.0),
            "{key}: throughput {throughput}"
        );
        let latency = get(row, "latency");
        assert!(get(&latency, "name").is_string(), "{key}");
        assert!(get(&get(&latency, "ms"), "median").is_number(), "{key}");
        assert!(get(&latency, "x_floor").is_number(), "{key}");
        let cpu = get(row, "cpu_us_per_op");
        assert!(get(&get(&cpu, "client"), "median").is_number(), "{key}");
        let nodes = get(&cpu, "nodes");
        let report = get(row, "report");
        assert_eq!(get(&report, "scenario"), get(row, "scenario"), "{key}");
        if get(row, "scenario") == "failover" {
            // Its nodes are killed and restarted: their CPU is not measured.
            assert_eq!(
                get(&get(&report, "summary"), "gap_ms")
                    .get("median")
                    .map(|g| g.is_number()),
                Some(true)
            );
            assert_eq!(get(row, "leader"), serde_json::Value::Null);
        } else {
            let ids: Vec<u64> = nodes
                .as_array()
                .expect("nodes")
                .iter()
                .map(|n| get(n, "id").as_u64().expect("node id"))
                .collect();
            assert_eq!(ids, [1, 2, 3], "{key}: every node's CPU");
            assert!(get(&get(&cpu, "nodes_sum"), "median").is_number(), "{key}");
            assert!(get(row, "leader").is_u64(), "{key}");
        }
        for goal in get(row, "goals").as_array().expect("goals") {
            assert_eq!(get(goal, "issue"), 15);
            assert_eq!(get(goal, "row"), key);
            assert!(get(goal, "goal").is_string() && get(goal, "target").is_number());
            assert!(get(&get(goal, "measured"), "median").is_number(), "{goal}");
            assert!(get(goal, "met").is_null(), "--quick judges no goal");
        }
    }
    let goals = get(&report, "goals");
    assert_eq!(goals.as_array().map(Vec::len), Some(9), "issue 15's goals");
    assert!(goals
        .as_array()
        .expect("goals")
        .iter()
        .any(|g| get(g, "metric") == "nodes_cpu_us_per_op" && get(g, "row") == "uncontended@64"));
}
