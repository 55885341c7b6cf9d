//! The in-memory view of the log, and which part of it the runtime has not been handed yet (the
//! unstable tail, handed over by `Ready::append`).
//!
//! # Catch-up entries
//!
//! Compaction keeps the entries since the *previous* snapshot, not only those since the latest
//! (etcd keeps catch-up entries for the same reason). Snapshots are built off the driver, so a
//! follower can be sent snapshot N−1 while N is being built; once N is saved, the leader still
//! holds the entries after N−1 and catches that follower up from the log, instead of sending
//! it a second whole snapshot. So the compaction point (`snap_index`, where the entries start)
//! can lie below the latest snapshot's index; the snapshot always covers everything up to its
//! own index, which is at least `snap_index`. After a restart the log starts at the snapshot.

use super::{Entry, EntryData, Index, Membership, Snapshot, Term};

/// The log: a compaction point (index 0 at first) followed by contiguous entries, and the
/// latest snapshot, whose index is at or past the compaction point.
#[derive(Debug)]
pub(crate) struct Log {
    /// The latest snapshot, kept with its data to send to lagging followers.
    snapshot: Option<Snapshot>,
    /// The compaction point: the index of the last entry dropped (0 if none). The latest
    /// snapshot covers it.
    snap_index: Index,
    /// The term of that entry.
    snap_term: Term,
    /// The membership in force at `snap_index`, if known there (from the snapshot that set
    /// the compaction point).
    snap_membership: Option<Membership>,
    /// Entries `snap_index + 1 ..= last_index()`.
    entries: Vec<Entry>,
    /// The first index not yet handed to the runtime.
    unstable_from: Index,
    /// Durable entries from this index on must be removed (a conflicting suffix).
    pending_truncate: Option<Index>,
}

