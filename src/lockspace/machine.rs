//! `LockSpace::apply`: one function per command, all deterministic.

use super::dedup::Lookup;
use super::digest::{self, Digest};
use super::file::File;
use super::lock::{Holder, Lock, Waiter};
use super::session::Session;
use super::{
    Applied, Command, Fence, LockMode, LockSpace, Notification, Outcome, Quota, Seq, SessionId,
};
use crate::raft::Index;

/// Notifications gathered while applying one entry, in the order they happened.
type Notes = Vec<Notification>;

impl LockSpace {
    /// Applies `command` at `index` (already checked to be increasing).
    pub(super) fn apply_command(&mut self, index: Index, command: &Command) -> Applied {
        let mut notes = Notes::new();
        // Commands without a seq never reach `session_request`; 0 is never looked at for them.
        let digest = digest::of(command).unwrap_or(0);
        let outcome = match command {
            Command::OpenSession {
                nonce,
                ttl_ms,
                token,
                owner,
                principal,
            } => self.open_session(
                index,
                *nonce,
                *ttl_ms,
                *token,
                owner.as_deref(),
                principal.as_deref(),
            ),
            Command::CloseSession { session, seq } => {
                self.session_request(*session, *seq, digest, |space| {
                    space.end_session(index, *session, &mut notes);
                    Outcome::SessionClosed
                })
            }
            Command::ExpireSession { session } => {
                if self.sessions.contains_key(session) {
                    self.end_session(index, *session, &mut notes);
                    Outcome::SessionClosed
                } else {
                    Outcome::Ignored
                }
            }
            Command::RevokeSession { session } => {
                if self.sessions.contains_key(session) {
                    self.end_session(index, *session, &mut notes);
                    Outcome::SessionClosed
                } else {
                    Outcome::SessionExpired
                }
            }
            Command::MarkRevoked { session } => self.mark_revoked(index, *session, &mut notes),
            Command::Acquire {
                session,
                seq,
                lock,
                mode,
                wait_ms,
                hold_ms,
            } => {
                let waiter = Waiter {
                    session: *session,
                    seq: *seq,
                    mode: *mode,
                    wait_ms: *wait_ms,
                    hold_ms: *hold_ms,
                };
                self.session_request(*session, *seq, digest, |space| {
                    space.unless_revoked(*session, |space| space.acquire(index, lock, waiter))
                })
            }
            Command::Release { session, seq, lock } => {
                self.session_request(*session, *seq, digest, |space| {
                    space.release(index, *session, lock, None, &mut notes)
                })
            }
            Command::Cancel {
                session,
                seq,
                lock,
                acquire_seq,
            } => self.session_request(*session, *seq, digest, |space| {
                space.cancel(index, *session, lock, *acquire_seq, &mut notes)
            }),
            Command::Extend {
                session,
                seq,
                lock,
                fence,
                hold_ms,
            } => self.session_request(*session, *seq, digest, |space| {
                space.unless_revoked(*session, |space| {
                    space.extend(index, *session, lock, *fence, *hold_ms)
                })
            }),
            Command::Append {
                session,
                seq,
                file,
                lock,
                fence,
                data,
                quota,
            } => self.session_request(*session, *seq, digest, |space| {
                space.unless_revoked(*session, |space| {
                    space.append(*session, file, lock, *fence, data, *quota)
                })
            }),
            Command::Truncate {
                session,
                seq,
                file,
                lock,
                fence,
                size,
            } => self.session_request(*session, *seq, digest, |space| {
                space.unless_revoked(*session, |space| {
                    space.truncate(*session, file, lock, *fence, *size)
                })
            }),
            Command::Delete {
                session,
                seq,
                file,
                lock,
                fence,
            } => self.session_request(*session, *seq, digest, |space| {
                space.unless_revoked(*session, |space| space.delete(*session, file, lock, *fence))
            }),
            Command::ExpireWait { session, seq, lock } => {
                self.expire_wait(index, *session, *seq, lock, &mut notes)
            }
            Command::ExpireHold {
                session,
                lock,
                fence,
                since,
            } => {
                let restarted = since.is_some_and(|since| {
                    self.locks
                        .get(lock)
                        .and_then(|l| l.holder(*session))
                        .is_some_and(|h| h.fence == *fence && h.hold_since != since)
                });
                if restarted {
                    // An Extend applied since the leader proposed this: its deadline rules.
                    Outcome::Ignored
                } else {
                    self.release(index, *session, lock, Some(*fence), &mut notes)
                }
            }
        };
        Applied {
            outcome,
            notifications: notes,
        }
    }

