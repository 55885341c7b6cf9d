//! The `raftlock` command line: argument parsing, dispatch and exit statuses.
//!
//! - this module: the clap definitions of every subcommand, [`main`] and the exit statuses;
//! - `commands`: one handler per subcommand, over the client library's [`Client`];
//! - `exec`: `raftlock lock`, which runs a command while the lock is held, and
//!   [`supervisor`]: the process between `raftlock lock` and the command that ends the
//!   command's process group before the lock can move to anyone else;
//! - `output`: stdout lines that never panic, and text tables; `shapes`: the `--json` answer
//!   of each command (documented in docs/cli.md), serialized with serde_json;
//! - [`duration`]: duration flags and their limits;
//! - [`bench`](mod@bench): `raftlock bench`.

pub mod bench;
mod commands;
pub mod duration;
mod escapes;
mod exec;
mod health;
mod output;
mod shapes;
mod snapshot;
pub mod supervisor;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, Subcommand};

use self::duration::Span;
use crate::client::{error_chain, Client, ClientOptions, Error, Wait};
use crate::lockspace::{Fence, SessionId};
use crate::protocol::LockMode;
use crate::tls::{ClientTls, TlsError};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: any failure not listed below (no server, server error, bad response, I/O).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: bad command line (clap's own, a flag's value out of range, oversized data).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the lock was not acquired (busy on a try-once, or the wait timed out).
pub const EXIT_NOT_ACQUIRED: u8 = 3;
/// Exit status: the session expired or was lost (for `lock`: while CMD ran; CMD was terminated).
pub const EXIT_SESSION_LOST: u8 = 4;
/// Exit status: the session does not hold the lock (stale fence, not holder, conflict).
pub const EXIT_NOT_HOLDER: u8 = 5;
/// Exit status of `lock`: the grant's hold limit came while CMD ran; CMD's group was ended first.
pub const EXIT_HOLD_LIMIT: u8 = 6;
/// Exit status of `lock`: an administrator revoked the session (or the cluster ended the
/// grant) while CMD ran; CMD's group was ended before the lock could move.
pub const EXIT_REVOKED: u8 = 7;
/// Exit status of `lock` when CMD could not be started.
pub const EXIT_CANNOT_RUN: u8 = 127;

