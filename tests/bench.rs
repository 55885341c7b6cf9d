//! `raftlock bench --local 1` end to end, with tiny op counts: every single-node scenario runs
//! against a daemon the bench starts itself, and its JSON report counts exactly the operations
//! asked for, with no errors. Timings are not asserted (the machine is shared).

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
