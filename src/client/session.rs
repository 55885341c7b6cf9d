//! Sessions (leases kept alive in the background) and lock guards, each with its client-side
//! lease (see `lease.rs` for the deadline arithmetic and the guarantee it gives).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::{Error, Result};
use super::lease::{grant_lease, watch_grant, Hold, Lease, LeaseState, LostReason, SessionLease};
use super::{unexpected, unix_micros, Client, Patience};
use crate::lockspace::{Fence, LockMode, Seq, SessionId};
use crate::protocol::{Request, Response, MAX_APPEND};

/// How long an acquire may wait for the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Fail with [`Error::Busy`] if the lock is taken.
    TryOnce,
    /// Queue for at most this long, then fail with [`Error::WaitTimeout`].
    For(Duration),
    /// Queue until granted, or until the session ends.
    Forever,
}

impl Wait {
    /// The wire's `wait_ms`.
    fn wait_ms(self) -> Option<u64> {
        match self {
            Wait::TryOnce => Some(0),
            Wait::For(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Wait::Forever => None,
        }
    }
}

/// What identifies a session to the daemon; enough for another process to use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCredentials {
    /// The session id.
    pub id: SessionId,
    /// The secret token presented with every session operation.
    pub token: u64,
    /// The lease length the daemon granted.
    pub ttl: Duration,
}

/// Whether a session can still be used: a coarse view of its [`Lease`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// The lease is (as far as the client knows) valid: healthy or in jeopardy.
    Alive,
    /// The daemon expired the session, or its local lease deadline passed: its locks must be
    /// assumed gone.
    Lost,
    /// The session was closed by this client.
    Closed,
}

impl SessionState {
    /// The coarse state of a lease.
    fn of(lease: &Lease) -> SessionState {
        match lease.state {
            LeaseState::Healthy | LeaseState::Jeopardy => SessionState::Alive,
            LeaseState::Lost(LostReason::Closed) => SessionState::Closed,
            LeaseState::Lost(_) => SessionState::Lost,
        }
    }
}

/// The lock and fence an append is made under: a [`LockGuard`] or an explicit pair.
#[derive(Clone, Copy, Debug)]
pub struct LockRef<'a> {
    /// The lock guarding the file.
    pub lock: &'a str,
    /// The fencing token of the current exclusive grant.
    pub fence: Fence,
}

impl<'a> From<&'a LockGuard> for LockRef<'a> {
    fn from(guard: &'a LockGuard) -> Self {
        LockRef {
            lock: &guard.name,
            fence: guard.fence,
        }
    }
}

impl<'a> From<(&'a str, Fence)> for LockRef<'a> {
    fn from((lock, fence): (&'a str, Fence)) -> Self {
        LockRef { lock, fence }
    }
}

/// The source of a session's sequence numbers.
#[derive(Debug)]
struct SeqSource {
    last: Seq,
    clock: bool,
}

impl SeqSource {
    fn next(&mut self) -> Seq {
        let floor = self.last + 1;
        self.last = if self.clock {
            floor.max(unix_micros())
        } else {
            floor
        };
        self.last
    }
}

struct SessionInner {
    client: Client,
    credentials: SessionCredentials,
    seq: Mutex<SeqSource>,
    lease: Arc<SessionLease>,
    /// The keep-alive loop (if any) and the lease watchdog.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An open session: the owner of locks. Cheap to clone; clones share the session.
///
/// Dropping every handle stops the keep-alives without closing the session (it then expires
/// after its TTL); call [`Session::close`] to release its locks at once.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.credentials.id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session handle. `renewed` is the send instant of the open (or of a keep-alive) the
    /// daemon confirmed, `None` if this handle knows of none (its lease starts in jeopardy
    /// until a keep-alive is confirmed). With `keep_alive`, renews the lease every ttl/3 (at
    /// once if `renewed` is `None`). With `clock`, its sequence numbers come from the clock
    /// (see [`super::ClientOptions::clock_seq`]).
    pub(crate) fn start(
        client: Client,
        credentials: SessionCredentials,
        renewed: Option<Instant>,
        keep_alive: bool,
        clock: bool,
    ) -> Session {
        let lease = Arc::new(SessionLease::new(renewed, credentials.ttl));
        let mut tasks = vec![tokio::spawn({
            let lease = lease.clone();
            async move { lease.watchdog().await }
        })];
        if keep_alive {
            tasks.push(tokio::spawn(keep_alive_loop(
                client.clone(),
                credentials,
                renewed.unwrap_or_else(Instant::now),
                lease.clone(),
            )));
        }
        Session {
            inner: Arc::new(SessionInner {
                client,
                credentials,
                seq: Mutex::new(SeqSource { last: 0, clock }),
                lease,
                tasks,
            }),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.inner.credentials.id
    }

    /// The id, token and TTL, e.g. to hand the session to another process.
    pub fn credentials(&self) -> SessionCredentials {
        self.inner.credentials
    }

    /// The client this session talks through.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        SessionState::of(&self.inner.lease.current())
    }

