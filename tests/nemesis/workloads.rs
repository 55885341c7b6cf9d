//! The client workloads, each a loop that records every operation in the [`History`] until
//! told to stop (then it finishes the operation in hand, which the checker requires to end):
//!
//! - [`fenced_append`]: acquire `fa`, append a record naming the op and its fence to `fa.log`,
//!   release (the library client, through the proxies).
//! - [`exactly_once`]: the same on `eo`/`eo.log` with raw frames, each append re-sent with the
//!   same seq after timeouts, after deliberately dropping the connection right after sending, and
//!   to another node; every answer is kept so the checker can compare them.
//! - [`queue_worker`] + [`queue_observer`]: several waiters on `q` (exclusive, shared, and one
//!   with a hold limit) and a linearizable listing of its queue, for the FIFO check; shared
//!   holders also try to append (which must fail).
//! - [`paused_holder`]: a holder of `ph` stops its keep-alives past its TTL while a second client
//!   takes the lock, then writes with its old fence: raftlock must refuse it, and the
//!   **negative control** (the harness's own unfenced resource) must record the overlap.
//! - [`reader`]: linearizable reads of every file's tail.

use std::time::Duration;

use raftlock::client::LockMode;
use raftlock::client::{Client, ClientOptions, Error, Session, Wait};
use raftlock::protocol::{ErrorCode, Request, Response};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::history::{Done, History, OpKind, Outcome};
use crate::raw::Raw;

/// Session TTL of the workers (the pauses are longer).
pub const TTL: Duration = Duration::from_secs(2);
/// Session TTL of the paused holder.
pub const PAUSED_TTL: Duration = Duration::from_millis(1500);

/// The pause between two rounds of the append workloads.
const PACE: Duration = Duration::from_millis(15);

/// What every worker needs.
#[derive(Clone)]
pub struct Ctx {
    pub hist: History,
    /// The proxies' addresses.
    pub addrs: Vec<String>,
    /// Becomes true when the workers must stop.
    pub stop: watch::Receiver<bool>,
}

impl Ctx {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// The library options of the workers: short timeouts so faults show as failures quickly.
fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(6),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        clock_seq: false,
        tls: None,
        auth_token: None,
    }
}

/// A connected library client, or `None` once stopped.
async fn client(ctx: &Ctx) -> Option<Client> {
    while !ctx.stopped() {
        if let Ok(client) = Client::connect(ctx.addrs.clone(), options()).await {
            return Some(client);
        }
    }
    None
}