    /// The common envelope of a client's session request: the session must exist, a known seq
    /// replays its result without any effect (if `digest`, the request's, matches the one
    /// recorded; else it is `SequenceReused`), a forgotten one is refused, and a fresh one runs
    /// `run` and has its result recorded with `digest`.
    fn session_request(
        &mut self,
        session: SessionId,
        seq: Seq,
        digest: Digest,
        run: impl FnOnce(&mut LockSpace) -> Outcome,
    ) -> Outcome {
        let Some(state) = self.sessions.get(&session) else {
            return Outcome::SessionExpired;
        };
        match state.dedup.lookup(seq, digest) {
            Lookup::TooOld => Outcome::SequenceTooOld,
            Lookup::Reused => Outcome::SequenceReused,
            Lookup::Replay(Outcome::Queued { position }) => {
                // Still queued (a resolved acquire has its entry rewritten): report where it
                // stands now, so a reconnecting waiter is re-attached to its place.
                let current = state
                    .locks
                    .iter()
                    .find_map(|name| self.locks.get(name)?.position(session, seq))
                    .map_or(position, |at| at as u64);
                Outcome::Queued { position: current }
            }
            Lookup::Replay(outcome) => outcome,
            Lookup::Fresh => {
                let outcome = run(self);
                // The request may have ended the session (CloseSession): nothing to record then.
                if let Some(state) = self.sessions.get_mut(&session) {
                    state.dedup.record(seq, digest, outcome.clone());
                }
                outcome
            }
        }
    }

    /// Runs `run` unless `session` was revoked (then `Revoked`): what a revoked session may no
    /// longer do (acquire, extend, append). Releases, cancels and the close stay allowed, so a
    /// revoked holder frees its locks early.
    fn unless_revoked(
        &mut self,
        session: SessionId,
        run: impl FnOnce(&mut LockSpace) -> Outcome,
    ) -> Outcome {
        if self.sessions.get(&session).is_some_and(|s| s.revoked) {
            Outcome::Revoked
        } else {
            run(self)
        }
    }

    /// The safe revoke: marks the session revoked and ends its queued acquires with `Revoked`
    /// (granting the waiters they blocked); its grants stay until it closes or expires.
    fn mark_revoked(&mut self, index: Index, id: SessionId, notes: &mut Notes) -> Outcome {
        let Some(state) = self.sessions.get_mut(&id) else {
            return Outcome::SessionExpired;
        };
        state.revoked = true;
        let names = state.locks.clone();
        for name in names {
            let waiting = self
                .locks
                .get(&name)
                .and_then(|lock| Some(lock.queue[lock.waiter_of(id)?].seq));
            if let Some(seq) = waiting {
                self.end_wait(index, id, seq, &name, Outcome::Revoked, notes);
            }
        }
        Outcome::SessionClosed
    }

    fn open_session(
        &mut self,
        index: Index,
        nonce: u64,
        ttl_ms: u64,
        token: u64,
        owner: Option<&str>,
        principal: Option<&str>,
    ) -> Outcome {
        if let Some(&id) = self.nonces.get(&nonce) {
            let session = &self.sessions[&id];
            return Outcome::SessionOpened {
                session: id,
                token: session.token,
                ttl_ms: session.ttl_ms,
            };
        }
        // Indexes increase, so no session can already have this id.
        let mut session = Session::new(token, ttl_ms, nonce, owner.map(str::to_owned));
        session.principal = principal.map(str::to_owned);
        let previous = self.sessions.insert(index, session);
        assert!(previous.is_none(), "session {index} opened twice");
        self.nonces.insert(nonce, index);
        Outcome::SessionOpened {
            session: index,
            token,
            ttl_ms,
        }
    }

    /// Removes a session: releases its grants and drops its waiters (notifying them), lock by
    /// lock in name order, granting the waiters each removal unblocks.
    fn end_session(&mut self, index: Index, id: SessionId, notes: &mut Notes) {
        let session = self
            .sessions
            .remove(&id)
            .expect("caller checked the session exists");
        if self.nonces.get(&session.nonce) == Some(&id) {
            self.nonces.remove(&session.nonce);
        }
        for name in &session.locks {
            let lock = self.locks.get_mut(name).expect("a session's locks exist");
            lock.remove_holder(id);
            if let Some(at) = lock.waiter_of(id) {
                let waiter = lock.queue.remove(at).expect("position is in the queue");
                notes.push(Notification {
                    session: id,
                    seq: waiter.seq,
                    outcome: Outcome::SessionExpired,
                });
            }
            self.grant_waiters(index, name, notes);
        }
    }

