//! The per-session results table that makes session requests exactly-once.

use std::collections::VecDeque;

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
/// - `results` is sorted by seq, without duplicates.
///
/// Starts empty and allocates nothing until the first request. A sorted ring buffer rather
/// than a BTreeMap: a session with a handful of results costs one small allocation (a BTreeMap
/// leaf costs ~450 bytes), which matters at 100,000 sessions. A ring rather than a Vec: a full
/// window evicts from the front on every request, which a Vec pays for by shifting all 256
/// results (that memmove was ~5 % of a busy leader's CPU). Serialized as a plain sequence either
/// way, so snapshots did not change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dedup {
    /// Remembered results, sorted by seq (deterministic snapshots, binary search).
    results: VecDeque<(Seq, Outcome)>,
    /// The highest seq whose result was dropped to keep the window.
    evicted: Option<Seq>,
}

impl Dedup {
    /// Classifies `seq`.
    pub(crate) fn lookup(&self, seq: Seq) -> Lookup {
        if let Ok(at) = self.find(seq) {
            return Lookup::Replay(self.results[at].1.clone());
        }
        match self.evicted {
            Some(evicted) if seq <= evicted => Lookup::TooOld,
            _ => Lookup::Fresh,
        }
    }

    /// Records the result of a fresh request, evicting the lowest seq beyond the window.
    pub(crate) fn record(&mut self, seq: Seq, outcome: Outcome) {
        match self.find(seq) {
            Ok(at) => self.results[at].1 = outcome,
            Err(at) => self.results.insert(at, (seq, outcome)),
        }
        while self.results.len() > DEDUP_WINDOW {
            let Some((lowest, _)) = self.results.pop_front() else {
                break;
            };
            // Seqs only leave from the bottom, so the evicted watermark only rises.
            self.evicted = Some(self.evicted.map_or(lowest, |e| e.max(lowest)));
        }
    }

    /// Replaces the result of `seq` (a queued acquire that resolved), if still remembered.
    pub(crate) fn update(&mut self, seq: Seq, outcome: Outcome) {
        if let Ok(at) = self.find(seq) {
            self.results[at].1 = outcome;
        }
    }

    fn find(&self, seq: Seq) -> Result<usize, usize> {
        self.results.binary_search_by_key(&seq, |(s, _)| *s)
    }

    /// Number of remembered results.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.results.len()
    }

    /// Checks the invariants after a restore.
    pub(crate) fn is_consistent(&self) -> bool {
        self.results.len() <= DEDUP_WINDOW
            && self
                .results
                .iter()
                .zip(self.results.iter().skip(1))
                .all(|(a, b)| a.0 < b.0)
            && match (self.evicted, self.results.front()) {
                (Some(evicted), Some(&(lowest, _))) => lowest > evicted,
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

    /// Seqs recorded out of order stay sorted and are all found.
    #[test]
    fn out_of_order_seqs_stay_sorted() {
        let mut dedup = Dedup::default();
        for seq in [5, 3, 9, 4] {
            dedup.record(seq, Outcome::Granted { fence: seq });
        }
        for seq in [3, 4, 5, 9] {
            assert_eq!(
                dedup.lookup(seq),
                Lookup::Replay(Outcome::Granted { fence: seq })
            );
        }
        assert_eq!(dedup.lookup(6), Lookup::Fresh);
        assert!(dedup.is_consistent());
    }
}
