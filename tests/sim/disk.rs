//! A simulated disk: what a host writes goes to an unsynced buffer and becomes durable only at
//! the fsync point of the `Ready` contract. A crash drops the unsynced writes, or (per seed) keeps
//! a random prefix of them, as a real append-only file whose page cache was partly flushed.

use std::collections::BTreeMap;

use raftlock::raft::{Entry, HardState, Index, Recovered, Snapshot, Term};
use rand::rngs::SmallRng;
use rand::Rng;

/// One write, in the order the host issued it.
#[derive(Clone, Debug)]
enum Write {
    /// A received snapshot: drops the entries it covers (and all of them if the log does not
    /// hold the snapshot's last entry), as installing a snapshot means.
    Snapshot(Snapshot),
    /// Removes every entry from this index on.
    Truncate(Index),
    /// One entry (an `append` is split per entry so that a torn write keeps a prefix).
    Entry(Entry),
    /// The term, vote and commit index.
    HardState(HardState),
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    /// The durable hard state.
    pub hard_state: HardState,
    /// The durable snapshot.
    pub snapshot: Option<Snapshot>,
    /// Durable entries after the snapshot, by index.
    pub entries: BTreeMap<Index, Entry>,
}

impl Durable {
    fn apply(&mut self, write: Write) -> Result<(), String> {
        match write {
            Write::Snapshot(s) => {
                let (index, term) = (s.meta.index, s.meta.term);
                // The log after the snapshot survives if it continues from the snapshot's last
                // entry (which may itself be the durable snapshot's), as in the real storage.
                let keep = self.term_at(index) == Some(term);
                if keep {
                    self.entries = self.entries.split_off(&(index + 1));
                } else {
                    self.entries.clear();
                }
                self.snapshot = Some(s);
            }
            Write::Truncate(index) => {
                let snap = self.snap_index();
                if index <= snap {
                    return Err(format!(
                        "Ready contract: truncation from {index} at or below the durable snapshot {snap}"
                    ));
                }
                self.entries.split_off(&index);
            }
            Write::Entry(e) => {
                let last = self.last_index();
                if e.index > last + 1 {
                    return Err(format!(
                        "Ready contract: append of {} leaves a gap after the durable last {last}",
                        e.index
                    ));
                }
                if e.index <= self.snap_index() {
                    return Err(format!(
                        "Ready contract: append of {} at or below the durable snapshot",
                        e.index
                    ));
                }
                // An append replaces what it overlaps and everything after it.
                self.entries.split_off(&e.index);
                self.entries.insert(e.index, e);
            }
            Write::HardState(hs) => self.hard_state = hs,
        }
        Ok(())
    }

    /// The durable snapshot's index (0 without one).
    pub fn snap_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    /// The index of the last durable entry (or the snapshot's).
    pub fn last_index(&self) -> Index {
        self.entries
            .last_key_value()
            .map_or(self.snap_index(), |(i, _)| *i)
    }

    /// The term of the durable entry at `index` (the snapshot's last entry counts).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if let Some(s) = &self.snapshot {
            if s.meta.index == index {
                return Some(s.meta.term);
            }
        }
        self.entries.get(&index).map(|e| e.term)
    }
}

/// A host's disk.
#[derive(Debug, Default)]
pub struct Disk {
    durable: Durable,
    unsynced: Vec<Write>,
}

impl Disk {
    /// What is durable now.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Buffers the writes of one `Ready` (step 2 of the contract, before the fsync).
    pub fn write(
        &mut self,
        snapshot: Option<&Snapshot>,
        truncate_from: Option<Index>,
        append: &[Entry],
        hard_state: Option<HardState>,
    ) {
        if let Some(s) = snapshot {
            self.unsynced.push(Write::Snapshot(s.clone()));
        }
        if let Some(i) = truncate_from {
            self.unsynced.push(Write::Truncate(i));
        }
        for e in append {
            self.unsynced.push(Write::Entry(e.clone()));
        }
        if let Some(hs) = hard_state {
            self.unsynced.push(Write::HardState(hs));
        }
    }

    /// Makes every buffered write durable.
    pub fn fsync(&mut self) -> Result<(), String> {
        for w in std::mem::take(&mut self.unsynced) {
            self.durable.apply(w)?;
        }
        Ok(())
    }

    /// A snapshot the host took itself: written to a temporary file, fsynced and renamed, so it
    /// is durable at once. Buffered writes are synced first (as the real storage does).
    pub fn save_own_snapshot(&mut self, snapshot: Snapshot) -> Result<(), String> {
        self.fsync()?;
        self.durable.apply(Write::Snapshot(snapshot))
    }

    /// A crash: unsynced writes are lost, except a random prefix when `torn` is set.
    /// Returns how many buffered writes were lost.
    pub fn crash(&mut self, rng: &mut SmallRng, torn: bool) -> Result<usize, String> {
        let writes = std::mem::take(&mut self.unsynced);
        let keep = if torn && !writes.is_empty() {
            rng.gen_range(0..=writes.len())
        } else {
            0
        };
        let lost = writes.len() - keep;
        for w in writes.into_iter().take(keep) {
            self.durable.apply(w)?;
        }
        Ok(lost)
    }

    /// Loses every durable entry after `keep_to` (a crashed node's damaged disk, or a restored
    /// backup: outside Raft's crash model). The hard state's commit is cut with them, as a cut
    /// at a record boundary of the real log would; the snapshot stays.
    pub fn lose_suffix(&mut self, keep_to: Index) -> usize {
        assert!(
            self.unsynced.is_empty(),
            "lose durable entries of a crashed node only"
        );
        let keep_to = keep_to.max(self.durable.snap_index());
        let lost = self.durable.entries.split_off(&(keep_to + 1)).len();
        let last = self.durable.last_index();
        self.durable.hard_state.commit = self.durable.hard_state.commit.min(last);
        lost
    }

    /// What a restarting node recovers: the hard state, the snapshot, and the entries after
    /// it up to the first gap (there is none unless the contract was broken).
    pub fn recover(&self) -> Recovered {
        let snap = self.durable.snap_index();
        let entries = (snap + 1..)
            .zip(self.durable.entries.range(snap + 1..))
            .take_while(|(want, (i, _))| *want == **i)
            .map(|(_, (_, e))| e.clone())
            .collect();
        Recovered {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries,
        }
    }
}
