//! The `raftlock` command line: argument parsing and the commands, over [`Client`];
//! [`bench`](mod@bench): `raftlock bench`.

pub mod bench;
pub mod duration;
pub mod json;

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use self::duration::Span;
use self::json::Json;
use crate::client::{error_chain, Client, ClientOptions, Error, Session, SessionCredentials, Wait};
use crate::lockspace::{Fence, LockMode, SessionId};
use crate::protocol::{LockState, MemberStatus, StatusInfo, MAX_READ};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any failure not listed below (no server, server error, bad response, I/O).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: bad command line (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the lock was not acquired (busy on a try-once, or the wait timed out).
pub const EXIT_NOT_ACQUIRED: u8 = 3;
/// Exit status: the session expired or was lost (for `lock`: while CMD ran; CMD was terminated).
pub const EXIT_SESSION_LOST: u8 = 4;
/// Exit status: the session does not hold the lock (stale fence, not holder, conflict).
pub const EXIT_NOT_HOLDER: u8 = 5;
/// Exit status of `lock` when CMD could not be started.
pub const EXIT_CANNOT_RUN: u8 = 127;

const EXIT_CODES: &str = "\
Exit status:
  0    success (for `lock`: CMD's own status; 128+N if CMD was killed by signal N)
  1    error: no server reachable, server or protocol error, I/O error
  2    bad command line
  3    lock not acquired: busy (--wait 0) or the wait timed out
  4    session expired or lost (`lock` terminates CMD when its session is lost)
  5    not the holder: stale fence, lock not held by the session, or conflicting mode
  127  `lock` could not start CMD

Sequence numbers: every command that changes state sends the current Unix time in
microseconds as the session's sequence number (strictly increasing within a process), so
commands of one session run by different processes one after another never reuse a number
the daemon has seen (which it would answer from its exactly-once table instead of executing).
Run such commands one after another, not concurrently, and keep the clock from stepping back.";

/// raftlock: the command line client of a raftlock cluster (distributed locks with fencing
/// tokens, and files appended under them).
#[derive(Debug, Parser)]
#[command(name = "raftlock", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Cluster members to contact, comma separated (any member: followers redirect).
    #[arg(
        long,
        env = "RAFTLOCK_SERVERS",
        default_value = "127.0.0.1:7400",
        value_delimiter = ',',
        global = true
    )]
    pub servers: Vec<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request (reconnects and retries included) after this long, e.g. 10s.
    #[arg(long, default_value = "30s", value_parser = duration::parse_finite, global = true)]
    pub timeout: Duration,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold a lock while a command runs (like flock(1), cluster-wide).
    #[command(after_help = "\
CMD runs with RAFTLOCK_FENCE (the fencing token), RAFTLOCK_LOCK, RAFTLOCK_SESSION,
RAFTLOCK_TOKEN and RAFTLOCK_SERVERS in its environment, so it can append under the lock.
The session is kept alive while CMD runs; if it is lost anyway, CMD gets SIGTERM (SIGKILL
5s later) and raftlock exits 4. SIGTERM sent to raftlock is passed on to CMD.
raftlock exits with CMD's status; 3 if the lock was not acquired.

Example:
  raftlock lock build-cache --wait 2m -- make -j4
  raftlock lock journal -- sh -c 'raftlock append journal.log --lock journal --fence $RAFTLOCK_FENCE \"hello\"'")]
    Lock(LockArgs),
    /// Acquire a lock for a script and print the session, token and fence.
    #[command(after_help = "\
Opens a session with --ttl, acquires, prints shell assignments (or JSON) and exits. The lock
stays held only while the session lives: run `raftlock keepalive` within every TTL, and
`raftlock release NAME --close` at the end (the variables are read from the environment).

