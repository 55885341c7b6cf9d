//! Seeded crash tests: random operations against an in-memory model, a crash that loses any
//! suffix of the unsynced bytes (and may leave garbage after the cut), then recovery, which must
//! give back exactly a state the node was in at or after its last completed `sync`.
//!
//! `RAFTLOCK_STORAGE_SEED=<seed>` runs one case; `RAFTLOCK_STORAGE_CASES=<n>` changes the count.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::raft::{EntryData, SnapshotMeta};

/// Cases run by default: a few hundred, a few seconds.
const DEFAULT_CASES: u64 = 300;

/// What the storage holds, as the caller sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl State {
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }
}

fn random_entry(rng: &mut SmallRng, index: Index) -> Entry {
    let data = match rng.gen_range(0..10) {
        0 => EntryData::Noop,
        _ => {
            let len = rng.gen_range(0..120);
            EntryData::Command((0..len).map(|_| rng.gen()).collect())
        }
    };
    Entry {
        index,
        term: rng.gen_range(1..6),
        data,
    }
}

/// One case: a few rounds of random operations, each ended by a crash and a recovery.
fn run_case(seed: u64) {
    SKIP_FSYNC.with(|skip| skip.set(true));
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: rng.gen_range(64..1024),
    };
    let (mut storage, _) = Storage::open_with(dir.path(), options).unwrap();
    let mut state = State::default();
    // Every state the files may legitimately recover to: the one at the last sync and every one
    // after it, record by record.
    let mut candidates = vec![state.clone()];

    for _round in 0..rng.gen_range(1..=3) {
        for _ in 0..rng.gen_range(0..40) {
            match rng.gen_range(0..100) {
                0..=39 => {
                    let first = state.last_index() + 1;
                    let batch: Vec<Entry> = (first..first + rng.gen_range(1..=6))
                        .map(|i| random_entry(&mut rng, i))
                        .collect();
                    storage.append(&batch).unwrap();
                    for entry in batch {
                        state.entries.push(entry);
                        candidates.push(state.clone());
                    }
                }
                40..=54 => {
                    let hard_state = HardState {
                        term: rng.gen_range(0..10),
                        vote: rng.gen_bool(0.5).then(|| rng.gen_range(1..4)),
                        commit: rng.gen_range(0..=state.last_index()),
                    };
                    storage.save_hard_state(&hard_state).unwrap();
                    state.hard_state = hard_state;
                    candidates.push(state.clone());
                }
                55..=74 => {
                    storage.sync().unwrap();
                    candidates = vec![state.clone()];
                }
                75..=87 => {
                    if state.entries.is_empty() {
                        continue;
                    }
                    let from = rng.gen_range(state.snapshot_index() + 1..=state.last_index());
                    storage.truncate_from(from).unwrap();
                    state.entries.retain(|e| e.index < from);
                    candidates.push(state.clone());
                }
                _ => {
                    let index = rng.gen_range(state.snapshot_index()..=state.last_index() + 3);
                    let snapshot = Snapshot {
                        meta: SnapshotMeta {
                            index,
                            term: rng.gen_range(1..6),
                            membership: Default::default(),
                        },
                        data: (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
                    };
                    storage.save_snapshot(&snapshot).unwrap();
                    state.snapshot = Some(snapshot);
                    state.entries.retain(|e| e.index > index);
                    candidates = vec![state.clone()];
                }
            }
            assert_eq!(storage.last_index(), state.last_index());
        }

        // Crash: the active segment keeps its synced bytes and any prefix of the rest, maybe
        // followed by garbage. Every other file is durable by construction.
        let (path, synced) = storage.synced_tail();
        drop(storage);
        let len = fs::metadata(&path).unwrap().len();
        assert!(synced <= len);
        let cut = rng.gen_range(synced..=len);
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
        if rng.gen_bool(0.3) {
            let garbage: Vec<u8> = if rng.gen_bool(0.5) {
                vec![0; rng.gen_range(1..64)]
            } else {
                (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect()
            };
            file.write_all_at_end(&garbage);
        }
        drop(file);

        let (reopened, recovered) = Storage::open_with(dir.path(), options).unwrap_or_else(|e| {
            panic!("recovery failed after a cut at {cut} ({synced}..={len}): {e}")
        });
        storage = reopened;
        let got = State {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            entries: recovered.entries,
        };
        assert!(
            candidates.contains(&got),
            "recovered a state the node was never in after its last sync (cut at {cut} in \
             {synced}..={len}):\n got: {got:?}\n acknowledged: {:?}",
            candidates[0]
        );
        assert_eq!(storage.last_index(), got.last_index());
        state = got;
        candidates = vec![state.clone()];
    }
}

/// Appends at the end of the file, whatever the cursor.
trait WriteAtEnd {
    fn write_all_at_end(&mut self, bytes: &[u8]);
}

impl WriteAtEnd for fs::File {
    fn write_all_at_end(&mut self, bytes: &[u8]) {
        use std::io::{Seek, SeekFrom};
        self.seek(SeekFrom::End(0)).unwrap();
        self.write_all(bytes).unwrap();
    }
}

#[test]
fn random_operations_survive_crashes() {
    let seeds: Vec<u64> = match std::env::var("RAFTLOCK_STORAGE_SEED") {
        Ok(seed) => vec![seed.parse().expect("RAFTLOCK_STORAGE_SEED is a u64")],
        Err(_) => {
            let cases = std::env::var("RAFTLOCK_STORAGE_CASES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(DEFAULT_CASES);
            (0..cases).collect()
        }
    };
    for seed in seeds {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| run_case(seed))) {
            eprintln!("storage crash case failed: reproduce with RAFTLOCK_STORAGE_SEED={seed}");
            panic::resume_unwind(panic);
        }
    }
}
