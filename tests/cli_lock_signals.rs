//! `raftlock lock` never lets CMD outlive the lock, through the real binary against a real
//! daemon. For each way the lock can end (session lost with the daemon SIGSTOPped, hold limit,
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT and SIGKILL of `raftlock`), CMD is
//! `sh -c 'sleep 300 & sleep 300; wait'`: no process of its process group is left alive, and
//! another client is not granted the lock while any of them runs (it tries, and must fail until
//! the group is gone; then it must succeed). An admin revoke (which keeps the lock held until
//! the holder closes or its lease runs out) is checked the same way, and `raftlock` exits 7.
//! Ctrl-Z's job-control stops never stop the supervisor, and CMD starts with no signal blocked
//! or ignored. A SIGSTOPped `raftlock` cannot keep CMD running
//! past the TTL: the supervisor enforces the deadline by itself. `--extend` keeps a short hold
//! while CMD runs. A SIGINT of a `raftlock lock` that waits in the
//! queue removes its acquire: the next live waiter is granted when the holder releases.
//!
//! Each test prints its timeline (signal -> group gone) on stderr.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, DEADLINE};
use raftlock::client::LockMode;
use raftlock::client::{Client, ClientOptions, Session, Wait};

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(10);

/// The non-zombie processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = tail.split_whitespace().collect();
        let (state, pgrp) = (fields[0], fields[2].parse::<i32>().unwrap_or(-1));
        if pgrp == pgid && state != "Z" && state != "X" {
            members.push(pid);
        }
    }
    members
}

