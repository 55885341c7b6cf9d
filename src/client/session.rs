//! Sessions (leases kept alive in the background) and lock guards, each with its client-side
//! lease (see `lease.rs` for the deadline arithmetic and the guarantee it gives).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::{Error, Result};
use super::lease::{grant_lease, watch_grant, Hold, Lease, LeaseState, LostReason, SessionLease};
use super::{unexpected, unix_micros, Client, Patience};
use crate::lockspace::{Fence, Seq, SessionId};
use crate::protocol::LockMode;
use crate::protocol::{PushReason, Request, Response, MAX_APPEND};

/// How many pushed `Revoked` grants a session remembers, for a guard built just after its
/// grant's `Revoked` arrived.
const REVOKED_REMEMBERED: usize = 64;

/// Grants the daemon pushed `Revoked` for: (lock, fence, why), newest last.
type RevokedGrants = Arc<Mutex<VecDeque<(String, Fence, LostReason)>>>;

/// What a pushed reason means for a lease.
fn lost_reason(reason: PushReason) -> LostReason {
    match reason {
        PushReason::Hold => LostReason::HoldLimit,
        PushReason::Expired => LostReason::SessionExpired,
        PushReason::Admin => LostReason::Revoked,
    }
}

/// Follows a session's pushes: `SessionExpired` ends its lease at once; each `Revoked` is
/// remembered for the guards of the session (each guard also listens itself).
async fn push_loop(
    mut pushes: broadcast::Receiver<Response>,
    lease: Arc<SessionLease>,
    revoked: RevokedGrants,
) {
    loop {
        match pushes.recv().await {
            Ok(Response::SessionExpired { reason, .. }) => lease.lose(lost_reason(reason)),
            Ok(Response::Revoked {
                lock,
                fence,
                reason,
                ..
            }) => {
                let mut revoked = locked(&revoked);
                if revoked.len() == REVOKED_REMEMBERED {
                    revoked.pop_front();
                }
                revoked.push_back((lock, fence, lost_reason(reason)));
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

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
    /// This handle's acquires that were sent and have no final answer yet, by lock: the seq a
    /// `Cancel` names.
    waiting: Mutex<HashMap<String, Seq>>,
    /// Requests that run to completion in their own task whatever their caller does.
    in_flight: Mutex<Vec<InFlight>>,
    /// Ids of `in_flight` entries.
    next_flight: AtomicU64,
    /// Grants the daemon pushed `Revoked` for lately.
    revoked: RevokedGrants,
}

/// A request running in its own task (a release, an append, an extend, the cancel of a
/// dropped acquire). Once its caller gave up on it (`orphaned`), it stays listed until the
/// session's next release, append, extend or acquire has waited for it to finish, so that call
/// behaves as if the dropped one had finished.
struct InFlight {
    id: u64,
    /// For a release: the lock it releases (a release of the same lock joins it).
    releases: Option<String>,
    /// `Some(succeeded)` once it finished.
    done: watch::Receiver<Option<bool>>,
    orphaned: bool,
}

/// Locks a std mutex of the session; a panic while holding one of these short locks is a
/// bug, so the data is used anyway.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks an in-flight request orphaned if its caller's future is dropped before it finished.
struct OrphanOnDrop<'a> {
    session: &'a Session,
    id: u64,
    armed: bool,
}

impl Drop for OrphanOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(entry) = locked(&self.session.inner.in_flight)
                .iter_mut()
                .find(|f| f.id == self.id)
            {
                entry.orphaned = true;
            }
        }
    }
}

