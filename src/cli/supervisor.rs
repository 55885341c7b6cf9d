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

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// How long before the deadline the group is SIGKILLed: time for the kernel to deliver the
/// signal and the processes to die.
pub const KILL_MARGIN: Duration = Duration::from_millis(100);

/// The terminal's job-control stops, which the supervisor ignores (CMD does not).
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

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
    pub parent: libc::pid_t,
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
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sends `signal` to every process of group `pgid`.
fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects. The group id is the pid of our own unreaped child,
    // so it cannot name another group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// One process as `/proc/PID/stat` describes it.
struct ProcStat {
    pid: libc::pid_t,
    state: u8,
    ppid: libc::pid_t,
    pgrp: libc::pid_t,
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
fn group_alive_and_reap(pgid: libc::pid_t, leader: libc::pid_t) -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut alive = false;
    for p in processes() {
        if p.ppid == me && p.state == b'Z' && p.pid != leader {
            let mut status = 0;
            // SAFETY: waitpid on our own exited child; status is a valid out pointer.
            unsafe {
                libc::waitpid(p.pid, &mut status, libc::WNOHANG);
            }
        }
        if p.pgrp == pgid && p.state != b'Z' && p.state != b'X' {
            alive = true;
        }
    }
    alive
}

/// CMD's shell-style status if it has exited, without reaping it.
fn leader_exited(leader: libc::pid_t) -> Option<u8> {
    // SAFETY: an all-zero siginfo_t is valid; waitid writes it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with a valid out pointer; WNOWAIT leaves it a zombie.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            leader as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid and si_status are set by waitid for a CLD_* event (zero otherwise).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if rc != 0 || pid == 0 {
        return None;
    }
    let code = if info.si_code == libc::CLD_EXITED {
        status & 0xff
    } else {
        128 + status
    };
    Some(u8::try_from(code).unwrap_or(u8::MAX))
}

/// A command from `raftlock`.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    Deadline(u64),
    Term,
    Signal(libc::c_int),
}

fn parse_control(line: &str) -> Option<Control> {
    let mut words = line.split_whitespace();
    match (words.next()?, words.next()) {
        ("deadline", Some(ns)) => ns.parse().ok().map(Control::Deadline),
        ("term", None) => Some(Control::Term),
        ("signal", Some(n)) => n.parse().ok().map(Control::Signal),
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

fn last_os_error(what: &str) -> io::Error {
    let error = io::Error::last_os_error();
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// The signals the supervisor takes through a signalfd instead of their default action:
/// parent death, child exits, and the terminal's signals (`raftlock` forwards those).
fn blocked_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [
            libc::SIGUSR1,
            libc::SIGCHLD,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

fn supervise(args: &SuperviseArgs) -> io::Result<u8> {
    let control = args.control_fd;
    // SAFETY: plain syscalls on our own process and an inherited descriptor.
    unsafe {
        // CMD must not inherit the control socket.
        libc::fcntl(control, libc::F_SETFD, libc::FD_CLOEXEC);
        if libc::getppid() != args.parent {
            return Err(io::Error::other(
                "raftlock exited before the command started",
            ));
        }
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // A terminal's Ctrl-Z stops raftlock, but must not stop the dead man's switch.
    for signal in STOP_SIGNALS {
        // SAFETY: SIG_IGN is a valid disposition; CMD gets SIG_DFL back before exec.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let set = blocked_signals();
    // SAFETY: set is initialised; the signalfd is ours.
    let sfd = unsafe {
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(last_os_error("sigprocmask"));
        }
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if sfd < 0 {
        return Err(last_os_error("signalfd"));
    }

    let (program, rest) = args
        .cmd
        .split_first()
        .ok_or_else(|| io::Error::other("no command given"))?;
    let mut command = std::process::Command::new(program);
    command.args(rest).process_group(0);
    // SAFETY: the closure only calls async-signal-safe functions (sigprocmask, signal).
    unsafe {
        command.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for signal in STOP_SIGNALS {
                libc::signal(signal, libc::SIG_DFL);
            }
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
    let leader = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
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
        // SAFETY: getppid has no preconditions.
        if !parent_gone && unsafe { libc::getppid() } != args.parent {
            parent_gone = true;
        }
        if parent_gone && !timeline.killed {
            signal_group(leader, libc::SIGKILL);
            timeline.killed = true;
        }
        if timeline.termed.is_none() && (now >= timeline.term_due() || exited.is_some()) {
            signal_group(leader, libc::SIGTERM);
            signal_group(leader, libc::SIGCONT);
            timeline.termed = Some(now);
        }
        if !timeline.killed && now >= timeline.kill_due() {
            signal_group(leader, libc::SIGKILL);
            timeline.killed = true;
        }
        if exited.is_none() {
            exited = leader_exited(leader);
        }
        let alive = group_alive_and_reap(leader, leader);
        if let Some(code) = exited {
            if !alive {
                let mut status = 0;
                // SAFETY: reaps our own exited child (the group is empty, its id is free now).
                unsafe {
                    libc::waitpid(leader, &mut status, 0);
                }
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
        let timeout = libc::c_int::try_from(wait.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        let mut fds = [
            libc::pollfd {
                fd: control,
                events: if parent_gone { 0 } else { libc::POLLIN },
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 2, timeout);
        }
        if fds[1].revents != 0 && drain_signals(sfd) {
            parent_gone = true;
        }
        if !parent_gone && fds[0].revents != 0 {
            let mut chunk = [0u8; 512];
            // SAFETY: reads into a buffer we own.
            let n = unsafe { libc::read(control, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted)
            {
                // raftlock is gone (its end of the socket closed with it).
                parent_gone = true;
                continue;
            }
            let n = usize::try_from(n).unwrap_or(0);
            buffer.extend_from_slice(&chunk[..n]);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                match parse_control(&String::from_utf8_lossy(&line)) {
                    Some(Control::Deadline(deadline)) => timeline.deadline = deadline,
                    Some(Control::Term) if timeline.termed.is_none() => {
                        signal_group(leader, libc::SIGTERM);
                        signal_group(leader, libc::SIGCONT);
                        timeline.termed = Some(monotonic_ns());
                    }
                    Some(Control::Signal(signal)) => {
                        signal_group(leader, signal);
                        signal_group(leader, libc::SIGCONT);
                        timeline.termed.get_or_insert_with(monotonic_ns);
                    }
                    Some(Control::Term) | None => {}
                }
            }
        }
    }
}

/// Reads every pending signal from the signalfd; true if the parent-death signal was among them.
fn drain_signals(sfd: RawFd) -> bool {
    let mut parent_died = false;
    loop {
        // SAFETY: an all-zero signalfd_siginfo is valid; read fills it.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads one record into the struct we own.
        let n = unsafe { libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
        if usize::try_from(n).ok() != Some(size) {
            return parent_died;
        }
        if info.ssi_signo == libc::SIGUSR1 as u32 {
            parent_died = true;
        }
    }
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
        assert_eq!(parse_control("signal 2\n"), Some(Control::Signal(2)));
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
