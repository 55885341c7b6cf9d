//! `raftlock lock NAME -- CMD`: hold a lock while a command runs, and never let the command
//! outlive the lock.
//!
//! Once the lock is granted, `raftlock` starts a [supervisor](super::supervisor) (its own binary,
//! re-executed) that runs CMD in a new process group. `raftlock` watches the session's and the
//! grant's local [`Lease`](crate::client::Lease) and tells the supervisor, over a socket, the
//! current lease deadline whenever it moves, `term` at jeopardy, loss or revocation, and every
//! SIGINT, SIGTERM, SIGHUP or SIGQUIT it receives. The supervisor enforces the deadline by its
//! own clock, so neither a stopped nor a killed `raftlock` lets CMD's group run past the lease.
//! When the supervisor reports the group gone, `raftlock` releases the lock (unless it is
//! already lost) and exits with a status that says why CMD ended.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus};
use std::time::Duration;

use rustix::io::{Errno, FdFlags};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use rustix::process::Signal as Sig;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use super::supervisor::{monotonic_ns, KILL_MARGIN};
use super::{
    mode, wait, Failure, LockArgs, EXIT_ERROR, EXIT_HOLD_LIMIT, EXIT_NOT_ACQUIRED, EXIT_REVOKED,
    EXIT_SESSION_LOST,
};
use crate::client::{error_chain, Client, LeaseState, LockGuard, LostReason, Session};
use crate::protocol::LockMode;
use crate::protocol::{Response, MAX_OWNER_LEN};

/// How often `raftlock` checks whether the supervisor has exited.
const POLL: Duration = Duration::from_millis(20);

/// The longest the cleanup after a signal (closing the session) may delay the exit.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(5);

/// The exit status a shell would report for a finished child.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(signal) = status.signal() {
        return u8::try_from(128 + signal).unwrap_or(u8::MAX);
    }
    status
        .code()
        .map_or(EXIT_ERROR, |c| u8::try_from(c & 0xff).unwrap_or(EXIT_ERROR))
}

/// `--kill-after` as the supervisor applies it: at most a quarter of the TTL, so that the
/// SIGTERM that the deadline schedules (`deadline - kill_after - margin`) never comes before
/// jeopardy would, while keep-alives are merely late.
pub(super) fn effective_kill_after(kill_after: Duration, ttl: Duration) -> Duration {
    kill_after.min(ttl / 4)
}

/// The termination signals `raftlock lock` catches and passes on to CMD's group.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal received.
    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.interrupt.recv() => Sig::INT,
            _ = self.terminate.recv() => Sig::TERM,
            _ = self.hangup.recv() => Sig::HUP,
            _ = self.quit.recv() => Sig::QUIT,
        }
    }
}

/// 128 + N, a shell's status for signal N.
fn signal_status(signal: Sig) -> u8 {
    u8::try_from(128 + signal.as_raw()).unwrap_or(u8::MAX)
}

/// Closes the session (which also drops a queued acquire and releases its grants), bounded.
/// With `--verbose`: prints a `QueuePosition` push for the lock being waited for.
fn say_queue_position(name: &str, event: &Response) {
    if let Response::QueuePosition {
        lock, ahead, mode, ..
    } = event
    {
        if lock == name {
            let held = match mode {
                Some(LockMode::Exclusive) => "held exclusive",
                Some(LockMode::Shared) => "held shared",
                None => "free",
            };
            eprintln!("raftlock: waiting for {name}: {ahead} ahead ({held})");
        }
    }
}

async fn close_quietly(session: Session) {
    match tokio::time::timeout(CLEANUP_PATIENCE, session.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(error = %error_chain(&error), "closing the session"),
        Err(_) => tracing::debug!("closing the session timed out"),
    }
}

/// Why CMD's group was ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// `raftlock` received this signal.
    Signal(Sig),
    /// The session's lease entered jeopardy.
    Jeopardy,
    /// The session's or the grant's lease was lost.
    Lost(LostReason),
}

/// `raftlock`'s end of the control socket.
struct Control {
    fd: OwnedFd,
}

impl Control {
    /// Sends one command line; a supervisor that has exited is noticed by its exit status.
    fn send(&self, line: &str) {
        let bytes = format!("{line}\n");
        // MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE; the error itself is
        // not needed (the supervisor's exit is seen by its status).
        let _ = rustix::net::send(&self.fd, bytes.as_bytes(), SendFlags::NOSIGNAL);
    }

