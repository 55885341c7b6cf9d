//! Rebuilds the log from the records of the segments, in stream order, checking that the entries
//! are contiguous and that the log joins the snapshot without a gap.

use std::path::{Path, PathBuf};

use super::segment::Record;
use super::Error;
use crate::raft::{Entry, HardState, Index};

/// Where a record was read: the segment's position in the segment list and the byte offset.
type Loc = (usize, u64);

/// The state of a replay in progress.
#[derive(Debug)]
pub(crate) struct Replay {
    /// The index the snapshot covers (0 without one).
    snapshot_index: Index,
    /// The last hard state read.
    hard_state: HardState,
    /// The live entries read so far (entries at or below the snapshot index included).
    entries: Vec<Entry>,
    /// Where each of `entries` was read.
    locs: Vec<Loc>,
    /// The index the next entry must have; `None` until the stream says.
    next: Option<Index>,
    /// Where the record that last set `next` was read.
    next_loc: Loc,
}

/// The outcome of a replay.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// The last hard state in the stream (the default if none).
    pub hard_state: HardState,
    /// The live entries after the snapshot index, contiguous.
    pub entries: Vec<Entry>,
    /// For each segment, the first and last live entry it holds (covered entries included).
    pub live: Vec<Option<(Index, Index)>>,
    /// The index the next entry of the stream must have, if the stream says.
    pub next: Option<Index>,
}

impl Replay {
    /// Starts a replay on top of a snapshot covering up to `snapshot_index` (0 without one).
    pub(crate) fn new(snapshot_index: Index) -> Replay {
        Replay {
            snapshot_index,
            hard_state: HardState::default(),
            entries: Vec::new(),
            locs: Vec::new(),
            next: None,
            next_loc: (0, 0),
        }
    }

    /// Applies one record read at `offset` of the segment at position `seg` (file `path`).
    pub(crate) fn apply(
        &mut self,
        seg: usize,
        path: &Path,
        offset: u64,
        record: Record,
    ) -> Result<(), Error> {
        let corrupt = |reason: String| Error::Corrupt {
            path: PathBuf::from(path),
            offset,
            reason,
        };
        match record {
            Record::HardState(hard_state) => self.hard_state = hard_state,
            Record::Entry(entry) => {
                if let Some(next) = self.next {
                    if entry.index != next {
                        return Err(corrupt(format!(
                            "entry {} where entry {next} was expected (a gap or discontinuity)",
                            entry.index
                        )));
                    }
                }
                self.next = Some(entry.index + 1);
                self.next_loc = (seg, offset);
                self.entries.push(entry);
                self.locs.push((seg, offset));
            }
            Record::Truncate(index) => {
                if let Some(next) = self.next {
                    if index > next {
                        return Err(corrupt(format!(
                            "truncation from {index} past the end of the log (next entry {next})"
                        )));
                    }
                }
                // Entries are contiguous, so the ones to keep are a prefix.
                let keep = self.entries.partition_point(|e| e.index < index);
                self.entries.truncate(keep);
                self.locs.truncate(keep);
                self.next = Some(index);
                self.next_loc = (seg, offset);
            }
            Record::Restart(index) => {
                self.entries.clear();
                self.locs.clear();
                self.next = Some(index);
                self.next_loc = (seg, offset);
            }
        }
        Ok(())
    }

    /// Ends the replay: drops the entries the snapshot covers and checks that what remains
    /// follows the snapshot without a gap. `paths` are the segments' paths, by position.
    pub(crate) fn finish(self, paths: &[PathBuf]) -> Result<Replayed, Error> {
        let corrupt = |(seg, offset): Loc, reason: String| Error::Corrupt {
            path: paths[seg].clone(),
            offset,
            reason,
        };
        let s = self.snapshot_index;
        let mut live = vec![None; paths.len()];
        for (entry, &(seg, _)) in self.entries.iter().zip(&self.locs) {
            let range: &mut Option<(Index, Index)> = &mut live[seg];
            *range = Some(range.map_or((entry.index, entry.index), |(f, _)| (f, entry.index)));
        }
        match self.entries.first() {
            Some(first) if first.index > s + 1 => {
                return Err(corrupt(
                    self.locs[0],
                    format!(
                        "the log starts at entry {} but the snapshot covers only up to {s}: \
                         entries are missing",
                        first.index
                    ),
                ))
            }
            None if self.next.is_some_and(|n| n > s + 1) => {
                return Err(corrupt(
                    self.next_loc,
                    format!(
                        "the log continues at entry {} but the snapshot covers only up to {s}: \
                         entries are missing",
                        self.next.unwrap_or_default()
                    ),
                ))
            }
            _ => {}
        }
        let skip = self.entries.partition_point(|e| e.index <= s);
        let mut entries = self.entries;
        entries.drain(..skip);
        Ok(Replayed {
            hard_state: self.hard_state,
            entries,
            live,
            next: self.next,
        })
    }
}