    /// The session's lease, updated on every confirmed keep-alive and on every state change:
    /// await its changes to learn of jeopardy and loss (see the `lease` module docs for what
    /// the deadline guarantees).
    pub fn lease(&self) -> watch::Receiver<Lease> {
        self.inner.lease.subscribe()
    }

    /// True once the session is lost (expired on the daemon, or its local lease ran out).
    pub fn is_lost(&self) -> bool {
        self.state() == SessionState::Lost
    }

    /// Resolves when the session is lost or closed (at once if it already is). Returns the
    /// state it ended in.
    pub async fn lost(&self) -> SessionState {
        let mut rx = self.inner.lease.subscribe();
        let ended = match rx.wait_for(|lease| lease.state.is_lost()).await {
            Ok(lease) => SessionState::of(&lease),
            // The sender lives in `self`, so it cannot be gone; report the current state.
            Err(_) => self.state(),
        };
        ended
    }

    /// The next sequence number for a mutating request.
    fn next_seq(&self) -> Seq {
        self.inner
            .seq
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next()
    }

    /// Fails at once if the session has ended.
    fn check(&self) -> Result<()> {
        match self.state() {
            SessionState::Alive => Ok(()),
            SessionState::Lost | SessionState::Closed => Err(Error::SessionExpired),
        }
    }

    /// Runs a request of this session, noting `SessionExpired` answers.
    async fn call<F>(&self, make: F, patience: Patience) -> Result<Response>
    where
        F: Fn(u64) -> Request,
    {
        self.check()?;
        let result = self.inner.client.call(make, patience).await;
        if let Err(Error::SessionExpired) = result {
            self.inner.lease.lose(LostReason::SessionExpired);
        }
        result
    }

    /// Acquires `name` in `mode`, waiting as `wait` says, and returns a guard that releases it.
    pub async fn lock(&self, name: &str, mode: LockMode, wait: Wait) -> Result<LockGuard> {
        self.lock_with_hold(name, mode, wait, None).await
    }

    /// Like [`Session::lock`], with a hold limit: the cluster ends the grant `hold` after it
    /// made it, unless [`LockGuard::extend`] renews it. The guard's [`LockGuard::lease`] counts
    /// the hold from an instant no later than the cluster's start of it (see the `lease`
    /// module docs).
    pub async fn lock_with_hold(
        &self,
        name: &str,
        mode: LockMode,
        wait: Wait,
        hold: Option<Duration>,
    ) -> Result<LockGuard> {
        let grant = self.acquire_grant(name, mode, wait, hold).await?;
        let hold = match hold {
            Some(limit) => Hold::Limited {
                start: grant.sent,
                limit,
            },
            None => Hold::Unlimited,
        };
        Ok(LockGuard::new(self.clone(), name, mode, grant.fence, hold))
    }

    /// Acquires `name` and returns its fencing token, without a guard: the lock stays held
    /// until [`Session::release`], the hold limit `hold` (if any) or the end of the session.
    pub async fn acquire(
        &self,
        name: &str,
        mode: LockMode,
        wait: Wait,
        hold: Option<Duration>,
    ) -> Result<Fence> {
        Ok(self.acquire_grant(name, mode, wait, hold).await?.fence)
    }

    /// Acquires `name`; returns the grant with the instant the acquire was first sent (no
    /// later than the cluster made the grant) and whether it waited in the queue.
    async fn acquire_grant(
        &self,
        name: &str,
        mode: LockMode,
        wait: Wait,
        hold: Option<Duration>,
    ) -> Result<Grant> {
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let wait_ms = wait.wait_ms();
        let hold_ms = hold.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let sent = Instant::now();
        // Past the wait bound (plus time for the daemon's answer) the wait is over anyway.
        let until = match wait {
            Wait::TryOnce => None,
            Wait::For(d) => Some(sent + d + self.inner.client.options().request_timeout),
            Wait::Forever => None,
        };
        let request = self.call(
            |id| Request::Acquire {
                id,
                session,
                token,
                seq,
                lock: name.to_string(),
                mode,
                wait_ms,
                hold_ms,
            },
            Patience::Queue { until },
        );
        // A long wait ends when the session does: the daemon drops its waiters then.
        let response = tokio::select! {
            biased;
            response = request => response?,
            _ = self.lost() => return Err(Error::SessionExpired),
        };
        match response {
            Response::Granted { fence, .. } => Ok(Grant { fence, sent }),
            other => Err(unexpected("Acquire", &other)),
        }
    }