/// A new session, or `None` once stopped.
async fn session(ctx: &Ctx, client: &Client, ttl: Duration) -> Option<Session> {
    while !ctx.stopped() {
        match client.open_session(ttl).await {
            Ok(session) => return Some(session),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// How a library error counts: definite refusals are failures, the rest indeterminate. A
/// `SessionExpired` is indeterminate: a retry after the session ended cannot tell whether an
/// earlier attempt was applied (protocol.md §10).
pub fn outcome_of(error: &Error) -> Outcome {
    match error {
        Error::Busy
        | Error::WaitTimeout
        | Error::StaleFence
        | Error::NotHolder
        | Error::Conflict
        | Error::Cancelled
        | Error::NotWaiting
        | Error::NotFound
        | Error::InvalidArgument(_) => Outcome::Fail(format!("{error}")),
        _ => Outcome::Info(format!("{error}")),
    }
}

/// `fenced-append`: acquire, append a record naming the client and fence, release.
pub async fn fenced_append(ctx: Ctx, index: usize) {
    let name = format!("fa-{index}");
    let Some(client) = client(&ctx).await else {
        return;
    };
    'sessions: while !ctx.stopped() {
        let Some(session) = session(&ctx, &client, TTL).await else {
            return;
        };
        while !ctx.stopped() {
            let lock = "fa";
            let op = ctx.hist.begin(
                &name,
                session.id(),
                OpKind::Acquire {
                    lock: lock.into(),
                    mode: LockMode::Exclusive,
                },
                None,
            );
            let guard = match session
                .lock(lock, LockMode::Exclusive, Wait::For(Duration::from_secs(2)))
                .await
            {
                Ok(guard) => {
                    let fence = guard.fence();
                    ctx.hist.end(
                        op,
                        Outcome::Ok,
                        Done {
                            fence: Some(fence),
                            ..Done::default()
                        },
                    );
                    guard
                }
                Err(error) => {
                    ctx.hist.end(op, outcome_of(&error), Done::default());
                    if session.is_lost() || matches!(outcome_of(&error), Outcome::Info(_)) {
                        continue 'sessions;
                    }
                    continue;
                }
            };
            let (op, data) =
                ctx.hist
                    .begin_append(&name, session.id(), "fa.log", lock, guard.fence(), None);
            let appended = session.append("fa.log", &guard, data).await;
            end_append(&ctx.hist, op, appended);
            let fence = guard.fence();
            let op = ctx.hist.begin(
                &name,
                session.id(),
                OpKind::Release { lock: lock.into() },
                Some(fence),
            );
            match guard.release().await {
                Ok(()) => ctx.hist.end(op, Outcome::Ok, Done::default()),
                Err(error) => {
                    ctx.hist.end(op, outcome_of(&error), Done::default());
                    // The session may still hold the lock: start over with a new one.
                    continue 'sessions;
                }
            }
            // Pacing, so that long runs keep a history of a manageable size.
            tokio::time::sleep(PACE).await;
        }
    }
}

/// Records the end of a library append.
fn end_append(hist: &History, op: u64, result: raftlock::client::Result<(u64, u64)>) {
    match result {
        Ok((offset, size)) => hist.end(
            op,
            Outcome::Ok,
            Done {
                offset: Some(offset),
                size: Some(size),
                ..Done::default()
            },
        ),
        Err(error) => hist.end(op, outcome_of(&error), Done::default()),
    }
}

/// The outcome of a raw answer.
fn raw_outcome(result: &Result<Response, crate::raw::RawError>) -> Outcome {
    match result {
        Ok(Response::Error { code, message, .. }) => match code {
            ErrorCode::StaleFence
            | ErrorCode::NotHolder
            | ErrorCode::Busy
            | ErrorCode::WaitTimeout
            | ErrorCode::Conflict
            | ErrorCode::BadRequest => Outcome::Fail(format!("{code:?}: {message}")),
            _ => Outcome::Info(format!("{code:?}: {message}")),
        },
        Ok(_) => Outcome::Ok,
        Err(error) => Outcome::Info(format!("{error:?}")),
    }
}

/// `exactly-once`: raw acquire/append/release of `eo`, each append re-sent with the same seq
/// (after a deliberate drop, a timeout, or to another node).
pub async fn exactly_once(ctx: Ctx, index: usize, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let name = format!("eo-{index}");
    let mut raw = Raw::new(ctx.addrs.clone());
    let patience = Duration::from_secs(1);
    'sessions: while !ctx.stopped() {
        let nonce: u64 = rng.gen_range(1..u64::MAX);
        let deadline = Instant::now() + Duration::from_secs(5);
        let (opened, _) = raw
            .call(
                None,
                |id| Request::OpenSession {
                    id,
                    nonce,
                    ttl_ms: 5_000,
                    owner: Some(name.clone()),
                },
                patience,
                deadline,
            )
            .await;
        let Ok(Response::SessionOpened { session, token, .. }) = opened else {
            continue;
        };
        let mut seq = 0u64;
        let mut renewed = Instant::now();
        while !ctx.stopped() {
            if renewed.elapsed() > Duration::from_millis(1_000) {
                let (kept, _) = raw
                    .call(
                        None,
                        |id| Request::KeepAlive { id, session, token },
                        patience,
                        Instant::now() + Duration::from_secs(2),
                    )
                    .await;
                match kept {
                    Ok(Response::KeptAlive { .. }) => renewed = Instant::now(),
                    _ => continue 'sessions,
                }
            }
            seq += 1;
            let acquire_seq = seq;
            let op = ctx.hist.begin(
                &name,
                session,
                OpKind::Acquire {
                    lock: "eo".into(),
                    mode: LockMode::Exclusive,
                },
                None,
            );
            let (granted, _) = raw
                .call(
                    None,
                    |id| Request::Acquire {
                        id,
                        session,
                        token,
                        seq: acquire_seq,
                        lock: "eo".into(),
                        mode: LockMode::Exclusive,
                        wait_ms: Some(1_500),
                        hold_ms: None,
                    },
                    Duration::from_secs(3),
                    Instant::now() + Duration::from_secs(5),
                )
                .await;
            let fence = match &granted {
                Ok(Response::Granted { fence, .. }) => {
                    ctx.hist.end(
                        op,
                        Outcome::Ok,
                        Done {
                            fence: Some(*fence),
                            ..Done::default()
                        },
                    );
                    *fence
                }
                other => {
                    let outcome = raw_outcome(other);
                    let info = matches!(outcome, Outcome::Info(_));
                    ctx.hist.end(op, outcome, Done::default());
                    if info {
                        continue 'sessions;
                    }
                    continue;
                }
            };
            seq += 1;
            let append_seq = seq;
            let (op, data) = ctx
                .hist
                .begin_append(&name, session, "eo.log", "eo", fence, None);
            let make = |id| Request::Append {
                id,
                session,
                token,
                seq: append_seq,
                file: "eo.log".into(),
                lock: "eo".into(),
                fence,
                data: data.clone(),
            };
            // The deliberate resends: drop the first attempt's connection right after sending,
            // or send it to one node and the retry to another.
            let first = raw.addrs[rng.gen_range(0..raw.addrs.len())].clone();
            let mut answers = Vec::new();
            let mut all = Vec::new();
            match rng.gen_range(0..3) {
                0 => {
                    let id = raw.id();
                    raw.send_and_drop(&first, make(id)).await;
                }
                1 => {
                    let id = raw.id();
                    if let Ok(answer) = raw.send(&first, make(id), patience).await {
                        all.push(answer);
                    }
                }
                _ => {}
            }
            let (result, seen) = raw
                .call(
                    None,
                    make,
                    patience,
                    Instant::now() + Duration::from_secs(6),
                )
                .await;
            all.extend(seen);
            // One more resend of the same seq after the answer: must repeat it.
            if result.is_ok() && rng.gen_bool(0.5) {
                let (again, seen) = raw
                    .call(
                        None,
                        make,
                        patience,
                        Instant::now() + Duration::from_secs(3),
                    )
                    .await;
                let _ = again;
                all.extend(seen);
            }
            let mut size = None;
            for answer in &all {
                if let Response::Appended {
                    offset, size: s, ..
                } = answer
                {
                    answers.push(*offset);
                    size = Some(*s);
                }
            }
            let outcome = raw_outcome(&result);
            let offset = match &result {
                Ok(Response::Appended { offset, .. }) => Some(*offset),
                _ => None,
            };
            let stop_session = !matches!(outcome, Outcome::Ok);
            ctx.hist.end(
                op,
                outcome,
                Done {
                    offset,
                    size,
                    answers,
                    ..Done::default()
                },
            );
            if stop_session {
                continue 'sessions;
            }
            seq += 1;
            let release_seq = seq;
            let op = ctx.hist.begin(
                &name,
                session,
                OpKind::Release { lock: "eo".into() },
                Some(fence),
            );
            let (released, _) = raw
                .call(
                    None,
                    |id| Request::Release {
                        id,
                        session,
                        token,
                        seq: release_seq,
                        lock: "eo".into(),
                    },
                    patience,
                    Instant::now() + Duration::from_secs(5),
                )
                .await;
            let outcome = raw_outcome(&released);
            let ok = outcome == Outcome::Ok;
            ctx.hist.end(op, outcome, Done::default());
            if !ok {
                continue 'sessions;
            }
            tokio::time::sleep(PACE).await;
        }
    }
}

/// `queue`: a waiter on `q` in `mode` with an optional hold limit; exclusive holders append
/// to `q.log`, shared ones try to (and must be refused).
pub async fn queue_worker(ctx: Ctx, index: usize, mode: LockMode, hold: Option<Duration>) {
    let name = format!("q-{index}");
    let Some(client) = client(&ctx).await else {
        return;
    };
    let mut round = 0u64;
    'sessions: while !ctx.stopped() {
        let Some(session) = session(&ctx, &client, TTL).await else {
            return;
        };
        while !ctx.stopped() {
            round += 1;
            let op = ctx.hist.begin(
                &name,
                session.id(),
                OpKind::Acquire {
                    lock: "q".into(),
                    mode,
                },
                None,
            );
            let guard = match session
                .lock_with_hold("q", mode, Wait::For(Duration::from_secs(4)), hold)
                .await
            {
                Ok(guard) => {
                    ctx.hist.end(
                        op,
                        Outcome::Ok,
                        Done {
                            fence: Some(guard.fence()),
                            ..Done::default()
                        },
                    );
                    guard
                }
                Err(error) => {
                    ctx.hist.end(op, outcome_of(&error), Done::default());
                    if session.is_lost() || matches!(outcome_of(&error), Outcome::Info(_)) {
                        continue 'sessions;
                    }
                    continue;
                }
            };
            let fence = guard.fence();
            if mode == LockMode::Exclusive || round % 3 == 0 {
                let must_fail = (mode == LockMode::Shared).then_some("shared grant");
                let (op, data) =
                    ctx.hist
                        .begin_append(&name, session.id(), "q.log", "q", fence, must_fail);
                let appended = session.append("q.log", ("q", fence), data).await;
                end_append(&ctx.hist, op, appended);
            }
            // The critical section: the other waiters queue up meanwhile.
            tokio::time::sleep(Duration::from_millis(100 + 37 * index as u64)).await;
            let op = ctx.hist.begin(
                &name,
                session.id(),
                OpKind::Release { lock: "q".into() },
                Some(fence),
            );
            match guard.release().await {
                Ok(()) => ctx.hist.end(op, Outcome::Ok, Done::default()),
                Err(error) => {
                    let outcome = outcome_of(&error);
                    // A hold limit may have ended the grant already: NotHolder is expected.
                    let definite = matches!(outcome, Outcome::Fail(_));
                    ctx.hist.end(op, outcome, Done::default());
                    if !definite {
                        continue 'sessions;
                    }
                }
            }
        }
    }
}

