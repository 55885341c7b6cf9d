//! One daemon per data directory: a second `raftlockd` started on a directory another daemon
//! serves exits non-zero at once, naming the directory and the holder's pid, and the first
//! keeps serving. The lock dies with its holder: a restart after kill -9 is not kept out.

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
