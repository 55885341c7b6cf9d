//! The daemon's log lines: with `--log-format json` every stderr line is a JSON object that
//! carries the node id; text lines carry `node=N`; and when stderr is the journal
//! (`JOURNAL_STREAM` names it) every line starts with its syslog priority.

mod common;
mod ops_support;

use std::os::unix::fs::MetadataExt;

use common::{assert_served, Client, Daemon};
use ops_support::{wait_for_text, EnvDaemon};

#[tokio::test]
async fn json_lines_parse_and_carry_the_node_id() {
    let daemon = Daemon::start(&["--id", "1", "--log-format", "json"]);
    Client::hello(daemon.addr).await.wait_leader().await;
    assert_served(daemon.addr, "json").await;
    let log = wait_for_text("the log", "connection closed", || daemon.log());
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(value["node_id"], 1, "no node id: {line}");
        assert!(value["level"].is_string(), "no level: {line}");
        messages.push(
            value["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(messages.iter().any(|m| m == "listening"), "{messages:?}");
}

#[tokio::test]
async fn text_lines_carry_the_node_id() {
    let daemon = Daemon::start(&["--id", "1"]);
    Client::hello(daemon.addr).await.wait_leader().await;
    let log = wait_for_text("the log", "listening", || daemon.log());
    for line in log.lines().filter(|l| !l.is_empty()) {
        assert!(line.contains(" node=1 "), "no node id: {line}");
    }
}

#[tokio::test]
async fn on_the_journal_every_line_starts_with_its_priority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("journal");
    // The test's stand-in for the journal's stream: the file stderr goes to.
    std::fs::write(&log, "").expect("create");
    let meta = std::fs::metadata(&log).expect("metadata");
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data").to_str().expect("utf-8"),
        "--log-level",
        "raftlock=debug,info",
        "--id",
        "4",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let daemon = EnvDaemon::start(&args, &[("JOURNAL_STREAM", stream)], &log, false);
    Client::hello(daemon.addr).await.wait_leader().await;
    assert_served(daemon.addr, "journal").await;
    let text = wait_for_text("the journal", "connection closed", || daemon.log());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let priority = ["<3>", "<4>", "<6>", "<7>"]
            .into_iter()
            .find(|p| line.starts_with(p))
            .unwrap_or_else(|| panic!("no priority: {line}"));
        // journald stamps lines itself: the line starts with the node id, not a time.
        assert!(line[priority.len()..].starts_with("node=4 "), "{line}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("listening")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<7>") && l.contains("DEBUG")),
        "{text}"
    );
}
