//! `raftlock lock NAME -- CMD`: hold a lock while a command runs.

use std::process::ExitStatus;
use std::time::Duration;

use super::commands::open_and_acquire;
use super::{Failure, LockArgs, EXIT_CANNOT_RUN, EXIT_ERROR, EXIT_SESSION_LOST, EXIT_USAGE};
use crate::client::{error_chain, Client};

/// The exit status a shell would report for a finished child.
fn exit_code(status: ExitStatus) -> u8 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(u8::MAX);
        }
    }
    status
        .code()
        .map_or(EXIT_ERROR, |c| u8::try_from(c & 0xff).unwrap_or(EXIT_ERROR))
}

pub(super) async fn lock(
    client: &Client,
    servers: &[String],
    args: LockArgs,
) -> Result<u8, Failure> {
    let (session, fence) = open_and_acquire(
        client,
        args.ttl,
        &args.name,
        args.shared,
        args.wait,
        args.hold,
    )
    .await?;
    let credentials = session.credentials();
    let (program, rest) = args.cmd.split_first().ok_or_else(|| Failure {
        code: EXIT_USAGE,
        message: "no command given".into(),
    })?;
    let spawned = std::process::Command::new(program)
        .args(rest)
        .env("RAFTLOCK_FENCE", fence.to_string())
        .env("RAFTLOCK_LOCK", &args.name)
        .env("RAFTLOCK_SESSION", credentials.id.to_string())
        .env("RAFTLOCK_TOKEN", credentials.token.to_string())
        .env("RAFTLOCK_SERVERS", servers.join(","))
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let _ = session.release(&args.name).await;
            let _ = session.close().await;
            return Err(Failure {
                code: if error.kind() == std::io::ErrorKind::PermissionDenied {
                    126
                } else {
                    EXIT_CANNOT_RUN
                },
                message: format!("cannot run {}: {error}", program.to_string_lossy()),
            });
        }
    };

    // std's Child cannot be awaited and signalled at once, so poll it (cheaply) while watching
    // the session and termination signals. Ctrl-C reaches CMD through the terminal's process
    // group; raftlock keeps waiting so it can release the lock when CMD exits. SIGTERM is
    // passed on to CMD.
    let mut terminate = terminate_signal();
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let mut lost = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
        tokio::select! {
            biased;
            _ = session.lost(), if !lost => {
                lost = true;
                eprintln!("raftlock: session lost while holding {}; terminating the command", args.name);
                signal_child(&child, Signal::Terminate);
                kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
            }
            _ = recv_signal(&mut terminate) => signal_child(&child, Signal::Terminate),
            _ = tokio::signal::ctrl_c() => {}
            _ = poll.tick() => {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if kill_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    signal_child(&child, Signal::Kill);
                    kill_at = None;
                }
            }
        }
    };
    if lost {
        return Err(Failure {
            code: EXIT_SESSION_LOST,
            message: format!(
                "session lost while holding {}; command ended with {status}",
                args.name
            ),
        });
    }
    if let Err(error) = session.release(&args.name).await {
        eprintln!("raftlock: releasing {}: {}", args.name, error_chain(&error));
    }
    if let Err(error) = session.close().await {
        eprintln!("raftlock: closing the session: {}", error_chain(&error));
    }
    Ok(exit_code(status))
}

/// How long CMD has to exit after SIGTERM when the session is lost, before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Signals `lock` sends to CMD.
enum Signal {
    Terminate,
    Kill,
}

/// Sends a signal to a child that has not been reaped (so its pid is still its own).
fn signal_child(child: &std::process::Child, signal: Signal) {
    #[cfg(unix)]
    {
        let signal = match signal {
            Signal::Terminate => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child's.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (child, signal);
    }
}

#[cfg(unix)]
type TerminateSignal = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type TerminateSignal = Option<()>;

fn terminate_signal() -> TerminateSignal {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn recv_signal(signal: &mut TerminateSignal) {
    #[cfg(unix)]
    if let Some(signal) = signal {
        signal.recv().await;
        return;
    }
    let _ = signal;
    std::future::pending::<()>().await
}
