//! The Rust client library.
//!
//! A [`Client`] keeps one multiplexed connection to a member of the cluster. Requests carry
//! client-chosen ids, so many are in flight at once and a waiting `Acquire` blocks nothing. The
//! library hides the cluster's moving parts:
//!
//! - **Redirects.** A follower answers `NotLeader` with the leader's address; the client
//!   reconnects there (or to the next configured server) and retries.
//! - **Failures.** On a lost connection, a `Timeout`/`ShuttingDown` answer or no answer within
//!   the request timeout, the client reconnects with capped exponential backoff and jitter and
//!   retries until [`ClientOptions::retry_timeout`]. Mutating requests are retried with the same
//!   session and sequence number, so the daemon applies them once and returns the original
//!   result; a retried `Acquire` that was queued finds its place in the queue again.
//! - **Sessions.** [`Client::open_session`] returns a [`Session`] whose keep-alives run in the
//!   background every ttl/3. Its client-side [`Lease`] ([`Session::lease`], module [`lease`])
//!   ends, by this process's own clock, no later than the cluster's: it is in *jeopardy* when
//!   keep-alives stop being confirmed, and *lost* at its deadline or when the daemon says the
//!   session expired; then [`Session::lost`] resolves and every operation fails with
//!   [`Error::SessionExpired`].
//! - **Locks.** [`Session::lock`] returns a [`LockGuard`] carrying the fencing token and its own
//!   lease ([`LockGuard::lease`]: the session's, capped by the grant's hold limit); it is
//!   released by [`LockGuard::release`] or, best effort, in the background when dropped.
//!   [`LockGuard::extend`] renews a hold limit ([`Session::lock_with_hold`]).
//! - **Pushes.** The daemon's push events (protocol.md §5) reach the sessions they name: a
//!   `Revoked` ends that grant's lease at once (`Lost(HoldLimit)` for a hold limit,
//!   `Lost(Revoked)` for an administrator's revoke), a `SessionExpired` the session's, so work
//!   stops before the local deadline when the daemon can say so. [`Session::pushes`] lets a
//!   caller watch them too (e.g. `QueuePosition` while a lock future waits). They are hints:
//!   the leases alone give the guarantee.
//! - **Dropped calls.** Dropping a waiting [`Session::lock`] future cancels the queued acquire
//!   in the background (`Cancel`; if it was granted meanwhile, the lock is released), and
//!   [`Session::cancel`] does so explicitly. A release, append or extend whose future is dropped
//!   after it was sent still completes in the background with its original sequence number, and
//!   the session's next such call waits for it first, so it behaves as if the first had
//!   finished (a second release of the same lock answers as the first did, not `NotHolder`).
//!
//! ```no_run
//! # async fn demo() -> raftlock::client::Result<()> {
//! use std::time::Duration;
//! use raftlock::client::{Client, ClientOptions, Wait};
//! use raftlock::client::LockMode;
//!
//! let client = Client::connect(vec!["127.0.0.1:7400".into()], ClientOptions::default()).await?;
//! let session = client.open_session(Duration::from_secs(10)).await?;
//! let guard = session.lock("build-cache", LockMode::Exclusive, Wait::Forever).await?;
//! session.append("journal", &guard, b"hello\n".to_vec()).await?;
//! guard.release().await?;
//! session.close().await?;
//! # Ok(()) }
//! ```

mod backup;
mod conn;
mod error;
pub mod lease;
mod push;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

pub use self::backup::SavedSnapshot;
use self::conn::{Conn, PendingReply, Reply};
pub use self::error::{Error, Result};
pub use self::lease::{Lease, LeaseState, LostReason};
pub use self::session::{LockGuard, LockRef, Session, SessionCredentials, SessionState, Wait};
pub use crate::error_chain;
/// A fencing token, as grants carry it.
pub use crate::lockspace::Fence;
use crate::lockspace::SessionId;
/// How a lock is held: the wire type, re-exported so a client needs only this module.
pub use crate::protocol::LockMode;
use crate::protocol::{
    ErrorCode, FileEntry, LockState, MemberStatus, Request, Response, SessionSummary, StatusInfo,
};

/// How long one `AddMember` attempt may wait for its answer: a little longer than the leader
/// waits for the new node to answer and catch up before it gives up (10 s).
const ADD_PATIENCE: Duration = Duration::from_secs(15);