    fn acquire(&mut self, index: Index, name: &str, waiter: Waiter) -> Outcome {
        let session = waiter.session;
        if let Some(lock) = self.locks.get(name) {
            if let Some(holder) = lock.holder(session) {
                return if lock.mode == waiter.mode {
                    Outcome::Granted {
                        fence: holder.fence,
                    }
                } else {
                    Outcome::Conflict
                };
            }
            if lock.waiter_of(session).is_some() {
                return Outcome::Conflict;
            }
        }
        let grantable = self
            .locks
            .get(name)
            .map_or(true, |lock| lock.is_grantable(waiter.mode));
        if !grantable && waiter.wait_ms == Some(0) {
            return Outcome::Busy;
        }
        let fence = grantable.then(|| next_fence(&mut self.last_fence, index));
        let lock = self.locks.entry(name.to_owned()).or_insert_with(Lock::new);
        let outcome = match fence {
            Some(fence) => {
                lock.grant(
                    waiter.mode,
                    Holder {
                        session,
                        fence,
                        hold_ms: waiter.hold_ms,
                        hold_since: index,
                    },
                );
                Outcome::Granted { fence }
            }
            None => {
                let position = lock.queue.len() as u64;
                lock.queue.push_back(waiter);
                Outcome::Queued { position }
            }
        };
        self.sessions
            .get_mut(&session)
            .expect("checked by session_request")
            .touch(name);
        outcome
    }

    /// Releases `session`'s grant of `name` (any grant for `Release`, only the one with
    /// `fence` for `ExpireHold`), then grants the waiters it unblocks.
    fn release(
        &mut self,
        index: Index,
        session: SessionId,
        name: &str,
        fence: Option<Fence>,
        notes: &mut Notes,
    ) -> Outcome {
        let not_held = if fence.is_some() {
            Outcome::Ignored
        } else {
            Outcome::NotHolder
        };
        let Some(lock) = self.locks.get_mut(name) else {
            return not_held;
        };
        match lock.holder(session) {
            Some(holder) if fence.map_or(true, |fence| fence == holder.fence) => {}
            _ => return not_held,
        }
        lock.remove_holder(session);
        self.sessions
            .get_mut(&session)
            .expect("holders have sessions")
            .untouch(name);
        self.grant_waiters(index, name, notes);
        Outcome::Released
    }

    /// True if `fence` is `session`'s current exclusive grant of `lock`: what every write to
    /// a file needs.
    fn is_current_writer(&self, session: SessionId, lock: &str, fence: Fence) -> bool {
        self.locks.get(lock).is_some_and(|lock| {
            lock.current_mode() == Some(LockMode::Exclusive)
                && lock.holder(session).is_some_and(|h| h.fence == fence)
        })
    }

    fn append(
        &mut self,
        session: SessionId,
        file: &str,
        lock: &str,
        fence: Fence,
        data: &[u8],
        quota: Option<Quota>,
    ) -> Outcome {
        if !self.is_current_writer(session, lock, fence) {
            return Outcome::StaleFence;
        }
        let grow = data.len() as u64;
        if let Some(quota) = quota.filter(|_| grow > 0) {
            let size = self.files.get(file).map_or(0, File::size) + grow;
            if size > quota.max_file_bytes {
                return Outcome::FileQuotaExceeded {
                    limit: quota.max_file_bytes,
                    size,
                };
            }
            let total = self.file_bytes + grow;
            if total > quota.max_total_bytes {
                return Outcome::TotalQuotaExceeded {
                    limit: quota.max_total_bytes,
                    size: total,
                };
            }
        }
        let (offset, size) = self
            .files
            .entry(file.to_owned())
            .or_default()
            .append(data, lock, fence);
        self.file_bytes += grow;
        Outcome::Appended { offset, size }
    }

    /// Cuts `file` to `size` bytes (nothing if it is not longer) under the current fence.
    fn truncate(
        &mut self,
        session: SessionId,
        file: &str,
        lock: &str,
        fence: Fence,
        size: u64,
    ) -> Outcome {
        if !self.is_current_writer(session, lock, fence) {
            return Outcome::StaleFence;
        }
        let Some(state) = self.files.get_mut(file) else {
            return Outcome::NotFound;
        };
        let before = state.size();
        let after = state.truncate(size, lock, fence);
        self.file_bytes -= before - after;
        Outcome::Truncated { size: after }
    }