    /// Releases `name`, held by this session.
    pub async fn release(&self, name: &str) -> Result<()> {
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let response = self
            .call(
                |id| Request::Release {
                    id,
                    session,
                    token,
                    seq,
                    lock: name.to_string(),
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::Released { .. } => Ok(()),
            other => Err(unexpected("Release", &other)),
        }
    }

    /// Appends `data` to `file` under the lock's fence; returns the offset it was written at
    /// and the file's new size. Fails with [`Error::StaleFence`] if the fence is no longer the
    /// lock's current exclusive grant to this session.
    pub async fn append<'a>(
        &self,
        file: &str,
        under: impl Into<LockRef<'a>>,
        data: impl Into<Vec<u8>>,
    ) -> Result<(u64, u64)> {
        let under = under.into();
        let data = data.into();
        if data.len() > MAX_APPEND {
            return Err(Error::InvalidArgument(format!(
                "append of {} bytes exceeds the maximum of {MAX_APPEND}",
                data.len()
            )));
        }
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let response = self
            .call(
                |id| Request::Append {
                    id,
                    session,
                    token,
                    seq,
                    file: file.to_string(),
                    lock: under.lock.to_string(),
                    fence: under.fence,
                    data: data.clone(),
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::Appended { offset, size, .. } => Ok((offset, size)),
            other => Err(unexpected("Append", &other)),
        }
    }

    /// Renews the lease once, now. The background task does this by itself; this is for
    /// handles made without it ([`Client::resume_session`]).
    pub async fn keep_alive(&self) -> Result<Duration> {
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let sent = Instant::now();
        let response = self
            .call(
                |id| Request::KeepAlive { id, session, token },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::KeptAlive { ttl_ms, .. } => {
                let ttl = Duration::from_millis(ttl_ms);
                self.inner.lease.renewed(sent, ttl);
                Ok(ttl)
            }
            other => Err(unexpected("KeepAlive", &other)),
        }
    }

    /// Closes the session, releasing its locks and dropping its waiters. Also worth calling
    /// on a session the client considers lost: the daemon may still hold it (a new leader
    /// restarts every lease). A session the daemon no longer knows counts as closed.
    pub async fn close(self) -> Result<()> {
        if self.state() == SessionState::Closed {
            return Ok(());
        }
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let response = self
            .inner
            .client
            .call(
                |id| Request::CloseSession {
                    id,
                    session,
                    token,
                    seq,
                },
                Patience::Normal,
            )
            .await;
        match response {
            // A retry of a close that was applied gets SessionExpired (protocol.md §10).
            Ok(Response::SessionClosed { .. }) | Err(Error::SessionExpired) => {
                self.inner.lease.close();
                Ok(())
            }
            Ok(other) => Err(unexpected("CloseSession", &other)),
            Err(error) => Err(error),
        }
    }
}

/// Renews the lease every ttl/3 until the session ends, reporting each confirmation (by its
/// send instant) to the lease, whose watchdog moves it to jeopardy and to lost when they stop.
/// Declares it lost when the daemon says it expired. A handle that knows of no confirmation
/// (`lease.confirmed()` false) sends its first keep-alive at once and gives up a TTL after
/// `renewed` if none gets through.
async fn keep_alive_loop(
    client: Client,
    credentials: SessionCredentials,
    renewed: Instant,
    lease: Arc<SessionLease>,
) {
    let SessionCredentials {
        id: session,
        token,
        ttl,
    } = credentials;
    let period = ttl / 3;
    let mut next = if lease.confirmed() {
        renewed + period
    } else {
        renewed
    };
    let mut ended = lease.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = ended.wait_for(|lease| lease.state.is_lost()) => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        // Past this instant the lease is over anyway (the watchdog says so).
        let give_up = if lease.confirmed() {
            lease.current().deadline
        } else {
            renewed + ttl
        };
        let sent = Instant::now();
        let call = client.call(
            |id| Request::KeepAlive { id, session, token },
            Patience::Normal,
        );
        match tokio::time::timeout_at(give_up, call).await {
            Ok(Ok(Response::KeptAlive { ttl_ms, .. })) => {
                lease.renewed(sent, Duration::from_millis(ttl_ms));
                next = sent + Duration::from_millis(ttl_ms) / 3;
            }
            Ok(Ok(other)) => {
                tracing::warn!(session, answer = ?other, "unexpected answer to a keep-alive");
                next = Instant::now() + (period / 4).max(Duration::from_millis(10));
            }
            Ok(Err(Error::SessionExpired)) => {
                tracing::warn!(session, "session expired on the server");
                lease.lose(LostReason::SessionExpired);
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(session, error = %super::error_chain(&error), "keep-alive failed");
                // Try again soon, while the lease may still be valid.
                next = Instant::now() + (period / 4).max(Duration::from_millis(10));
                if next >= give_up {
                    tracing::warn!(session, "no keep-alive got through for a whole TTL");
                    lease.lose(LostReason::LeaseExpired);
                    return;
                }
            }
            Err(_) => {
                tracing::warn!(session, "no keep-alive got through for a whole TTL");
                lease.lose(LostReason::LeaseExpired);
                return;
            }
        }
    }
}

