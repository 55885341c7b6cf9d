//! Property tests: random command histories, with replays and expiries, checked after every
//! apply against a small model of what clients have observed.
//!
//! Properties (each one checked by its own assertion, named in its message):
//! - exclusion: never two exclusive holders, never exclusive and shared holders together;
//! - FIFO: each lock grants its waiters in queue order, and new arrivals never jump the queue;
//! - no writer starvation: while a writer waits, no later reader is granted before it;
//! - fences: strictly increasing over all grants, and at least the granting index;
//! - cancel and extend: `Cancel` removes exactly a still-queued acquire (which then ends
//!   `Cancelled` and may unblock the waiters behind it), `Extend` renews exactly the current
//!   grant named by its fence;
//! - files: appends, truncates and deletes need the current exclusive fence, sizes follow the
//!   model, a truncate never grows a file, a deleted file starts anew, and an append past a
//!   quota carried in its entry writes nothing;
//! - revoke: `MarkRevoked` ends exactly the session's queued acquires (`Revoked`) and keeps
//!   its grants (the holder comparison after every step), and the session's later acquires,
//!   extends and appends answer `Revoked`;
//! - exactly once: a replayed (session, seq) answers its original (or updated) outcome, or the
//!   current position of a still-queued acquire, and leaves the state bytes unchanged;
//! - snapshots: snapshot → restore → snapshot is byte-identical, and the restored copy answers
//!   the next command exactly as the original does.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// One step of a random history, resolved against the model when it runs.
#[derive(Clone, Debug)]
enum Op {
    Open {
        slot: usize,
        retry: bool,
    },
    Acquire {
        slot: usize,
        lock: usize,
        shared: bool,
        wait: u8,
        hold: bool,
    },
    Release {
        slot: usize,
        lock: usize,
    },
    Append {
        slot: usize,
        lock: usize,
        stale: bool,
        quota: bool,
    },
    Truncate {
        slot: usize,
        lock: usize,
        stale: bool,
        size: u64,
    },
    Delete {
        slot: usize,
        lock: usize,
        stale: bool,
    },
    Close {
        slot: usize,
    },
    ExpireSession {
        slot: usize,
    },
    Revoke {
        slot: usize,
    },
    MarkRevoked {
        slot: usize,
    },
    ExpireWait {
        pick: usize,
        stale: bool,
    },
    ExpireHold {
        pick: usize,
        stale: bool,
    },
    Cancel {
        pick: usize,
        stale: bool,
    },
    Extend {
        pick: usize,
        stale: bool,
    },
    Replay {
        pick: usize,
    },
    Skip {
        gap: u64,
    },
}

fn op(sessions: usize, locks: usize) -> impl Strategy<Value = Op> {
    let slot = 0..sessions;
    prop_oneof![
        3 => (slot.clone(), any::<bool>()).prop_map(|(slot, retry)| Op::Open { slot, retry }),
        8 => (slot.clone(), 0..locks, any::<bool>(), 0u8..3, any::<bool>())
            .prop_map(|(slot, lock, shared, wait, hold)| Op::Acquire { slot, lock, shared, wait, hold }),
        5 => (slot.clone(), 0..locks).prop_map(|(slot, lock)| Op::Release { slot, lock }),
        3 => (slot.clone(), 0..locks, prop::bool::weighted(0.3), prop::bool::weighted(0.5))
            .prop_map(|(slot, lock, stale, quota)| Op::Append { slot, lock, stale, quota }),
        1 => (slot.clone(), 0..locks, prop::bool::weighted(0.3), 0u64..10)
            .prop_map(|(slot, lock, stale, size)| Op::Truncate { slot, lock, stale, size }),
        1 => (slot.clone(), 0..locks, prop::bool::weighted(0.3))
            .prop_map(|(slot, lock, stale)| Op::Delete { slot, lock, stale }),
        1 => slot.clone().prop_map(|slot| Op::Close { slot }),
        1 => slot.clone().prop_map(|slot| Op::ExpireSession { slot }),
        1 => slot.clone().prop_map(|slot| Op::Revoke { slot }),
        1 => slot.prop_map(|slot| Op::MarkRevoked { slot }),
        2 => (any::<usize>(), prop::bool::weighted(0.25)).prop_map(|(pick, stale)| Op::ExpireWait { pick, stale }),
        2 => (any::<usize>(), prop::bool::weighted(0.25)).prop_map(|(pick, stale)| Op::ExpireHold { pick, stale }),
        2 => (any::<usize>(), prop::bool::weighted(0.25)).prop_map(|(pick, stale)| Op::Cancel { pick, stale }),
        2 => (any::<usize>(), prop::bool::weighted(0.25)).prop_map(|(pick, stale)| Op::Extend { pick, stale }),
        4 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        1 => (1u64..4).prop_map(|gap| Op::Skip { gap }),
    ]
}