const EXIT_CODES: &str = "\
Exit status:
  0    success (for `lock`: CMD's own status; 128+N if CMD was killed by signal N)
  1    error: no server reachable, server or protocol error, I/O error
  2    bad command line, including a value outside its flag's range (--ttl 500ms)
  3    lock not acquired: busy (--wait 0) or the wait timed out (`lock --conflict-exit-code`)
  4    session expired or lost (`lock`: CMD's process group was ended before the lease ran out)
  5    not the holder: stale fence, lock not held by the session, or conflicting mode
  6    `lock`: the hold limit (--hold) was reached; CMD's process group was ended before it
  7    session revoked by an administrator (`lock`: CMD's process group was ended first)
  126  `lock`: CMD is not executable
  127  `lock`: CMD was not found
  128+N  `lock`: raftlock received signal N (INT, TERM, HUP, QUIT): passed on to CMD's group,
       the group ended, the lock released

Sequence numbers: every command that changes state sends the current Unix time in
microseconds as the session's sequence number (strictly increasing within a process), so
commands of one session run by different processes one after another never reuse a number
the daemon has seen (which it would answer from its exactly-once table instead of executing).
Run such commands one after another, not concurrently, and keep the clock from stepping back.";

/// raftlock: the command line client of a raftlock cluster (distributed locks with fencing
/// tokens, and files appended under them).
#[derive(Debug, Parser)]
#[command(name = "raftlock", version = env!("RAFTLOCK_VERSION"), after_help = EXIT_CODES)]
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
    #[arg(long, default_value = "30s", value_parser = duration::parse_positive, global = true)]
    pub timeout: Duration,
    /// Give up connecting after this long when no member answers (only the first dial:
    /// --timeout bounds the requests, failovers included).
    #[arg(long, default_value = "2s", value_parser = duration::parse_positive, global = true)]
    pub connect_timeout: Duration,
    /// Connect over TLS, trusting the CA certificates of this PEM file (the daemon runs with
    /// --tls-cert). Without it the connection is plain TCP.
    #[arg(long, env = "RAFTLOCK_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// Present this client certificate (PEM chain) when the daemon asks for one
    /// (--tls-client-ca). Needs --ca and --key.
    #[arg(long, env = "RAFTLOCK_CERT", value_name = "FILE", requires_all = ["ca", "key"], global = true)]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(
        long,
        env = "RAFTLOCK_KEY",
        value_name = "FILE",
        requires = "cert",
        global = true
    )]
    pub key: Option<PathBuf>,
    /// Verify the servers' certificates against this name instead of the host part of each
    /// address (e.g. when connecting by IP to a certificate that names a host). Needs --ca.
    #[arg(
        long,
        env = "RAFTLOCK_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "ca",
        global = true
    )]
    pub tls_server_name: Option<String>,
    /// The authentication token, for a cluster started with --auth-tokens. Prefer the
    /// environment or --auth-token-file: a flag's value is visible to other users in ps.
    #[arg(
        long,
        env = "RAFTLOCK_AUTH_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub auth_token: Option<String>,
    /// A file holding the authentication token (surrounding whitespace ignored).
    #[arg(
        long,
        env = "RAFTLOCK_AUTH_TOKEN_FILE",
        global = true,
        conflicts_with = "auth_token"
    )]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The TLS flags as the `RAFTLOCK_*` variables a command run by `lock` inherits, so that a
    /// `raftlock` it runs connects the same way.
    fn tls_env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        [
            ("RAFTLOCK_CA", path(&self.ca)),
            ("RAFTLOCK_CERT", path(&self.cert)),
            ("RAFTLOCK_KEY", path(&self.key)),
            ("RAFTLOCK_TLS_SERVER_NAME", self.tls_server_name.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect()
    }

    /// The TLS settings the flags ask for (`None`: plain TCP).
    pub fn tls(&self) -> Result<Option<ClientTls>, TlsError> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        let tls = ClientTls::from_files(ca, identity)?;
        match &self.tls_server_name {
            Some(name) => tls.with_server_name(name.clone()).map(Some),
            None => Ok(Some(tls)),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold a lock while a command runs (like flock(1), cluster-wide).
    #[command(after_help = "\
CMD runs with RAFTLOCK_FENCE (the fencing token), RAFTLOCK_LOCK, RAFTLOCK_SESSION,
RAFTLOCK_TOKEN and RAFTLOCK_SERVERS (and RAFTLOCK_CA, RAFTLOCK_CERT, RAFTLOCK_KEY with TLS)
in its environment, so it can append under the lock.
raftlock exits with CMD's status once CMD's whole process group is gone, and releases the
lock; 3 (or --conflict-exit-code) if the lock was not acquired.

CMD never outlives the lock. It runs in its own process group under a small supervisor
process that enforces the lease by its own clock, even if raftlock is stopped or killed.
D is the local lease deadline: the send time of the last confirmed keep-alive + TTL, less
TTL/20 + 25ms for clock drift, or the end of the --hold limit if that is earlier. K is
--kill-after, capped at TTL/4.
  - jeopardy (no keep-alive confirmed for TTL/2), session lost, or session revoked
    (`raftlock revoke`): SIGTERM to the group at once, SIGKILL K later; raftlock exits 4
    (7 for a revoke), and once the group is gone closes the session so the lock frees;
  - in any case, SIGTERM at D - K - 100ms and SIGKILL at D - 100ms (a --hold limit
    reached this way exits 6; --extend renews the hold every third of it, moving D);
  - SIGINT, SIGTERM, SIGHUP or SIGQUIT to raftlock: passed on to the group, SIGKILL K
    later; once the group is gone the lock is released and raftlock exits 128+N;
  - raftlock killed (kill -9): the supervisor SIGKILLs the group at once;
  - CMD exits: what is left of its group gets SIGTERM, then SIGKILL K later.
While raftlock waits for the lock, any of those signals cancels the queued acquire, closes
the session and exits 128+N. CMD's group is not the terminal's foreground group:
Ctrl-C reaches it through raftlock, and CMD should not read from the terminal.

Example:
  raftlock lock build-cache --wait 2m -- make -j4
  raftlock lock deploy --ttl 5s --hold 30s --extend --kill-after 1s -- ./deploy.sh
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
(else exit 5). The data is DATA as given, DATA with escapes expanded (-e, like echo -e), the
standard input (DATA `-`), or a file's contents (--data-file); at most 1 MiB.

Examples (--session and --token can come from RAFTLOCK_SESSION and RAFTLOCK_TOKEN):
  raftlock append journal.log --lock journal --fence 42 --session 12 --token 9876 -e 'line\\n'
  printf 'line\\n' | raftlock append journal.log --lock journal --fence 42 -
  raftlock append report.json --lock reports --fence 7 --data-file ./report.json")]
    Append(AppendArgs),
    /// Read a file (all of it, or a range) to stdout.
    #[command(after_help = "Example:\n  raftlock read journal.log --offset 0 --len 100")]
    Read(ReadArgs),
    /// Cut a file to SIZE bytes under a lock's fencing token.
    #[command(after_help = "\
Applied only if FENCE is the lock's current exclusive grant to the session (else exit 5),
like `append`. A truncate never grows a file: a SIZE at or past the end changes nothing, and
the answer says the size the file has. A file that does not exist exits 1.

Example (--session and --token can come from RAFTLOCK_SESSION and RAFTLOCK_TOKEN):
  raftlock truncate journal.log 0 --lock journal --fence 42 --session 12 --token 9876")]
    Truncate(TruncateArgs),
    /// Delete a file under a lock's fencing token.
    #[command(after_help = "\
Applied only if FENCE is the lock's current exclusive grant to the session (else exit 5),
like `append`. A later append creates the file anew, empty. A file that does not exist
exits 1.

Example (inside `raftlock lock`, which sets RAFTLOCK_LOCK, RAFTLOCK_FENCE and the session):
  raftlock lock journal -- sh -c 'raftlock rm journal.log'")]
    Rm(RmArgs),
    /// List files with their sizes and the lock and fence of their last write.
    #[command(after_help = "Example:\n  raftlock files logs/")]
    Files(FilesArgs),
    /// List held and awaited locks with their holders and queues.
    #[command(after_help = "Example:\n  raftlock locks build-")]
    Locks(LocksArgs),
    /// List live sessions (from the leader): owner, TTL and time since the last renewal.
    #[command(after_help = "Example:\n  raftlock sessions")]
    Sessions,
    /// Revoke a session by id (an administrative operation): its holders stop, then its locks free.
    #[command(after_help = "\
The session is marked revoked: its queued acquires fail, its keep-alives are refused, and a
`raftlock lock` holding a lock in it ends its command's process group and exits 7, then closes
the session, which frees its locks. Until then (at the latest until the session's lease runs
out on the leader, one TTL after its last keep-alive) its locks stay held, so nobody else is
granted them while the revoked command may still run. Revoking it again succeeds. Exits 4 if
no such session lives.

--force ends the session at once instead, as its expiry would. That is unsafe: its locks move
to the next waiters immediately, while the revoked holder's command keeps running until its
next keep-alive is refused (up to a third of its TTL later). Use it only for a holder known
to be dead.

Example:
  raftlock revoke 12
  raftlock revoke --force 12")]
    Revoke(RevokeArgs),
    /// Show the node's status: role, term, leader, commit/applied indexes, members.
    #[command(after_help = "Example:\n  raftlock --servers 10.0.0.1:7400 status")]
    Status,
    /// Measure throughput and latency of a cluster (or of local daemons it starts).
    Bench(bench::BenchArgs),
    /// Backups: save one from the leader, and see what a backup file holds.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Cluster administration: status of every member, add, remove, transfer leadership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print a shell completion script (e.g. `raftlock completions bash > /etc/bash_completion.d/raftlock`).
    #[command(after_help = "\
Examples:
  raftlock completions bash > ~/.local/share/bash-completion/completions/raftlock
  raftlock completions zsh > ~/.zfunc/_raftlock
  raftlock completions fish > ~/.config/fish/completions/raftlock.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `raftlock man | man -l -`.
    #[command(after_help = "Example:\n  raftlock man > /usr/local/share/man/man1/raftlock.1")]
    Man,
    /// Internal: the supervisor `lock` starts between itself and CMD.
    #[command(name = "__supervise", hide = true)]
    Supervise(supervisor::SuperviseArgs),
}

/// `raftlock snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Verify a backup file offline and print what it holds: index, term, membership, size,
    /// checksum, and the counts of sessions, locks and files.
    #[command(after_help = "\
Reads FILE only (no server is asked). A file whose length, checksum or contents are wrong is
an error (exit 1) naming the file and what is wrong. `raftlockd restore FILE --data-dir DIR`
creates a new cluster's data directory from it.

Example:
  raftlock snapshot status backup.snap")]
    Status {
        /// The backup file.
        file: PathBuf,
    },
    /// Admin: save a consistent snapshot of the cluster (every write acknowledged before the
    /// command started) from the leader into FILE.
    #[command(after_help = "\
The leader streams its durable snapshot; the bytes are checked against the size and checksum
it announced, written to FILE.part beside FILE, flushed to disk and only then renamed over FILE,
so FILE is either the whole new backup or what it was before. `raftlock snapshot status FILE`
verifies it offline; `raftlockd restore FILE --data-dir DIR` makes a new cluster from it.

Example:
  raftlock --servers 10.0.0.1:7400 snapshot save backup.snap")]
    Save {
        /// Where to write the backup.
        file: PathBuf,
    },
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
    /// Every member's health and lag; exits 1 if any member is down or lags (like `etcdctl
    /// endpoint health`).
    #[command(after_help = "\
Asks every member for its own status, as `cluster status` does. A member is healthy when it
answers, knows a leader, and has applied the leader's commit index less at most --max-lag
entries. Prints one row per member (or one JSON object with --json) and exits 0 when every
member is healthy, 1 otherwise.

Example:
  raftlock --servers 10.0.0.1:7400 cluster health --max-lag 500")]
    Health {
        /// The most entries a member's applied index may be behind the leader's commit index.
        #[arg(long, default_value_t = 1000)]
        max_lag: u64,
    },
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
    #[arg(long, default_value = "forever", value_parser = duration::parse_wait)]
    pub wait: Span,
    /// The session's lease (1s to 1h): how long the lock outlives this process if it dies.
    #[arg(long, default_value = "10s", value_parser = duration::parse_ttl)]
    pub ttl: Duration,
    /// Hold the lock at most this long, up to 24h (the cluster releases it then).
    #[arg(long, value_parser = duration::parse_hold)]
    pub hold: Option<Duration>,
    /// With --hold: renew the hold limit every third of it while CMD runs (a short hold then
    /// bounds how long a stuck raftlock keeps the lock, not how long CMD may run).
    #[arg(long, requires = "hold")]
    pub extend: bool,
    /// Time between SIGTERM and SIGKILL when CMD's group is ended (capped at TTL/4).
    #[arg(long, default_value = "2s", value_parser = duration::parse_finite)]
    pub kill_after: Duration,
    /// Who holds the lock, shown by `raftlock locks` and `raftlock sessions` (default:
    /// user@host, raftlock's pid and CMD).
    #[arg(long)]
    pub owner: Option<String>,
    /// Exit with this status instead of 3 when the lock is not acquired (like flock -E).
    #[arg(long, value_name = "N")]
    pub conflict_exit_code: Option<u8>,
    /// Say on stderr where the acquire waits in the queue, each time the daemon reports that
    /// it moved (a `QueuePosition` push).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// The command to run, and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub cmd: Vec<OsString>,
}