impl Log {
    /// Builds the log from what the runtime recovered; everything recovered is stable.
    pub fn new(snapshot: Option<Snapshot>, entries: Vec<Entry>) -> Log {
        let (snap_index, snap_term) = snapshot
            .as_ref()
            .map(|s| (s.meta.index, s.meta.term))
            .unwrap_or((0, 0));
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                snap_index + 1 + i as Index,
                "recovered log not contiguous"
            );
        }
        let last = snap_index + entries.len() as Index;
        let snap_membership = snapshot.as_ref().map(|s| s.meta.membership.clone());
        Log {
            snapshot,
            snap_index,
            snap_term,
            snap_membership,
            entries,
            unstable_from: last + 1,
            pending_truncate: None,
        }
    }

    /// The compaction point: entries start after it (0 if none was dropped). A follower that
    /// needs an entry at or below it is sent the snapshot.
    pub fn snap_index(&self) -> Index {
        self.snap_index
    }

    /// The latest snapshot, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The index of the last entry (or of the snapshot if no entry follows it).
    pub fn last_index(&self) -> Index {
        self.snap_index + self.entries.len() as Index
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries
            .last()
            .map(|e| e.term)
            .unwrap_or(self.snap_term)
    }

    /// The term of the entry at `index`, if known (the snapshot's index counts; earlier ones
    /// were compacted away).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snap_index {
            return None;
        }
        self.entries.get((index - self.snap_index - 1) as usize)
    }

    /// True if the log holds an entry at `index` with `term`.
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term_at(index) == Some(term)
    }

    /// Entries in `from ..= to`, at most `max` of them and, past the first, at most
    /// `max_bytes` of payload in all (all must be held).
    pub fn slice(&self, from: Index, to: Index, max: usize, max_bytes: usize) -> Vec<Entry> {
        if from > to {
            return Vec::new();
        }
        assert!(
            from > self.snap_index,
            "slice from {from} below snapshot {}",
            self.snap_index
        );
        let start = (from - self.snap_index - 1) as usize;
        let end = ((to - self.snap_index) as usize).min(self.entries.len());
        let end = end.min(start.saturating_add(max.max(1)));
        // The first entry always goes, however large; the rest while they fit `max_bytes`.
        let mut bytes = 0usize;
        let mut taken = start;
        for entry in &self.entries[start..end] {
            bytes = bytes.saturating_add(entry.payload_len());
            if taken > start && bytes > max_bytes {
                break;
            }
            taken += 1;
        }
        self.entries[start..taken].to_vec()
    }

    /// The last index holding an entry of `term`, if any.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    /// The first index of the run of entries with the same term as `index`, not below `floor`.
    pub fn first_index_of_term_at(&self, index: Index, floor: Index) -> Index {
        let term = self.term_at(index);
        let mut first = index;
        while first > floor.max(self.snap_index + 1) && self.term_at(first - 1) == term {
            first -= 1;
        }
        first
    }

    /// Appends one entry after the last.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "append not contiguous");
        self.entries.push(entry);
    }

    /// Removes every entry from `index` on.
    pub fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.snap_index,
            "truncating into the snapshot at {index}"
        );
        if index > self.last_index() {
            return;
        }
        self.entries
            .truncate((index - self.snap_index - 1) as usize);
        if index < self.unstable_from {
            self.pending_truncate = Some(self.pending_truncate.map_or(index, |t| t.min(index)));
            self.unstable_from = index;
        }
    }

    /// Hands the unstable tail to the runtime: (truncate from, entries to append).
    pub fn take_unstable(&mut self) -> (Option<Index>, Vec<Entry>) {
        let truncate = self.pending_truncate.take();
        let from = self.unstable_from.max(self.snap_index + 1);
        let entries = self.slice(from, self.last_index(), usize::MAX, usize::MAX);
        self.unstable_from = self.last_index() + 1;
        (truncate, entries)
    }

    /// Replaces the whole log with a received snapshot. Returns true if durable entries past the
    /// snapshot must be truncated.
    pub fn install(&mut self, snapshot: Snapshot) -> bool {
        let truncate = self.last_index() > snapshot.meta.index || self.pending_truncate.is_some();
        self.snap_index = snapshot.meta.index;
        self.snap_term = snapshot.meta.term;
        self.snap_membership = Some(snapshot.meta.membership.clone());
        self.snapshot = Some(snapshot);
        self.entries.clear();
        self.unstable_from = self.snap_index + 1;
        self.pending_truncate = truncate.then_some(self.snap_index + 1);
        truncate
    }

    /// Takes a snapshot the runtime saved as the latest, and drops the entries the previous
    /// snapshot covers (keeping the catch-up entries after it, see the module doc).
    pub fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(index <= self.last_index(), "snapshot {index} past the log");
        let previous = self.snapshot.replace(snapshot);
        if let Some(previous) = previous {
            let point = previous.meta.index;
            if point > self.snap_index && point <= index {
                let drop = (point - self.snap_index) as usize;
                self.entries.drain(..drop);
                self.snap_index = point;
                self.snap_term = previous.meta.term;
                self.snap_membership = Some(previous.meta.membership);
                self.unstable_from = self.unstable_from.max(point + 1);
            }
        }
    }

    /// The membership in force at `index` (the last config entry at or before it, else the
    /// snapshot's), with the index of the entry that set it (0 for the snapshot or none).
    pub fn membership_at(&self, index: Index) -> Option<(Membership, Index)> {
        let upto = index.min(self.last_index());
        if upto > self.snap_index {
            let end = (upto - self.snap_index) as usize;
            for entry in self.entries[..end].iter().rev() {
                if let EntryData::Config(m) = &entry.data {
                    return Some((m.clone(), entry.index));
                }
            }
        }
        self.snap_membership.clone().map(|m| (m, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            data: EntryData::Noop,
        }
    }

    fn command(index: Index, bytes: usize) -> Entry {
        Entry {
            index,
            term: 1,
            data: EntryData::Command(vec![0; bytes]),
        }
    }

    #[test]
    fn slices_stop_at_the_byte_budget_but_always_take_one_entry() {
        let log = Log::new(None, (1..=5).map(|i| command(i, 400)).collect());
        let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(indexes(log.slice(1, 5, 100, 1000)), vec![1, 2]);
        assert_eq!(indexes(log.slice(1, 5, 100, 1200)), vec![1, 2, 3]);
        assert_eq!(
            indexes(log.slice(3, 5, 100, 10)),
            vec![3],
            "one entry over budget still goes"
        );
        assert_eq!(
            indexes(log.slice(1, 5, 2, usize::MAX)),
            vec![1, 2],
            "the count bounds too"
        );
    }

    #[test]
    fn truncate_marks_durable_suffix() {
        let mut log = Log::new(None, vec![entry(1, 1), entry(2, 1), entry(3, 2)]);
        log.append(entry(4, 2));
        log.truncate_from(3);
        log.append(entry(3, 3));
        let (truncate, append) = log.take_unstable();
        assert_eq!(truncate, Some(3));
        assert_eq!(append, vec![entry(3, 3)]);
        assert_eq!(log.last_term(), 3);
    }

    #[test]
    fn unstable_truncation_needs_no_durable_truncate() {
        let mut log = Log::new(None, vec![entry(1, 1)]);
        log.append(entry(2, 1));
        log.truncate_from(2);
        assert_eq!(log.take_unstable(), (None, vec![]));
    }

    fn snapshot_at(index: Index, term: Term, membership: Membership) -> Snapshot {
        Snapshot {
            meta: crate::raft::SnapshotMeta {
                index,
                term,
                membership,
            },
            data: Default::default(),
        }
    }

    /// A compaction drops the entries the previous snapshot covers, keeps those after it (the
    /// catch-up entries), and keeps the terms and the membership at the compaction point.
    #[test]
    fn compaction_keeps_the_entries_since_the_previous_snapshot() {
        let voters = |ids: &[crate::raft::NodeId]| Membership {
            voters: ids.iter().map(|id| (*id, format!("n{id}"))).collect(),
            ..Membership::default()
        };
        let mut log = Log::new(None, vec![entry(1, 1), entry(2, 2), entry(3, 2)]);
        log.append(Entry {
            index: 4,
            term: 2,
            data: EntryData::Config(voters(&[1, 2])),
        });
        log.append(entry(5, 3));
        log.compact(snapshot_at(2, 2, voters(&[1])));
        assert_eq!(log.snap_index(), 0, "no previous snapshot: nothing dropped");
        assert_eq!(log.term_at(1), Some(1));
        log.compact(snapshot_at(3, 2, voters(&[1])));
        assert_eq!(log.snap_index(), 2);
        assert_eq!(log.snapshot().map(|s| s.meta.index), Some(3));
        assert_eq!(log.term_at(1), None);
        assert_eq!(log.term_at(2), Some(2));
        assert_eq!(log.entry(3).map(|e| e.term), Some(2));
        assert_eq!(log.first_index_of_term_at(3, 0), 3);
        assert_eq!(log.membership_at(3), Some((voters(&[1]), 0)));
        assert_eq!(log.membership_at(4), Some((voters(&[1, 2]), 4)));
        log.compact(snapshot_at(5, 3, voters(&[1, 2])));
        assert_eq!(log.snap_index(), 3);
        assert_eq!(log.membership_at(3), Some((voters(&[1]), 0)));
        assert_eq!(log.membership_at(5), Some((voters(&[1, 2]), 4)));
        assert_eq!(log.slice(4, 5, 10, usize::MAX).len(), 2);
    }
}