/// What the clients have seen so far.
#[derive(Default)]
struct Model {
    index: Index,
    seq: Seq,
    nonce: u64,
    /// The session each slot uses (possibly closed) and the nonce that opened it.
    slots: BTreeMap<usize, (SessionId, u64)>,
    live: BTreeSet<SessionId>,
    /// Live sessions marked revoked (`MarkRevoked`).
    revoked: BTreeSet<SessionId>,
    /// Fresh session requests, for replays.
    history: Vec<(Command, SessionId, Seq)>,
    /// The latest known outcome of each (session, seq).
    results: BTreeMap<(SessionId, Seq), Outcome>,
    /// Queued acquires per lock, in the order they were answered `Queued`.
    queues: BTreeMap<String, Vec<(SessionId, Seq, LockMode)>>,
    /// Which lock a queued (session, seq) waits on.
    waiting: BTreeMap<(SessionId, Seq), String>,
    /// Current grants per lock: (session, fence, mode).
    holds: BTreeMap<String, Vec<(SessionId, Fence, LockMode)>>,
    /// Every fence handed out so far (for stale picks) and the largest.
    fences: Vec<Fence>,
    max_fence: Fence,
    /// Model file sizes.
    files: BTreeMap<String, u64>,
    /// The slot of the open being applied, and the session a retry must find.
    opening: Option<(usize, Option<SessionId>)>,
}

fn lock_name(lock: usize) -> String {
    format!("lock-{lock}")
}

impl Model {
    fn session(&self, slot: usize) -> SessionId {
        // A slot never opened targets a session id that never exists.
        self.slots
            .get(&slot)
            .map_or(1_000_000 + slot as u64, |s| s.0)
    }

    fn held(&self, lock: &str, session: SessionId) -> Option<(Fence, LockMode)> {
        self.holds
            .get(lock)?
            .iter()
            .find(|h| h.0 == session)
            .map(|h| (h.1, h.2))
    }

    /// The locks `session` holds, by name.
    fn held_locks(&self, session: SessionId) -> Vec<String> {
        let holds = self
            .holds
            .iter()
            .filter(|(_, hs)| hs.iter().any(|h| h.0 == session));
        holds.map(|(name, _)| name.clone()).collect()
    }

    fn position(&self, session: SessionId, seq: Seq) -> Option<u64> {
        let lock = self.waiting.get(&(session, seq))?;
        self.queues[lock]
            .iter()
            .position(|w| (w.0, w.1) == (session, seq))
            .map(|p| p as u64)
    }

    /// Records a new grant after checking exclusion, FIFO/starvation and fence order.
    fn new_grant(&mut self, lock: &str, session: SessionId, fence: Fence, mode: LockMode) {
        assert!(
            fence > self.max_fence,
            "fences: {fence} not above {}",
            self.max_fence
        );
        assert!(
            fence >= self.index,
            "fences: {fence} below granting index {}",
            self.index
        );
        self.max_fence = fence;
        self.fences.push(fence);
        let holders = self.holds.entry(lock.to_owned()).or_default();
        let exclusive_present = holders.iter().any(|h| h.2 == LockMode::Exclusive);
        assert!(
            holders.is_empty() || (mode == LockMode::Shared && !exclusive_present),
            "exclusion: {mode:?} grant to {session} beside {holders:?} on {lock}"
        );
        holders.push((session, fence, mode));
    }