/// Arguments of `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The session's id (see `raftlock sessions` or `raftlock locks`).
    pub session: SessionId,
    /// End the session at once: its locks move while its holder may still run (unsafe).
    #[arg(long)]
    pub force: bool,
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
    #[arg(long, default_value = "forever", value_parser = duration::parse_wait)]
    pub wait: Span,
    /// The session's lease (1s to 1h); keep it alive with `raftlock keepalive` within it.
    #[arg(long, default_value = "60s", value_parser = duration::parse_ttl)]
    pub ttl: Duration,
    /// Hold the lock at most this long, up to 24h.
    #[arg(long, value_parser = duration::parse_hold)]
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
    #[arg(required_unless_present = "data_file", conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Expand backslash escapes in DATA like echo -e (`\n`, `\t`, `\\`, `\xHH`, `\0NNN`).
    #[arg(short = 'e', conflicts_with = "data_file")]
    pub escapes: bool,
    /// Append the contents of this file instead of DATA (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<std::path::PathBuf>,
}

/// The lock and session a file write names (as `append` takes them).
#[derive(Debug, Args)]
pub struct WriterArgs {
    /// The lock guarding the file.
    #[arg(long, env = "RAFTLOCK_LOCK")]
    pub lock: String,
    /// The fencing token of the session's exclusive grant of the lock.
    #[arg(long, env = "RAFTLOCK_FENCE")]
    pub fence: Fence,
    /// The session holding the lock.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// Arguments of `truncate`.
#[derive(Debug, Args)]
pub struct TruncateArgs {
    /// The file to cut.
    pub file: String,
    /// The size to cut it to, in bytes.
    pub size: u64,
    /// The lock, fence and session.
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// Arguments of `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The file to delete.
    pub file: String,
    /// The lock, fence and session.
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// Arguments of `files`.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// Only files whose name starts with this.
    pub prefix: Option<String>,
    /// Let any member answer from its own state.
    #[arg(long)]
    pub stale: bool,
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
            Error::Revoked => EXIT_REVOKED,
            Error::StaleFence | Error::NotHolder | Error::Conflict => EXIT_NOT_HOLDER,
            _ => EXIT_ERROR,
        };
        Failure {
            code,
            message: error_chain(&error),
        }
    }
}

