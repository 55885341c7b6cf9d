//! One daemon per data directory: a second `raftlockd` started on a directory another daemon
//! serves exits non-zero at once, naming the directory and the holder's pid, and the first
//! keeps serving. The lock dies with its holder: a restart after kill -9 is not kept out.
//! Other start-up errors name the data directory or the listen address, on one line.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_served, Client, Daemon, DEADLINE};

#[tokio::test]
async fn a_second_daemon_on_the_same_directory_exits_and_the_first_keeps_serving() {
    let mut first = Daemon::start(&[]);
    Client::hello(first.addr).await.wait_leader().await;
    assert_served(first.addr, "before").await;

    let started = Instant::now();
    let mut second = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(first.data_dir())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second raftlockd");
    // The brief asks for "at once" (well under a second on an idle machine); the bound here is
    // generous so that a loaded machine cannot fail the test, while a daemon that went on to
    // serve (it never exits by itself) still fails it.
    let status = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = second.kill();
            panic!("the second daemon is still running");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = second.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!status.success(), "second daemon exited with {status}");
    assert!(
        !stdout.contains("listening"),
        "the second daemon started listening: {stdout}"
    );
    let dir = first.data_dir().display().to_string();
    assert!(stderr.contains(&dir), "no directory in: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.pid())),
        "no holder pid in: {stderr}"
    );

    first.assert_running();
    assert_served(first.addr, "after").await;

    // kill -9 leaves the lock file behind, but not the lock: the restart serves.
    first.restart();
    Client::hello(first.addr).await.wait_leader().await;
    assert_served(first.addr, "restarted").await;
}

/// Runs a `raftlockd` that must fail to start; returns its stdout and stderr once it exited
/// non-zero (bounded by [`DEADLINE`]).
fn start_failure(args: &[&std::ffi::OsStr]) -> (String, String) {
    let started = Instant::now();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftlockd");
    let status = loop {
        if let Some(status) = daemon.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = daemon.kill();
            panic!("raftlockd {args:?} is still running");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = daemon.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(status.code(), Some(1), "raftlockd {args:?}: {stderr}");
    (stdout, stderr)
}

/// Start-up errors are one line on stderr, `raftlockd: ` then what failed, naming the data
/// directory or the listen address, then the causes (anyhow's `{:#}` chain).
#[test]
fn start_up_errors_name_the_data_directory_and_the_listen_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let data_dir = file.join("node");
    let (stdout, stderr) = start_failure(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ]);
    assert!(!stdout.contains("listening"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "raftlockd: cannot create the data directory {}: ",
            data_dir.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("(os error 20)").count(),
        1,
        "the operating system's cause (ENOTDIR) is printed once: {stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local addr").to_string();
    let data_dir = dir.path().join("node");
    let (stdout, stderr) = start_failure(&[
        "--listen".as_ref(),
        addr.as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ]);
    assert!(!stdout.contains("listening"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("raftlockd: cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

/// The data directory carries its format version (`FORMAT`): written on creation, checked at
/// start. An unknown version stops start-up naming the file and the versions this build
/// knows; a directory from before the file (a log, no `FORMAT`) is version 1 and gets it.
#[tokio::test]
async fn the_format_version_is_written_checked_and_added_to_an_old_directory() {
    let mut node = Daemon::start(&[]);
    Client::hello(node.addr).await.wait_leader().await;
    assert_served(node.addr, "before").await;
    assert!(node.terminate().success());
    let format = node.data_dir().join("FORMAT");
    assert_eq!(std::fs::read_to_string(&format).expect("FORMAT"), "1\n");

    std::fs::write(&format, "9\n").expect("write FORMAT");
    let (stdout, stderr) = start_failure(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        node.data_dir().as_os_str(),
    ]);
    assert!(!stdout.contains("listening"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("format version \"9\"") && stderr.contains("knows version(s) 1"),
        "{stderr}"
    );

    // A directory written before the file existed: accepted as version 1, and given the file.
    std::fs::remove_file(&format).expect("remove FORMAT");
    node.start_again();
    Client::hello(node.addr).await.wait_leader().await;
    assert_served(node.addr, "after").await;
    assert_eq!(std::fs::read_to_string(&format).expect("FORMAT"), "1\n");
}
