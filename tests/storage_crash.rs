//! Real-process crash test of the storage: a child process (this test binary, re-run on the
//! ignored `child` test) appends, saves the hard state and syncs in a loop, printing what each
//! completed `sync` acknowledged; the parent kills it with SIGKILL at a random moment, reopens the
//! directory and checks that everything acknowledged is there, contiguous and intact.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use raftlock::raft::{Entry, EntryData, HardState, Membership, Snapshot, SnapshotMeta};
use raftlock::storage::{Options, Storage};

/// The environment variable that makes the `child` test run, naming its data directory.
const CHILD_DIR: &str = "RAFTLOCK_STORAGE_CRASH_DIR";
const OPTIONS: Options = Options {
    segment_bytes: 16 << 10,
};

/// The entry at `index`: its content is a function of the index, so the parent can check it.
fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1 + index / 100,
        data: EntryData::Command(index.to_be_bytes().repeat(1 + (index % 13) as usize)),
    }
}

/// The child: appends and syncs until killed, printing `acked <last index> <term>` per sync.
#[test]
#[ignore = "run by storage_survives_sigkill as a child process"]
fn child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (mut storage, recovered) = Storage::open_with(Path::new(&dir), OPTIONS).unwrap();
    let mut term = recovered.hard_state.term;
    for round in 0u64.. {
        let first = storage.last_index() + 1;
        let batch: Vec<Entry> = (first..first + 1 + round % 7).map(entry).collect();
        storage.append(&batch).unwrap();
        term += 1;
        let last = storage.last_index();
        storage
            .save_hard_state(&HardState {
                term,
                vote: Some(1),
                commit: last,
            })
            .unwrap();
        storage.sync().unwrap();
        println!("acked {last} {term}");
        if round % 50 == 49 {
            storage
                .save_snapshot(&Snapshot {
                    meta: SnapshotMeta {
                        index: last - 3,
                        term: entry(last - 3).term,
                        membership: Membership::default(),
                    },
                    data: vec![1; 32].into(),
                })
                .unwrap();
        }
    }
}

#[test]
fn storage_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Kill points vary per round, deterministically (no ambient randomness in tests).
    for (round, kill_after) in [3usize, 40, 1, 120, 17, 75].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acked = None;
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("acked ") else {
                continue;
            };
            let (index, term) = rest.split_once(' ').unwrap();
            acked = Some((index.parse::<u64>().unwrap(), term.parse::<u64>().unwrap()));
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        child.wait().unwrap();
        assert_eq!(
            seen, kill_after,
            "round {round}: the child stopped before it was killed"
        );
        let (acked_index, acked_term) = acked.expect("the child acknowledged something");

        let (storage, recovered) = Storage::open_with(dir.path(), OPTIONS)
            .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
        assert!(
            storage.last_index() >= acked_index,
            "round {round}: acknowledged {acked_index}, recovered up to {}",
            storage.last_index()
        );
        assert!(recovered.hard_state.term >= acked_term, "round {round}");
        let after = recovered.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let expected: Vec<Entry> = (after + 1..=storage.last_index()).map(entry).collect();
        assert_eq!(recovered.entries, expected, "round {round}");
    }
}