impl Failure {
    /// A failure with exit status `code`.
    fn with(code: u8, message: String) -> Failure {
        Failure { code, message }
    }

    /// Writing the command's output failed (a full disk, a closed pipe when SIGPIPE is ignored).
    fn stdout(error: std::io::Error) -> Failure {
        Failure {
            code: EXIT_ERROR,
            message: format!("cannot write to stdout: {error}"),
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
        Err(error) if error.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            // Under --json even a usage error is an object (clap's text has the details).
            let text = error.render().to_string();
            report(
                &Failure {
                    code: EXIT_USAGE,
                    message: text.trim_start_matches("error: ").trim_end().to_string(),
                },
                true,
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            });
        }
    };
    if let Command::Supervise(args) = &cli.command {
        return supervisor::main(args);
    }
    if let Some(generated) = generate(&cli.command) {
        return match generated.and_then(|text| {
            let mut out = std::io::stdout().lock();
            out.write_all(&text).and_then(|()| out.flush())
        }) {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(error) => {
                let failure = Failure::stdout(error);
                report(&failure, cli.json);
                ExitCode::from(failure.code)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::Snapshot(SnapshotCommand::Status { file }) = &cli.command {
        let result = snapshot::status(file, cli.json)
            .and_then(|code| output::finish().map(|()| code).map_err(Failure::stdout));
        return match result {
            Ok(code) => ExitCode::from(code),
            Err(failure) => {
                report(&failure, cli.json);
                ExitCode::from(failure.code)
            }
        };
    }
    if let Command::Bench(args) = &cli.command {
        let tls = match cli.tls() {
            Ok(tls) => tls,
            Err(error) => {
                eprintln!("raftlock bench: {}", error_chain(&error));
                return ExitCode::from(EXIT_ERROR);
            }
        };
        return bench::main(args, &cli.servers, tls, cli.json);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let failure = Failure {
                code: EXIT_ERROR,
                message: format!("cannot start the runtime: {error}"),
            };
            report(&failure, cli.json);
            return ExitCode::from(failure.code);
        }
    };
    let json = cli.json;
    let result = runtime
        .block_on(run(cli))
        .and_then(|code| match output::finish() {
            Ok(()) => Ok(code),
            Err(error) => Err(Failure::stdout(error)),
        });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            report(&failure, json);
            ExitCode::from(failure.code)
        }
    }
}

