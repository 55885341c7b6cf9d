//! A lock-guarded file kept in the replicated state: its bytes and the metadata `Files` lists.
//!
//! Everything the state machine does to a file goes through the methods here (append, cut,
//! read, size), and the lock space never touches the bytes directly, so that moving the bytes
//! out of memory (to the data directory) is a change to this file and its storage only. The
//! bytes are shared segments (`contents.rs`), so a copy of a file for a snapshot costs no copy
//! of its bytes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::contents::Contents;
use super::Fence;

/// One file. Every replica holds the same bytes and metadata after the same log prefix.
///
/// Snapshots encode it as a MessagePack array `[data, lock, fence]`. Snapshots written before
/// the metadata existed hold `[data]`: they restore with `lock` and `fence` nil until the next
/// write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct File {
    /// The bytes, written as MessagePack `bin` in snapshots.
    data: Contents,
    /// The lock named by the last write (`Append`, or a `Truncate` that cut bytes): the lock
    /// that guards the file by the clients' convention.
    #[serde(default)]
    lock: Option<String>,
    /// The fence of the last write.
    #[serde(default)]
    fence: Option<Fence>,
}

impl File {
    /// The size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.data.len()
    }

    /// The lock and fence of the last write, if known.
    pub(crate) fn last_write(&self) -> (Option<&str>, Option<Fence>) {
        (self.lock.as_deref(), self.fence)
    }

    /// Appends `data` under `lock`'s grant `fence`; returns (offset where it starts, new size).
    pub(crate) fn append(&mut self, data: &[u8], lock: &str, fence: Fence) -> (u64, u64) {
        let offset = self.size();
        self.data.extend(data);
        self.written(lock, fence);
        (offset, self.size())
    }

    /// Cuts the file to `size` bytes under `lock`'s grant `fence`; a size at or past the end
    /// changes nothing (not even the last write). Returns the size after.
    pub(crate) fn truncate(&mut self, size: u64, lock: &str, fence: Fence) -> u64 {
        if size < self.size() {
            self.data.truncate(size);
            self.written(lock, fence);
        }
        self.size()
    }

    /// Up to `len` bytes from `offset`; empty past the end.
    pub(crate) fn read(&self, offset: u64, len: u64) -> Cow<'_, [u8]> {
        self.data.read(offset, len)
    }

    fn written(&mut self, lock: &str, fence: Fence) {
        if self.lock.as_deref() != Some(lock) {
            self.lock = Some(lock.to_owned());
        }
        self.fence = Some(fence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads clamp to the file, including huge offsets and lengths that would overflow.
    #[test]
    fn read_clamps() {
        let mut file = File::default();
        assert_eq!(file.append(b"hello", "l", 3), (0, 5));
        assert_eq!(file.append(b" world", "l", 3), (5, 11));
        assert_eq!(&*file.read(0, 5), b"hello");
        assert_eq!(&*file.read(6, 100), b"world");
        assert_eq!(&*file.read(11, 1), b"");
        assert_eq!(&*file.read(u64::MAX, u64::MAX), b"");
        assert_eq!(&*file.read(3, u64::MAX), b"lo world");
    }

    /// A cut keeps the prefix and records the write; a size at or past the end is a no-op.
    #[test]
    fn truncate_cuts_only_shorter() {
        let mut file = File::default();
        file.append(b"hello world", "l", 3);
        assert_eq!(file.truncate(11, "m", 9), 11);
        assert_eq!(file.truncate(u64::MAX, "m", 9), 11);
        assert_eq!(file.last_write(), (Some("l"), Some(3)));
        assert_eq!(file.truncate(5, "m", 9), 5);
        assert_eq!(&*file.read(0, 100), b"hello");
        assert_eq!(file.last_write(), (Some("m"), Some(9)));
        assert_eq!(file.truncate(0, "m", 10), 0);
        assert_eq!(&*file.read(0, 100), b"");
    }

    /// A file from a snapshot written before the metadata existed restores with none.
    #[test]
    fn old_snapshots_restore_without_metadata() {
        #[derive(Serialize)]
        struct OldFile {
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
        }
        let old = rmp_serde::to_vec(&OldFile {
            data: b"abc".to_vec(),
        })
        .unwrap();
        let file: File = rmp_serde::from_slice(&old).expect("old files restore");
        assert_eq!(&*file.read(0, 10), b"abc");
        assert_eq!(file.last_write(), (None, None));
        let mut file = file;
        file.append(b"d", "l", 4);
        let again: File = rmp_serde::from_slice(&rmp_serde::to_vec(&file).unwrap()).unwrap();
        assert_eq!(again, file);
    }
}
