//! The `raftlock` CLI fails fast and clearly: a closed port ends the command within the
//! --connect-timeout (not the longer --timeout), a port answered by some other service is
//! named as "not a raftlock server", and a full or closed stdout ends the command with an
//! I/O error (or quietly, for a closed pipe) instead of a panic.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// `raftlock ARGS` with `--servers servers`, and none of the session variables.
fn raftlock(servers: &str, args: &[&str]) -> Command {
    let mut command = Command::new(RAFTLOCK);
    command
        .arg("--servers")
        .arg(servers)
        .args(args)
        .env_remove("RAFTLOCK_SERVERS")
        .env_remove("RAFTLOCK_SESSION")
        .env_remove("RAFTLOCK_TOKEN")
        .env_remove("RAFTLOCK_LOCK")
        .env_remove("RAFTLOCK_FENCE");
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An address nothing listens on (bound, read, released).
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

#[test]
fn status_against_a_closed_port_gives_up_after_the_connect_timeout() {
    let addr = closed_port();
    let started = Instant::now();
    // A long request timeout: only the connect timeout (2s by default) may end the dialling.
    let out = raftlock(&addr, &["--timeout", "60s", "status"])
        .output()
        .expect("run raftlock");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let stderr = stderr(&out);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("raftlock: no server available"),
        "{stderr}"
    );
    assert!(stderr.contains("--connect-timeout"), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
}

#[test]
fn a_port_answered_by_http_is_not_a_raftlock_server() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // A tiny HTTP server: whatever arrives, answer 400 and close (as a real one does to the
    // binary Hello). It serves every connection the client makes until the test ends.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let out = raftlock(&addr, &["status"]).output().expect("run raftlock");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = stderr(&out);
    assert!(
        stderr.contains(&format!(
            "this is not a raftlock server ({addr} answered \"HTTP/1.1 400 Bad Request\""
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("frame length"), "{stderr}");
}

#[test]
fn a_full_stdout_is_an_io_error_not_a_panic() {
    let daemon = Daemon::start(&[]);
    let addr = daemon.addr.to_string();
    for args in [&["locks"][..], &["--json", "locks"], &["status"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let out = raftlock(&addr, args)
            .stdout(full)
            .output()
            .expect("run raftlock");
        let stderr = stderr(&out);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        // `raftlock: cannot write...`, or the same message in a --json error object.
        assert!(
            stderr.contains("cannot write to stdout: No space left on device"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let daemon = Daemon::start(&[]);
    let mut child = raftlock(&daemon.addr.to_string(), &["status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftlock");
    // Like `raftlock status | head -0`: the reader is gone (almost surely before the status
    // is written; if not, the write simply succeeds).
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    assert!(stderr.is_empty(), "quiet: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?}"
    );
}
