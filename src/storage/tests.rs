//! Unit tests of the storage: round trips, truncation, rotation, snapshots, torn tails and
//! corruption.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::*;
use crate::raft::{EntryData, Membership, SnapshotMeta};

/// An entry with a small command payload derived from its index and term.
fn entry(index: Index, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: EntryData::Command(format!("cmd-{index}-{term}").into_bytes()),
    }
}

/// Entries `from..=to` in `term`.
fn entries(from: Index, to: Index, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

fn hs(term: u64, vote: Option<u64>, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

fn snapshot(index: Index, term: u64) -> Snapshot {
    let mut membership = Membership::default();
    membership.voters.insert(1, "127.0.0.1:7001".into());
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership,
        },
        data: vec![7; 100].into(),
    }
}

fn tiny(segment_bytes: u64) -> Options {
    Options { segment_bytes }
}

/// The segment files of a data directory, in order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    list_segments(&dir.join(LOG_DIR))
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// The (offset, total length) of every record in a segment file.
fn record_spans(path: &Path) -> Vec<(u64, u64)> {
    let data = fs::read(path).unwrap();
    let mut spans = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let len = u32::from_be_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        spans.push((off as u64, (8 + len) as u64));
        off += 8 + len;
    }
    spans
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize] ^= 0x40;
    fs::write(path, data).unwrap();
}

#[test]
fn append_sync_reopen_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, vec![]);
    assert_eq!(recovered.hard_state, HardState::default());
    assert!(recovered.snapshot.is_none());
    assert_eq!(storage.last_index(), 0);

    let mut written = entries(1, 10, 1);
    written.push(Entry {
        index: 11,
        term: 2,
        data: EntryData::Noop,
    });
    written.push(Entry {
        index: 12,
        term: 2,
        data: EntryData::Config(snapshot(0, 0).meta.membership),
    });
    storage.append(&written[..5]).unwrap();
    storage.save_hard_state(&hs(1, Some(1), 3)).unwrap();
    storage.append(&written[5..]).unwrap();
    storage.sync().unwrap();
    assert_eq!(storage.last_index(), 12);
    drop(storage);

    let (storage, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, written);
    assert_eq!(recovered.hard_state, hs(1, Some(1), 3));
    assert_eq!(storage.last_index(), 12);
}

#[test]
fn hard_state_latest_wins_across_rotation_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open_with(dir.path(), tiny(200)).unwrap();
    storage.save_hard_state(&hs(1, Some(2), 0)).unwrap();
    storage.save_hard_state(&hs(2, Some(3), 0)).unwrap();
    storage.append(&entries(1, 40, 2)).unwrap();
    storage.save_hard_state(&hs(3, None, 20)).unwrap();
    storage.sync().unwrap();
    assert!(segment_files(dir.path()).len() > 3, "tiny segments rotate");
    // The snapshot covers every entry: every old segment, and every hard state record written
    // before the last rotation, is deleted.
    storage.save_snapshot(&snapshot(40, 2)).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(storage);

    let (storage, recovered) = Storage::open_with(dir.path(), tiny(200)).unwrap();
    assert_eq!(recovered.hard_state, hs(3, None, 20));
    assert_eq!(recovered.entries, vec![]);
    assert_eq!(recovered.snapshot, Some(snapshot(40, 2)));
    assert_eq!(storage.last_index(), 40);
}

#[test]
fn unsynced_hard_state_is_written_at_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.save_hard_state(&hs(5, Some(1), 0)).unwrap();
    storage.sync().unwrap();
    storage.save_hard_state(&hs(6, None, 0)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.hard_state, hs(6, None, 0));
}

#[test]
fn truncate_then_append_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open_with(dir.path(), tiny(300)).unwrap();
    storage.append(&entries(1, 10, 1)).unwrap();
    storage.sync().unwrap();
    storage.truncate_from(6).unwrap();
    assert_eq!(storage.last_index(), 5);
    storage.append(&entries(6, 8, 2)).unwrap();
    storage.sync().unwrap();
    drop(storage);

    let mut expected = entries(1, 5, 1);
    expected.extend(entries(6, 8, 2));
    let (mut storage, recovered) = Storage::open_with(dir.path(), tiny(300)).unwrap();
    assert_eq!(recovered.entries, expected);
    assert_eq!(storage.last_index(), 8);

    // Truncate again across a segment boundary, after a restart.
    storage.truncate_from(3).unwrap();
    storage.truncate_from(20).unwrap(); // past the end: no-op
    storage.append(&entries(3, 4, 3)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let mut expected = entries(1, 2, 1);
    expected.extend(entries(3, 4, 3));
    let (storage, recovered) = Storage::open_with(dir.path(), tiny(300)).unwrap();
    assert_eq!(recovered.entries, expected);
    assert_eq!(storage.last_index(), 4);
}