/// A grant as the acquire returned it.
struct Grant {
    fence: Fence,
    /// When the acquire was first sent: no later than the cluster made the grant.
    sent: Instant,
}

/// The lease of one grant: its hold limit, the combined lease callers watch, and the task
/// that keeps the latter up to date.
#[derive(Debug)]
struct GrantLease {
    hold: watch::Sender<Hold>,
    lease: Arc<watch::Sender<Lease>>,
    watcher: JoinHandle<()>,
}

impl GrantLease {
    fn new(session: watch::Receiver<Lease>, hold: Hold) -> GrantLease {
        let (initial, _) = grant_lease(*session.borrow(), hold, Instant::now());
        let (hold, hold_rx) = watch::channel(hold);
        let lease = Arc::new(watch::channel(initial).0);
        let watcher = tokio::spawn({
            let lease = lease.clone();
            async move { watch_grant(session, hold_rx, &lease).await }
        });
        GrantLease {
            hold,
            lease,
            watcher,
        }
    }

    /// Ends the grant's lease for `reason` (the watcher makes it final).
    fn end(&self, reason: LostReason) {
        self.hold.send_replace(Hold::Ended(reason));
        // The watcher may be gone already (lost); say it directly too.
        self.lease.send_if_modified(|lease| {
            let changed = !lease.state.is_lost();
            if changed {
                lease.state = LeaseState::Lost(reason);
            }
            changed
        });
    }
}

impl Drop for GrantLease {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// A held lock. Release it with [`LockGuard::release`]; dropping the guard releases it in the
/// background (best effort: if that fails, the lock is freed when the session ends).
#[derive(Debug)]
pub struct LockGuard {
    session: Session,
    name: String,
    mode: LockMode,
    fence: Fence,
    grant: GrantLease,
    released: bool,
}

impl LockGuard {
    fn new(session: Session, name: &str, mode: LockMode, fence: Fence, hold: Hold) -> LockGuard {
        let grant = GrantLease::new(session.lease(), hold);
        LockGuard {
            session,
            name: name.to_string(),
            mode,
            fence,
            grant,
            released: false,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mode it is held in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The fencing token of this grant: pass it to any store that must reject stale holders.
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// The session holding the lock.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// This grant's lease: the session's lease combined with the grant's hold limit (deadline =
    /// min of both; `Lost(HoldLimit)` / `Lost(Revoked)` for the grant alone). Ends with
    /// `Lost(Closed)` when the guard releases the lock; after [`LockGuard::detach`] it is no
    /// longer updated.
    pub fn lease(&self) -> watch::Receiver<Lease> {
        self.grant.lease.subscribe()
    }

    /// Gives up the guard without releasing: the lock stays held until
    /// [`Session::release`], its hold limit or the end of the session. Returns the fence.
    pub fn detach(mut self) -> Fence {
        self.released = true;
        self.fence
    }

    /// Releases the lock now. Its lease is `Lost(Closed)` from the start of the call: the
    /// lock must not be relied on once its release was asked for.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.grant.end(LostReason::Closed);
        self.session.release(&self.name).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.grant.end(LostReason::Closed);
        if self.session.state() != SessionState::Alive {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(lock = %self.name, "guard dropped outside a runtime; lock stays held until the session ends");
            return;
        };
        let session = self.session.clone();
        let name = std::mem::take(&mut self.name);
        runtime.spawn(async move {
            if let Err(error) = session.release(&name).await {
                tracing::warn!(lock = %name, error = %super::error_chain(&error), "background release failed");
            }
        });
    }
}