/// While an acquire waits for its answer: forgets it when done, and if the caller's future is
/// dropped first, cancels it in the background (releasing the lock if it was granted
/// meanwhile).
struct WaitGuard<'a> {
    session: &'a Session,
    lock: &'a str,
    seq: Seq,
    armed: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        {
            let mut waiting = locked(&self.session.inner.waiting);
            if waiting.get(self.lock) == Some(&self.seq) {
                waiting.remove(self.lock);
            }
        }
        if !self.armed || self.session.state() != SessionState::Alive {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(lock = %self.lock, "acquire dropped outside a runtime; it stays queued until the session ends");
            return;
        };
        let session = self.session.clone();
        let lock = self.lock.to_string();
        let seq = self.seq;
        let (done_tx, done) = watch::channel(None);
        let id = session.inner.next_flight.fetch_add(1, Ordering::Relaxed);
        locked(&session.inner.in_flight).push(InFlight {
            id,
            releases: None,
            done,
            orphaned: true,
        });
        runtime.spawn(async move {
            let ok = cancel_dropped(&session, &lock, seq).await;
            // Stays listed (orphaned) until the session's next call has seen it finish.
            done_tx.send_replace(Some(ok));
        });
    }
}

/// Cancels the dropped acquire `acquire_seq` of `lock`; if it no longer waits it may have been
/// granted, so the lock is released (a `NotHolder` answer then means it never was).
async fn cancel_dropped(session: &Session, lock: &str, acquire_seq: Seq) -> bool {
    let result = match session.cancel_seq(lock, acquire_seq).await {
        Err(Error::NotWaiting) => match session.release_now(lock).await {
            Err(Error::NotHolder) => Ok(()),
            other => other,
        },
        other => other,
    };
    match result {
        Ok(()) | Err(Error::SessionExpired) => true,
        Err(error) => {
            tracing::warn!(%lock, error = %super::error_chain(&error), "cancelling a dropped acquire failed");
            false
        }
    }
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
        let revoked = RevokedGrants::default();
        let pushes = client.inner.pushes.subscribe(credentials.id);
        let mut tasks = vec![
            tokio::spawn({
                let lease = lease.clone();
                async move { lease.watchdog().await }
            }),
            tokio::spawn(push_loop(pushes, lease.clone(), revoked.clone())),
        ];
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
                waiting: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(Vec::new()),
                next_flight: AtomicU64::new(1),
                revoked,
            }),
        }
    }

    /// Sends one fenced, exactly-once file write (`Append`, `Truncate`, `Delete`): settles
    /// orphaned calls first, takes the next seq, and runs the call to completion even if the
    /// caller drops the future (its retries keep the seq). `answer` picks the success out of
    /// the response, or hands back anything else, which is reported as unexpected.
    async fn fenced_write<T, M, A>(&self, what: &'static str, make: M, answer: A) -> Result<T>
    where
        T: Send + 'static,
        M: Fn(u64, SessionId, u64, Seq) -> Request + Send + Sync + 'static,
        A: FnOnce(Response) -> std::result::Result<T, Response> + Send + 'static,
    {
        self.settle_orphans(None).await;
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let this = self.clone();
        self.run_to_completion(None, async move {
            let response = this
                .call(|id| make(id, session, token, seq), Patience::Normal)
                .await?;
            answer(response).map_err(|other| unexpected(what, &other))
        })
        .await
    }

    /// Runs `work` in its own task and returns its result. If the caller drops this future,
    /// `work` still runs to completion (retrying with its original seq), and the next release,
    /// append or acquire of the session waits for it first.
    async fn run_to_completion<T, W>(&self, releases: Option<&str>, work: W) -> Result<T>
    where
        T: Send + 'static,
        W: Future<Output = Result<T>> + Send + 'static,
    {
        let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done) = watch::channel(None);
        locked(&self.inner.in_flight).push(InFlight {
            id,
            releases: releases.map(str::to_string),
            done,
            orphaned: false,
        });
        let session = self.clone();
        let task = tokio::spawn(async move {
            let result = work.await;
            done_tx.send_replace(Some(result.is_ok()));
            // An orphan stays listed until the session's next call has seen it finish.
            locked(&session.inner.in_flight).retain(|f| f.id != id || f.orphaned);
            result
        });
        let mut orphan = OrphanOnDrop {
            session: self,
            id,
            armed: true,
        };
        let joined = task.await;
        orphan.armed = false;
        match joined {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(Error::Protocol("a request task was cancelled".into())),
        }
    }

    /// Waits for every orphaned in-flight request. Returns true if one of them was a release
    /// of `lock` that succeeded.
    async fn settle_orphans(&self, lock: Option<&str>) -> bool {
        let orphans: Vec<(u64, Option<String>, watch::Receiver<Option<bool>>)> =
            locked(&self.inner.in_flight)
                .iter()
                .filter(|f| f.orphaned)
                .map(|f| (f.id, f.releases.clone(), f.done.clone()))
                .collect();
        let mut released = false;
        for (id, releases, mut done) in orphans {
            let succeeded = done
                .wait_for(Option::is_some)
                .await
                .map(|d| *d == Some(true))
                .unwrap_or(false);
            if succeeded && lock.is_some() && releases.as_deref() == lock {
                released = true;
            }
            locked(&self.inner.in_flight).retain(|f| f.id != id);
        }
        released
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

    /// The push events the daemon sends for this session from now on (protocol.md §5):
    /// `QueuePosition` while an acquire waits, `HoldExpiring`, `SessionExpiring`, `Revoked`,
    /// `SessionExpired`. Hints only: they may be lost, and the leases already act on the last
    /// two (a `Revoked` ends its grant's [`LockGuard::lease`], a `SessionExpired` the
    /// session's [`Session::lease`]).
    pub fn pushes(&self) -> broadcast::Receiver<Response> {
        self.inner.client.inner.pushes.subscribe(self.id())
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
        self.call_noting_queued(make, patience, &|| {}).await
    }

    /// [`Session::call`], running `on_queued` on every `Queued` answer.
    async fn call_noting_queued<F>(
        &self,
        make: F,
        patience: Patience,
        on_queued: &(dyn Fn() + Sync),
    ) -> Result<Response>
    where
        F: Fn(u64) -> Request,
    {
        self.check()?;
        let result = self
            .inner
            .client
            .call_noting_queued(make, patience, on_queued)
            .await;
        match result {
            Err(Error::SessionExpired) => self.inner.lease.lose(LostReason::SessionExpired),
            Err(Error::Revoked) => self.inner.lease.lose(LostReason::Revoked),
            _ => {}
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
        let limited = match hold {
            // The acquire's send instant may lie a whole hold in the past, so a guard built
            // from it could be born lost. Restart the hold first: its local start is then this
            // Extend's send instant (see the `lease` docs). If that fails the guard keeps the
            // safe, early start and reports what it implies.
            Some(limit) if grant.queued => {
                let start = match self.extend(name, grant.fence, limit).await {
                    Ok(sent) => sent,
                    Err(error) => {
                        tracing::debug!(lock = %name, error = %super::error_chain(&error), "renewing a queued grant's hold failed");
                        grant.sent
                    }
                };
                Hold::Limited { start, limit }
            }
            Some(limit) => Hold::Limited {
                start: grant.sent,
                limit,
            },
            None => Hold::Unlimited,
        };
        Ok(LockGuard::new(
            self.clone(),
            name,
            mode,
            grant.fence,
            limited,
        ))
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
        self.settle_orphans(None).await;
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        locked(&self.inner.waiting).insert(name.to_string(), seq);
        let mut waiting = WaitGuard {
            session: self,
            lock: name,
            seq,
            armed: true,
        };
        let queued = AtomicBool::new(false);
        let note_queued = || queued.store(true, Ordering::Relaxed);
        let wait_ms = wait.wait_ms();
        let hold_ms = hold.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let sent = Instant::now();
        // Past the wait bound (plus time for the daemon's answer) the wait is over anyway.
        let until = match wait {
            Wait::TryOnce => None,
            Wait::For(d) => Some(sent + d + self.inner.client.options().request_timeout),
            Wait::Forever => None,
        };
        let request = self.call_noting_queued(
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
            &note_queued,
        );
        // A long wait ends when the session does: the daemon drops its waiters then.
        let response = tokio::select! {
            biased;
            response = request => response,
            _ = self.lost() => Err(Error::SessionExpired),
        };
        // An answer, even an error, ends the wait: nothing is left to cancel.
        waiting.armed = false;
        match response? {
            Response::Granted { fence, .. } => Ok(Grant {
                fence,
                sent,
                queued: queued.load(Ordering::Relaxed),
            }),
            Response::Cancelled { .. } => Err(Error::Cancelled),
            other => Err(unexpected("Acquire", &other)),
        }
    }

    /// Cancels this handle's waiting acquire of `name`: it leaves the queue, and the waiting
    /// [`Session::lock`] (or [`Session::acquire`]) call fails with [`Error::Cancelled`]. Fails
    /// with [`Error::NotWaiting`] if no acquire of `name` waits; in particular if it was granted
    /// meanwhile, in which case the session holds the lock and must release it. (Dropping a
    /// waiting lock future cancels it too, in the background.)
    pub async fn cancel(&self, name: &str) -> Result<()> {
        let Some(acquire_seq) = locked(&self.inner.waiting).get(name).copied() else {
            return Err(Error::NotWaiting);
        };
        self.cancel_seq(name, acquire_seq).await
    }

    /// Sends `Cancel` for the acquire `acquire_seq` of `name`.
    async fn cancel_seq(&self, name: &str, acquire_seq: Seq) -> Result<()> {
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let response = self
            .call(
                |id| Request::Cancel {
                    id,
                    session,
                    token,
                    seq,
                    lock: name.to_string(),
                    acquire_seq,
                },
                Patience::Normal,
            )
            .await?;
        match response {
            Response::Cancelled { .. } => Ok(()),
            other => Err(unexpected("Cancel", &other)),
        }
    }

    /// Renews the hold limit of the grant `fence` of `name` to `hold`, counted by the cluster
    /// from when it applies the request; returns the instant the request was first sent, from
    /// which the renewed hold may be counted locally. Fails with [`Error::StaleFence`] if the
    /// session no longer holds that grant.
    pub async fn extend(&self, name: &str, fence: Fence, hold: Duration) -> Result<Instant> {
        let hold_ms = u64::try_from(hold.as_millis())
            .map_err(|_| Error::InvalidArgument("hold too large".into()))?;
        self.settle_orphans(None).await;
        let seq = self.next_seq();
        let SessionCredentials {
            id: session, token, ..
        } = self.inner.credentials;
        let lock = name.to_string();
        let this = self.clone();
        self.run_to_completion(None, async move {
            let sent = Instant::now();
            let response = this
                .call(
                    |id| Request::Extend {
                        id,
                        session,
                        token,
                        seq,
                        lock: lock.clone(),
                        fence,
                        hold_ms,
                    },
                    Patience::Normal,
                )
                .await?;
            match response {
                Response::Extended { .. } => Ok(sent),
                other => Err(unexpected("Extend", &other)),
            }
        })
        .await
    }

    /// Releases `name`, held by this session.
    ///
    /// If an earlier release of `name` was dropped by its caller after it was sent, it is
    /// finished in the background with its own seq, and this call waits for it: if it released
    /// the lock, this one answers `Ok` too (instead of `NotHolder`). Likewise a dropped call of
    /// this one still completes.
    pub async fn release(&self, name: &str) -> Result<()> {
        if self.settle_orphans(Some(name)).await {
            return Ok(());
        }
        let this = self.clone();
        let lock = name.to_string();
        self.run_to_completion(Some(name), async move { this.release_now(&lock).await })
            .await
    }

    /// Sends one `Release` of `name` with a fresh seq and waits for its answer.
    async fn release_now(&self, name: &str) -> Result<()> {
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
    /// lock's current exclusive grant to this session. A dropped call that was already sent
    /// still completes (with its own seq) before the session's next release or append.
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
        let (file, lock, fence) = (file.to_string(), under.lock.to_string(), under.fence);
        self.fenced_write(
            "Append",
            move |id, session, token, seq| Request::Append {
                id,
                session,
                token,
                seq,
                file: file.clone(),
                lock: lock.clone(),
                fence,
                data: data.clone(),
            },
            |response| match response {
                Response::Appended { offset, size, .. } => Ok((offset, size)),
                other => Err(other),
            },
        )
        .await
    }

    /// Cuts `file` to `size` bytes under the lock's fence; returns the file's size after, which
    /// is smaller than `size` if the file was already shorter (a truncate never grows a file).
    /// Fails with [`Error::StaleFence`] if the fence is no longer the lock's current exclusive
    /// grant to this session, and [`Error::NotFound`] if the file does not exist. Exactly once,
    /// like [`Session::append`].
    pub async fn truncate<'a>(
        &self,
        file: &str,
        under: impl Into<LockRef<'a>>,
        size: u64,
    ) -> Result<u64> {
        let under = under.into();
        let (file, lock, fence) = (file.to_string(), under.lock.to_string(), under.fence);
        self.fenced_write(
            "Truncate",
            move |id, session, token, seq| Request::Truncate {
                id,
                session,
                token,
                seq,
                file: file.clone(),
                lock: lock.clone(),
                fence,
                size,
            },
            |response| match response {
                Response::Truncated { size, .. } => Ok(size),
                other => Err(other),
            },
        )
        .await
    }

    /// Deletes `file` under the lock's fence; returns the size it had. A later append creates
    /// the file anew. Fails with [`Error::StaleFence`] if the fence is no longer the lock's
    /// current exclusive grant to this session, and [`Error::NotFound`] if the file does not
    /// exist. Exactly once, like [`Session::append`]: a retry of a delete that was applied
    /// answers its first result.
    pub async fn delete<'a>(&self, file: &str, under: impl Into<LockRef<'a>>) -> Result<u64> {
        let under = under.into();
        let (file, lock, fence) = (file.to_string(), under.lock.to_string(), under.fence);
        self.fenced_write(
            "Delete",
            move |id, session, token, seq| Request::Delete {
                id,
                session,
                token,
                seq,
                file: file.clone(),
                lock: lock.clone(),
                fence,
            },
            |response| match response {
                Response::Deleted { size, .. } => Ok(size),
                other => Err(other),
            },
        )
        .await
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
                keep_alive_patience(self.inner.credentials.ttl / 3),
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

/// How long one keep-alive attempt waits on one node: the renewal period (a third of the TTL),
/// but no less than 100 ms. A leader that is paused or cut off keeps its TCP connections open,
/// so only this bound makes the client try another node (and so find the new leader, which
/// restarts every lease when it takes office) while the lease can still be renewed.
fn keep_alive_patience(period: Duration) -> Patience {
    Patience::Short(period.max(Duration::from_millis(100)))
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
            keep_alive_patience(period),
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
            Ok(Err(Error::Revoked)) => {
                tracing::warn!(session, "session revoked by an administrator");
                lease.lose(LostReason::Revoked);
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
    /// True if the acquire was answered `Queued` before it was granted.
    queued: bool,
}

/// The lease of one grant: its hold limit, the combined lease callers watch, and the task
/// that keeps the latter up to date.
#[derive(Debug)]
struct GrantLease {
    hold: Arc<watch::Sender<Hold>>,
    lease: Arc<watch::Sender<Lease>>,
    watcher: JoinHandle<()>,
    /// Ends the lease when the daemon pushes `Revoked` for this grant.
    listener: JoinHandle<()>,
}

impl GrantLease {
    /// The lease of the grant `fence` of `name` in `session`.
    fn new(session: &Session, name: &str, fence: Fence, hold: Hold) -> GrantLease {
        let session_lease = session.lease();
        let mut pushes = session.pushes();
        let (initial, _) = grant_lease(*session_lease.borrow(), hold, Instant::now());
        let (hold, hold_rx) = watch::channel(hold);
        let hold = Arc::new(hold);
        let lease = Arc::new(watch::channel(initial).0);
        let watcher = tokio::spawn({
            let lease = lease.clone();
            async move { watch_grant(session_lease, hold_rx, &lease).await }
        });
        let listener = tokio::spawn({
            let (hold, lease, name) = (hold.clone(), lease.clone(), name.to_string());
            async move {
                loop {
                    match pushes.recv().await {
                        Ok(Response::Revoked {
                            lock,
                            fence: revoked,
                            reason,
                            ..
                        }) if lock == name && revoked == fence => {
                            end_grant(&hold, &lease, lost_reason(reason));
                            return;
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        let grant = GrantLease {
            hold,
            lease,
            watcher,
            listener,
        };
        // The push may have come before the listener subscribed.
        let already = locked(&session.inner.revoked)
            .iter()
            .find(|(lock, f, _)| lock == name && *f == fence)
            .map(|(_, _, reason)| *reason);
        if let Some(reason) = already {
            grant.end(reason);
        }
        grant
    }

    /// Sets a new hold limit and updates the lease at once (the watcher follows from there).
    fn set_hold(&self, hold: Hold, session: Lease) {
        self.hold.send_replace(hold);
        let (next, _) = grant_lease(session, hold, Instant::now());
        self.lease.send_if_modified(|lease| {
            let changed = !lease.state.is_lost() && *lease != next;
            if changed {
                *lease = next;
            }
            changed
        });
    }

    /// Ends the grant's lease for `reason` (the watcher makes it final).
    fn end(&self, reason: LostReason) {
        end_grant(&self.hold, &self.lease, reason);
    }
}

/// Ends a grant's lease for `reason`: its hold, so the watcher makes it final, and the lease
/// itself, since the watcher may be gone already (lost).
fn end_grant(hold: &watch::Sender<Hold>, lease: &watch::Sender<Lease>, reason: LostReason) {
    hold.send_replace(Hold::Ended(reason));
    lease.send_if_modified(|lease| {
        let changed = !lease.state.is_lost();
        if changed {
            lease.state = LeaseState::Lost(reason);
        }
        changed
    });
}

impl Drop for GrantLease {
    fn drop(&mut self) {
        self.watcher.abort();
        self.listener.abort();
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
        let grant = GrantLease::new(&session, name, fence, hold);
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

    /// Renews the hold limit to `hold` from now (an exactly-once `Extend`); on success the
    /// grant's [`LockGuard::lease`] counts the new hold from the request's send instant. A
    /// grant whose lease is already lost is not renewed (its loss is final): that fails with
    /// [`Error::SessionExpired`] for a lost session, [`Error::StaleFence`] otherwise. A
    /// `StaleFence` answer means the grant was revoked; its lease becomes `Lost(Revoked)`.
    pub async fn extend(&self, hold: Duration) -> Result<()> {
        match self.grant.lease.borrow().state {
            LeaseState::Lost(LostReason::LeaseExpired | LostReason::SessionExpired) => {
                return Err(Error::SessionExpired)
            }
            LeaseState::Lost(_) => return Err(Error::StaleFence),
            LeaseState::Healthy | LeaseState::Jeopardy => {}
        }
        match self.session.extend(&self.name, self.fence, hold).await {
            Ok(sent) => {
                let renewed = Hold::Limited {
                    start: sent,
                    limit: hold,
                };
                self.grant
                    .set_hold(renewed, self.session.inner.lease.current());
                Ok(())
            }
            Err(Error::StaleFence) => {
                self.grant.end(LostReason::Revoked);
                Err(Error::StaleFence)
            }
            Err(error) => Err(error),
        }
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