    fn remove_hold(&mut self, lock: &str, session: SessionId) {
        let holders = self.holds.get_mut(lock).expect("model holds the lock");
        holders.retain(|h| h.0 != session);
    }

    fn notification(&mut self, note: &Notification) {
        let key = (note.session, note.seq);
        let lock = self
            .waiting
            .remove(&key)
            .expect("notifications only for queued acquires");
        let queue = self.queues.get_mut(&lock).expect("queue exists");
        let at = queue
            .iter()
            .position(|w| (w.0, w.1) == key)
            .expect("waiter in model queue");
        let (_, _, mode) = queue[at];
        match note.outcome {
            Outcome::Granted { fence } => {
                assert_eq!(at, 0, "FIFO: {key:?} granted from position {at} on {lock}");
                queue.remove(0);
                self.new_grant(&lock, note.session, fence, mode);
            }
            Outcome::TimedOut | Outcome::SessionExpired | Outcome::Cancelled | Outcome::Revoked => {
                queue.remove(at);
            }
            ref other => panic!("unexpected notification outcome {other:?}"),
        }
        self.results.insert(key, note.outcome.clone());
    }
}

/// The state bytes without the applied index (which every entry advances).
fn state_bytes(space: &mut LockSpace, applied_index: Index) -> Vec<u8> {
    let saved = space.applied_index;
    space.applied_index = applied_index;
    let bytes = space.snapshot();
    space.applied_index = saved;
    bytes
}

/// Runs a history after opening one session per slot (so most requests reach live sessions).
fn run(sessions: usize, ops: &[Op]) {
    let mut space = LockSpace::new();
    let mut model = Model::default();
    let opens = (0..sessions).map(|slot| Op::Open { slot, retry: false });
    for op in opens.chain(ops.iter().cloned()) {
        let op = &op;
        if let Op::Skip { gap } = op {
            model.index += gap;
            space.skip(model.index);
            continue;
        }
        model.index += 1;
        let index = model.index;
        let (command, replay) = build(&mut model, op);
        let before = state_bytes(&mut space, index);
        let snapshot = space.snapshot();
        let mut twin = LockSpace::restore(&snapshot).expect("own snapshot restores");
        assert_eq!(
            twin.snapshot(),
            snapshot,
            "snapshots: restore changed the bytes"
        );
        assert!(twin == space, "snapshots: restore lost part of the state");

        let applied = space.apply(index, &command);
        assert_eq!(
            twin.apply(index, &command),
            applied,
            "snapshots: restored copy answered differently"
        );
        assert_eq!(
            twin.snapshot(),
            space.snapshot(),
            "snapshots: restored copy diverged"
        );

        if let Some(expected) = replay {
            assert_eq!(
                applied.outcome, expected,
                "exactly once: replay of {command:?}"
            );
            assert!(
                applied.notifications.is_empty(),
                "exactly once: a replay notified"
            );
            assert_eq!(
                state_bytes(&mut space, index),
                before,
                "exactly once: a replay changed state"
            );
        } else {
            observe(&mut model, &command, &applied);
        }
        compare(&model, &space);
    }
}

/// A fresh (session, seq) of `slot` and the (lock, fence) a file write names: mostly a lock
/// the session holds with its current fence (or one below it when `stale`), else any lock
/// with the last fence handed out.
fn file_writer(
    model: &mut Model,
    slot: usize,
    lock: usize,
    stale: bool,
) -> (SessionId, Seq, String, Fence) {
    model.seq += 1;
    let (session, seq) = (model.session(slot), model.seq);
    let held = model.held_locks(session);
    let lock = if held.is_empty() {
        lock_name(lock)
    } else {
        held[lock % held.len()].clone()
    };
    let current = model.held(&lock, session).map(|h| h.0);
    let fence = match (current, stale) {
        (Some(fence), false) => fence,
        (Some(fence), true) => fence - 1,
        (None, _) => model.fences.last().copied().unwrap_or(1),
    };
    (session, seq, lock, fence)
}