#[test]
fn tiny_segments_rotate_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open_with(dir.path(), tiny(128)).unwrap();
    for batch in 0..10 {
        storage
            .append(&entries(batch * 5 + 1, batch * 5 + 5, 1))
            .unwrap();
        storage.sync().unwrap();
    }
    drop(storage);
    let files = segment_files(dir.path());
    assert!(files.len() >= 10, "{} segments", files.len());
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("{:020}.seg", i + 1));
    }
    let (mut storage, recovered) = Storage::open_with(dir.path(), tiny(128)).unwrap();
    assert_eq!(recovered.entries, entries(1, 50, 1));
    storage.append(&entries(51, 52, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = Storage::open_with(dir.path(), tiny(128)).unwrap();
    assert_eq!(recovered.entries, entries(1, 52, 1));
}

#[test]
fn snapshot_compacts_and_reopen_returns_entries_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open_with(dir.path(), tiny(256)).unwrap();
    storage.append(&entries(1, 100, 1)).unwrap();
    storage.save_hard_state(&hs(1, Some(1), 60)).unwrap();
    storage.sync().unwrap();
    let before = segment_files(dir.path());
    storage.save_snapshot(&snapshot(60, 1)).unwrap();
    let after = segment_files(dir.path());
    assert!(
        after.len() < before.len(),
        "{} -> {}",
        before.len(),
        after.len()
    );
    assert_eq!(after, before[before.len() - after.len()..]);
    assert_eq!(storage.last_index(), 100);
    storage.append(&entries(101, 105, 2)).unwrap();
    storage.sync().unwrap();
    drop(storage);

    let (storage, recovered) = Storage::open_with(dir.path(), tiny(256)).unwrap();
    assert_eq!(recovered.snapshot, Some(snapshot(60, 1)));
    let mut expected = entries(61, 100, 1);
    expected.extend(entries(101, 105, 2));
    assert_eq!(recovered.entries, expected);
    assert_eq!(recovered.hard_state, hs(1, Some(1), 60));
    assert_eq!(storage.last_index(), 105);
}

#[test]
fn snapshot_ahead_of_log_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 5, 1)).unwrap();
    storage.save_hard_state(&hs(4, Some(2), 20)).unwrap();
    storage.save_snapshot(&snapshot(20, 3)).unwrap();
    assert_eq!(storage.last_index(), 20);
    assert_eq!(segment_files(dir.path()).len(), 1, "old segments deleted");
    drop(storage);

    let (mut storage, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, vec![]);
    assert_eq!(recovered.hard_state, hs(4, Some(2), 20));
    assert_eq!(storage.last_index(), 20);
    storage.append(&entries(21, 22, 4)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (storage, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, entries(21, 22, 4));
    assert_eq!(storage.last_index(), 22);
}

#[test]
fn crash_after_snapshot_rename_before_restart_recovers() {
    // Model a crash between the snapshot's rename and the log's restart: an old log that ends
    // below a newer snapshot.
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 5, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    snapshot_file::write(dir.path(), &snapshot(20, 3)).unwrap();

    let (mut storage, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, vec![]);
    assert_eq!(storage.last_index(), 20);
    storage.append(&entries(21, 23, 3)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, entries(21, 23, 3));
}

#[test]
fn torn_tail_at_every_offset_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 3, 1)).unwrap();
    storage.save_hard_state(&hs(1, Some(1), 2)).unwrap();
    storage.append(&entries(4, 4, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let path = segment_files(dir.path()).pop().unwrap();
    let full = fs::read(&path).unwrap();
    let &(last_off, last_len) = record_spans(&path).last().unwrap();
    assert_eq!(last_off + last_len, full.len() as u64);

    for cut in last_off..last_off + last_len {
        fs::write(&path, &full[..cut as usize]).unwrap();
        let (storage, recovered) =
            Storage::open(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(recovered.entries, entries(1, 3, 1), "cut at {cut}");
        assert_eq!(recovered.hard_state, hs(1, Some(1), 2), "cut at {cut}");
        assert_eq!(storage.last_index(), 3);
        drop(storage);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            last_off,
            "tail cut off the file"
        );
    }

    // A torn record followed by garbage is a torn tail too; so is a bad checksum at the end.
    let mut garbage = full[..(last_off + 5) as usize].to_vec();
    garbage.extend([0xAB; 37]);
    fs::write(&path, &garbage).unwrap();
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, entries(1, 3, 1));
    let mut flipped = full.clone();
    *flipped.last_mut().unwrap() ^= 1;
    fs::write(&path, &flipped).unwrap();
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, entries(1, 3, 1));
}

#[test]
fn flipped_byte_before_the_tail_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 5, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let path = segment_files(dir.path()).pop().unwrap();
    let spans = record_spans(&path);
    // Record 0 is the hard state header; record 2 is entry 2. Damage its payload, then its length.
    let (off, _) = spans[2];
    for damage in [off + 12, off + 1] {
        let original = fs::read(&path).unwrap();
        flip_byte(&path, damage);
        match Storage::open(dir.path()) {
            Err(Error::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert_eq!(offset, off);
            }
            other => panic!("damage at {damage}: expected Corrupt, got {other:?}"),
        }
        fs::write(&path, original).unwrap();
    }
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries, entries(1, 5, 1), "damage was repaired");
}

