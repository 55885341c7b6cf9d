//! A lock-guarded, append-only file kept in the replicated state.

use serde::{Deserialize, Serialize};

/// The contents of one file. Every replica holds the same bytes after the same log prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct File {
    /// The bytes, written as MessagePack `bin` in snapshots.
    #[serde(with = "serde_bytes")]
    pub(crate) data: Vec<u8>,
}

impl File {
    /// The size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Appends `data`; returns (offset where it starts, new size).
    pub(crate) fn append(&mut self, data: &[u8]) -> (u64, u64) {
        let offset = self.size();
        self.data.extend_from_slice(data);
        (offset, self.size())
    }

    /// Up to `len` bytes from `offset`; empty past the end.
    pub(crate) fn read(&self, offset: u64, len: u64) -> &[u8] {
        let size = self.size();
        let start = offset.min(size);
        let end = start.saturating_add(len).min(size);
        // Both bounds are at most the in-memory length, so they fit in usize.
        &self.data[start as usize..end as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads clamp to the file, including huge offsets and lengths that would overflow.
    #[test]
    fn read_clamps() {
        let mut file = File::default();
        assert_eq!(file.append(b"hello"), (0, 5));
        assert_eq!(file.append(b" world"), (5, 11));
        assert_eq!(file.read(0, 5), b"hello");
        assert_eq!(file.read(6, 100), b"world");
        assert_eq!(file.read(11, 1), b"");
        assert_eq!(file.read(u64::MAX, u64::MAX), b"");
        assert_eq!(file.read(3, u64::MAX), b"lo world");
    }
}