    fn send_deadline(&self, deadline: Instant) {
        self.send(&format!("deadline {}", monotonic_at(deadline)));
    }
}

/// `at` on CLOCK_MONOTONIC in nanoseconds, for the supervisor. The raw clock is read first,
/// so the result is never later than `at`.
fn monotonic_at(at: Instant) -> u64 {
    let raw = monotonic_ns();
    let now = Instant::now();
    if at >= now {
        raw.saturating_add(u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX))
    } else {
        raw.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A connected pair of Unix stream sockets, both close-on-exec.
fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// What CMD is run with.
struct Launch<'a> {
    cmd: &'a [OsString],
    env: Vec<(&'static str, String)>,
    deadline: Instant,
    kill_after: Duration,
}

/// Starts the supervisor (this binary, `__supervise`), which starts CMD.
fn spawn_supervisor(launch: &Launch<'_>) -> io::Result<(Child, Control)> {
    let (ours, theirs) = socket_pair()?;
    let their_fd = theirs.as_raw_fd();
    let parent = rustix::process::getpid();
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg("__supervise")
        .arg("--control-fd")
        .arg(their_fd.to_string())
        .arg("--parent")
        .arg(parent.as_raw_pid().to_string())
        .arg("--deadline-ns")
        .arg(monotonic_at(launch.deadline).to_string())
        .arg("--kill-after-ms")
        .arg(launch.kill_after.as_millis().to_string())
        .arg("--")
        .args(launch.cmd)
        .envs(launch.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: `pre_exec` is unsafe because the closure runs in the child between fork and
    // exec, where only async-signal-safe work is allowed. It makes three system calls through
    // rustix (fcntl, prctl, getppid: each one direct syscall, no lock, no allocation) and
    // builds its error from a raw errno, which does not allocate either.
    unsafe {
        command.pre_exec(move || {
            // The supervisor keeps its end of the socket across exec.
            rustix::io::fcntl_setfd(&theirs, FdFlags::empty())?;
            // It learns of raftlock's death by a signal as well as by end of file...
            rustix::process::set_parent_process_death_signal(Some(Sig::USR1))?;
            // ...and if raftlock died before prctl took effect, the signal never comes.
            if rustix::process::getppid() != Some(parent) {
                return Err(Errno::SRCH.into());
            }
            Ok(())
        });
    }
    let child = command.spawn();
    // The closure owns our copy of the supervisor's end: dropping the command closes it.
    drop(command);
    Ok((child?, Control { fd: ours }))
}

/// The default `--owner`: `user@host pid N: CMD`, cut to the protocol's bound.
pub(super) fn default_owner(cmd: &[OsString]) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", rustix::process::getuid().as_raw()));
    // The host name is uname's node name (what gethostname(2) returns on Linux).
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let command: Vec<String> = cmd
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut owner = format!(
        "{user}@{host} pid {}: {}",
        std::process::id(),
        command.join(" ")
    );
    if owner.len() > MAX_OWNER_LEN {
        let mut end = MAX_OWNER_LEN;
        while !owner.is_char_boundary(end) {
            end -= 1;
        }
        owner.truncate(end);
    }
    owner
}

/// Runs `raftlock lock`.
/// `tls_env` are the TLS variables CMD gets besides the lock's.
pub(super) async fn lock(
    client: &Client,
    servers: &[String],
    tls_env: Vec<(&'static str, String)>,
    args: LockArgs,
) -> Result<u8, Failure> {
    let mut signals = Signals::new()?;
    let not_acquired = args.conflict_exit_code.unwrap_or(EXIT_NOT_ACQUIRED);

    // Every signal while the lock is not yet held ends raftlock, after cancelling the queued
    // acquire (if any) and closing the session.
    let session = tokio::select! {
        biased;
        signal = signals.recv() => return Ok(signal_status(signal)),
        session = client.open_session_as(
            args.ttl,
            Some(args.owner.clone().unwrap_or_else(|| default_owner(&args.cmd))),
        ) => session?,
    };
    let mut pushes = session.pushes();
    let mut acquire =
        Box::pin(session.lock_with_hold(&args.name, mode(args.shared), wait(args.wait), args.hold));
    let mut listening = args.verbose;
    let acquired = loop {
        tokio::select! {
            biased;
            signal = signals.recv() => break Err(signal),
            guard = &mut acquire => break Ok(guard),
            push = pushes.recv(), if listening => match push {
                Ok(event) => say_queue_position(&args.name, &event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => listening = false,
            },
        }
    };
    drop(pushes);
    let guard = match acquired {
        Err(signal) => {
            // Take the acquire out of the queue; if it was granted meanwhile, release it.
            let _ = tokio::time::timeout(CLEANUP_PATIENCE, session.cancel(&args.name)).await;
            if let Ok(Ok(guard)) = tokio::time::timeout(CLEANUP_PATIENCE, &mut acquire).await {
                let _ = tokio::time::timeout(CLEANUP_PATIENCE, guard.release()).await;
            }
            drop(acquire);
            close_quietly(session).await;
            return Ok(signal_status(signal));
        }
        Ok(Err(error)) => {
            let mut failure = Failure::from(error);
            if failure.code == EXIT_NOT_ACQUIRED {
                failure.code = not_acquired;
            }
            drop(acquire);
            close_quietly(session).await;
            return Err(failure);
        }
        Ok(Ok(guard)) => guard,
    };
    drop(acquire);

    let credentials = session.credentials();
    let kill_after = effective_kill_after(args.kill_after, credentials.ttl);
    let mut session_lease = session.lease();
    let mut grant_lease = guard.lease();
    let granted = *grant_lease.borrow();
    let deadline = granted.deadline;
    if let LeaseState::Lost(reason) = granted.state {
        // A grant whose lease ended before CMD could start (a hold limit counted from an
        // acquire that waited in the queue for longer): CMD is not run at all.
        return finish(session, guard, Some(Cause::Lost(reason)), None, &args.name).await;
    }
    let launch = Launch {
        cmd: &args.cmd,
        env: vec![
            ("RAFTLOCK_FENCE", guard.fence().to_string()),
            ("RAFTLOCK_LOCK", args.name.clone()),
            ("RAFTLOCK_SESSION", credentials.id.to_string()),
            ("RAFTLOCK_TOKEN", credentials.token.to_string()),
            ("RAFTLOCK_SERVERS", servers.join(",")),
        ]
        .into_iter()
        .chain(tls_env)
        .collect(),
        deadline,
        kill_after,
    };
    let (mut supervisor, control) = match spawn_supervisor(&launch) {
        Ok(started) => started,
        Err(error) => {
            let _ = guard.release().await;
            close_quietly(session).await;
            return Err(Failure {
                code: EXIT_ERROR,
                message: format!("cannot start the command's supervisor: {error}"),
            });
        }
    };

    let mut sent_deadline = deadline;
    let mut cause: Option<Cause> = None;
    let mut session_open = true;
    let mut grant_open = true;
    let mut poll = tokio::time::interval(POLL);
    // --extend: renew the hold every third of it, one Extend at a time.
    let renew_every = args
        .hold
        .filter(|_| args.extend)
        .map(|hold| (hold, hold / 3));
    let mut renew_at = renew_every.map(|(_, every)| Instant::now() + every);
    let mut renewing = None;
    let status = loop {
        tokio::select! {
            biased;
            signal = signals.recv() => {
                control.send(&format!("signal {}", signal.as_raw()));
                cause.get_or_insert(Cause::Signal(signal));
            }
            changed = session_lease.changed(), if session_open => session_open = changed.is_ok(),
            changed = grant_lease.changed(), if grant_open => grant_open = changed.is_ok(),
            renewed = async { renewing.as_mut().expect("guarded").await }, if renewing.is_some() => {
                renewing = None;
                if let Err(error) = renewed {
                    eprintln!("raftlock: extending the hold of {}: {}", args.name, error_chain(&error));
                }
                continue;
            }
            _ = sleep_until_some(renew_at), if renewing.is_none() && cause.is_none() => {
                if let Some((hold, every)) = renew_every {
                    renewing = Some(Box::pin(guard.extend(hold)));
                    renew_at = Some(Instant::now() + every);
                }
                continue;
            }
            _ = poll.tick() => {
                if let Some(status) = supervisor.try_wait()? {
                    break status;
                }
                continue;
            }
        }
        let session_now = *session_lease.borrow_and_update();
        let grant_now = *grant_lease.borrow_and_update();
        let deadline = grant_now.deadline.min(session_now.deadline);
        if deadline != sent_deadline {
            control.send_deadline(deadline);
            sent_deadline = deadline;
        }
        let ending = match (session_now.state, grant_now.state) {
            (LeaseState::Lost(reason), _) | (_, LeaseState::Lost(reason)) => {
                Some(Cause::Lost(reason))
            }
            (LeaseState::Jeopardy, _) => Some(Cause::Jeopardy),
            _ => None,
        };
        if let (None, Some(ending)) = (cause, ending) {
            cause = Some(ending);
            control.send("term");
            eprintln!(
                "raftlock: {} while holding {}; terminating the command",
                describe(ending),
                args.name
            );
        }
    };
    drop(control);
    drop(renewing);

    let session_now = *session_lease.borrow();
    let grant_now = *grant_lease.borrow();
    if cause.is_none() && Instant::now() + kill_after + KILL_MARGIN >= sent_deadline {
        // The supervisor ended CMD by its own clock: the deadline came without a renewal.
        cause = Some(if grant_now.deadline < session_now.deadline {
            Cause::Lost(LostReason::HoldLimit)
        } else {
            Cause::Lost(LostReason::LeaseExpired)
        });
    }
    let code = exit_code(status);
    finish(session, guard, cause, Some(code), &args.name).await
}

/// Sleeps until `at`; never wakes for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How a cause reads in messages.
fn describe(cause: Cause) -> &'static str {
    match cause {
        Cause::Signal(_) => "signal received",
        Cause::Jeopardy => "session lost (no keep-alive confirmed for half the TTL)",
        Cause::Lost(LostReason::HoldLimit) => "hold limit reached",
        Cause::Lost(LostReason::Revoked) => "lock revoked",
        Cause::Lost(_) => "session lost",
    }
}

/// After CMD's group is gone (`code`: CMD's status; `None` if it was never started): releases
/// what is still held and picks the exit status.
async fn finish(
    session: Session,
    guard: LockGuard,
    cause: Option<Cause>,
    code: Option<u8>,
    name: &str,
) -> Result<u8, Failure> {
    match cause {
        None | Some(Cause::Signal(_)) => {
            if let Err(error) = guard.release().await {
                eprintln!("raftlock: releasing {name}: {}", error_chain(&error));
            }
            if let Err(error) = session.close().await {
                eprintln!("raftlock: closing the session: {}", error_chain(&error));
            }
            Ok(match cause {
                Some(Cause::Signal(signal)) => signal_status(signal),
                _ => code.unwrap_or(EXIT_ERROR),
            })
        }
        Some(lost) => {
            // The lock may already belong to someone else; closing the session is only tidy.
            drop(guard);
            close_quietly(session).await;
            let exit = match lost {
                Cause::Lost(LostReason::HoldLimit) => EXIT_HOLD_LIMIT,
                Cause::Lost(LostReason::Revoked) => EXIT_REVOKED,
                _ => EXIT_SESSION_LOST,
            };
            let outcome = match code {
                Some(code) => format!("the command ended with status {code}"),
                None => "the command was not started".to_string(),
            };
            Err(Failure {
                code: exit,
                message: format!("{} while holding {name}; {outcome}", describe(lost)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_after_is_capped_at_a_quarter_of_the_ttl() {
        let s = Duration::from_secs;
        assert_eq!(effective_kill_after(s(2), s(10)), s(2));
        assert_eq!(effective_kill_after(s(5), s(2)), Duration::from_millis(500));
    }

    #[test]
    fn monotonic_instants_are_never_later_than_asked() {
        let at = Instant::now() + Duration::from_secs(1);
        let before = monotonic_ns();
        let raw = monotonic_at(at);
        assert!(raw <= monotonic_ns() + 1_000_000_000);
        assert!(raw >= before + 500_000_000);
    }

    #[test]
    fn the_default_owner_names_user_host_pid_and_command() {
        let owner = default_owner(&["make".into(), "-j4".into()]);
        assert!(owner.contains('@'), "{owner}");
        assert!(
            owner.ends_with(&format!("pid {}: make -j4", std::process::id())),
            "{owner}"
        );
        let long = default_owner(&["x".repeat(1000).into()]);
        assert!(long.len() <= MAX_OWNER_LEN);
    }
}
