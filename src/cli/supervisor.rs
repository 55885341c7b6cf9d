//! The supervisor of `raftlock lock`: a small process between `raftlock` and CMD that makes
//! sure CMD's whole process group is dead before the lock can move to anyone else, whatever
//! happens to `raftlock` itself.
//!
//! `raftlock lock` re-executes its own binary as `raftlock __supervise` once the lock is
//! granted. The supervisor:
//!
//! - has `PR_SET_PDEATHSIG` set to `SIGUSR1` before it runs (and checks `getppid()` right after,
//!   so a `raftlock` that died in between is noticed), and becomes a child subreaper, so the
//!   orphans of CMD's group are reparented to it and reaped;
//! - blocks the signals it handles and reads them from a signalfd, among them the terminal's
//!   job-control stops (`SIGTSTP`, `SIGTTIN`, `SIGTTOU`), which it discards: a Ctrl-Z stops
//!   `raftlock` and CMD, never the dead man's switch (CMD starts with an empty signal mask);
//! - starts CMD in a new process group (its pid is the group id), and keeps CMD unreaped (a
//!   zombie) until the rest of the group is gone, so the group id cannot be reused while it
//!   may still be signalled;
//! - reads commands from `raftlock` on a socket: `deadline NS` (the local lease deadline, in
//!   `CLOCK_MONOTONIC` nanoseconds: the earliest instant at which the cluster could consider
//!   the lock free), `term` (jeopardy, loss or revocation: stop now) and `signal N` (a signal
//!   `raftlock` received, forwarded to the group);
//! - runs a dead man's switch by its own monotonic clock: SIGTERM to the group at
//!   `deadline - kill_after - margin` (or at once on `term`), SIGKILL at `deadline - margin`
//!   or `kill_after` after the SIGTERM, whichever is first. A stopped or slow `raftlock` that
//!   does not move the deadline cannot let CMD outlive the lease;
//! - on `raftlock`'s death (end of file on the socket, or the parent-death signal) SIGKILLs the
//!   group at once;
//! - when CMD (the group leader) exits, terminates what is left of its group the same way, and
//!   exits with CMD's status (128+N if a signal N ended it) once the group is empty.
//!
//! Group membership is read from `/proc` (a process whose `pgrp` is the group id and that is not
//! a zombie), so this is Linux only, like `prctl`.
//!
//! The system calls go through rustix (kill, wait, prctl, poll, read, clock_gettime) and, for
//! the signal mask and the signalfd that rustix does not wrap, nix. Two `unsafe` blocks remain,
//! neither with a safe form: taking ownership of the inherited control descriptor, and the
//! `pre_exec` hook (unsafe by signature) that empties CMD's signal mask.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal as MaskSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::{Errno, FdFlags};
use rustix::process::{Pid, RawPid, Signal, WaitId, WaitIdOptions, WaitOptions};
use rustix::time::ClockId;

/// How long before the deadline the group is SIGKILLed: time for the kernel to deliver the
/// signal and the processes to die.
pub const KILL_MARGIN: Duration = Duration::from_millis(100);

/// The signals the supervisor takes through a signalfd instead of their default action:
/// parent death, child exits, the signals `raftlock` forwards, and the terminal's job-control
/// stops, which it discards (CMD does not: it starts with an empty mask).
const BLOCKED_SIGNALS: [MaskSignal; 9] = [
    MaskSignal::SIGUSR1,
    MaskSignal::SIGCHLD,
    MaskSignal::SIGINT,
    MaskSignal::SIGTERM,
    MaskSignal::SIGHUP,
    MaskSignal::SIGQUIT,
    MaskSignal::SIGTSTP,
    MaskSignal::SIGTTIN,
    MaskSignal::SIGTTOU,
];

/// How often the group is checked while it is being ended, or after CMD exited.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Arguments of the hidden `__supervise` subcommand (set by `raftlock lock`, not by users).
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The socket (inherited descriptor) `raftlock` sends commands on.
    #[arg(long)]
    pub control_fd: RawFd,
    /// The pid of the `raftlock` process that started this one.
    #[arg(long)]
    pub parent: RawPid,
    /// The first lease deadline, in CLOCK_MONOTONIC nanoseconds.
    #[arg(long)]
    pub deadline_ns: u64,
    /// Time between SIGTERM and SIGKILL, in milliseconds.
    #[arg(long)]
    pub kill_after_ms: u64,
    /// The command to run, and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub cmd: Vec<OsString>,
}

