//! Helpers for the operability tests (tests/ops_*.rs) that need what `common::Daemon` does not
//! offer: a daemon started with a chosen environment (systemd's variables), and a fake
//! `NOTIFY_SOCKET` that receives its notifications.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::DEADLINE;

/// A `raftlockd` started with a chosen environment; SIGKILLed on drop.
pub struct EnvDaemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
}

impl EnvDaemon {
    /// Starts `raftlockd ARGS` with `env` set and its stderr in `log_path`, and waits (bounded)
    /// for its "listening" line. With `watchdog_pid`, it is started through `sh`, which sets
    /// `WATCHDOG_PID` to its own pid and then execs the daemon (keeping the pid), as systemd
    /// sets it to the service's pid.
    pub fn start(
        args: &[String],
        env: &[(&str, String)],
        log_path: &Path,
        watchdog_pid: bool,
    ) -> EnvDaemon {
        let log = std::fs::File::create(log_path).expect("log file");
        let mut command = if watchdog_pid {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"")
                .arg(env!("CARGO_BIN_EXE_raftlockd"));
            command
        } else {
            Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        };
        command
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn raftlockd");
        let addr = listening_addr(&mut child, log_path);
        EnvDaemon {
            child,
            addr,
            log_path: log_path.to_path_buf(),
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for EnvDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- raftlockd log ---\n{}", self.log());
        }
    }
}

/// Reads the child's stdout until "raftlockd listening on ADDR" (bounded), then keeps draining
/// it on a thread.
fn listening_addr(child: &mut Child, log_path: &Path) -> SocketAddr {
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, announced) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match announced.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = line.strip_prefix("raftlockd listening on ") {
                    return addr.trim().parse().expect("address in the listening line");
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                panic!("raftlockd did not announce its address\n{log}");
            }
        }
    }
}

/// A unix datagram socket standing in for systemd's notification socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    /// Binds a fresh socket in a temporary directory.
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next datagram's lines, waiting at most `within`; `None` if none came.
    pub fn recv(&self, within: Duration) -> Option<Vec<String>> {
        self.socket
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .expect("set_read_timeout");
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => Some(lines(&buffer[..n])),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(error) => panic!("recv on the notify socket: {error}"),
        }
    }

    /// Every datagram already queued, without waiting.
    pub fn drain(&self) -> Vec<Vec<String>> {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buffer = [0u8; 4096];
        let mut datagrams = Vec::new();
        while let Ok(n) = self.socket.recv(&mut buffer) {
            datagrams.push(lines(&buffer[..n]));
        }
        self.socket.set_nonblocking(false).expect("blocking");
        datagrams
    }

    /// Waits (bounded by [`DEADLINE`]) for a datagram with the line `wanted`; returns it and
    /// every datagram before it.
    pub fn wait_for(&self, wanted: &str) -> Vec<Vec<String>> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.recv(left) {
                Some(datagram) => {
                    let found = datagram.iter().any(|line| line == wanted);
                    seen.push(datagram);
                    if found {
                        return seen;
                    }
                }
                None => panic!("no {wanted} within {DEADLINE:?}; got {seen:?}"),
            }
        }
    }
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (bounded by [`DEADLINE`]) until `read()` contains `needle`.
pub fn wait_for_text(what: &str, needle: &str, read: impl Fn() -> String) -> String {
    let start = Instant::now();
    loop {
        let text = read();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what} has no {needle:?} within {DEADLINE:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