/// Waits (bounded by `limit`) until group `pgid` has no live process; returns when it saw that.
fn wait_group_gone(pgid: i32, limit: Duration) -> Instant {
    let start = Instant::now();
    loop {
        let members = group_members(pgid);
        if members.is_empty() {
            return Instant::now();
        }
        assert!(
            start.elapsed() < limit,
            "CMD's group {pgid} still has {members:?} after {limit:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits (bounded) for a child's exit.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "raftlock did not exit");
        std::thread::sleep(POLL);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A `raftlock lock NAME ... -- sh -c 'sleep 300 & sleep 300; wait'` whose CMD is running.
struct Locked {
    child: Child,
    /// CMD's process group (the shell's pid).
    pgid: i32,
    /// When the test started `raftlock` (before it sent its acquire).
    spawned: Instant,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Locked {
    /// Starts it and waits until the shell and both sleeps run.
    fn start(daemon: &Daemon, name: &str, extra: &[&str]) -> Locked {
        Locked::start_after(daemon, name, extra, "")
    }

    /// Like [`Locked::start`], with the shell running `prelude` first.
    fn start_after(daemon: &Daemon, name: &str, extra: &[&str], prelude: &str) -> Locked {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pgid");
        let stderr = dir.path().join("stderr");
        let script = format!(
            "{prelude}echo $$ > {p}.tmp && mv {p}.tmp {p}; sleep 300 & sleep 300; wait",
            p = pidfile.display()
        );
        let spawned = Instant::now();
        let child = Command::new(RAFTLOCK)
            .args(["lock", name])
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("run raftlock");
        let mut locked = Locked {
            child,
            pgid: 0,
            spawned,
            stderr,
            _dir: dir,
        };
        locked.pgid = locked.wait_for_group(&pidfile);
        locked
    }

    fn wait_for_group(&mut self, pidfile: &Path) -> i32 {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(pidfile) {
                if let Ok(pgid) = text.trim().parse::<i32>() {
                    if group_members(pgid).len() >= 3 {
                        return pgid;
                    }
                }
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("raftlock exited with {status}: {}", self.stderr());
            }
            assert!(start.elapsed() < DEADLINE, "CMD did not start");
            std::thread::sleep(POLL);
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // Leave nothing behind if an assertion failed.
        if self.pgid > 0 && !group_members(self.pgid).is_empty() {
            // SAFETY: kill(2) of the test's own CMD group.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Another client of the cluster, which tries the lock.
struct Other {
    runtime: tokio::runtime::Runtime,
    session: Session,
}

impl Other {
    fn connect(daemon: &Daemon) -> Other {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let options = ClientOptions {
            retry_timeout: DEADLINE,
            ..ClientOptions::default()
        };
        let session = runtime.block_on(async {
            let client = Client::connect(vec![daemon.addr.to_string()], options)
                .await
                .expect("connect");
            client
                .open_session(Duration::from_secs(30))
                .await
                .expect("open session")
        });
        Other { runtime, session }
    }

    /// Tries the lock once; if granted, releases it and returns true.
    fn try_lock(&self, name: &str) -> bool {
        self.runtime.block_on(async {
            match self
                .session
                .lock(name, LockMode::Exclusive, Wait::TryOnce)
                .await
            {
                Ok(guard) => {
                    guard.release().await.expect("release");
                    true
                }
                Err(error) if error.is_lock_unavailable() => false,
                Err(error) => panic!("try lock: {error}"),
            }
        })
    }

    /// Tries the lock until granted (bounded by `limit`), asserting that CMD's group has no live
    /// process once it is granted. Returns when the group was first seen gone, and when the
    /// lock was granted.
    fn lock_after_group(&self, name: &str, pgid: i32, limit: Duration) -> (Instant, Instant) {
        let start = Instant::now();
        let mut gone = None;
        loop {
            if gone.is_none() && group_members(pgid).is_empty() {
                gone = Some(Instant::now());
            }
            if self.try_lock(name) {
                let granted = Instant::now();
                // The group only shrinks: alive now means alive when the grant was made.
                let members = group_members(pgid);
                assert!(
                    members.is_empty(),
                    "another client was granted {name} while CMD's group still ran: {members:?}"
                );
                return (gone.unwrap_or(granted), granted);
            }
            assert!(
                start.elapsed() < limit,
                "the lock was not free within {limit:?}"
            );
            std::thread::sleep(POLL);
        }
    }
}

/// A signal to `raftlock` while CMD runs: forwarded to the group, which ends; the lock is
/// released after; raftlock exits 128+N.
fn signal_ends_the_group(sig: libc::c_int, label: &str) {
    let daemon = Daemon::start(&[]);
    let other = Other::connect(&daemon);
    let name = format!("signal-{label}");
    let mut locked = Locked::start(&daemon, &name, &["--ttl", "10s", "--kill-after", "1s"]);
    assert!(!other.try_lock(&name), "the lock is held while CMD runs");
    let sent = Instant::now();
    signal(locked.child.id(), sig);
    let (gone, granted) = other.lock_after_group(&name, locked.pgid, DEADLINE);
    let status = wait_exit(&mut locked.child);
    eprintln!(
        "timeline: {label} to raftlock -> group gone after {:?}, lock granted to another client after {:?}",
        gone - sent,
        granted - sent
    );
    assert_eq!(
        status.code(),
        Some(128 + sig),
        "raftlock's status; stderr: {}",
        locked.stderr()
    );
}

#[test]
fn sigint_of_raftlock_ends_cmds_group_before_the_lock_moves() {
    signal_ends_the_group(libc::SIGINT, "SIGINT");
}

#[test]
fn sigterm_of_raftlock_ends_cmds_group_before_the_lock_moves() {
    signal_ends_the_group(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_of_raftlock_ends_cmds_group_before_the_lock_moves() {
    signal_ends_the_group(libc::SIGHUP, "SIGHUP");
}

#[test]
fn sigquit_of_raftlock_ends_cmds_group_before_the_lock_moves() {
    signal_ends_the_group(libc::SIGQUIT, "SIGQUIT");
}

#[test]
fn sigkill_of_raftlock_ends_cmds_group_at_once() {
    let daemon = Daemon::start(&[]);
    let other = Other::connect(&daemon);
    let name = "sigkill";
    let mut locked = Locked::start(&daemon, name, &["--ttl", "3s"]);
    assert!(!other.try_lock(name), "the lock is held while CMD runs");
    let sent = Instant::now();
    signal(locked.child.id(), libc::SIGKILL);
    // Nobody releases: the lock moves when the cluster expires the session, after its TTL.
    let (gone, granted) = other.lock_after_group(name, locked.pgid, DEADLINE);
    let status = wait_exit(&mut locked.child);
    eprintln!(
        "timeline: SIGKILL to raftlock -> group gone after {:?}, lock granted to another client after {:?} (TTL 3s)",
        gone - sent,
        granted - sent
    );
    assert_eq!(status.signal_number(), Some(libc::SIGKILL));
}

/// `ExitStatus::signal` under a name that reads well in the assertion above.
trait SignalNumber {
    fn signal_number(&self) -> Option<i32>;
}

impl SignalNumber for ExitStatus {
    fn signal_number(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

/// The signal numbers in a `/proc/PID/status` mask line (`SigBlk:`, `SigIgn:`, hexadecimal).
fn mask_signals(status: &str, field: &str) -> Vec<i32> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim();
    let mask = u64::from_str_radix(hex, 16).expect("a hexadecimal mask");
    (1..=64).filter(|n| mask & (1 << (n - 1)) != 0).collect()
}

/// The parent of process `pid`, from `/proc/PID/stat`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let (_, tail) = stat.rsplit_once(')').expect("stat has a command name");
    tail.split_whitespace()
        .nth(1)
        .and_then(|ppid| ppid.parse().ok())
        .expect("stat has a parent pid")
}

/// A terminal's Ctrl-Z (SIGTSTP, and SIGTTIN/SIGTTOU) never stops the supervisor, the dead
/// man's switch: it discards them and still forwards a later signal, so the group ends before
/// the lock moves. CMD gets its signals as usual: `raftlock` leaves none blocked or ignored.
#[test]
fn job_control_stops_never_stop_the_supervisor_and_cmd_gets_every_signal() {
    let daemon = Daemon::start(&[]);
    let other = Other::connect(&daemon);
    let name = "job-control";
    let dir = tempfile::tempdir().expect("tempdir");
    let masks = dir.path().join("masks");
    // Builtins only, so that the shell reads its own status, with the masks it was started
    // with (a forking shell blocks every signal for a moment, which `grep /proc/$$/status`
    // from a child would catch).
    let prelude = format!(
        "while read -r line; do case $line in Sig[BI]*) echo \"$line\";; esac; done \
         < /proc/self/status > {m}.tmp && mv {m}.tmp {m}; ",
        m = masks.display()
    );
    let mut locked = Locked::start_after(&daemon, name, &["--ttl", "10s"], &prelude);
    let status = std::fs::read_to_string(&masks).expect("CMD wrote its masks");
    assert_eq!(
        mask_signals(&status, "SigBlk:"),
        Vec::<i32>::new(),
        "{status}"
    );
    let ignored = mask_signals(&status, "SigIgn:");
    for stop in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        assert!(!ignored.contains(&stop), "CMD ignores {stop}: {status}");
    }

    let supervisor = parent_of(locked.pgid);
    assert_ne!(
        supervisor,
        locked.child.id() as i32,
        "CMD's parent is the supervisor"
    );
    for stop in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        signal(supervisor as u32, stop);
    }
    // A stopped supervisor would not act on the forwarded SIGINT: CMD's group would outlive
    // raftlock and the wait below would fail.
    let sent = Instant::now();
    signal(locked.child.id(), libc::SIGINT);
    let (gone, granted) = other.lock_after_group(name, locked.pgid, DEADLINE);
    let status = wait_exit(&mut locked.child);
    eprintln!(
        "timeline: job-control stops to the supervisor, SIGINT to raftlock -> group gone after {:?}, lock granted after {:?}",
        gone - sent,
        granted - sent
    );
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGINT),
        "raftlock's status; stderr: {}",
        locked.stderr()
    );
}

#[test]
fn a_stopped_daemon_ends_cmds_group_before_the_ttl() {
    let ttl = Duration::from_secs(3);
    let mut daemon = Daemon::start(&[]);
    let name = "stopped";
    let mut locked = Locked::start(&daemon, name, &["--ttl", "3s"]);
    let stopped = Instant::now();
    daemon.signal(libc::SIGSTOP);
    let gone = wait_group_gone(locked.pgid, DEADLINE);
    eprintln!(
        "timeline: SIGSTOP of the daemon -> group gone after {:?} (TTL {ttl:?})",
        gone - stopped
    );
    // The last keep-alive was confirmed before the SIGSTOP, so the cluster cannot have expired
    // the session before `stopped + ttl`.
    assert!(
        gone < stopped + ttl,
        "CMD's group outlived the TTL: gone {:?} after the SIGSTOP",
        gone - stopped
    );
    daemon.signal(libc::SIGCONT);
    daemon.assert_running();
    let status = wait_exit(&mut locked.child);
    assert_eq!(status.code(), Some(4), "stderr: {}", locked.stderr());
    assert!(
        locked.stderr().contains("session lost"),
        "{}",
        locked.stderr()
    );
    let other = Other::connect(&daemon);
    other.lock_after_group(name, locked.pgid, DEADLINE);
}

#[test]
fn a_stopped_raftlock_cannot_keep_cmd_running_past_the_ttl() {
    let ttl = Duration::from_secs(3);
    let daemon = Daemon::start(&[]);
    let other = Other::connect(&daemon);
    let name = "stopped-cli";
    let mut locked = Locked::start(&daemon, name, &["--ttl", "3s"]);
    let stopped = Instant::now();
    signal(locked.child.id(), libc::SIGSTOP);
    // The supervisor ends the group by its own clock; the lock moves only after the cluster
    // expires the stopped raftlock's session.
    let (gone, granted) = other.lock_after_group(name, locked.pgid, DEADLINE);
    eprintln!(
        "timeline: SIGSTOP of raftlock -> group gone after {:?}, lock granted to another client after {:?} (TTL {ttl:?})",
        gone - stopped,
        granted - stopped
    );
    assert!(
        gone < stopped + ttl,
        "CMD's group outlived the TTL: gone {:?} after the SIGSTOP",
        gone - stopped
    );
    signal(locked.child.id(), libc::SIGCONT);
    let status = wait_exit(&mut locked.child);
    assert_eq!(status.code(), Some(4), "stderr: {}", locked.stderr());
}

#[test]
fn the_hold_limit_ends_cmds_group_before_it_is_reached() {
    let daemon = Daemon::start(&[]);
    let other = Other::connect(&daemon);
    let name = "hold";
    let hold = Duration::from_secs(4);
    let mut locked = Locked::start(
        &daemon,
        name,
        &["--ttl", "10s", "--hold", "4s", "--kill-after", "1s"],
    );
    // The other client keeps trying from the start: never granted while the group runs.
    let (gone, granted) = other.lock_after_group(name, locked.pgid, DEADLINE);
    let status = wait_exit(&mut locked.child);
    eprintln!(
        "timeline: raftlock started -> group gone after {:?}, lock granted to another client after {:?} (hold {hold:?})",
        gone - locked.spawned,
        granted - locked.spawned
    );
    // raftlock sent its acquire after it was started, so the cluster's hold began later.
    assert!(
        gone < locked.spawned + hold,
        "CMD's group outlived the hold limit"
    );
    assert_eq!(status.code(), Some(6), "stderr: {}", locked.stderr());
}

/// Runs `raftlock ARGS` against `daemon` to completion and returns stdout, asserting success.
fn raftlock_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = Command::new(RAFTLOCK)
        .args(args)
        .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
        .output()
        .expect("run raftlock");
    assert!(
        out.status.success(),
        "raftlock {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn an_admin_revoke_ends_cmds_group() {
    let daemon = Daemon::start(&[]);
    let other = Other::connect(&daemon);
    let name = "revoked";
    let owner = "nightly job on build-7";
    // A TTL of 30 s: keep-alives every 10 s, so the refusal comes within 10 s of the revoke,
    // while the lease cannot run out on the leader before 20 s after it.
    let mut locked = Locked::start(&daemon, name, &["--ttl", "30s", "--owner", owner]);
    // `sessions` and `locks` name the holder by its owner.
    let sessions = raftlock_ok(&daemon, &["sessions"]);
    let row = sessions
        .lines()
        .find(|line| line.ends_with(owner))
        .unwrap_or_else(|| panic!("no session of {owner:?}:\n{sessions}"));
    let session = row
        .split_whitespace()
        .next()
        .expect("session id")
        .to_string();
    let locks = raftlock_ok(&daemon, &["locks"]);
    assert!(locks.contains(owner), "{locks}");
    assert!(!other.try_lock(name), "the lock is held while CMD runs");

    let sent = Instant::now();
    raftlock_ok(&daemon, &["revoke", &session]);
    // The revoke only marks the session: its lock stays held until raftlock, told by its next
    // keep-alive's refusal (within a third of the TTL), has ended CMD's group and closed the
    // session. The other client tries all along and must not be granted before the group is
    // gone.
    let (gone, granted) = other.lock_after_group(name, locked.pgid, DEADLINE);
    let status = wait_exit(&mut locked.child);
    eprintln!(
        "timeline: revoke of raftlock's session -> group gone after {:?}, lock granted to another client after {:?} (TTL 30s)",
        gone - sent,
        granted - sent
    );
    assert_eq!(status.code(), Some(7), "stderr: {}", locked.stderr());
    assert!(locked.stderr().contains("revoked"), "{}", locked.stderr());
    // raftlock closed the session once the group was gone: the last keep-alive the leader
    // accepted arrived at most a third of the TTL before the revoke, so an expiry could not
    // have freed the lock before 20 s.
    assert!(
        granted - sent < Duration::from_secs(20),
        "the lock freed only by expiry, after {:?}",
        granted - sent
    );
}

#[test]
fn extend_keeps_a_short_hold_while_cmd_runs() {
    let daemon = Daemon::start(&[]);
    let other = Other::connect(&daemon);
    let name = "extend";
    let hold = Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("done");
    let spawned = Instant::now();
    let mut child = Command::new(RAFTLOCK)
        .args(["lock", name, "--ttl", "10s", "--hold", "2s", "--extend"])
        .args(["--kill-after", "500ms", "--", "sh", "-c"])
        .arg(format!("sleep 4 && touch {}", marker.display()))
        .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run raftlock");
    // Past twice the hold limit, the lock is still held: the renewals keep it.
    let mut tries = 0;
    while spawned.elapsed() < 2 * hold - Duration::from_millis(500) {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "raftlock exited early"
        );
        if spawned.elapsed() > hold {
            assert!(
                !other.try_lock(name),
                "the lock was free after the first hold limit"
            );
            tries += 1;
        }
        std::thread::sleep(POLL);
    }
    assert!(tries > 0, "the lock was tried after the first hold limit");
    let status = wait_exit(&mut child);
    assert!(status.success(), "raftlock: {status}");
    assert!(marker.exists(), "CMD ran to completion");
    assert!(other.try_lock(name), "released after CMD");
}

#[test]
fn sigint_of_a_waiting_raftlock_leaves_the_queue() {
    let daemon = Daemon::start(&[]);
    let holder = Other::connect(&daemon);
    let name = "queue";
    let guard = holder
        .runtime
        .block_on(
            holder
                .session
                .lock(name, LockMode::Exclusive, Wait::TryOnce),
        )
        .expect("holder locks");
    let waiters = |n: usize| {
        let start = Instant::now();
        loop {
            let locks = holder
                .runtime
                .block_on(holder.session.client().locks(Some(name), false))
                .expect("locks");
            let count = locks.iter().map(|l| l.waiters.len()).sum::<usize>();
            if count == n {
                return locks;
            }
            assert!(start.elapsed() < DEADLINE, "never {n} waiters: {locks:?}");
            std::thread::sleep(POLL);
        }
    };
    let spawn = |marker: &Path| {
        Command::new(RAFTLOCK)
            .args(["lock", name, "--ttl", "60s", "--", "touch"])
            .arg(marker)
            .env("RAFTLOCK_SERVERS", daemon.addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run raftlock")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (cancelled_marker, live_marker) = (dir.path().join("cancelled"), dir.path().join("live"));
    let mut cancelled = spawn(&cancelled_marker);
    waiters(1);
    let mut live = spawn(&live_marker);
    waiters(2);

    signal(cancelled.id(), libc::SIGINT);
    assert_eq!(wait_exit(&mut cancelled).code(), Some(130));
    waiters(1);
    let released = Instant::now();
    holder
        .runtime
        .block_on(guard.release())
        .expect("holder releases");
    // The live waiter is granted, not a cancelled session whose TTL (60s) would hold it up.
    let status = wait_exit(&mut live);
    eprintln!(
        "timeline: holder released -> the next live waiter ran and exited after {:?}",
        released.elapsed()
    );
    assert!(status.success(), "the live waiter: {status}");
    assert!(live_marker.exists(), "the live waiter's CMD ran");
    assert!(
        !cancelled_marker.exists(),
        "the cancelled waiter never ran CMD"
    );
    assert!(holder.try_lock(name), "the lock is free again");
}