#[test]
fn flipped_byte_in_an_earlier_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open_with(dir.path(), tiny(100)).unwrap();
    storage.append(&entries(1, 20, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let files = segment_files(dir.path());
    assert!(files.len() > 2);
    // Damage the LAST record of a non-last segment: nothing follows it in its own file.
    let path = &files[1];
    let &(off, len) = record_spans(path).last().unwrap();
    flip_byte(path, off + len - 1);
    match Storage::open_with(dir.path(), tiny(100)) {
        Err(Error::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(&p, path);
            assert_eq!(offset, off);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn missing_segment_or_gap_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open_with(dir.path(), tiny(100)).unwrap();
    storage.append(&entries(1, 20, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let files = segment_files(dir.path());
    fs::remove_file(&files[2]).unwrap();
    assert!(matches!(
        Storage::open_with(dir.path(), tiny(100)),
        Err(Error::Corrupt { .. })
    ));

    // A log that starts after entry 1 with no snapshot to cover the gap.
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open_with(dir.path(), tiny(100)).unwrap();
    storage.append(&entries(1, 20, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    fs::remove_file(&segment_files(dir.path())[0]).unwrap();
    match Storage::open_with(dir.path(), tiny(100)) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn flipped_byte_in_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 5, 1)).unwrap();
    storage.save_snapshot(&snapshot(3, 1)).unwrap();
    drop(storage);
    let path = dir.path().join(snapshot_file::SNAPSHOT_FILE);
    let len = fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - 10);
    match Storage::open(dir.path()) {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn leftover_snapshot_tmp_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 3, 1)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let tmp = dir.path().join(snapshot_file::SNAPSHOT_TMP_FILE);
    fs::write(&tmp, b"half a snapshot").unwrap();
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert!(recovered.snapshot.is_none());
    assert_eq!(recovered.entries, entries(1, 3, 1));
    assert!(!tmp.exists());
}

/// A snapshot prepared off the writer (`prepare_snapshot`) is what the save puts in place (it
/// is renamed, not written again); a crash between the two leaves the old snapshot, and the
/// leftover prepared file is removed at start-up; a newer prepare removes an older one.
#[test]
fn a_prepared_snapshot_is_renamed_into_place_and_a_leftover_one_removed() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = |index: Index| dir.path().join(format!("snapshot.{index}.prepared"));
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 6, 1)).unwrap();
    storage.save_snapshot(&snapshot(2, 1)).unwrap();

    prepare_snapshot(dir.path(), &snapshot(4, 1)).unwrap();
    let prepared_bytes = fs::read(prepared(4)).unwrap();
    storage.save_snapshot(&snapshot(4, 1)).unwrap();
    assert!(!prepared(4).exists(), "the prepared file was renamed");
    let current = dir.path().join(snapshot_file::SNAPSHOT_FILE);
    assert_eq!(fs::read(&current).unwrap(), prepared_bytes);

    // A crash after a prepare, before its save: the old snapshot stands.
    prepare_snapshot(dir.path(), &snapshot(5, 1)).unwrap();
    prepare_snapshot(dir.path(), &snapshot(6, 1)).unwrap();
    assert!(
        !prepared(5).exists(),
        "a newer prepare removes an older one"
    );
    drop(storage);
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot.map(|s| s.meta.index), Some(4));
    assert_eq!(recovered.entries, entries(5, 6, 1));
    assert!(
        !prepared(6).exists(),
        "start-up removes a leftover prepared snapshot"
    );
}

#[test]
fn io_errors_keep_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    match Storage::open(&file.join("data")) {
        Err(Error::Io { source, path, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory, "{path:?}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
#[should_panic(expected = "append of entry 3 after last index 1")]
fn non_contiguous_append_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    storage.append(&entries(1, 1, 1)).unwrap();
    let _ = storage.append(&entries(3, 3, 1));
}

/// Measures `sync` after one 100-byte entry and after a batch of 64. Run with
/// `cargo test --release --lib storage::tests::sync_latency -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn sync_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path()).unwrap();
    let mut next = 1;
    let mut measure = |batch: u64, rounds: usize| {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let batch: Vec<Entry> = (next..next + batch)
                .map(|index| Entry {
                    index,
                    term: 1,
                    data: EntryData::Command(vec![0x5A; 100]),
                })
                .collect();
            next += batch.len() as u64;
            storage.append(&batch).unwrap();
            let start = Instant::now();
            storage.sync().unwrap();
            times.push(start.elapsed());
        }
        times.sort();
        times[times.len() / 2]
    };
    let one = measure(1, 200);
    let many = measure(64, 200);
    println!("median sync: 1 entry {one:?}, 64 entries {many:?}");
    drop(storage);
    let (_, recovered) = Storage::open(dir.path()).unwrap();
    assert_eq!(recovered.entries.len(), 200 + 200 * 64);
}
