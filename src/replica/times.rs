//! When, by the leader's clock, each grant was made and each waiter queued: the "held for" and
//! "waited" of `raftlock locks`.
//!
//! Like the deadline table, this is leader-local and never replicated: the times are
//! annotations for people, not state. A new leader cannot know them for grants and waits made
//! before it led, so it reports those as unknown (nil) rather than guess; followers know none.
//! Entries are added as the leader applies grants and queued acquires, and swept (amortized)
//! once the table holds twice as many entries as the lock space has holders and waiters.

use std::collections::BTreeMap;

use crate::lockspace::{Applied, Command, Fence, LockSpace, Outcome, Seq, SessionId};

/// Grant and queue times on the leader's clock, in ms.
#[derive(Debug, Default)]
pub(super) struct Times {
    granted: BTreeMap<Fence, u64>,
    queued: BTreeMap<(SessionId, Seq), u64>,
    /// Entries after the last sweep; the next runs past twice that (and at least 64).
    swept_at: usize,
}

impl Times {
    /// When the grant `fence` was made, if this leader saw it.
    pub(super) fn granted(&self, fence: Fence) -> Option<u64> {
        self.granted.get(&fence).copied()
    }

    /// When the acquire (session, seq) was queued, if this leader saw it.
    pub(super) fn queued(&self, session: SessionId, seq: Seq) -> Option<u64> {
        self.queued.get(&(session, seq)).copied()
    }

    /// Forgets everything (this node stopped leading).
    pub(super) fn clear(&mut self) {
        *self = Times::default();
    }

    /// Leader only: records what applying `command` at `now` granted or queued.
    pub(super) fn track(
        &mut self,
        now: u64,
        command: &Command,
        applied: &Applied,
        space: &LockSpace,
    ) {
        match (command, &applied.outcome) {
            (Command::Acquire { .. }, Outcome::Granted { fence }) => {
                self.granted.entry(*fence).or_insert(now);
            }
            (Command::Acquire { session, seq, .. }, Outcome::Queued { .. }) => {
                self.queued.entry((*session, *seq)).or_insert(now);
            }
            _ => {}
        }
        for note in &applied.notifications {
            self.queued.remove(&(note.session, note.seq));
            if let Outcome::Granted { fence } = note.outcome {
                self.granted.insert(fence, now);
            }
        }
        let len = self.granted.len() + self.queued.len();
        if len > self.swept_at.max(64) * 2 {
            self.sweep(space);
        }
    }

    /// Keeps only the grants still held and the acquires still queued.
    fn sweep(&mut self, space: &LockSpace) {
        let mut fences = std::collections::BTreeSet::new();
        let mut waits = std::collections::BTreeSet::new();
        for lock in space.locks(None) {
            fences.extend(lock.holders.iter().map(|&(_, fence)| fence));
            waits.extend(lock.waiters.iter().map(|w| (w.session, w.seq)));
        }
        self.granted.retain(|fence, _| fences.contains(fence));
        self.queued.retain(|key, _| waits.contains(key));
        self.swept_at = self.granted.len() + self.queued.len();
    }
}