/// Now on CLOCK_MONOTONIC, in nanoseconds (the clock of `std::time::Instant` on Linux).
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sends `signal` to every process of group `pgid`. The group id is the pid of our own unreaped
/// child, so it cannot name another group; a group already empty is no error worth reporting.
fn signal_group(pgid: Pid, signal: Signal) {
    let _ = rustix::process::kill_process_group(pgid, signal);
}

/// One process as `/proc/PID/stat` describes it.
struct ProcStat {
    pid: RawPid,
    state: u8,
    ppid: RawPid,
    pgrp: RawPid,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid pgrp ...` (comm may hold spaces and
/// parentheses, so fields are read after its last `)`).
fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_once(' ')?.0.trim().parse().ok()?;
    let mut fields = tail.split_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process in `/proc` (those that vanish while being read are skipped).
fn processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parse_stat(&std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?)
    })
    .collect()
}

/// Whether any process of group `pgid` other than zombies is left; reaps our zombie children
/// other than `leader` (orphans reparented to this subreaper, and exited group members).
fn group_alive_and_reap(pgid: Pid, leader: Pid) -> bool {
    let me = rustix::process::getpid().as_raw_pid();
    let mut alive = false;
    for p in processes() {
        if p.ppid == me && p.state == b'Z' && p.pid != leader.as_raw_pid() {
            if let Some(zombie) = Pid::from_raw(p.pid) {
                let _ = rustix::process::waitpid(Some(zombie), WaitOptions::NOHANG);
            }
        }
        if p.pgrp == pgid.as_raw_pid() && p.state != b'Z' && p.state != b'X' {
            alive = true;
        }
    }
    alive
}

/// CMD's shell-style status if it has exited, without reaping it.
fn leader_exited(leader: Pid) -> Option<u8> {
    // WNOWAIT leaves it a zombie; `None` (no event yet) unless it has exited.
    let status = rustix::process::waitid(
        WaitId::Pid(leader),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    )
    .ok()??;
    let code = match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code & 0xff,
        (None, Some(signal)) => 128 + signal,
        // Only exits are waited for: a stop or continue event is not one.
        (None, None) => return None,
    };
    Some(u8::try_from(code).unwrap_or(u8::MAX))
}

/// A command from `raftlock`.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    Deadline(u64),
    Term,
    Signal(Signal),
}

fn parse_control(line: &str) -> Option<Control> {
    let mut words = line.split_whitespace();
    match (words.next()?, words.next()) {
        ("deadline", Some(ns)) => ns.parse().ok().map(Control::Deadline),
        ("term", None) => Some(Control::Term),
        ("signal", Some(n)) => n
            .parse()
            .ok()
            .and_then(Signal::from_named_raw)
            .map(Control::Signal),
        _ => None,
    }
}

/// The kill timeline: when to SIGTERM and SIGKILL the group, by the supervisor's clock.
#[derive(Debug)]
struct Timeline {
    deadline: u64,
    kill_after: u64,
    margin: u64,
    /// When the group was sent SIGTERM (or the forwarded signal).
    termed: Option<u64>,
    killed: bool,
}

impl Timeline {
    /// When SIGTERM is due without a `term` command: `kill_after + margin` before the deadline.
    fn term_due(&self) -> u64 {
        self.termed.unwrap_or_else(|| {
            self.deadline
                .saturating_sub(self.kill_after)
                .saturating_sub(self.margin)
        })
    }

    /// When SIGKILL is due: `margin` before the deadline, or `kill_after` after the SIGTERM.
    fn kill_due(&self) -> u64 {
        let last = self.deadline.saturating_sub(self.margin);
        match self.termed {
            Some(at) => last.min(at.saturating_add(self.kill_after)),
            None => last,
        }
    }

    /// The next instant something is due (`None` once the group was SIGKILLed).
    fn next_due(&self) -> Option<u64> {
        if self.killed {
            None
        } else if self.termed.is_some() {
            Some(self.kill_due())
        } else {
            Some(self.term_due().min(self.kill_due()))
        }
    }
}

/// Runs the supervisor; never returns before CMD's group is gone.
pub fn main(args: &SuperviseArgs) -> ExitCode {
    match supervise(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("raftlock: supervisor: {error}");
            ExitCode::from(super::EXIT_ERROR)
        }
    }
}

/// An operating system error with what was being done.
fn os_error(what: &str, error: impl Into<io::Error>) -> io::Error {
    let error = error.into();
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// Takes ownership of the control socket inherited from `raftlock` as descriptor `fd`, after
/// checking that the descriptor is open and a socket.
fn adopt_control(fd: RawFd) -> io::Result<OwnedFd> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_err(|error| os_error(&format!("control descriptor {fd}"), error))?;
    if !target.to_string_lossy().starts_with("socket:") {
        return Err(io::Error::other(format!(
            "control descriptor {fd} is not a socket"
        )));
    }
    // SAFETY: `fd` is open (checked just above) and is the end of the socket pair that
    // `raftlock` made for this process and passed by number; nothing else in this process
    // knows the number, so this is its only owner. Adopting an inherited descriptor has no
    // safe form.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn supervise(args: &SuperviseArgs) -> io::Result<u8> {
    let control = adopt_control(args.control_fd)?;
    // CMD must not inherit the control socket.
    rustix::io::fcntl_setfd(&control, FdFlags::CLOEXEC)
        .map_err(|error| os_error("fcntl", error))?;
    if rustix::process::getppid().map(Pid::as_raw_pid) != Some(args.parent) {
        return Err(io::Error::other(
            "raftlock exited before the command started",
        ));
    }
    // Best effort, as before: without it orphans are reaped by init instead. (The kernel
    // takes any non-zero value as "set"; rustix's signature asks for a pid.)
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // A terminal's Ctrl-Z stops raftlock, but must not stop the dead man's switch: the stops
    // are blocked along with the rest and read (and dropped) from the signalfd.
    let mut set = SigSet::empty();
    for signal in BLOCKED_SIGNALS {
        set.add(signal);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|error| os_error("sigprocmask", error))?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|error| os_error("signalfd", error))?;

    let (program, rest) = args
        .cmd
        .split_first()
        .ok_or_else(|| io::Error::other("no command given"))?;
    let mut command = std::process::Command::new(program);
    command.args(rest).process_group(0);
    // SAFETY: `pre_exec` is unsafe because the closure runs in the child between fork and
    // exec; it only empties the signal mask it inherited (sigemptyset on a stack value and
    // sigprocmask, both async-signal-safe, no allocation), so CMD gets its signals.
    unsafe {
        command.pre_exec(|| {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "raftlock: cannot run {}: {error}",
                program.to_string_lossy()
            );
            return Ok(if error.kind() == io::ErrorKind::PermissionDenied {
                126
            } else {
                super::EXIT_CANNOT_RUN
            });
        }
    };
    let leader = Pid::from_child(&child);
    // The child handle is not used again: the leader is reaped below, by pid.
    drop(child);

    let mut timeline = Timeline {
        deadline: args.deadline_ns,
        kill_after: ns(Duration::from_millis(args.kill_after_ms)),
        margin: ns(KILL_MARGIN),
        termed: None,
        killed: false,
    };
    let mut parent_gone = false;
    let mut exited: Option<u8> = None;
    let mut buffer = Vec::new();
    loop {
        let now = monotonic_ns();
        if !parent_gone && rustix::process::getppid().map(Pid::as_raw_pid) != Some(args.parent) {
            parent_gone = true;
        }
        if parent_gone && !timeline.killed {
            signal_group(leader, Signal::KILL);
            timeline.killed = true;
        }
        if timeline.termed.is_none() && (now >= timeline.term_due() || exited.is_some()) {
            signal_group(leader, Signal::TERM);
            signal_group(leader, Signal::CONT);
            timeline.termed = Some(now);
        }
        if !timeline.killed && now >= timeline.kill_due() {
            signal_group(leader, Signal::KILL);
            timeline.killed = true;
        }
        if exited.is_none() {
            exited = leader_exited(leader);
        }
        let alive = group_alive_and_reap(leader, leader);
        if let Some(code) = exited {
            if !alive {
                // Reaps our own exited child (the group is empty, its id is free now).
                let _ = rustix::process::waitpid(Some(leader), WaitOptions::empty());
                return Ok(code);
            }
        }

        // Sleep until something is due, a signal (child exit, parent death) or a command.
        let busy = exited.is_some() || timeline.termed.is_some() || parent_gone;
        let wait = match timeline.next_due() {
            Some(due) => Duration::from_nanos(due.saturating_sub(now)),
            None => CHECK_EVERY,
        };
        let wait = if busy { wait.min(CHECK_EVERY) } else { wait };
        // Whole milliseconds, at least one, as poll(2) counts.
        let timeout = Timespec::try_from(Duration::from_millis(
            u64::try_from(wait.as_millis().max(1)).unwrap_or(u64::MAX),
        ))
        .unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [
            PollFd::new(
                &control,
                if parent_gone {
                    PollFlags::empty()
                } else {
                    PollFlags::IN
                },
            ),
            PollFd::new(&sfd, PollFlags::IN),
        ];
        // An interrupted or failed poll only means one more turn of the loop.
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        let (control_ready, signal_ready) =
            (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
        if signal_ready && drain_signals(&sfd) {
            parent_gone = true;
        }
        if !parent_gone && control_ready {
            let mut chunk = [0u8; 512];
            let n = match rustix::io::read(&control, &mut chunk) {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(Errno::INTR) => Some(0),
                Err(_) => None,
            };
            let Some(n) = n else {
                // raftlock is gone (its end of the socket closed with it).
                parent_gone = true;
                continue;
            };
            buffer.extend_from_slice(&chunk[..n]);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                match parse_control(&String::from_utf8_lossy(&line)) {
                    Some(Control::Deadline(deadline)) => timeline.deadline = deadline,
                    Some(Control::Term) if timeline.termed.is_none() => {
                        signal_group(leader, Signal::TERM);
                        signal_group(leader, Signal::CONT);
                        timeline.termed = Some(monotonic_ns());
                    }
                    Some(Control::Signal(signal)) => {
                        signal_group(leader, signal);
                        signal_group(leader, Signal::CONT);
                        timeline.termed.get_or_insert_with(monotonic_ns);
                    }
                    Some(Control::Term) | None => {}
                }
            }
        }
    }
}

/// Reads every pending signal from the signalfd; true if the parent-death signal was among them.
fn drain_signals(sfd: &SignalFd) -> bool {
    let mut parent_died = false;
    while let Ok(Some(info)) = sfd.read_signal() {
        if i32::try_from(info.ssi_signo) == Ok(MaskSignal::SIGUSR1 as i32) {
            parent_died = true;
        }
    }
    parent_died
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let p = parse_stat("4242 (sh (x) y) S 17 4240 4240 0 -1 4194560").expect("parses");
        assert_eq!((p.pid, p.state, p.ppid, p.pgrp), (4242, b'S', 17, 4240));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn control_lines_parse() {
        assert_eq!(
            parse_control("deadline 123\n"),
            Some(Control::Deadline(123))
        );
        assert_eq!(parse_control("term\n"), Some(Control::Term));
        assert_eq!(
            parse_control("signal 2\n"),
            Some(Control::Signal(Signal::INT))
        );
        assert_eq!(parse_control("signal 0\n"), None);
        assert_eq!(parse_control("term now\n"), None);
        assert_eq!(parse_control("deadline soon\n"), None);
    }

    #[test]
    fn the_timeline_terms_then_kills_before_the_deadline() {
        let mut t = Timeline {
            deadline: 10_000,
            kill_after: 2_000,
            margin: 100,
            termed: None,
            killed: false,
        };
        assert_eq!(t.term_due(), 7_900);
        assert_eq!(t.kill_due(), 9_900);
        assert_eq!(t.next_due(), Some(7_900));
        // An early `term` moves SIGKILL to kill_after later.
        t.termed = Some(1_000);
        assert_eq!(t.kill_due(), 3_000);
        // A deadline that moves closer caps it.
        t.deadline = 2_000;
        assert_eq!(t.kill_due(), 1_900);
        t.killed = true;
        assert_eq!(t.next_due(), None);
    }
}
