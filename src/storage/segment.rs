//! The record format of the log segments and the scanner that reads a segment back, verifying
//! every checksum and telling a torn tail (a crash in the middle of a write) from corruption.
//!
//! A record is `u32 BE payload length | u32 BE crc32 of the payload | payload`, where the payload
//! is the MessagePack (named fields) of a [`Record`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::raft::{Entry, HardState, Index};

/// Bytes of the record header: payload length and checksum.
pub const RECORD_HEADER_BYTES: usize = 8;

/// The largest payload a record may carry. Larger lengths on disk are treated as damage; larger
/// writes are refused with [`Error::RecordTooLarge`]. Far above any frame the protocol accepts.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// The suffix of segment file names: `<sequence number, 20 digits>.seg`.
const SEGMENT_SUFFIX: &str = ".seg";

/// One record of the log stream, as read back from disk.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) enum Record {
    /// A log entry. Its index must follow the previous live entry.
    Entry(Entry),
    /// The hard state as of this point of the stream; the last one read wins.
    HardState(HardState),
    /// Every entry with an index at or above this one is discarded; the next entry is this index.
    Truncate(Index),
    /// The log restarts: every entry so far is discarded and the next entry has this index. Written
    /// after a snapshot that is ahead of the log, whose covered entries the snapshot replaces.
    Restart(Index),
}

/// A record to write, borrowing its contents. Serializes exactly like [`Record`] (same variant
/// names and shapes), so writing never clones an entry.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) enum RecordRef<'a> {
    /// See [`Record::Entry`].
    Entry(&'a Entry),
    /// See [`Record::HardState`].
    HardState(&'a HardState),
    /// See [`Record::Truncate`].
    Truncate(Index),
    /// See [`Record::Restart`].
    Restart(Index),
}

/// Appends the encoded record (header and payload) to `out`. Returns the payload length.
pub(crate) fn encode(record: RecordRef<'_>, out: &mut Vec<u8>) -> Result<usize, Error> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    rmp_serde::encode::write_named(out, &record)
        .expect("encoding a log record into memory cannot fail (a bug otherwise)");
    let len = out.len() - start - RECORD_HEADER_BYTES;
    if len > MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(Error::RecordTooLarge {
            len,
            max: MAX_RECORD_BYTES,
        });
    }
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_BYTES..]);
    let len32 = u32::try_from(len).expect("len <= MAX_RECORD_BYTES fits in u32");
    out[start..start + 4].copy_from_slice(&len32.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    Ok(len)
}

/// The file name of the segment with sequence number `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

/// The sequence number of a segment file name, or `None` if the name is not a segment's.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a scan of one segment found.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The valid records with their byte offsets, in file order.
    pub records: Vec<(u64, Record)>,
    /// The length of the valid prefix of the file. Shorter than the file if a torn tail was found.
    pub valid_len: u64,
    /// Why the tail was dropped, if it was.
    pub torn: Option<String>,
}

/// Why the bytes at an offset are not a valid record.
enum Bad {
    /// Incomplete or failing its checksum: a torn write if nothing valid follows.
    Damaged(String),
    /// The checksum matches but the payload does not decode: never a torn write.
    Undecodable(String),
}

/// Reads the record at `off`: `Ok(None)` at the end of the data, else the record and the offset
/// just after it.
fn parse_at(data: &[u8], off: usize) -> Result<Option<(Record, usize)>, Bad> {
    let rest = &data[off..];
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(Bad::Damaged(format!(
            "incomplete record header ({} of {RECORD_HEADER_BYTES} bytes)",
            rest.len()
        )));
    }
    let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD_BYTES {
        return Err(Bad::Damaged(format!("implausible record length {len}")));
    }
    let payload_end = RECORD_HEADER_BYTES + len;
    if rest.len() < payload_end {
        return Err(Bad::Damaged(format!(
            "record of {len} bytes extends past the end of the file ({} bytes left)",
            rest.len() - RECORD_HEADER_BYTES
        )));
    }
    let payload = &rest[RECORD_HEADER_BYTES..payload_end];
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(Bad::Damaged(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        )));
    }
    match rmp_serde::from_slice::<Record>(payload) {
        Ok(record) => Ok(Some((record, off + payload_end))),
        Err(e) => Err(Bad::Undecodable(format!(
            "checksum matches but the record does not decode: {e}"
        ))),
    }
}

/// The offset of the first valid record starting after `from`, if any.
fn find_valid_after(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len()).find(|&off| matches!(parse_at(data, off), Ok(Some(_))))
}

/// Scans a whole segment. In the last segment (`is_last`), a damaged record with no valid record
/// anywhere after it is a torn tail: the scan stops there and reports the valid length. Any other
/// damage is [`Error::Corrupt`] naming the file and the offset of the damaged record.
pub(crate) fn scan(path: &Path, data: &[u8], is_last: bool) -> Result<Scanned, Error> {
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        path: PathBuf::from(path),
        offset: offset as u64,
        reason,
    };
    let mut records = Vec::new();
    let mut off = 0;
    loop {
        match parse_at(data, off) {
            Ok(None) => {
                return Ok(Scanned {
                    records,
                    valid_len: off as u64,
                    torn: None,
                })
            }
            Ok(Some((record, next))) => {
                records.push((off as u64, record));
                off = next;
            }
            Err(Bad::Undecodable(reason)) => return Err(corrupt(off, reason)),
            Err(Bad::Damaged(reason)) => {
                if !is_last {
                    return Err(corrupt(
                        off,
                        format!("{reason} in a segment that is not the last"),
                    ));
                }
                if let Some(valid) = find_valid_after(data, off + 1) {
                    return Err(corrupt(
                        off,
                        format!("{reason}, followed by a valid record at offset {valid}"),
                    ));
                }
                return Ok(Scanned {
                    records,
                    valid_len: off as u64,
                    torn: Some(reason),
                });
            }
        }
    }
}
