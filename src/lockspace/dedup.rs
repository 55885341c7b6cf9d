//! The per-session results table that makes session requests exactly-once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Outcome, Seq};

/// How many results each session remembers. Older sequence numbers get `SequenceTooOld`.
pub const DEDUP_WINDOW: usize = 256;

/// What the table says about a sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Never seen: apply the request and record its result.
    Fresh,
    /// Already applied: answer with this result and change nothing.
    Replay(Outcome),
    /// At or below the highest evicted sequence number: the result is forgotten.
    TooOld,
}

/// The results of a session's most recent requests, by sequence number.
///
/// Invariants:
/// - at most `DEDUP_WINDOW` results;
/// - every remembered seq is greater than `evicted` (the lowest seq is evicted first).
///
/// Starts empty and allocates nothing until the first request (100,000 idle sessions must stay
/// cheap).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dedup {
    /// Remembered results, by seq (sorted for deterministic snapshots).
    results: BTreeMap<Seq, Outcome>,
    /// The highest seq whose result was dropped to keep the window.
    evicted: Option<Seq>,
}

impl Dedup {
    /// Classifies `seq`.
    pub(crate) fn lookup(&self, seq: Seq) -> Lookup {
        if let Some(outcome) = self.results.get(&seq) {
            return Lookup::Replay(outcome.clone());
        }
        match self.evicted {
            Some(evicted) if seq <= evicted => Lookup::TooOld,
            _ => Lookup::Fresh,
        }
    }

    /// Records the result of a fresh request, evicting the lowest seq beyond the window.
    pub(crate) fn record(&mut self, seq: Seq, outcome: Outcome) {
        self.results.insert(seq, outcome);
        while self.results.len() > DEDUP_WINDOW {
            let (lowest, _) = self
                .results
                .pop_first()
                .expect("the table is over the window");
            // Seqs only leave from the bottom, so the evicted watermark only rises.
            self.evicted = Some(self.evicted.map_or(lowest, |e| e.max(lowest)));
        }
    }

    /// Replaces the result of `seq` (a queued acquire that resolved), if still remembered.
    pub(crate) fn update(&mut self, seq: Seq, outcome: Outcome) {
        if let Some(slot) = self.results.get_mut(&seq) {
            *slot = outcome;
        }
    }

    /// Number of remembered results.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.results.len()
    }

    /// Checks the invariants after a restore.
    pub(crate) fn is_consistent(&self) -> bool {
        self.results.len() <= DEDUP_WINDOW
            && match (self.evicted, self.results.keys().next()) {
                (Some(evicted), Some(&lowest)) => lowest > evicted,
                _ => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window keeps the highest seqs; everything at or below the eviction mark is too old.
    #[test]
    fn window_evicts_lowest_and_marks_too_old() {
        let mut dedup = Dedup::default();
        for seq in 1..=(DEDUP_WINDOW as u64 + 2) {
            assert_eq!(dedup.lookup(seq), Lookup::Fresh);
            dedup.record(seq, Outcome::Released);
        }
        assert_eq!(dedup.len(), DEDUP_WINDOW);
        assert_eq!(dedup.lookup(1), Lookup::TooOld);
        assert_eq!(dedup.lookup(2), Lookup::TooOld);
        assert_eq!(dedup.lookup(3), Lookup::Replay(Outcome::Released));
        assert_eq!(dedup.lookup(DEDUP_WINDOW as u64 + 3), Lookup::Fresh);
        assert!(dedup.is_consistent());
    }

    /// `update` rewrites a remembered result and ignores forgotten ones.
    #[test]
    fn update_only_touches_remembered_results() {
        let mut dedup = Dedup::default();
        dedup.record(5, Outcome::Queued { position: 0 });
        dedup.update(5, Outcome::Granted { fence: 9 });
        dedup.update(6, Outcome::TimedOut);
        assert_eq!(
            dedup.lookup(5),
            Lookup::Replay(Outcome::Granted { fence: 9 })
        );
        assert_eq!(dedup.lookup(6), Lookup::Fresh);
    }
}