Example:
  eval \"$(raftlock acquire nightly-job --ttl 60s)\"
  raftlock append out.log --lock nightly-job \"done\"
  raftlock release nightly-job --close")]
    Acquire(AcquireArgs),
    /// Release a lock held by a session (from `acquire`), optionally closing the session.
    #[command(
        after_help = "Example:\n  raftlock release nightly-job --session 12 --token 9876 --close"
    )]
    Release(ReleaseArgs),
    /// Close a session (from `acquire`), releasing every lock it holds.
    #[command(after_help = "Example:\n  raftlock close --session 12 --token 9876")]
    Close(SessionArgs),
    /// Renew a session's lease once (for sessions opened by `acquire`).
    #[command(after_help = "Example:\n  raftlock keepalive --session 12 --token 9876")]
    Keepalive(SessionArgs),
    /// Append data to a file under a lock's fencing token.
    #[command(after_help = "\
The append is applied only if FENCE is the lock's current exclusive grant to the session
(else exit 5). DATA `-` reads the data from stdin.

Example:
  raftlock append journal.log --lock journal --fence 42 --session 12 --token 9876 \"line\\n\"")]
    Append(AppendArgs),
    /// Read a file (all of it, or a range) to stdout.
    #[command(after_help = "Example:\n  raftlock read journal.log --offset 0 --len 100")]
    Read(ReadArgs),
    /// List held and awaited locks with their holders and queues.
    #[command(after_help = "Example:\n  raftlock locks build-")]
    Locks(LocksArgs),
    /// Show the node's status: role, term, leader, commit/applied indexes, members.
    #[command(after_help = "Example:\n  raftlock --servers 10.0.0.1:7400 status")]
    Status,
    /// Measure throughput and latency of a cluster (or of local daemons it starts).
    Bench(bench::BenchArgs),
    /// Cluster administration: status of every member, add, remove, transfer leadership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `raftlock cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every member's role, term, commit and applied index, and lag behind the leader.
    #[command(after_help = "\
Asks any reachable --servers member for the membership, then every member for its own status.
A member that does not answer is listed as unreachable.

Example:
  raftlock --servers 10.0.0.1:7400 cluster status")]
    Status,
    /// Add a node: start it first with an empty data directory and --join, then run this.
    #[command(after_help = "\
The leader adds the node as a learner, waits until it has caught up with the log, promotes
it to voter and answers once the promotion is committed.

Example:
  raftlockd --id 4 --listen 10.0.0.4:7400 --join --peer 1=10.0.0.1:7400,2=10.0.0.2:7400,3=10.0.0.3:7400
  raftlock --servers 10.0.0.1:7400 cluster add 4 10.0.0.4:7400")]
    Add {
        /// The new node's id (its --id).
        id: u64,
        /// The address peers and clients reach it at (its --advertise or --listen).
        addr: String,
    },
    /// Remove a member (then stop it).
    #[command(after_help = "Example:\n  raftlock cluster remove 4")]
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Hand leadership to ID (default: the most up-to-date follower).
    #[command(after_help = "Example:\n  raftlock cluster transfer-leader 2")]
    TransferLeader {
        /// The voter to hand over to.
        id: Option<u64>,
    },
}

/// Arguments of `lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name.
    pub name: String,
    /// Take the lock in shared mode (readers share it) instead of exclusive.
    #[arg(long)]
    pub shared: bool,
    /// How long to wait for the lock: 0 tries once, e.g. 30s, or forever.
    #[arg(long, default_value = "forever", value_parser = duration::parse)]
    pub wait: Span,
    /// The session's lease: how long the lock outlives this process if it dies.
    #[arg(long, default_value = "10s", value_parser = duration::parse_finite)]
    pub ttl: Duration,
    /// Hold the lock at most this long (the cluster releases it then).
    #[arg(long, value_parser = duration::parse_finite)]
    pub hold: Option<Duration>,
    /// The command to run, and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub cmd: Vec<OsString>,
}

/// Arguments of `acquire`.
#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// The lock's name.
    pub name: String,
    /// Take the lock in shared mode instead of exclusive.
    #[arg(long)]
    pub shared: bool,
    /// How long to wait for the lock: 0 tries once, e.g. 30s, or forever.
    #[arg(long, default_value = "forever", value_parser = duration::parse)]
    pub wait: Span,
    /// The session's lease; keep it alive with `raftlock keepalive` within this period.
    #[arg(long, default_value = "60s", value_parser = duration::parse_finite)]
    pub ttl: Duration,
    /// Hold the lock at most this long.
    #[arg(long, value_parser = duration::parse_finite)]
    pub hold: Option<Duration>,
}