/// Turns an op into a command; for a replay, also the outcome it must answer.
fn build(model: &mut Model, op: &Op) -> (Command, Option<Outcome>) {
    let fresh = |model: &mut Model, slot: usize| {
        model.seq += 1;
        (model.session(slot), model.seq)
    };
    let command = match *op {
        Op::Open { slot, retry } => {
            // A live slot retries its open (same nonce, same session); a dead one opens anew,
            // with `retry` reusing the dead session's nonce (freed with it).
            let (nonce, existing) = match model.slots.get(&slot) {
                Some(&(session, nonce)) if model.live.contains(&session) => (nonce, Some(session)),
                Some(&(_, nonce)) if retry => (nonce, None),
                _ => {
                    model.nonce += 1;
                    (model.nonce, None)
                }
            };
            model.opening = Some((slot, existing));
            Command::OpenSession {
                nonce,
                ttl_ms: 1_000,
                token: nonce * 7,
                owner: None,
                principal: None,
            }
        }
        Op::Acquire {
            slot,
            lock,
            shared,
            wait,
            hold,
        } => {
            let (session, seq) = fresh(model, slot);
            let mode = if shared {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            };
            let wait_ms = [Some(0), Some(100), None][wait as usize];
            let hold_ms = hold.then_some(500);
            Command::Acquire {
                session,
                seq,
                lock: lock_name(lock),
                mode,
                wait_ms,
                hold_ms,
            }
        }
        Op::Release { slot, lock } => {
            let (session, seq) = fresh(model, slot);
            // Mostly release something held (by the lock hint); sometimes anything.
            let held = model.held_locks(session);
            let lock = match held.len() {
                0 => lock_name(lock),
                n if lock % 4 != 3 => held[lock % n].clone(),
                _ => lock_name(lock),
            };
            Command::Release { session, seq, lock }
        }
        Op::Append {
            slot,
            lock,
            stale,
            quota,
        } => {
            let (session, seq, lock, fence) = file_writer(model, slot, lock, stale);
            Command::Append {
                session,
                seq,
                file: format!("file-{lock}"),
                lock,
                fence,
                data: vec![seq as u8; 3],
                // Small enough to be reached: a file holds at most 4 appends, all 10.
                quota: quota.then_some(Quota {
                    max_file_bytes: 12,
                    max_total_bytes: 30,
                }),
            }
        }
        Op::Truncate {
            slot,
            lock,
            stale,
            size,
        } => {
            let (session, seq, lock, fence) = file_writer(model, slot, lock, stale);
            Command::Truncate {
                session,
                seq,
                file: format!("file-{lock}"),
                lock,
                fence,
                size,
            }
        }
        Op::Delete { slot, lock, stale } => {
            let (session, seq, lock, fence) = file_writer(model, slot, lock, stale);
            Command::Delete {
                session,
                seq,
                file: format!("file-{lock}"),
                lock,
                fence,
            }
        }
        Op::Close { slot } => {
            let (session, seq) = fresh(model, slot);
            Command::CloseSession { session, seq }
        }
        Op::ExpireSession { slot } => Command::ExpireSession {
            session: model.session(slot),
        },
        Op::Revoke { slot } => Command::RevokeSession {
            session: model.session(slot),
        },
        Op::MarkRevoked { slot } => Command::MarkRevoked {
            session: model.session(slot),
        },
        Op::ExpireWait { pick, stale } => {
            let queued: Vec<_> = model.waiting.iter().collect();
            if queued.is_empty() || stale {
                let (session, seq) = model
                    .results
                    .keys()
                    .nth(pick % model.results.len().max(1))
                    .copied()
                    .unwrap_or((1, 1));
                Command::ExpireWait {
                    session,
                    seq,
                    lock: lock_name(pick % 3),
                }
            } else {
                let (&(session, seq), lock) = queued[pick % queued.len()];
                Command::ExpireWait {
                    session,
                    seq,
                    lock: lock.clone(),
                }
            }
        }
        Op::ExpireHold { pick, stale } => {
            let holds: Vec<_> = model
                .holds
                .iter()
                .flat_map(|(lock, hs)| hs.iter().map(move |h| (lock.clone(), h.0, h.1)))
                .collect();
            if holds.is_empty() || stale {
                let fence = model
                    .fences
                    .get(pick % model.fences.len().max(1))
                    .copied()
                    .unwrap_or(1);
                let session = model.session(pick % 4);
                Command::ExpireHold {
                    session,
                    lock: lock_name(pick % 3),
                    fence,
                    since: None,
                }
            } else {
                let (lock, session, fence) = holds[pick % holds.len()].clone();
                Command::ExpireHold {
                    session,
                    lock,
                    fence,
                    since: None,
                }
            }
        }
        Op::Cancel { pick, stale } => {
            let queued: Vec<_> = model.waiting.iter().collect();
            let (session, acquire_seq, lock) = if queued.is_empty() || stale {
                let (session, seq) = model
                    .results
                    .keys()
                    .nth(pick % model.results.len().max(1))
                    .copied()
                    .unwrap_or((1, 1));
                (session, seq, lock_name(pick % 3))
            } else {
                let (&(session, seq), lock) = queued[pick % queued.len()];
                (session, seq, lock.clone())
            };
            model.seq += 1;
            Command::Cancel {
                session,
                seq: model.seq,
                lock,
                acquire_seq,
            }
        }
        Op::Extend { pick, stale } => {
            let holds: Vec<_> = model
                .holds
                .iter()
                .flat_map(|(lock, hs)| hs.iter().map(move |h| (lock.clone(), h.0, h.1)))
                .collect();
            let (lock, session, fence) = if holds.is_empty() || stale {
                let fence = model
                    .fences
                    .get(pick % model.fences.len().max(1))
                    .copied()
                    .unwrap_or(1);
                (lock_name(pick % 3), model.session(pick % 4), fence)
            } else {
                holds[pick % holds.len()].clone()
            };
            model.seq += 1;
            Command::Extend {
                session,
                seq: model.seq,
                lock,
                fence,
                hold_ms: 250 + (pick % 500) as u64,
            }
        }
        Op::Replay { pick } if !model.history.is_empty() => {
            let (command, session, seq) = model.history[pick % model.history.len()].clone();
            let expected = if !model.live.contains(&session) {
                Outcome::SessionExpired
            } else {
                match model.results[&(session, seq)] {
                    Outcome::Queued { .. } => Outcome::Queued {
                        position: model
                            .position(session, seq)
                            .expect("a queued result is queued"),
                    },
                    ref other => other.clone(),
                }
            };
            return (command, Some(expected));
        }
        Op::Replay { .. } => Command::ExpireSession { session: 0 },
        Op::Skip { .. } => unreachable!("skips are handled by the runner"),
    };
    (command, None)
}

