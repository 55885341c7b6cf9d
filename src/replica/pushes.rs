//! Push events: what the leader tells a session's connections without being asked.
//!
//! A holder should hear at once that its grant ended (a hold limit, its session's expiry, an
//! administrator's revoke), and a waiter that it moved up the queue, instead of learning it
//! from a failed request later. The leader alone decides pushes, from what it applies and from
//! its deadline table; followers push nothing (their clients talk to the leader anyway, and a
//! push from two nodes would say one thing twice).
//!
//! Every push is an [`Effect::Push`] for one session; the shell writes it to the connections
//! that sent a request for that session. Pushes are hints: at most once per connection, lost
//! with a connection or a full queue, and never needed for safety, which rests on the client's
//! own lease ending before the leader's.
//!
//! Applying one entry is bracketed: [`Replica::scan_before`] notes, from the state before the
//! entry, the grants it might end and the queues it might reorder; [`Replica::push_after`]
//! compares them with the state after it and pushes what changed:
//!
//! - `Revoked{reason: hold}` for a grant `ExpireHold` ended; `Revoked{reason: expired}` and
//!   then `SessionExpired` for the grants of a session `ExpireSession` ended;
//!   `Revoked{reason: admin}` (and `SessionExpired` for the forced revoke) for the grants of a
//!   session an administrator revoked. After the safe revoke (`MarkRevoked`) the grants are
//!   still held, but only until the session's lease runs out, so the holder is told to stop
//!   now.
//! - `QueuePosition` for every waiter of a touched lock whose number of waiters ahead changed.
//!
//! The warnings come from the deadline table (`deadlines.rs`): `HoldExpiring` and
//! `SessionExpiring` fire [`warn_lead`] before a hold limit or lease ends.

use super::{Effect, Replica};
use crate::lockspace::{Command, Fence, Seq, SessionId};
use crate::protocol::{PushReason, Response};

/// The lead time of `HoldExpiring` and `SessionExpiring`: this long before the end, or half
/// the limit if that is shorter.
pub const WARN_LEAD_MS: u64 = 1_000;

/// How long before a deadline of a `limit_ms` bound its warning fires.
pub(super) fn warn_lead(limit_ms: u64) -> u64 {
    WARN_LEAD_MS.min(limit_ms / 2)
}

/// What an entry might change, noted before it is applied.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Grants the entry may end, with the reason a push would give.
    grants: Vec<(SessionId, String, Fence, PushReason)>,
    /// True if the grants are marked only (the safe revoke): pushed even though still held.
    marked: bool,
    /// A session the entry ends for a reason other than its own close.
    session_end: Option<(SessionId, PushReason)>,
    /// Queues the entry may reorder: each lock's waiters (session, seq) in FIFO order.
    queues: Vec<(String, Vec<(SessionId, Seq)>)>,
}

impl Replica {
    /// Leader only: notes what `command` may change, from the state before it is applied.
    pub(super) fn scan_before(&self, command: &Command) -> Scan {
        let mut scan = Scan::default();
        let session_grants = |session: SessionId, reason: PushReason| {
            self.lockspace
                .holds(session)
                .into_iter()
                .map(move |(lock, _, fence)| (session, lock, fence, reason))
        };
        let locks: Vec<String> = match command {
            Command::Release { lock, .. }
            | Command::Cancel { lock, .. }
            | Command::ExpireWait { lock, .. } => vec![lock.clone()],
            Command::ExpireHold {
                session,
                lock,
                fence,
                ..
            } => {
                scan.grants
                    .push((*session, lock.clone(), *fence, PushReason::Hold));
                vec![lock.clone()]
            }
            Command::CloseSession { session, .. } => self.lockspace.involved_locks(*session),
            Command::ExpireSession { session } => {
                scan.grants
                    .extend(session_grants(*session, PushReason::Expired));
                scan.session_end = Some((*session, PushReason::Expired));
                self.lockspace.involved_locks(*session)
            }
            Command::RevokeSession { session } => {
                scan.grants
                    .extend(session_grants(*session, PushReason::Admin));
                scan.session_end = Some((*session, PushReason::Admin));
                self.lockspace.involved_locks(*session)
            }
            Command::MarkRevoked { session } => {
                let already = !self.lockspace.session(*session).is_some_and(|s| !s.revoked);
                if !already {
                    scan.grants
                        .extend(session_grants(*session, PushReason::Admin));
                    scan.marked = true;
                }
                self.lockspace.involved_locks(*session)
            }
            Command::OpenSession { .. }
            | Command::Acquire { .. }
            | Command::Extend { .. }
            | Command::Append { .. }
            | Command::Truncate { .. }
            | Command::Delete { .. } => Vec::new(),
        };
        scan.queues = locks
            .into_iter()
            .map(|name| {
                let waiters = self
                    .lockspace
                    .lock(&name)
                    .map(|info| info.waiters.iter().map(|w| (w.session, w.seq)).collect())
                    .unwrap_or_default();
                (name, waiters)
            })
            .collect();
        scan
    }

    /// Leader only: pushes what the entry noted in `scan` changed.
    pub(super) fn push_after(&mut self, scan: Scan) {
        for (session, lock, fence, reason) in scan.grants {
            let still_held = self.lockspace.lock(&lock).is_some_and(|info| {
                info.holders
                    .iter()
                    .any(|&(s, f)| s == session && f == fence)
            });
            if still_held && !scan.marked {
                continue;
            }
            self.push(
                session,
                Response::Revoked {
                    id: 0,
                    session,
                    lock,
                    fence,
                    reason,
                },
            );
        }
        if let Some((session, reason)) = scan.session_end {
            if self.lockspace.session(session).is_none() {
                self.push(
                    session,
                    Response::SessionExpired {
                        id: 0,
                        session,
                        reason,
                    },
                );
            }
        }
        for (name, before) in scan.queues {
            let Some(info) = self.lockspace.lock(&name) else {
                continue;
            };
            for (ahead, waiter) in info.waiters.iter().enumerate() {
                let key = (waiter.session, waiter.seq);
                if before.iter().position(|w| *w == key) == Some(ahead) {
                    continue;
                }
                self.push(
                    waiter.session,
                    Response::QueuePosition {
                        id: 0,
                        session: waiter.session,
                        lock: name.clone(),
                        seq: waiter.seq,
                        ahead: ahead as u64,
                        mode: info.mode.map(Into::into),
                        holders: info.holders.len() as u64,
                    },
                );
            }
        }
    }

    /// Pushes `event` to the connections of `session`.
    pub(super) fn push(&mut self, session: SessionId, event: Response) {
        self.effects.push(Effect::Push { session, event });
    }
}