/// A session opened by another process.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The session id.
    #[arg(long, env = "RAFTLOCK_SESSION")]
    pub session: SessionId,
    /// The session's secret token.
    #[arg(long, env = "RAFTLOCK_TOKEN")]
    pub token: u64,
}

/// Arguments of `release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The lock's name.
    #[arg(env = "RAFTLOCK_LOCK")]
    pub name: String,
    /// The session holding it.
    #[command(flatten)]
    pub session: SessionArgs,
    /// Also close the session (releasing every other lock it holds).
    #[arg(long)]
    pub close: bool,
}

/// Arguments of `append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The file to append to.
    pub file: String,
    /// The lock guarding the file.
    #[arg(long, env = "RAFTLOCK_LOCK")]
    pub lock: String,
    /// The fencing token of the session's exclusive grant of the lock.
    #[arg(long, env = "RAFTLOCK_FENCE")]
    pub fence: Fence,
    /// The session holding the lock.
    #[command(flatten)]
    pub session: SessionArgs,
    /// The bytes to append, or `-` to read them from stdin.
    pub data: String,
}

/// Arguments of `read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The file to read.
    pub file: String,
    /// Where to start.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// How many bytes at most (default: to the end).
    #[arg(long)]
    pub len: Option<u64>,
    /// Let any member answer from its own state, which may lag the leader.
    #[arg(long)]
    pub stale: bool,
}

/// Arguments of `locks`.
#[derive(Debug, Args)]
pub struct LocksArgs {
    /// Only locks whose name starts with this.
    pub prefix: Option<String>,
    /// Let any member answer from its own state.
    #[arg(long)]
    pub stale: bool,
}

/// A command's failure: the message for stderr and the exit status.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match error {
            Error::Busy | Error::WaitTimeout => EXIT_NOT_ACQUIRED,
            Error::SessionExpired => EXIT_SESSION_LOST,
            Error::StaleFence | Error::NotHolder | Error::Conflict => EXIT_NOT_HOLDER,
            _ => EXIT_ERROR,
        };
        Failure {
            code,
            message: error_chain(&error),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure {
            code: EXIT_ERROR,
            message: error_chain(&error),
        }
    }
}

/// Parses the process arguments, runs the command and returns the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::Bench(args) = &cli.command {
        return bench::main(args, &cli.servers, cli.json);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raftlock: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("raftlock: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Runs one parsed command; returns the exit status on success.
async fn run(cli: Cli) -> Result<u8, Failure> {
    let options = ClientOptions {
        connect_timeout: cli.timeout.min(Duration::from_secs(2)),
        request_timeout: cli.timeout.min(Duration::from_secs(5)),
        retry_timeout: cli.timeout,
        clock_seq: true,
        ..ClientOptions::default()
    };
    let servers: Vec<String> = cli
        .servers
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let client = Client::connect(servers.clone(), options).await?;
    let json = cli.json;
    match cli.command {
        Command::Lock(args) => lock(&client, &servers, args).await,
        Command::Acquire(args) => acquire(&client, args, json).await,
        Command::Release(args) => release(&client, args, json).await,
        Command::Close(args) => close(&client, args, json).await,
        Command::Keepalive(args) => keepalive(&client, args, json).await,
        Command::Append(args) => append(&client, args, json).await,
        Command::Read(args) => read(&client, args, json).await,
        Command::Locks(args) => locks(&client, args, json).await,
        Command::Status => status(&client, json).await,
        Command::Bench(_) => unreachable!("bench is dispatched before connecting"),
        Command::Cluster(command) => cluster(&client, &servers, command, json).await,
    }
}

fn mode(shared: bool) -> LockMode {
    if shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    }
}

fn wait(span: Span) -> Wait {
    match span {
        Span::Forever => Wait::Forever,
        Span::Finite(d) if d.is_zero() => Wait::TryOnce,
        Span::Finite(d) => Wait::For(d),
    }
}

fn resume(client: &Client, args: &SessionArgs) -> Session {
    client.resume_session(
        SessionCredentials {
            id: args.session,
            token: args.token,
            // Unused without background keep-alives.
            ttl: Duration::ZERO,
        },
        false,
    )
}