/// The text of `completions` and `man`, generated from the clap definitions (`None` for the
/// other commands).
fn generate(command: &Command) -> Option<std::io::Result<Vec<u8>>> {
    let mut text = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "raftlock", &mut text);
            Some(Ok(text))
        }
        Command::Man => Some(
            clap_mangen::Man::new(Cli::command())
                .render(&mut text)
                .map(|()| text),
        ),
        _ => None,
    }
}

/// Prints a failure on stderr: `raftlock: MESSAGE`, or under `--json` one object
/// `{"error": MESSAGE, "exit_code": N}`.
fn report(failure: &Failure, json: bool) {
    if json {
        let object = shapes::Failed {
            error: &failure.message,
            exit_code: failure.code,
        };
        // A struct of a string and a number always serializes.
        let line = serde_json::to_string(&object).expect("an error object serializes");
        eprintln!("{line}");
    } else {
        eprintln!("raftlock: {}", failure.message);
    }
}

/// Runs one parsed command; returns the exit status on success.
async fn run(cli: Cli) -> Result<u8, Failure> {
    let servers: Vec<String> = cli
        .servers
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let tls = cli.tls().map_err(|error| Failure {
        code: EXIT_ERROR,
        message: error_chain(&error),
    })?;
    let auth_token = match (&cli.auth_token, &cli.auth_token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure {
                    code: EXIT_USAGE,
                    message: format!("--auth-token-file {}: {e}", path.display()),
                })?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let options = ClientOptions {
        connect_timeout: dial_timeout(cli.connect_timeout, servers.len()),
        request_timeout: cli.timeout.min(Duration::from_secs(5)),
        retry_timeout: cli.timeout,
        clock_seq: true,
        tls,
        auth_token,
        ..ClientOptions::default()
    };
    let client = Client::connect_within(servers.clone(), options, cli.connect_timeout)
        .await
        .map_err(|error| match error {
            Error::NoServerAvailable { last } => Failure {
                code: EXIT_ERROR,
                message: format!(
                    "no server available: none of {} answered within {} (--connect-timeout); \
                     last error: {last}",
                    servers.join(","),
                    humanize(cli.connect_timeout)
                ),
            },
            other => Failure::from(other),
        })?;
    let json = cli.json;
    let tls_env = cli.tls_env();
    match cli.command {
        Command::Lock(args) => exec::lock(&client, &servers, tls_env, args).await,
        Command::Acquire(args) => commands::acquire(&client, args, json).await,
        Command::Release(args) => commands::release(&client, args, json).await,
        Command::Close(args) => commands::close(&client, args, json).await,
        Command::Keepalive(args) => commands::keepalive(&client, args, json).await,
        Command::Append(args) => commands::append(&client, args, json).await,
        Command::Read(args) => commands::read(&client, args, json).await,
        Command::Truncate(args) => commands::truncate(&client, args, json).await,
        Command::Rm(args) => commands::rm(&client, args, json).await,
        Command::Files(args) => commands::files(&client, args, json).await,
        Command::Locks(args) => commands::locks(&client, args, json).await,
        Command::Sessions => commands::sessions(&client, json).await,
        Command::Revoke(args) => commands::revoke(&client, args, json).await,
        Command::Status => commands::status(&client, json).await,
        Command::Bench(_) => unreachable!("bench is dispatched before connecting"),
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            snapshot::save(&client, &file, json).await
        }
        Command::Snapshot(SnapshotCommand::Status { .. }) => {
            unreachable!("snapshot status is dispatched before connecting")
        }
        Command::Completions { .. } | Command::Man => {
            unreachable!("completions and man are generated before connecting")
        }
        Command::Supervise(_) => unreachable!("the supervisor is dispatched before connecting"),
        Command::Cluster(command) => commands::cluster(&client, &servers, command, json).await,
    }
}

