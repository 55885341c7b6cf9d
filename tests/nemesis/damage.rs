//! Damage to a stopped node's last log segment (`<data>/log/<20 digits>.seg`), in the ways disks
//! and operators lose data. A record is `u32 BE payload length | u32 BE crc32 | payload`
//! (src/storage/segment.rs); the damage is placed relative to the record boundaries.

use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::Rng;

use crate::history::FaultKind;

/// Bytes of a record header.
const HEADER: usize = 8;

/// The last segment file of the data directory `data`, if any.
pub fn last_segment(data: &Path) -> Option<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop()
}

/// The start offsets of the whole records in `bytes` (stops at the first incomplete one).
pub fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if at + HEADER + len > bytes.len() {
            break;
        }
        starts.push(at);
        at += HEADER + len;
    }
    starts
}

/// Applies `kind` to `bytes` (a segment's contents); returns the new contents and a
/// description. Records are never cut below the first two (the segment's opening hard state).
pub fn damage(kind: FaultKind, bytes: &[u8], rng: &mut SmallRng) -> (Vec<u8>, String) {
    let starts = record_starts(bytes);
    let n = starts.len();
    let mut out = bytes.to_vec();
    let keep_min = 2.min(n);
    match kind {
        FaultKind::TruncateAtRecord => {
            let cut = rng.gen_range(1..=8).min(n - keep_min);
            let at = if cut == 0 {
                bytes.len()
            } else {
                starts[n - cut]
            };
            out.truncate(at);
            (
                out,
                format!("cut the last {cut} of {n} records at byte {at}"),
            )
        }
        FaultKind::TruncateMidRecord => {
            if n <= keep_min {
                return (out, "segment too short to cut".into());
            }
            let r = rng.gen_range(keep_min.max(n.saturating_sub(6))..n);
            let end = starts.get(r + 1).copied().unwrap_or(bytes.len());
            let at = rng.gen_range(starts[r] + 1..end);
            out.truncate(at);
            (out, format!("cut inside record {r} of {n}, at byte {at}"))
        }
        FaultKind::ZeroTail => {
            let len = rng.gen_range(1..=512).min(bytes.len().saturating_sub(64));
            let from = bytes.len() - len;
            out[from..].iter_mut().for_each(|b| *b = 0);
            (out, format!("zeroed the last {len} bytes"))
        }
        FaultKind::FlipBit => {
            if n < 3 {
                return (out, "segment too short to flip".into());
            }
            let r = rng.gen_range(1..n - 1);
            let end = starts[r + 1];
            let at = rng.gen_range(starts[r] + HEADER..end);
            let bit = rng.gen_range(0..8);
            out[at] ^= 1 << bit;
            (
                out,
                format!("flipped bit {bit} of byte {at} (record {r} of {n})"),
            )
        }
        FaultKind::AppendGarbage => {
            let len = rng.gen_range(1..=256);
            out.extend((0..len).map(|_| rng.gen::<u8>()));
            (out, format!("appended {len} random bytes"))
        }
        other => panic!("{other:?} is not a disk fault"),
    }
}