/// Lists `q`'s waiters (a linearizable `Locks`) every 100 ms, for the FIFO check.
pub async fn queue_observer(ctx: Ctx) {
    let Some(client) = client(&ctx).await else {
        return;
    };
    while !ctx.stopped() {
        let op = ctx.hist.begin(
            "q-observer",
            0,
            OpKind::Queue {
                lock: "q".into(),
                waiters: Vec::new(),
            },
            None,
        );
        match client.locks(Some("q"), false).await {
            Ok(locks) => {
                let waiters: Vec<u64> = locks
                    .iter()
                    .filter(|l| l.name == "q")
                    .flat_map(|l| l.waiters.iter().map(|w| w.session))
                    .collect();
                ctx.hist.end_queue(op, waiters);
            }
            Err(error) => ctx.hist.end(op, outcome_of(&error), Done::default()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Linearizable reads of the tail of every file.
pub async fn reader(ctx: Ctx) {
    let Some(client) = client(&ctx).await else {
        return;
    };
    let files = ["fa.log", "eo.log", "q.log", "ph.log"];
    let mut sizes = [0u64; 4];
    let mut turn = 0;
    while !ctx.stopped() {
        turn = (turn + 1) % files.len();
        let file = files[turn];
        let offset = sizes[turn].saturating_sub(2048);
        let op = ctx.hist.begin(
            "reader",
            0,
            OpKind::Read {
                file: file.into(),
                offset,
            },
            None,
        );
        match client.read(file, offset, 64 * 1024, false).await {
            Ok((data, size)) => {
                sizes[turn] = size;
                ctx.hist.end(
                    op,
                    Outcome::Ok,
                    Done {
                        size: Some(size),
                        data,
                        ..Done::default()
                    },
                );
            }
            Err(error) => ctx.hist.end(op, outcome_of(&error), Done::default()),
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

/// Records a write to the negative control's resource.
fn unfenced_write(hist: &History, client: &str, session: u64, fence: u64) {
    let op = hist.begin(
        client,
        session,
        OpKind::Unfenced { lock: "ph".into() },
        Some(fence),
    );
    hist.end(op, Outcome::Ok, Done::default());
}

/// `paused-holder` and the negative control. Each round: P takes `ph`, writes the harness's
/// unfenced resource and appends to `ph.log`; then P stops its keep-alives (drops its session
/// handle) while W, a healthy client, waits for `ph`. Once W holds it (P's lease has expired on
/// the cluster) W keeps writing the resource; P "wakes up", still believing it holds the lock,
/// writes the resource (the negative control's overlap) and appends to `ph.log` with its old
/// fence over raw frames (which raftlock must refuse).
pub async fn paused_holder(ctx: Ctx) {
    let Some(client) = client(&ctx).await else {
        return;
    };
    while !ctx.stopped() {
        let Some(p) = session(&ctx, &client, PAUSED_TTL).await else {
            return;
        };
        let op = ctx.hist.begin(
            "ph-P",
            p.id(),
            OpKind::Acquire {
                lock: "ph".into(),
                mode: LockMode::Exclusive,
            },
            None,
        );
        let guard = match p
            .lock("ph", LockMode::Exclusive, Wait::For(Duration::from_secs(3)))
            .await
        {
            Ok(guard) => guard,
            Err(error) => {
                ctx.hist.end(op, outcome_of(&error), Done::default());
                continue;
            }
        };
        let fence = guard.fence();
        ctx.hist.end(
            op,
            Outcome::Ok,
            Done {
                fence: Some(fence),
                ..Done::default()
            },
        );
        unfenced_write(&ctx.hist, "ph-P", p.id(), fence);
        let (op, data) = ctx
            .hist
            .begin_append("ph-P", p.id(), "ph.log", "ph", fence, None);
        let appended = p.append("ph.log", &guard, data).await;
        end_append(&ctx.hist, op, appended);
        // The pause: no more keep-alives from P.
        let credentials = p.credentials();
        guard.detach();
        drop(p);
        let paused_at = Instant::now();
        let (granted_tx, granted_rx) = oneshot::channel();
        let (woke_tx, woke_rx) = oneshot::channel::<()>();
        let w = tokio::spawn(waiter(ctx.clone(), client.clone(), granted_tx, woke_rx));
        // P sleeps past its TTL, and on until W holds the lock (bounded).
        let w_granted = matches!(
            tokio::time::timeout(Duration::from_secs(12), granted_rx).await,
            Ok(Ok(()))
        );
        tokio::time::sleep_until(paused_at + PAUSED_TTL + Duration::from_millis(200)).await;
        unfenced_write(&ctx.hist, "ph-P", credentials.id, fence);
        // Only W's grant proves that the cluster ended P's session: a new leader restarts every
        // lease when it takes office, so after a failover during the pause P's session may
        // rightly outlive its TTL on P's clock. Without that proof the append is an ordinary
        // fenced one (acknowledged means applied, in fence order), not one that must fail.
        let must_fail = w_granted.then_some("expired session / stale fence");
        let (op, data) =
            ctx.hist
                .begin_append("ph-P", credentials.id, "ph.log", "ph", fence, must_fail);
        let mut raw = Raw::new(ctx.addrs.clone());
        let seq = u64::MAX / 2 + op;
        let (result, _) = raw
            .call(
                None,
                |id| Request::Append {
                    id,
                    session: credentials.id,
                    token: credentials.token,
                    seq,
                    file: "ph.log".into(),
                    lock: "ph".into(),
                    fence,
                    data: data.clone(),
                },
                Duration::from_secs(1),
                Instant::now() + Duration::from_secs(6),
            )
            .await;
        let outcome = match &result {
            // A fresh seq of a session the cluster ended: SessionExpired is definite here.
            Ok(Response::Error {
                code: ErrorCode::SessionExpired,
                message,
                ..
            }) => Outcome::Fail(format!("SessionExpired: {message}")),
            other => raw_outcome(other),
        };
        let offset = match &result {
            Ok(Response::Appended { offset, .. }) => Some(*offset),
            _ => None,
        };
        ctx.hist.end(
            op,
            outcome,
            Done {
                offset,
                ..Done::default()
            },
        );
        let _ = woke_tx.send(());
        let _ = w.await;
    }
}

/// W of [`paused_holder`]: takes `ph`, says so, writes the resource until P has woken, appends,
/// releases, closes its session.
async fn waiter(
    ctx: Ctx,
    client: Client,
    granted: oneshot::Sender<()>,
    mut woke: oneshot::Receiver<()>,
) {
    let Some(w) = session(&ctx, &client, TTL).await else {
        return;
    };
    let op = ctx.hist.begin(
        "ph-W",
        w.id(),
        OpKind::Acquire {
            lock: "ph".into(),
            mode: LockMode::Exclusive,
        },
        None,
    );
    let guard = match w
        .lock(
            "ph",
            LockMode::Exclusive,
            Wait::For(Duration::from_secs(10)),
        )
        .await
    {
        Ok(guard) => guard,
        Err(error) => {
            ctx.hist.end(op, outcome_of(&error), Done::default());
            let _ = w.close().await;
            return;
        }
    };
    let fence = guard.fence();
    ctx.hist.end(
        op,
        Outcome::Ok,
        Done {
            fence: Some(fence),
            ..Done::default()
        },
    );
    unfenced_write(&ctx.hist, "ph-W", w.id(), fence);
    let _ = granted.send(());
    // Keep writing while P sleeps, and once more after it woke.
    loop {
        tokio::select! {
            _ = &mut woke => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                unfenced_write(&ctx.hist, "ph-W", w.id(), fence);
            }
        }
    }
    unfenced_write(&ctx.hist, "ph-W", w.id(), fence);
    let (op, data) = ctx
        .hist
        .begin_append("ph-W", w.id(), "ph.log", "ph", fence, None);
    let appended = w.append("ph.log", &guard, data).await;
    end_append(&ctx.hist, op, appended);
    let op = ctx.hist.begin(
        "ph-W",
        w.id(),
        OpKind::Release { lock: "ph".into() },
        Some(fence),
    );
    match guard.release().await {
        Ok(()) => ctx.hist.end(op, Outcome::Ok, Done::default()),
        Err(error) => ctx.hist.end(op, outcome_of(&error), Done::default()),
    }
    let _ = w.close().await;
}