/// Checks a fresh command's outcome against the model and folds it in.
fn observe(model: &mut Model, command: &Command, applied: &Applied) {
    let outcome = &applied.outcome;
    let session_request = |session: SessionId, seq: Seq, model: &mut Model| -> bool {
        if !model.live.contains(&session) {
            assert_eq!(
                *outcome,
                Outcome::SessionExpired,
                "request for a dead session"
            );
            return false;
        }
        model.history.push((command.clone(), session, seq));
        model.results.insert((session, seq), outcome.clone());
        true
    };
    match command {
        Command::OpenSession { nonce, .. } => {
            let Outcome::SessionOpened { session, .. } = *outcome else {
                panic!("open: {outcome:?}")
            };
            let (slot, existing) = model.opening.take().expect("build noted the open");
            match existing {
                Some(existing) => {
                    assert_eq!(session, existing, "nonce retry opened another session")
                }
                None => {
                    assert_eq!(session, model.index, "session id is the entry index");
                    model.live.insert(session);
                    model.slots.insert(slot, (session, *nonce));
                }
            }
        }
        Command::Acquire {
            session,
            seq,
            lock,
            mode,
            wait_ms,
            ..
        } => {
            if session_request(*session, *seq, model) {
                if model.revoked.contains(session) {
                    assert_eq!(
                        *outcome,
                        Outcome::Revoked,
                        "revoke: acquire of a revoked session"
                    );
                    return;
                }
                let held = model.held(lock, *session);
                let waits = model
                    .queues
                    .get(lock)
                    .is_some_and(|q| q.iter().any(|w| w.0 == *session));
                match *outcome {
                    Outcome::Granted { fence } if held == Some((fence, *mode)) => {}
                    Outcome::Granted { fence } => {
                        assert!(held.is_none() && !waits, "granted while holding or waiting");
                        let queue = model.queues.get(lock).cloned().unwrap_or_default();
                        if *mode == LockMode::Shared {
                            assert!(
                                queue.iter().all(|w| w.2 != LockMode::Exclusive),
                                "no writer starvation: reader {session} granted past queued writers {queue:?}"
                            );
                        }
                        assert!(
                            queue.is_empty(),
                            "FIFO: new arrival {session} jumped the queue {queue:?}"
                        );
                        model.new_grant(lock, *session, fence, *mode);
                    }
                    Outcome::Queued { position } => {
                        assert_ne!(*wait_ms, Some(0), "a try-once acquire queued");
                        let queue = model.queues.entry(lock.clone()).or_default();
                        assert_eq!(position, queue.len() as u64, "FIFO: queued at the back");
                        queue.push((*session, *seq, *mode));
                        model.waiting.insert((*session, *seq), lock.clone());
                    }
                    Outcome::Busy => assert_eq!(*wait_ms, Some(0), "busy without try-once"),
                    Outcome::Conflict => assert!(
                        waits || held.is_some_and(|h| h.1 != *mode),
                        "conflict without holding or waiting"
                    ),
                    ref other => panic!("acquire answered {other:?}"),
                }
            }
        }
        Command::Release { session, seq, lock } => {
            if session_request(*session, *seq, model) {
                let held = model.held(lock, *session).is_some();
                match outcome {
                    Outcome::Released if held => model.remove_hold(lock, *session),
                    Outcome::NotHolder if !held => {}
                    other => panic!("release answered {other:?} (held: {held})"),
                }
            }
        }
        Command::Append {
            session,
            seq,
            file,
            lock,
            fence,
            data,
            quota,
        } => {
            if session_request(*session, *seq, model) {
                if model.revoked.contains(session) {
                    assert_eq!(
                        *outcome,
                        Outcome::Revoked,
                        "revoke: append of a revoked session"
                    );
                    return;
                }
                let current = model.held(lock, *session) == Some((*fence, LockMode::Exclusive));
                let size = model.files.get(file).copied().unwrap_or(0);
                let new_size = size + data.len() as u64;
                let new_total = model.files.values().sum::<u64>() + data.len() as u64;
                if !current {
                    assert_eq!(
                        *outcome,
                        Outcome::StaleFence,
                        "files: append with a stale fence"
                    );
                } else if let Some(q) = quota.filter(|q| new_size > q.max_file_bytes) {
                    assert_eq!(
                        *outcome,
                        Outcome::FileQuotaExceeded {
                            limit: q.max_file_bytes,
                            size: new_size
                        },
                        "files: per-file quota"
                    );
                } else if let Some(q) = quota.filter(|q| new_total > q.max_total_bytes) {
                    assert_eq!(
                        *outcome,
                        Outcome::TotalQuotaExceeded {
                            limit: q.max_total_bytes,
                            size: new_total
                        },
                        "files: total quota"
                    );
                } else {
                    assert_eq!(
                        *outcome,
                        Outcome::Appended {
                            offset: size,
                            size: new_size
                        },
                        "files: append"
                    );
                    model.files.insert(file.clone(), new_size);
                }
            }
        }
        Command::Truncate {
            session,
            seq,
            file,
            lock,
            fence,
            size,
        } => {
            if session_request(*session, *seq, model) {
                if model.revoked.contains(session) {
                    assert_eq!(*outcome, Outcome::Revoked, "revoke: truncate");
                    return;
                }
                let current = model.held(lock, *session) == Some((*fence, LockMode::Exclusive));
                match model.files.get(file).copied() {
                    _ if !current => {
                        assert_eq!(*outcome, Outcome::StaleFence, "files: stale truncate")
                    }
                    None => assert_eq!(*outcome, Outcome::NotFound, "files: truncate of none"),
                    Some(before) => {
                        let after = before.min(*size);
                        assert_eq!(
                            *outcome,
                            Outcome::Truncated { size: after },
                            "files: truncate"
                        );
                        model.files.insert(file.clone(), after);
                    }
                }
            }
        }
        Command::Delete {
            session,
            seq,
            file,
            lock,
            fence,
        } => {
            if session_request(*session, *seq, model) {
                if model.revoked.contains(session) {
                    assert_eq!(*outcome, Outcome::Revoked, "revoke: delete");
                    return;
                }
                let current = model.held(lock, *session) == Some((*fence, LockMode::Exclusive));
                match model.files.get(file).copied() {
                    _ if !current => {
                        assert_eq!(*outcome, Outcome::StaleFence, "files: stale delete")
                    }
                    None => assert_eq!(*outcome, Outcome::NotFound, "files: delete of none"),
                    Some(size) => {
                        assert_eq!(*outcome, Outcome::Deleted { size }, "files: delete");
                        model.files.remove(file);
                    }
                }
            }
        }
        Command::CloseSession { session, seq } => {
            if session_request(*session, *seq, model) {
                assert_eq!(*outcome, Outcome::SessionClosed);
                end_session(model, *session);
            }
        }
        Command::ExpireSession { session } => {
            if model.live.contains(session) {
                assert_eq!(*outcome, Outcome::SessionClosed);
                end_session(model, *session);
            } else {
                assert_eq!(*outcome, Outcome::Ignored);
            }
        }
        Command::RevokeSession { session } => {
            if model.live.contains(session) {
                assert_eq!(*outcome, Outcome::SessionClosed, "revoke");
                end_session(model, *session);
            } else {
                assert_eq!(
                    *outcome,
                    Outcome::SessionExpired,
                    "revoke of a dead session"
                );
            }
        }
        Command::MarkRevoked { session } => {
            if model.live.contains(session) {
                assert_eq!(*outcome, Outcome::SessionClosed, "revoke: mark");
                model.revoked.insert(*session);
                let waits = model.waiting.keys().filter(|k| k.0 == *session).count();
                let (own, others): (Vec<_>, Vec<_>) = applied
                    .notifications
                    .iter()
                    .partition(|n| n.session == *session);
                assert_eq!(
                    own.len(),
                    waits,
                    "revoke: every queued acquire of the session ends"
                );
                assert!(
                    own.iter().all(|n| n.outcome == Outcome::Revoked),
                    "revoke: queued acquires end Revoked: {own:?}"
                );
                // Leaving the queue can unblock the waiters behind (a shared one behind the
                // revoked exclusive waiter joins the shared holders): those are grants.
                assert!(
                    others
                        .iter()
                        .all(|n| matches!(n.outcome, Outcome::Granted { .. })),
                    "revoke: the only other effect is unblocked waiters granted: {others:?}"
                );
            } else {
                assert_eq!(
                    *outcome,
                    Outcome::SessionExpired,
                    "revoke: mark of a dead session"
                );
            }
        }
        Command::ExpireWait { session, seq, lock } => {
            let queued = model.waiting.get(&(*session, *seq)) == Some(lock);
            let expected = if queued {
                Outcome::TimedOut
            } else {
                Outcome::Ignored
            };
            assert_eq!(*outcome, expected, "expire wait");
        }
        Command::Cancel {
            session,
            seq,
            lock,
            acquire_seq,
        } => {
            let queued = model.waiting.get(&(*session, *acquire_seq)) == Some(lock);
            if session_request(*session, *seq, model) {
                let expected = if queued {
                    Outcome::Cancelled
                } else {
                    Outcome::NotWaiting
                };
                assert_eq!(*outcome, expected, "cancel and extend: cancel");
                if queued {
                    assert_eq!(
                        applied.notifications.first(),
                        Some(&Notification {
                            session: *session,
                            seq: *acquire_seq,
                            outcome: Outcome::Cancelled,
                        }),
                        "cancel and extend: the cancelled acquire is told first"
                    );
                }
            }
        }
        Command::Extend {
            session,
            seq,
            lock,
            fence,
            hold_ms,
        } => {
            let exact = model.held(lock, *session).is_some_and(|h| h.0 == *fence);
            if session_request(*session, *seq, model) {
                let expected = if model.revoked.contains(session) {
                    Outcome::Revoked
                } else if exact {
                    Outcome::Extended { hold_ms: *hold_ms }
                } else {
                    Outcome::StaleFence
                };
                assert_eq!(*outcome, expected, "cancel and extend: extend");
            }
        }
        Command::ExpireHold {
            session,
            lock,
            fence,
            since: _,
        } => {
            let exact = model.held(lock, *session).is_some_and(|h| h.0 == *fence);
            if exact {
                assert_eq!(*outcome, Outcome::Released, "expire hold");
                model.remove_hold(lock, *session);
            } else {
                assert_eq!(*outcome, Outcome::Ignored, "stale expire hold");
            }
        }
    }
    for note in &applied.notifications {
        model.notification(note);
    }
}

