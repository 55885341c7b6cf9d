//! A named lock: its current holders and its FIFO queue of waiters.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{Fence, LockMode, Seq, SessionId};

/// One grant of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) session: SessionId,
    pub(crate) fence: Fence,
    /// The grant's hold limit in ms, if any (the leader schedules `ExpireHold`).
    pub(crate) hold_ms: Option<u64>,
    /// The log index at which the hold limit last started: the grant's entry, or the last
    /// `Extend` applied to it. An `ExpireHold` must name it (see `Command::ExpireHold`).
    #[serde(default)]
    pub(crate) hold_since: u64,
}

/// One queued acquire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Waiter {
    pub(crate) session: SessionId,
    pub(crate) seq: Seq,
    pub(crate) mode: LockMode,
    /// The wait bound in ms; `None` waits until granted or the session ends.
    pub(crate) wait_ms: Option<u64>,
    /// The hold limit the grant will carry.
    pub(crate) hold_ms: Option<u64>,
}

/// A lock that is held or has waiters (free locks are removed from the state).
///
/// Invariants:
/// - `mode == Exclusive` implies at most one holder;
/// - `mode` is meaningless when `holders` is empty (kept as the last grant's mode);
/// - a session appears at most once, as a holder or as a waiter;
/// - if the queue is non-empty, its front is incompatible with the holders (granting ran).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lock {
    /// The mode of every current grant.
    pub(crate) mode: LockMode,
    /// Current grants, in grant order. A small Vec, not a map: usually one holder.
    pub(crate) holders: Vec<Holder>,
    /// Waiters in arrival (log) order.
    pub(crate) queue: VecDeque<Waiter>,
}

impl Lock {
    /// A free lock.
    pub(crate) fn new() -> Lock {
        Lock {
            mode: LockMode::Exclusive,
            holders: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    /// True when nobody holds or waits: the lock can be dropped.
    pub(crate) fn is_unused(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty()
    }

    /// The grant of `session`, if it holds the lock.
    pub(crate) fn holder(&self, session: SessionId) -> Option<&Holder> {
        self.holders.iter().find(|h| h.session == session)
    }

    /// The queue position of `session`'s waiter, if it waits.
    pub(crate) fn waiter_of(&self, session: SessionId) -> Option<usize> {
        self.queue.iter().position(|w| w.session == session)
    }

    /// The queue position of the acquire (session, seq), if it still waits.
    pub(crate) fn position(&self, session: SessionId, seq: Seq) -> Option<usize> {
        self.queue
            .iter()
            .position(|w| w.session == session && w.seq == seq)
    }

    /// True if a grant in `mode` may coexist with the current holders (the queue aside).
    pub(crate) fn is_compatible(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Exclusive => self.holders.is_empty(),
            LockMode::Shared => self.holders.is_empty() || self.mode == LockMode::Shared,
        }
    }

    /// True if a new acquire in `mode` may be granted at once: compatible and nobody queued
    /// (a queued writer blocks later readers, so writers do not starve).
    pub(crate) fn is_grantable(&self, mode: LockMode) -> bool {
        self.queue.is_empty() && self.is_compatible(mode)
    }

    /// Adds a grant.
    pub(crate) fn grant(&mut self, mode: LockMode, holder: Holder) {
        debug_assert!(self.is_compatible(mode), "incompatible grant of {mode:?}");
        self.mode = mode;
        self.holders.push(holder);
    }

    /// Removes `session`'s grant; returns it if there was one.
    pub(crate) fn remove_holder(&mut self, session: SessionId) -> Option<Holder> {
        let at = self.holders.iter().position(|h| h.session == session)?;
        Some(self.holders.remove(at))
    }

    /// The mode shown to queries: `None` when free.
    pub(crate) fn current_mode(&self) -> Option<LockMode> {
        (!self.holders.is_empty()).then_some(self.mode)
    }

    /// Checks the invariants after a restore.
    pub(crate) fn is_consistent(&self) -> bool {
        let exclusive_ok = self.mode == LockMode::Shared || self.holders.len() <= 1;
        let front_blocked = match self.queue.front() {
            Some(front) => !self.is_compatible(front.mode),
            None => true,
        };
        let mut sessions: Vec<SessionId> = self
            .holders
            .iter()
            .map(|h| h.session)
            .chain(self.queue.iter().map(|w| w.session))
            .collect();
        let count = sessions.len();
        sessions.sort_unstable();
        sessions.dedup();
        exclusive_ok && front_blocked && !self.is_unused() && sessions.len() == count
    }
}