/// The bound on one dial (connect and handshake): the --connect-timeout shared among the
/// servers, so that a silent first server leaves time to try the others, but at least 100ms
/// (or all of it, if it is shorter) so that a dial has a chance on a busy network.
fn dial_timeout(connect_timeout: Duration, servers: usize) -> Duration {
    let share = connect_timeout / u32::try_from(servers.max(1)).unwrap_or(u32::MAX);
    share.max(connect_timeout.min(Duration::from_millis(100)))
}

/// A duration for messages, in the flags' syntax: `2s`, `1s 500ms`, `300ms`.
fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub(crate) fn mode(shared: bool) -> LockMode {
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
    fn the_connect_timeout_is_shared_among_the_servers() {
        let ms = Duration::from_millis;
        assert_eq!(dial_timeout(ms(2_000), 1), ms(2_000));
        assert_eq!(dial_timeout(ms(2_000), 4), ms(500));
        assert_eq!(
            dial_timeout(ms(2_000), 100),
            ms(100),
            "at least 100ms a dial"
        );
        assert_eq!(dial_timeout(ms(50), 3), ms(50), "or all of a short timeout");
        assert_eq!(dial_timeout(ms(2_000), 0), ms(2_000));
    }

    /// The help's example is what it says: `-e 'line\n'` appends a line break.
    #[test]
    fn append_help_example_expands_to_a_line() {
        let help = Cli::command()
            .find_subcommand_mut("append")
            .expect("append")
            .render_long_help()
            .to_string();
        assert!(help.contains(r"-e 'line\n'"), "{help}");
        assert_eq!(escapes::expand(r"line\n"), b"line\n");
        let cli = Cli::try_parse_from([
            "raftlock",
            "append",
            "f",
            "--lock",
            "l",
            "--fence",
            "1",
            "--session",
            "1",
            "--token",
            "1",
            "-e",
            r"line\n",
        ])
        .expect("parses");
        let Command::Append(args) = cli.command else {
            panic!("not append")
        };
        assert!(args.escapes);
        assert!(
            Cli::try_parse_from([
                "raftlock",
                "append",
                "f",
                "--lock",
                "l",
                "--fence",
                "1",
                "--session",
                "1",
                "--token",
                "1",
                "--data-file",
                "x",
                "data",
            ])
            .is_err(),
            "DATA and --data-file conflict"
        );
    }

    /// Out-of-range values are refused by the parser (exit 2), naming the flag and the range
    /// in the flag's terms, not the protocol's `ttl_ms`.
    #[test]
    fn limits_are_usage_errors_that_name_the_flag() {
        for (args, flag) in [
            (&["acquire", "x", "--ttl", "500ms"][..], "--ttl"),
            (&["acquire", "x", "--ttl", "forever"], "--ttl"),
            (&["lock", "x", "--ttl", "2h", "--", "true"], "--ttl"),
            (&["lock", "x", "--wait", "25h", "--", "true"], "--wait"),
            (&["acquire", "x", "--hold", "0s"], "--hold"),
            (&["--timeout", "0", "status"], "--timeout"),
        ] {
            let error =
                Cli::try_parse_from([&["raftlock"][..], args].concat()).expect_err("out of range");
            assert!(error.use_stderr(), "{args:?}");
            let text = error.to_string();
            assert!(text.contains(flag), "{args:?}: {text}");
            assert!(!text.contains("ttl_ms"), "{args:?}: {text}");
        }
        let cli = Cli::try_parse_from([
            "raftlock", "acquire", "x", "--ttl", "1.5s", "--wait", "1m30s",
        ])
        .expect("fractions and compounds parse");
        let Command::Acquire(args) = cli.command else {
            panic!("not acquire")
        };
        assert_eq!(args.ttl, Duration::from_millis(1_500));
        assert_eq!(wait(args.wait), Wait::For(Duration::from_secs(90)));
    }
}