/// Prints one line (JSON or text) on stdout.
fn say(text: impl std::fmt::Display) {
    println!("{text}");
}

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

/// Opens a session and acquires `name` in it. If the lock is not granted the session is closed
/// (best effort: the lock's failure is what the user needs to see) and the failure returned.
async fn open_and_acquire(
    client: &Client,
    ttl: Duration,
    name: &str,
    shared: bool,
    wait_for: Span,
    hold: Option<Duration>,
) -> Result<(Session, Fence), Failure> {
    let session = client.open_session(ttl).await?;
    match session
        .acquire(name, mode(shared), wait(wait_for), hold)
        .await
    {
        Ok(fence) => Ok((session, fence)),
        Err(error) => {
            let failure = Failure::from(error);
            if let Err(close) = session.close().await {
                tracing::debug!(error = %error_chain(&close), "closing the session after a failed acquire");
            }
            Err(failure)
        }
    }
}

async fn lock(client: &Client, servers: &[String], args: LockArgs) -> Result<u8, Failure> {
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

async fn acquire(client: &Client, args: AcquireArgs, json: bool) -> Result<u8, Failure> {
    let (session, fence) = open_and_acquire(
        client,
        args.ttl,
        &args.name,
        args.shared,
        args.wait,
        args.hold,
    )
    .await?;
    let c = session.credentials();
    if json {
        say(Json::object([
            ("lock", Json::str(&args.name)),
            ("session", Json::Uint(c.id)),
            ("token", Json::Uint(c.token)),
            ("fence", Json::Uint(fence)),
            (
                "ttl_ms",
                Json::Uint(u64::try_from(c.ttl.as_millis()).unwrap_or(u64::MAX)),
            ),
        ]));
    } else {
        say(format!(
            "export RAFTLOCK_LOCK={} RAFTLOCK_SESSION={} RAFTLOCK_TOKEN={} RAFTLOCK_FENCE={}",
            shell_quote(&args.name),
            c.id,
            c.token,
            fence
        ));
    }
    // Leave the session open: dropping the handle stops only this process's keep-alives.
    drop(session);
    Ok(EXIT_OK)
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

async fn release(client: &Client, args: ReleaseArgs, json: bool) -> Result<u8, Failure> {
    let session = resume(client, &args.session);
    session.release(&args.name).await?;
    if args.close {
        session.close().await?;
    }
    if json {
        say(Json::object([
            ("released", Json::str(&args.name)),
            ("closed", Json::Bool(args.close)),
        ]));
    }
    Ok(EXIT_OK)
}

async fn close(client: &Client, args: SessionArgs, json: bool) -> Result<u8, Failure> {
    resume(client, &args).close().await?;
    if json {
        say(Json::object([("closed", Json::Uint(args.session))]));
    }
    Ok(EXIT_OK)
}

async fn keepalive(client: &Client, args: SessionArgs, json: bool) -> Result<u8, Failure> {
    let ttl = resume(client, &args).keep_alive().await?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if json {
        say(Json::object([("ttl_ms", Json::Uint(ttl_ms))]));
    } else {
        say(format!("session {} renewed for {ttl_ms}ms", args.session));
    }
    Ok(EXIT_OK)
}

async fn append(client: &Client, args: AppendArgs, json: bool) -> Result<u8, Failure> {
    let data = if args.data == "-" {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data)?;
        data
    } else {
        args.data.into_bytes()
    };
    let session = resume(client, &args.session);
    let len = data.len();
    let (offset, size) = session
        .append(&args.file, (args.lock.as_str(), args.fence), data)
        .await?;
    if json {
        say(Json::object([
            ("file", Json::str(&args.file)),
            ("offset", Json::Uint(offset)),
            ("size", Json::Uint(size)),
        ]));
    } else {
        say(format!(
            "appended {len} bytes to {} at offset {offset} (size {size})",
            args.file
        ));
    }
    Ok(EXIT_OK)
}

async fn read(client: &Client, args: ReadArgs, json: bool) -> Result<u8, Failure> {
    let mut data = Vec::new();
    let mut offset = args.offset;
    let mut size;
    loop {
        let want = match args.len {
            Some(len) => (len - data.len() as u64).min(MAX_READ),
            None => MAX_READ,
        };
        let (chunk, total) = client.read(&args.file, offset, want, args.stale).await?;
        size = total;
        offset += chunk.len() as u64;
        let done = chunk.is_empty() || offset >= total;
        data.extend_from_slice(&chunk);
        if done || args.len.is_some_and(|len| data.len() as u64 >= len) {
            break;
        }
    }
    if json {
        let body = match std::str::from_utf8(&data) {
            Ok(text) => ("data", Json::str(text)),
            Err(_) => ("data_hex", Json::Str(hex(&data))),
        };
        say(Json::object([
            ("file", Json::str(&args.file)),
            ("offset", Json::Uint(args.offset)),
            ("size", Json::Uint(size)),
            body,
        ]));
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(&data)?;
        out.flush()?;
    }
    Ok(EXIT_OK)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}

async fn locks(client: &Client, args: LocksArgs, json: bool) -> Result<u8, Failure> {
    let locks = client.locks(args.prefix.as_deref(), args.stale).await?;
    if json {
        say(Json::Array(locks.iter().map(lock_json).collect()));
        return Ok(EXIT_OK);
    }
    if locks.is_empty() {
        say("no locks held or awaited");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 4]> = locks
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.mode.map_or("-", mode_name).to_string(),
                l.holders
                    .iter()
                    .map(|h| format!("{}:{}", h.session, h.fence))
                    .collect::<Vec<_>>()
                    .join(" "),
                l.waiters
                    .iter()
                    .map(|w| format!("{}:{}", w.session, mode_name(w.mode)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    print_table(
        [
            "LOCK",
            "MODE",
            "HOLDERS(session:fence)",
            "WAITERS(session:mode)",
        ],
        &rows,
    );
    Ok(EXIT_OK)
}

fn lock_json(lock: &LockState) -> Json {
    Json::object([
        ("name", Json::str(&lock.name)),
        ("mode", Json::opt_str(lock.mode.map(mode_name))),
        (
            "holders",
            Json::Array(
                lock.holders
                    .iter()
                    .map(|h| {
                        Json::object([
                            ("session", Json::Uint(h.session)),
                            ("fence", Json::Uint(h.fence)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "waiters",
            Json::Array(
                lock.waiters
                    .iter()
                    .map(|w| {
                        Json::object([
                            ("session", Json::Uint(w.session)),
                            ("seq", Json::Uint(w.seq)),
                            ("mode", Json::str(mode_name(w.mode))),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

/// Prints rows under a header, columns padded to their widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        say(text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

async fn status(client: &Client, json: bool) -> Result<u8, Failure> {
    let status = client.status().await?;
    if json {
        say(status_json(&status));
        return Ok(EXIT_OK);
    }
    let leader = match (&status.leader, &status.leader_addr) {
        (Some(id), Some(addr)) => format!("{id} ({addr})"),
        (Some(id), None) => id.to_string(),
        _ => "unknown".to_string(),
    };
    say(format!("node:      {}", status.node_id));
    say(format!("role:      {}", status.role));
    say(format!("term:      {}", status.term));
    say(format!("leader:    {leader}"));
    say(format!(
        "log:       last {}, commit {}, applied {}",
        status.last_log_index, status.commit_index, status.applied_index
    ));
    say(format!("sessions:  {}", status.sessions));
    say(format!("locks:     {}", status.locks));
    let rows: Vec<[String; 4]> = status
        .members
        .iter()
        .map(|m| {
            [
                m.node_id.to_string(),
                m.addr.clone(),
                if m.voter { "voter" } else { "learner" }.to_string(),
                m.match_index.map_or("-".to_string(), |i| i.to_string()),
            ]
        })
        .collect();
    say("");
    print_table(["NODE", "ADDR", "KIND", "MATCH"], &rows);
    Ok(EXIT_OK)
}

async fn cluster(
    client: &Client,
    servers: &[String],
    command: ClusterCommand,
    json: bool,
) -> Result<u8, Failure> {
    let changed = |index: u64, members: &[MemberStatus]| {
        if json {
            say(Json::object([
                ("index", Json::Uint(index)),
                (
                    "members",
                    Json::Array(members.iter().map(member_json).collect()),
                ),
            ]));
        } else {
            let rows: Vec<[String; 3]> = members
                .iter()
                .map(|m| [m.node_id.to_string(), m.addr.clone(), kind(m).to_string()])
                .collect();
            print_table(["NODE", "ADDR", "KIND"], &rows);
        }
    };
    match command {
        ClusterCommand::Status => cluster_status(client, servers, json).await,
        ClusterCommand::Add { id, addr } => {
            let (index, members) = client.add_member(id, &addr).await?;
            changed(index, &members);
            Ok(EXIT_OK)
        }
        ClusterCommand::Remove { id } => {
            let (index, members) = client.remove_member(id).await?;
            changed(index, &members);
            Ok(EXIT_OK)
        }
        ClusterCommand::TransferLeader { id } => {
            let (leader, addr) = client.transfer_leader(id).await?;
            if json {
                say(Json::object([
                    ("leader", Json::Uint(leader)),
                    ("leader_addr", Json::opt_str(addr)),
                ]));
            } else {
                say(format!(
                    "leader: {leader}{}",
                    addr.map(|a| format!(" ({a})")).unwrap_or_default()
                ));
            }
            Ok(EXIT_OK)
        }
    }
}

fn kind(member: &MemberStatus) -> &'static str {
    if member.voter {
        "voter"
    } else {
        "learner"
    }
}

fn member_json(member: &MemberStatus) -> Json {
    Json::object([
        ("node_id", Json::Uint(member.node_id)),
        ("addr", Json::str(&member.addr)),
        ("voter", Json::Bool(member.voter)),
        ("match_index", Json::opt_uint(member.match_index)),
    ])
}

/// `cluster status`: the membership from any member, then every member's own status.
async fn cluster_status(client: &Client, servers: &[String], json: bool) -> Result<u8, Failure> {
    let first = client.status().await?;
    let mut members = first.members.clone();
    // Ask each member (and any configured server outside the membership) for itself.
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        retry_timeout: Duration::from_millis(1500),
        ..client.options().clone()
    };
    let mut addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    for server in servers {
        if !addrs.contains(server) {
            addrs.push(server.clone());
        }
    }
    let asks = addrs.iter().map(|addr| {
        let options = options.clone();
        let addr = addr.clone();
        async move {
            let answer = async {
                let member = Client::connect(vec![addr.clone()], options).await?;
                member.status().await
            }
            .await;
            (addr, answer.ok())
        }
    });
    let answers: Vec<(String, Option<StatusInfo>)> = futures::future::join_all(asks).await;
    let leader = answers
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .filter(|s| s.role == "leader")
        .max_by_key(|s| s.term)
        .cloned();
    if let Some(leader) = &leader {
        members.clone_from(&leader.members);
    }
    let rows: Vec<MemberRow<'_>> = answers
        .iter()
        .map(|(addr, status)| {
            let member = members.iter().find(|m| &m.addr == addr);
            let node = status
                .as_ref()
                .map(|s| s.node_id)
                .or(member.map(|m| m.node_id))
                .unwrap_or(0);
            let kind = member.map_or("not a member", kind);
            let matched = member.and_then(|m| m.match_index);
            (node, addr.clone(), kind, status.as_ref(), matched)
        })
        .filter(|(node, _, kind, status, _)| {
            // A configured server that is not a member and did not answer says nothing useful.
            *node != 0 && (*kind != "not a member" || status.is_some())
        })
        .collect();
    let lag = |status: Option<&StatusInfo>| -> Option<u64> {
        let leader = leader.as_ref()?;
        Some(leader.commit_index.saturating_sub(status?.applied_index))
    };
    if json {
        say(Json::object([
            ("leader", Json::opt_uint(leader.as_ref().map(|l| l.node_id))),
            ("term", Json::opt_uint(leader.as_ref().map(|l| l.term))),
            (
                "members",
                Json::Array(
                    rows.iter()
                        .map(|(node, addr, kind, status, matched)| {
                            Json::object([
                                ("node_id", Json::Uint(*node)),
                                ("addr", Json::str(addr)),
                                ("kind", Json::str(*kind)),
                                ("reachable", Json::Bool(status.is_some())),
                                ("role", Json::opt_str(status.map(|s| s.role.clone()))),
                                ("term", Json::opt_uint(status.map(|s| s.term))),
                                (
                                    "commit_index",
                                    Json::opt_uint(status.map(|s| s.commit_index)),
                                ),
                                (
                                    "applied_index",
                                    Json::opt_uint(status.map(|s| s.applied_index)),
                                ),
                                ("match_index", Json::opt_uint(*matched)),
                                ("lag", Json::opt_uint(lag(*status))),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]));
        return Ok(EXIT_OK);
    }
    match &leader {
        Some(l) => say(format!(
            "leader: {} ({}), term {}",
            l.node_id,
            addrs_of(&members, l.node_id),
            l.term
        )),
        None => say("leader: none reachable (election in progress, or no quorum)"),
    }
    say("");
    let dash = || "-".to_string();
    let table: Vec<[String; 9]> = rows
        .iter()
        .map(|(node, addr, kind, status, matched)| match status {
            Some(s) => [
                node.to_string(),
                addr.clone(),
                kind.to_string(),
                s.role.clone(),
                s.term.to_string(),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                matched.map_or_else(dash, |m| m.to_string()),
                lag(Some(s)).map_or_else(dash, |l| l.to_string()),
            ],
            None => [
                node.to_string(),
                addr.clone(),
                kind.to_string(),
                "unreachable".to_string(),
                dash(),
                dash(),
                dash(),
                matched.map_or_else(dash, |m| m.to_string()),
                dash(),
            ],
        })
        .collect();
    print_table(
        [
            "NODE", "ADDR", "KIND", "ROLE", "TERM", "COMMIT", "APPLIED", "MATCH", "LAG",
        ],
        &table,
    );
    Ok(EXIT_OK)
}

/// One row of `cluster status`: node, address, kind, its own status, match index.
type MemberRow<'a> = (
    u64,
    String,
    &'static str,
    Option<&'a StatusInfo>,
    Option<u64>,
);

fn addrs_of(members: &[MemberStatus], node: u64) -> String {
    members
        .iter()
        .find(|m| m.node_id == node)
        .map_or_else(|| "?".to_string(), |m| m.addr.clone())
}

fn status_json(status: &StatusInfo) -> Json {
    Json::object([
        ("node_id", Json::Uint(status.node_id)),
        ("role", Json::str(&status.role)),
        ("term", Json::Uint(status.term)),
        ("leader", Json::opt_uint(status.leader)),
        ("leader_addr", Json::opt_str(status.leader_addr.clone())),
        ("commit_index", Json::Uint(status.commit_index)),
        ("applied_index", Json::Uint(status.applied_index)),
        ("last_log_index", Json::Uint(status.last_log_index)),
        ("sessions", Json::Uint(status.sessions)),
        ("locks", Json::Uint(status.locks)),
        (
            "members",
            Json::Array(
                status
                    .members
                    .iter()
                    .map(|m| {
                        Json::object([
                            ("node_id", Json::Uint(m.node_id)),
                            ("addr", Json::str(&m.addr)),
                            ("voter", Json::Bool(m.voter)),
                            ("match_index", Json::opt_uint(m.match_index)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lock_parses_command_after_double_dash() {
        let cli = Cli::try_parse_from([
            "raftlock",
            "--servers",
            "a:1,b:2",
            "lock",
            "demo",
            "--shared",
            "--wait",
            "0",
            "--",
            "echo",
            "--flag",
        ])
        .expect("parses");
        assert_eq!(cli.servers, ["a:1", "b:2"]);
        let Command::Lock(args) = cli.command else {
            panic!("not lock: {:?}", cli.command)
        };
        assert_eq!(args.name, "demo");
        assert!(args.shared);
        assert_eq!(wait(args.wait), Wait::TryOnce);
        assert_eq!(args.cmd, ["echo", "--flag"]);
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        let error = Cli::try_parse_from(["raftlock", "lock", "x", "--wait", "soon", "--", "true"])
            .expect_err("bad duration");
        assert!(error.use_stderr());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("build-cache"), "build-cache");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