/// Timeouts and retry policy of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bound on dialing a server and completing the handshake.
    pub connect_timeout: Duration,
    /// Bound on waiting for the answer to one attempt of a request (not on a queued acquire's
    /// wait, which its [`Wait`] bounds).
    pub request_timeout: Duration,
    /// Bound on all attempts of one request, reconnects and redirects included.
    pub retry_timeout: Duration,
    /// First backoff between attempts; doubles per attempt up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    /// Largest backoff between attempts.
    pub backoff_max: Duration,
    /// Sequence numbers of new sessions: `false` counts 1, 2, 3...; `true` uses the current
    /// Unix time in microseconds (strictly increasing), so that several processes sharing one
    /// session (the CLI) never reuse a number the daemon has seen.
    pub clock_seq: bool,
    /// Connect over TLS with these settings (trusted CAs, client certificate, server name);
    /// `None` for plain TCP. The server name defaults to the host part of each address dialed,
    /// redirects included.
    pub tls: Option<crate::tls::ClientTls>,
    /// The authentication token sent in every `Hello`, for daemons started with
    /// `--auth-tokens`; `None` sends none.
    pub auth_token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            clock_seq: false,
            tls: None,
            auth_token: None,
        }
    }
}

/// How long the answer to one request may take once sent.
#[derive(Clone, Copy, Debug)]
enum Patience {
    /// The request timeout.
    Normal,
    /// An acquire: the request timeout until the first answer; after `Queued`, until `until`
    /// (`None`: forever).
    Queue { until: Option<Instant> },
    /// A request the server may take this long to answer (at least the request timeout).
    Long(Duration),
    /// A request that is worthless if its answer takes longer than this (at most the request
    /// timeout): a keep-alive, which must move on from a paused or partitioned node while the
    /// lease it renews is still valid, instead of waiting the whole request timeout there.
    Short(Duration),
}

/// Where the client sends requests next.
struct Route {
    conn: Option<Arc<Conn>>,
    /// A leader address learned from a redirect, tried before the configured list.
    leader_hint: Option<String>,
    /// The next configured server to try.
    next_server: usize,
    /// Generation of the next connection.
    generation: u64,
}

struct Inner {
    servers: Vec<String>,
    options: ClientOptions,
    next_id: AtomicU64,
    route: tokio::sync::Mutex<Route>,
    /// Where the connections hand push events, for the sessions to subscribe.
    pushes: Arc<push::PushRouter>,
}

/// A handle to the cluster. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.inner.servers)
            .finish_non_exhaustive()
    }
}

/// Why the last attempt of a request failed, for the error after the retry deadline.
enum Failure {
    Connect(String),
    NoLeader(String),
    TimedOut,
    Lost(String),
    /// A retryable error answer, with the server's message.
    Busy(ErrorCode, String),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::TimedOut => Error::Timeout,
            Failure::Connect(last) | Failure::Lost(last) => Error::NoServerAvailable { last },
            Failure::NoLeader(addr) => Error::NoServerAvailable {
                last: format!("no leader known to {addr}"),
            },
            Failure::Busy(code, message) => Error::NoServerAvailable {
                last: format!("server kept answering {code:?}: {message}"),
            },
        }
    }
}

impl Client {
    /// Connects to one of `servers` (`host:port`, tried in order) and returns once a handshake
    /// succeeded, or fails after `options.retry_timeout`.
    pub async fn connect(servers: Vec<String>, options: ClientOptions) -> Result<Client> {
        let within = options.retry_timeout;
        Self::connect_within(servers, options, within).await
    }

