//! The per-session results table that makes session requests exactly-once.
//!
//! Each result is stored with the digest of the request that produced it (`digest.rs`), so a
//! seq re-sent with another request is told apart from a retry.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
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
    /// Already used by a different request (another digest): refuse it and change nothing.
    Reused,
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
    results: VecDeque<Remembered>,
    /// The highest seq whose result was dropped to keep the window.
    evicted: Option<Seq>,
}

/// One remembered result.
///
/// Snapshots encode it as a MessagePack array `[seq, outcome, digest]`. Snapshots written
/// before digests existed hold `[seq, outcome]` pairs: they restore with `digest` nil, and such
/// a result replays to any request with its seq (as it did when it was written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    seq: Seq,
    outcome: Outcome,
    /// The digest of the request that produced the result; nil if restored from an old snapshot.
    #[serde(default)]
    digest: Option<Digest>,
}

impl Dedup {
    /// Classifies `seq` for the request whose digest is `digest`.
    pub(crate) fn lookup(&self, seq: Seq, digest: Digest) -> Lookup {
        if let Ok(at) = self.find(seq) {
            let remembered = &self.results[at];
            return match remembered.digest {
                Some(stored) if stored != digest => Lookup::Reused,
                _ => Lookup::Replay(remembered.outcome.clone()),
            };
        }
        match self.evicted {
            Some(evicted) if seq <= evicted => Lookup::TooOld,
            _ => Lookup::Fresh,
        }
    }

    /// Records the result of a fresh request (digest `digest`), evicting the lowest seq beyond
    /// the window.
    pub(crate) fn record(&mut self, seq: Seq, digest: Digest, outcome: Outcome) {
        let remembered = Remembered {
            seq,
            outcome,
            digest: Some(digest),
        };
        match self.find(seq) {
            Ok(at) => self.results[at] = remembered,
            Err(at) => self.results.insert(at, remembered),
        }
        while self.results.len() > DEDUP_WINDOW {
            let Some(Remembered { seq: lowest, .. }) = self.results.pop_front() else {
                break;
            };
            // Seqs only leave from the bottom, so the evicted watermark only rises.
            self.evicted = Some(self.evicted.map_or(lowest, |e| e.max(lowest)));
        }
    }

    /// Replaces the result of `seq` (a queued acquire that resolved), if still remembered.
    pub(crate) fn update(&mut self, seq: Seq, outcome: Outcome) {
        if let Ok(at) = self.find(seq) {
            self.results[at].outcome = outcome;
        }
    }

    fn find(&self, seq: Seq) -> Result<usize, usize> {
        self.results.binary_search_by_key(&seq, |r| r.seq)
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
                .all(|(a, b)| a.seq < b.seq)
            && match (self.evicted, self.results.front()) {
                (Some(evicted), Some(lowest)) => lowest.seq > evicted,
                _ => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of "the" request in tests that use one per seq.
    const D: Digest = 0x0123_4567_89ab_cdef;

    /// The window keeps the highest seqs; everything at or below the eviction mark is too old.
    #[test]
    fn window_evicts_lowest_and_marks_too_old() {
        let mut dedup = Dedup::default();
        for seq in 1..=(DEDUP_WINDOW as u64 + 2) {
            assert_eq!(dedup.lookup(seq, D), Lookup::Fresh);
            dedup.record(seq, D, Outcome::Released);
        }
        assert_eq!(dedup.len(), DEDUP_WINDOW);
        assert_eq!(dedup.lookup(1, D), Lookup::TooOld);
        assert_eq!(dedup.lookup(2, D), Lookup::TooOld);
        assert_eq!(dedup.lookup(3, D), Lookup::Replay(Outcome::Released));
        assert_eq!(dedup.lookup(DEDUP_WINDOW as u64 + 3, D), Lookup::Fresh);
        assert!(dedup.is_consistent());
    }

    /// `update` rewrites a remembered result and ignores forgotten ones.
    #[test]
    fn update_only_touches_remembered_results() {
        let mut dedup = Dedup::default();
        dedup.record(5, D, Outcome::Queued { position: 0 });
        dedup.update(5, Outcome::Granted { fence: 9 });
        dedup.update(6, Outcome::TimedOut);
        assert_eq!(
            dedup.lookup(5, D),
            Lookup::Replay(Outcome::Granted { fence: 9 })
        );
        assert_eq!(dedup.lookup(6, D), Lookup::Fresh);
    }

    /// Seqs recorded out of order stay sorted and are all found.
    #[test]
    fn out_of_order_seqs_stay_sorted() {
        let mut dedup = Dedup::default();
        for seq in [5, 3, 9, 4] {
            dedup.record(seq, D, Outcome::Granted { fence: seq });
        }
        for seq in [3, 4, 5, 9] {
            assert_eq!(
                dedup.lookup(seq, D),
                Lookup::Replay(Outcome::Granted { fence: seq })
            );
        }
        assert_eq!(dedup.lookup(6, D), Lookup::Fresh);
        assert!(dedup.is_consistent());
    }

    /// A seq reused by another request is `Reused`; the same request replays; a result
    /// restored from a snapshot without digests replays to anyone.
    #[test]
    fn a_different_request_on_a_remembered_seq_is_reused() {
        let mut dedup = Dedup::default();
        dedup.record(4, D, Outcome::Granted { fence: 9 });
        assert_eq!(
            dedup.lookup(4, D),
            Lookup::Replay(Outcome::Granted { fence: 9 })
        );
        assert_eq!(dedup.lookup(4, D ^ 1), Lookup::Reused);
        dedup.update(4, Outcome::Released);
        assert_eq!(dedup.lookup(4, D ^ 1), Lookup::Reused);

        #[derive(Serialize)]
        struct OldDedup {
            results: Vec<(Seq, Outcome)>,
            evicted: Option<Seq>,
        }
        let old = rmp_serde::to_vec(&OldDedup {
            results: vec![(4, Outcome::Granted { fence: 9 })],
            evicted: Some(2),
        })
        .unwrap();
        let restored: Dedup = rmp_serde::from_slice(&old).expect("old snapshots restore");
        assert!(restored.is_consistent());
        assert_eq!(
            restored.lookup(4, D ^ 1),
            Lookup::Replay(Outcome::Granted { fence: 9 })
        );
        assert_eq!(restored.lookup(2, D), Lookup::TooOld);
        let again: Dedup = rmp_serde::from_slice(&rmp_serde::to_vec(&dedup).unwrap()).unwrap();
        assert_eq!(again, dedup);
    }
}