fn end_session(model: &mut Model, session: SessionId) {
    model.live.remove(&session);
    model.revoked.remove(&session);
    for holders in model.holds.values_mut() {
        holders.retain(|h| h.0 != session);
    }
    // Its waiters leave through the SessionExpired notifications.
}

/// The model's view must match the state: holders, queues, sessions.
fn compare(model: &Model, space: &LockSpace) {
    for lock in space.locks(None) {
        let mut actual: Vec<_> = lock.holders.clone();
        actual.sort_unstable();
        let mut expected: Vec<_> = model
            .holds
            .get(&lock.name)
            .map(|hs| hs.iter().map(|h| (h.0, h.1)).collect())
            .unwrap_or_default();
        expected.sort_unstable();
        assert_eq!(actual, expected, "holders of {}", lock.name);
        let modes: BTreeSet<_> = model.holds[&lock.name].iter().map(|h| h.2).collect();
        let exclusive = modes.contains(&LockMode::Exclusive);
        assert!(
            !exclusive || lock.holders.len() == 1,
            "exclusion: {} has an exclusive and other holders {:?}",
            lock.name,
            lock.holders
        );
        let waiters: Vec<_> = lock
            .waiters
            .iter()
            .map(|w| (w.session, w.seq, w.mode))
            .collect();
        assert_eq!(
            waiters,
            model.queues.get(&lock.name).cloned().unwrap_or_default(),
            "FIFO: queue of {}",
            lock.name
        );
    }
    let known: BTreeSet<&String> = space.locks.keys().collect();
    for (name, holders) in &model.holds {
        assert!(
            holders.is_empty() || known.contains(name),
            "held lock {name} missing"
        );
    }
    for (name, queue) in &model.queues {
        assert!(
            queue.is_empty() || known.contains(name),
            "queued lock {name} missing"
        );
    }
    let ids: BTreeSet<SessionId> = space.sessions().iter().map(|s| s.id).collect();
    assert_eq!(ids, model.live, "live sessions");
    let files: BTreeMap<String, u64> = space
        .file_list(None)
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    assert_eq!(files, model.files, "files: sizes");
    assert_eq!(
        space.stats().file_bytes,
        model.files.values().sum::<u64>(),
        "files: total"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Three sessions contending for two locks.
    #[test]
    fn three_sessions_two_locks(ops in prop::collection::vec(op(3, 2), 1..60)) {
        run(3, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Four sessions over three locks, longer histories.
    #[test]
    fn four_sessions_three_locks(ops in prop::collection::vec(op(4, 3), 1..120)) {
        run(4, &ops);
    }
}
