//! Sessions (leases kept alive in the background) and lock guards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::{Error, Result};
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

/// Whether a session can still be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// The lease is (as far as the client knows) valid.
    Alive,
    /// The daemon expired the session, or no keep-alive got through for a whole TTL: its locks
    /// must be assumed gone.
    Lost,
    /// The session was closed by this client.
    Closed,
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
    state: Arc<watch::Sender<SessionState>>,
    keepalive: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.lock().ok().and_then(|mut k| k.take()) {
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

/// Marks a session lost, unless it already ended.
fn mark_lost(state: &watch::Sender<SessionState>) {
    state.send_if_modified(|s| {
        if *s == SessionState::Alive {
            *s = SessionState::Lost;
            true
        } else {
            false
        }
    });
}

impl Session {
    /// A session handle; with `keep_alive`, renews the lease every ttl/3, starting from
    /// `renewed` (when the lease is known to have been granted or renewed). With `clock`, its
    /// sequence numbers come from the clock (see [`super::ClientOptions::clock_seq`]).
    pub(crate) fn start(
        client: Client,
        credentials: SessionCredentials,
        renewed: Instant,
        keep_alive: bool,
        clock: bool,
    ) -> Session {
        let (state, _) = watch::channel(SessionState::Alive);
        let state = Arc::new(state);
        let task = keep_alive.then(|| {
            tokio::spawn(keep_alive_loop(
                client.clone(),
                credentials,
                renewed,
                state.clone(),
            ))
        });
        Session {
            inner: Arc::new(SessionInner {
                client,
                credentials,
                seq: Mutex::new(SeqSource { last: 0, clock }),
                state,
                keepalive: Mutex::new(task),
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
        *self.inner.state.borrow()
    }

    /// True once the session is lost (expired on the daemon, or unreachable for a TTL).
    pub fn is_lost(&self) -> bool {
        self.state() == SessionState::Lost
    }

    /// Resolves when the session is lost or closed (at once if it already is). Returns the
    /// state it ended in.
    pub async fn lost(&self) -> SessionState {
        let mut rx = self.inner.state.subscribe();
        let ended = match rx.wait_for(|s| *s != SessionState::Alive).await {
            Ok(state) => *state,
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
            mark_lost(&self.inner.state);
        }
        result
    }

    /// Acquires `name` in `mode`, waiting as `wait` says, and returns a guard that releases it.
    pub async fn lock(&self, name: &str, mode: LockMode, wait: Wait) -> Result<LockGuard> {
        let fence = self.acquire(name, mode, wait, None).await?;
        Ok(LockGuard {
            session: self.clone(),
            name: name.to_string(),
            mode,
            fence,
            released: false,
        })
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
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let wait_ms = wait.wait_ms();
        let hold_ms = hold.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Past the wait bound (plus time for the daemon's answer) the wait is over anyway.
        let until = match wait {
            Wait::TryOnce => None,
            Wait::For(d) => Some(Instant::now() + d + self.inner.client.options().request_timeout),
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
            Response::Granted { fence, .. } => Ok(fence),
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
        let response = self
            .call(
                |id| Request::KeepAlive { id, session, token },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::KeptAlive { ttl_ms, .. } => Ok(Duration::from_millis(ttl_ms)),
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
                self.inner.state.send_replace(SessionState::Closed);
                Ok(())
            }
            Ok(other) => Err(unexpected("CloseSession", &other)),
            Err(error) => Err(error),
        }
    }
}

/// Renews the lease every ttl/3 until the session ends. Declares it lost when the daemon says
/// it expired, or when a whole TTL passed since the last renewal the daemon confirmed (counted
/// from when that keep-alive was *sent*, so the client gives up no later than the daemon).
async fn keep_alive_loop(
    client: Client,
    credentials: SessionCredentials,
    mut renewed: Instant,
    state: Arc<watch::Sender<SessionState>>,
) {
    let SessionCredentials {
        id: session,
        token,
        ttl,
    } = credentials;
    let period = ttl / 3;
    let mut next = renewed + period;
    loop {
        let mut ended = state.subscribe();
        tokio::select! {
            biased;
            _ = ended.wait_for(|s| *s != SessionState::Alive) => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let lost_at = renewed + ttl;
        let call = client.call(
            |id| Request::KeepAlive { id, session, token },
            Patience::Normal,
        );
        match tokio::time::timeout_at(lost_at, call).await {
            Ok(Ok(_)) => {
                renewed = sent;
                next = renewed + period;
            }
            Ok(Err(Error::SessionExpired)) => {
                tracing::warn!(session, "session expired on the server");
                mark_lost(&state);
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(session, error = %super::error_chain(&error), "keep-alive failed");
                // Try again soon, while the lease may still be valid.
                next = Instant::now() + (period / 4).max(Duration::from_millis(10));
                if next >= lost_at {
                    tracing::warn!(session, "no keep-alive got through for a whole TTL");
                    mark_lost(&state);
                    return;
                }
            }
            Err(_) => {
                tracing::warn!(session, "no keep-alive got through for a whole TTL");
                mark_lost(&state);
                return;
            }
        }
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
    released: bool,
}

impl LockGuard {
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

    /// Gives up the guard without releasing: the lock stays held until
    /// [`Session::release`], its hold limit or the end of the session. Returns the fence.
    pub fn detach(mut self) -> Fence {
        self.released = true;
        self.fence
    }

    /// Releases the lock now.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.session.release(&self.name).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released || self.session.state() != SessionState::Alive {
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