    /// Removes `file` under the current fence.
    fn delete(&mut self, session: SessionId, file: &str, lock: &str, fence: Fence) -> Outcome {
        if !self.is_current_writer(session, lock, fence) {
            return Outcome::StaleFence;
        }
        match self.files.remove(file) {
            Some(state) => {
                self.file_bytes -= state.size();
                Outcome::Deleted { size: state.size() }
            }
            None => Outcome::NotFound,
        }
    }

    /// Takes the acquire (session, acquire_seq) out of the queue of `name`, as `ExpireWait`
    /// does, with `Cancelled` instead of `TimedOut`.
    fn cancel(
        &mut self,
        index: Index,
        session: SessionId,
        name: &str,
        acquire_seq: Seq,
        notes: &mut Notes,
    ) -> Outcome {
        match self.end_wait(index, session, acquire_seq, name, Outcome::Cancelled, notes) {
            Outcome::Ignored => Outcome::NotWaiting,
            outcome => outcome,
        }
    }

    /// Renews the hold limit of the grant `fence` of `name` to `session`, restarting it at
    /// `index`.
    fn extend(
        &mut self,
        index: Index,
        session: SessionId,
        name: &str,
        fence: Fence,
        hold_ms: u64,
    ) -> Outcome {
        let holder = self
            .locks
            .get_mut(name)
            .and_then(|lock| lock.holders.iter_mut().find(|h| h.session == session));
        match holder {
            Some(holder) if holder.fence == fence => {
                holder.hold_ms = Some(hold_ms);
                holder.hold_since = index;
                Outcome::Extended { hold_ms }
            }
            _ => Outcome::StaleFence,
        }
    }

    fn expire_wait(
        &mut self,
        index: Index,
        session: SessionId,
        seq: Seq,
        name: &str,
        notes: &mut Notes,
    ) -> Outcome {
        self.end_wait(index, session, seq, name, Outcome::TimedOut, notes)
    }

    /// Ends the wait of the acquire (session, seq) on `name` with `outcome` (recorded as its
    /// result and notified), then grants the waiters it blocked; `Ignored` if it does not wait.
    fn end_wait(
        &mut self,
        index: Index,
        session: SessionId,
        seq: Seq,
        name: &str,
        outcome: Outcome,
        notes: &mut Notes,
    ) -> Outcome {
        let Some(lock) = self.locks.get_mut(name) else {
            return Outcome::Ignored;
        };
        let Some(at) = lock.position(session, seq) else {
            return Outcome::Ignored;
        };
        lock.queue.remove(at);
        let state = self
            .sessions
            .get_mut(&session)
            .expect("waiters have sessions");
        state.untouch(name);
        state.dedup.update(seq, outcome.clone());
        notes.push(Notification {
            session,
            seq,
            outcome: outcome.clone(),
        });
        // The removed waiter may have blocked the ones behind it.
        self.grant_waiters(index, name, notes);
        outcome
    }

    /// Grants the front waiters of `name` while they fit beside the holders (a shared front
    /// brings every consecutive shared waiter with it), then drops the lock if it is unused.
    fn grant_waiters(&mut self, index: Index, name: &str, notes: &mut Notes) {
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        while let Some(front) = lock.queue.front() {
            if !lock.is_compatible(front.mode) {
                break;
            }
            let waiter = lock.queue.pop_front().expect("front exists");
            let fence = next_fence(&mut self.last_fence, index);
            lock.grant(
                waiter.mode,
                Holder {
                    session: waiter.session,
                    fence,
                    hold_ms: waiter.hold_ms,
                    hold_since: index,
                },
            );
            let outcome = Outcome::Granted { fence };
            self.sessions
                .get_mut(&waiter.session)
                .expect("waiters have sessions")
                .dedup
                .update(waiter.seq, outcome.clone());
            notes.push(Notification {
                session: waiter.session,
                seq: waiter.seq,
                outcome,
            });
        }
        if lock.is_unused() {
            self.locks.remove(name);
        }
    }
}

/// The next fencing token: at least the granting entry's index, and above every earlier token.
fn next_fence(last_fence: &mut Fence, index: Index) -> Fence {
    let fence = index.max(*last_fence + 1);
    *last_fence = fence;
    fence
}