    /// [`Client::connect`], giving up after `within` (instead of `options.retry_timeout`) when
    /// no server answers: a command line tool fails fast on a wrong address or a stopped
    /// cluster, while its requests keep the longer retry budget for failovers.
    pub async fn connect_within(
        servers: Vec<String>,
        options: ClientOptions,
        within: Duration,
    ) -> Result<Client> {
        if servers.is_empty() {
            return Err(Error::InvalidArgument("no servers given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                servers,
                options,
                next_id: AtomicU64::new(1),
                pushes: Arc::default(),
                route: tokio::sync::Mutex::new(Route {
                    conn: None,
                    leader_hint: None,
                    next_server: 0,
                    generation: 1,
                }),
            }),
        };
        let deadline = Instant::now() + within;
        let mut attempt = 0;
        loop {
            match client.conn().await {
                Ok(_) => return Ok(client),
                // Another server would refuse the same token: say so at once.
                Err(error) if error.is_unauthenticated() => return Err(error),
                Err(error) => {
                    attempt += 1;
                    let cap = client.inner.options.backoff_max;
                    if !client.backoff(attempt, deadline, cap).await {
                        return Err(Error::NoServerAvailable {
                            last: error_chain(&error),
                        });
                    }
                }
            }
        }
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The address of the current connection, if any.
    pub async fn connected_to(&self) -> Option<String> {
        let route = self.inner.route.lock().await;
        route
            .conn
            .as_ref()
            .filter(|c| !c.is_closed())
            .map(|c| c.addr.clone())
    }

    /// Opens a session whose lease lasts `ttl` after each keep-alive, and starts keeping it
    /// alive in the background.
    pub async fn open_session(&self, ttl: Duration) -> Result<Session> {
        self.open_session_as(ttl, None).await
    }

    /// Opens a session with an owner string shown by `raftlock locks` / `sessions` (at most
    /// [`crate::protocol::MAX_OWNER_LEN`] bytes), e.g. `user@host pid command`.
    pub async fn open_session_as(&self, ttl: Duration, owner: Option<String>) -> Result<Session> {
        let ttl_ms = u64::try_from(ttl.as_millis())
            .map_err(|_| Error::InvalidArgument("ttl too large".into()))?;
        if let Some(owner) = &owner {
            if owner.len() > crate::protocol::MAX_OWNER_LEN {
                return Err(Error::InvalidArgument(format!(
                    "owner is {} bytes, the maximum is {}",
                    owner.len(),
                    crate::protocol::MAX_OWNER_LEN
                )));
            }
        }
        let nonce: u64 = rand::thread_rng().gen_range(1..=u64::MAX);
        let started = Instant::now();
        let response = self
            .call(
                |id| Request::OpenSession {
                    id,
                    nonce,
                    ttl_ms,
                    owner: owner.clone(),
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::SessionOpened {
                session,
                token,
                ttl_ms,
                ..
            } => Ok(Session::start(
                self.clone(),
                SessionCredentials {
                    id: session,
                    token,
                    ttl: Duration::from_millis(ttl_ms),
                },
                Some(started),
                true,
                self.inner.options.clock_seq,
            )),
            other => Err(unexpected("OpenSession", &other)),
        }
    }

    /// A handle to a session opened elsewhere (by another process, for example), from its
    /// credentials. With `keep_alive`, this handle renews the lease in the background as
    /// [`Client::open_session`] does (the first renewal at once); otherwise the caller must
    /// renew it with [`Session::keep_alive`] within every TTL. The handle cannot know when the
    /// lease was last renewed, so its [`Session::lease`] is in jeopardy, with a deadline of
    /// now, until its first keep-alive is confirmed.
    ///
    /// The handle does not know which sequence numbers the session already used, so it takes
    /// them from the clock (Unix microseconds, strictly increasing), above the 1, 2, 3... of a
    /// handle from `open_session`. Handles of one session must not send mutating requests
    /// concurrently from different processes.
    pub fn resume_session(&self, credentials: SessionCredentials, keep_alive: bool) -> Session {
        Session::start(self.clone(), credentials, None, keep_alive, true)
    }

    /// Reads up to `len` bytes of `file` from `offset`; returns them and the file's total size.
    /// With `stale`, any member answers from its own state (possibly behind the leader).
    pub async fn read(
        &self,
        file: &str,
        offset: u64,
        len: u64,
        stale: bool,
    ) -> Result<(Vec<u8>, u64)> {
        let response = self
            .call(
                |id| Request::Read {
                    id,
                    file: file.to_string(),
                    offset,
                    len,
                    stale,
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::Data { data, size, .. } => Ok((data, size)),
            other => Err(unexpected("Read", &other)),
        }
    }

    /// The locks that are held or have waiters, optionally only those starting with `prefix`.
    pub async fn locks(&self, prefix: Option<&str>, stale: bool) -> Result<Vec<LockState>> {
        let response = self
            .call(
                |id| Request::Locks {
                    id,
                    prefix: prefix.map(str::to_string),
                    stale,
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::LockList { locks, .. } => Ok(locks),
            other => Err(unexpected("Locks", &other)),
        }
    }

    /// The files, sorted by name (optionally only those starting with `prefix`), each with its
    /// size and the lock and fence of its last write. With `stale`, any member answers from
    /// its own state.
    pub async fn files(&self, prefix: Option<&str>, stale: bool) -> Result<Vec<FileEntry>> {
        let response = self
            .call(
                |id| Request::Files {
                    id,
                    prefix: prefix.map(str::to_string),
                    stale,
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::FileList { files, .. } => Ok(files),
            other => Err(unexpected("Files", &other)),
        }
    }

    /// The leader's live sessions: id, owner, TTL and time since the leader last renewed each.
    pub async fn sessions(&self) -> Result<Vec<SessionSummary>> {
        let response = self
            .call(|id| Request::Sessions { id }, Patience::Normal)
            .await?;
        match response {
            Response::SessionList { sessions, .. } => Ok(sessions),
            other => Err(unexpected("Sessions", &other)),
        }
    }

    /// Admin: revokes session `session_id` (the safe revoke). Its queued acquires fail with
    /// [`Error::Revoked`], its keep-alives are refused from then on, and its holder's library
    /// reports its lease `Lost(Revoked)`; its locks stay held until the holder closes the
    /// session or its lease runs out on the leader, so nobody else is granted them while the
    /// holder may still be working. Revoking a revoked session again succeeds. Fails with
    /// [`Error::SessionExpired`] if no such session lives.
    pub async fn revoke_session(&self, session_id: SessionId) -> Result<()> {
        self.revoke(session_id, false).await
    }

    /// Admin: ends session `session_id` at once, as an expiry does (the forced revoke): its
    /// locks are released and may be granted to others *while its holder still works*, until
    /// that holder's next keep-alive is refused (up to a third of its TTL later). Fails with
    /// [`Error::SessionExpired`] if no such session lives (also when a retry finds that an
    /// earlier attempt already ended it).
    pub async fn force_revoke_session(&self, session_id: SessionId) -> Result<()> {
        self.revoke(session_id, true).await
    }

    async fn revoke(&self, session_id: SessionId, force: bool) -> Result<()> {
        let response = self
            .call(
                |id| Request::RevokeSession {
                    id,
                    session_id,
                    force,
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::SessionClosed { .. } => Ok(()),
            other => Err(unexpected("RevokeSession", &other)),
        }
    }

    /// The connected node's view of itself and the cluster.
    pub async fn status(&self) -> Result<StatusInfo> {
        let response = self
            .call(|id| Request::Status { id }, Patience::Normal)
            .await?;
        match response {
            Response::Status(info) => Ok(*info),
            other => Err(unexpected("Status", &other)),
        }
    }

    /// Admin: adds node `node_id` at `addr` (started with `--join`) as a learner, and returns
    /// the membership once the leader has promoted it to voter after it caught up. Re-sent
    /// across timeouts and failovers until the retry deadline (the request is idempotent).
    pub async fn add_member(&self, node_id: u64, addr: &str) -> Result<(u64, Vec<MemberStatus>)> {
        let response = self
            .call(
                |id| Request::AddMember {
                    id,
                    node_id,
                    addr: addr.to_string(),
                },
                // The leader answers once the node has caught up, or after its add timeout.
                Patience::Long(ADD_PATIENCE),
            )
            .await?;
        match response {
            Response::MembershipChanged { index, members, .. } => Ok((index, members)),
            other => Err(unexpected("AddMember", &other)),
        }
    }

    /// Admin: removes member `node_id`; returns the committed membership entry's index (0 if
    /// it was not a member) and the members after the change.
    pub async fn remove_member(&self, node_id: u64) -> Result<(u64, Vec<MemberStatus>)> {
        let response = self
            .call(|id| Request::RemoveMember { id, node_id }, Patience::Normal)
            .await?;
        match response {
            Response::MembershipChanged { index, members, .. } => Ok((index, members)),
            other => Err(unexpected("RemoveMember", &other)),
        }
    }

    /// Admin: hands leadership to `node_id` (or the most up-to-date voter); returns the new
    /// leader's id and address.
    pub async fn transfer_leader(&self, node_id: Option<u64>) -> Result<(u64, Option<String>)> {
        let response = self
            .call(
                |id| Request::TransferLeader { id, node_id },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::LeaderTransferred {
                leader,
                leader_addr,
                ..
            } => Ok((leader, leader_addr)),
            other => Err(unexpected("TransferLeader", &other)),
        }
    }

    /// The current connection, dialing one if there is none.
    async fn conn(&self) -> Result<Arc<Conn>> {
        let mut route = self.inner.route.lock().await;
        if let Some(conn) = &route.conn {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
        }
        route.conn = None;
        let addr = match route.leader_hint.take() {
            Some(addr) => addr,
            None => {
                let servers = &self.inner.servers;
                let addr = servers[route.next_server % servers.len()].clone();
                route.next_server = (route.next_server + 1) % servers.len();
                addr
            }
        };
        let generation = route.generation;
        route.generation += 1;
        let conn = Conn::connect(
            &addr,
            generation,
            self.inner.options.connect_timeout,
            self.inner.options.tls.as_ref(),
            self.inner.options.auth_token.as_deref(),
            self.inner.pushes.clone(),
        )
        .await
        .inspect_err(|error| {
            tracing::debug!(%addr, error = %error_chain(error), "connect failed");
        })?;
        tracing::debug!(%addr, node = conn.welcome.node_id, leader = ?conn.welcome.leader_addr, "connected");
        let conn = Arc::new(conn);
        route.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets connection `generation` (if still current) so the next attempt dials again,
    /// at `hint` if given.
    async fn reroute(&self, generation: u64, hint: Option<String>) {
        let mut route = self.inner.route.lock().await;
        let failed = match &route.conn {
            Some(conn) if conn.generation == generation => Some(conn.addr.clone()),
            _ => None,
        };
        if let Some(failed) = failed {
            route.conn = None;
            // A connection reached through a redirect did not move the rotation, so its next
            // step may be the very node that just failed; step past it. (A paused node still
            // accepts TCP connections: dialling it again would cost a whole timeout.)
            let servers = &self.inner.servers;
            if servers.len() > 1 && servers[route.next_server % servers.len()] == failed {
                route.next_server = (route.next_server + 1) % servers.len();
            }
        }
        if hint.is_some() {
            route.leader_hint = hint;
        }
    }

    /// Sleeps before attempt `attempt + 1`, at most about `cap`; false if that would pass
    /// `deadline`.
    async fn backoff(&self, attempt: u32, deadline: Instant, cap: Duration) -> bool {
        let options = &self.inner.options;
        let exp = options
            .backoff_min
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        let cap = exp
            .min(options.backoff_max)
            .min(cap.max(options.backoff_min));
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        let wake = Instant::now() + cap.mul_f64(jitter);
        if wake >= deadline {
            return false;
        }
        tokio::time::sleep_until(wake).await;
        true
    }

    /// Sends the request `make(id)` and returns its final answer, retrying (each attempt with a
    /// fresh id but otherwise the same request) across redirects, reconnects and timeouts until
    /// the retry deadline. Error answers other than the retryable ones become [`Error`]s.
    async fn call<F>(&self, make: F, patience: Patience) -> Result<Response>
    where
        F: Fn(u64) -> Request,
    {
        self.call_noting_queued(make, patience, &|| {}).await
    }

    /// [`Client::call`], running `on_queued` on every `Queued` interim answer.
    async fn call_noting_queued<F>(
        &self,
        make: F,
        patience: Patience,
        on_queued: &(dyn Fn() + Sync),
    ) -> Result<Response>
    where
        F: Fn(u64) -> Request,
    {
        let (response, _rest) = self.call_keeping_reply(make, patience, on_queued).await?;
        Ok(response)
    }

    /// [`Client::call_noting_queued`], returning with the first answer the request's route, on
    /// which the answers that follow it arrive (the chunks of a `SnapshotSave`).
    async fn call_keeping_reply<F>(
        &self,
        make: F,
        patience: Patience,
        on_queued: &(dyn Fn() + Sync),
    ) -> Result<(Response, PendingReply)>
    where
        F: Fn(u64) -> Request,
    {
        let retry = self.inner.options.retry_timeout;
        let mut deadline = Instant::now() + retry;
        let mut attempt = 0u32;
        let mut last: Option<Failure> = None;
        // A failover should cost the client no sleep: a lost connection, a member whose port
        // refuses the dial (a crashed process) and a redirect naming the leader are retried at
        // once, at most once per member (plus one) per request, so nothing spins.
        let mut quick = false;
        let mut quick_left = self.inner.servers.len() + 1;
        loop {
            if last.is_some() {
                attempt += 1;
                // During an election (no leader known) poll briefly rather than back off to a
                // second: elections after a crash take tens of milliseconds.
                let cap = match last {
                    Some(Failure::NoLeader(_)) => self.inner.options.backoff_min * 2,
                    _ => self.inner.options.backoff_max,
                };
                if quick && quick_left > 0 {
                    quick_left -= 1;
                    if Instant::now() >= deadline {
                        return Err(last.take().map_or(Error::Timeout, Failure::into_error));
                    }
                } else if !self.backoff(attempt, deadline, cap).await {
                    return Err(last.take().map_or(Error::Timeout, Failure::into_error));
                }
                quick = false;
            }
            let conn = match self.conn().await {
                Ok(conn) => conn,
                Err(error) if error.is_unauthenticated() => return Err(error),
                Err(error) => {
                    quick = matches!(&error, Error::Io(e)
                        if e.kind() == std::io::ErrorKind::ConnectionRefused);
                    last = Some(Failure::Connect(error_chain(&error)));
                    continue;
                }
            };
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let Some(mut reply) = conn.send(id, make(id)).await else {
                self.reroute(conn.generation, None).await;
                quick = true;
                last = Some(Failure::Lost(format!("connection to {} lost", conn.addr)));
                continue;
            };
            let mut queued = false;
            loop {
                let limit = match patience {
                    Patience::Queue { until } if queued => until,
                    Patience::Long(wait) => {
                        Some(Instant::now() + wait.max(self.inner.options.request_timeout))
                    }
                    Patience::Short(wait) => {
                        Some(Instant::now() + wait.min(self.inner.options.request_timeout))
                    }
                    _ => Some(Instant::now() + self.inner.options.request_timeout),
                };
                let answer: Option<Reply> = match limit {
                    Some(limit) => match tokio::time::timeout_at(limit, reply.recv()).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            // No answer in time: outcome unknown; retry with the same request.
                            tracing::debug!(addr = %conn.addr, id, "request timed out");
                            self.reroute(conn.generation, None).await;
                            last = Some(Failure::TimedOut);
                            break;
                        }
                    },
                    None => reply.recv().await,
                };
                match answer {
                    None => {
                        self.reroute(conn.generation, None).await;
                        quick = true;
                        if queued {
                            // Waiting was progress: give the re-attach a full retry budget.
                            deadline = deadline.max(Instant::now() + retry);
                        }
                        last = Some(Failure::Lost(format!("connection to {} lost", conn.addr)));
                        break;
                    }
                    Some(Err(bad)) => return Err(Error::Protocol(bad)),
                    Some(Ok(Response::Queued { .. })) => {
                        queued = true;
                        on_queued();
                        deadline = deadline.max(Instant::now() + retry);
                    }
                    Some(Ok(Response::Error {
                        code,
                        message,
                        leader_addr,
                        ..
                    })) => match code {
                        ErrorCode::NotLeader => {
                            let hint = leader_addr.filter(|addr| *addr != conn.addr);
                            tracing::debug!(from = %conn.addr, to = ?hint, "redirected");
                            if hint.is_some() {
                                // A redirect is progress: go there at once, and restart the
                                // backoff from its floor (a redirect loop spends the quick
                                // retries, then backs off a little, so it cannot spin).
                                attempt = 0;
                                quick = true;
                            }
                            self.reroute(conn.generation, hint).await;
                            last = Some(Failure::NoLeader(conn.addr.clone()));
                            break;
                        }
                        ErrorCode::ShuttingDown => {
                            self.reroute(conn.generation, None).await;
                            last = Some(Failure::Lost(format!("{} is shutting down", conn.addr)));
                            break;
                        }
                        ErrorCode::Timeout
                        | ErrorCode::TooManyRequests
                        | ErrorCode::Internal
                        | ErrorCode::NotReady => {
                            last = Some(Failure::Busy(code, message));
                            break;
                        }
                        _ => return Err(Error::from_code(code, message)),
                    },
                    Some(Ok(response)) => return Ok((response, reply)),
                }
            }
        }
    }
}

/// The error for an answer of the wrong kind.
fn unexpected(request: &str, response: &Response) -> Error {
    let kind = match response {
        Response::Status(_) => "Status".to_string(),
        other => format!("{other:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    Error::Protocol(format!("unexpected {kind} answer to {request}"))
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
