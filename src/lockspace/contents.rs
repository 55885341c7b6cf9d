//! A file's bytes as a list of shared, immutable segments, so that copying a file is O(segments)
//! reference-count bumps rather than a copy of its bytes.
//!
//! Why: a snapshot is built off the driver (`LockSpace::capture`, then serialization on a
//! blocking thread). The capture runs on the driver, so it must cost O(metadata), not O(bytes):
//! the captured copy shares every segment with the live file, and later writes never change a
//! shared segment. An append adds a segment, or, when the last one is small, replaces it with a
//! longer copy (so a stream of tiny appends coalesces into segments of [`COALESCE`] bytes and the
//! segment count stays near `size / COALESCE`, not one per append; the small last segment grows
//! in place while it is not shared, and is copied once when a capture shares it); a truncate slices the
//! segment it cuts through and drops those after it.
//!
//! On the wire (snapshots) the contents are one MessagePack `bin`, exactly as a plain byte
//! vector was, so snapshots are byte-identical to those of a contiguous buffer.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A last segment shorter than this is extended by copying on the next append.
pub(crate) const COALESCE: usize = 64 * 1024;

/// The bytes of one file, in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Contents {
    /// Non-empty segments; their concatenation is the file.
    segments: Vec<Bytes>,
    /// The sum of the segments' lengths.
    len: u64,
}

impl Contents {
    /// The length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Adds `data` at the end.
    pub(crate) fn extend(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match self.segments.last_mut() {
            Some(last) if last.len() < COALESCE => {
                // Extended in place while no capture shares it; copied once when one does.
                let mut joined = match std::mem::take(last).try_into_mut() {
                    Ok(unique) => unique,
                    Err(shared) => {
                        let mut copy = BytesMut::with_capacity(shared.len() + data.len());
                        copy.extend_from_slice(&shared);
                        copy
                    }
                };
                joined.extend_from_slice(data);
                *last = joined.freeze();
            }
            _ => self.segments.push(Bytes::copy_from_slice(data)),
        }
        self.len += data.len() as u64;
    }

    /// Cuts the contents to `size` bytes; a size at or past the end changes nothing.
    pub(crate) fn truncate(&mut self, size: u64) {
        if size >= self.len {
            return;
        }
        let mut start = 0u64;
        let mut keep = 0;
        for segment in &mut self.segments {
            let end = start + segment.len() as u64;
            if end >= size {
                // `size - start` is below this segment's length, so it fits in usize.
                let cut = (size - start) as usize;
                if cut > 0 {
                    *segment = segment.slice(..cut);
                    keep += 1;
                }
                break;
            }
            keep += 1;
            start = end;
        }
        self.segments.truncate(keep);
        self.len = size;
    }

    /// Up to `len` bytes from `offset` (clamped to the contents): borrowed when they lie in one
    /// segment, copied when they span several.
    pub(crate) fn read(&self, offset: u64, len: u64) -> Cow<'_, [u8]> {
        let start = offset.min(self.len);
        let end = start.saturating_add(len).min(self.len);
        if start == end {
            return Cow::Borrowed(&[]);
        }
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0u64;
        for segment in &self.segments {
            let seg_end = at + segment.len() as u64;
            if seg_end > start && at < end {
                // Both bounds lie inside this segment, so they fit in usize.
                let from = (start.max(at) - at) as usize;
                let to = (end.min(seg_end) - at) as usize;
                let piece = &segment[from..to];
                if out.is_none() && seg_end >= end {
                    return Cow::Borrowed(piece);
                }
                out.get_or_insert_with(|| Vec::with_capacity((end - start) as usize))
                    .extend_from_slice(piece);
            }
            if seg_end >= end {
                break;
            }
            at = seg_end;
        }
        Cow::Owned(out.unwrap_or_default())
    }

    /// How many segments hold the bytes (for tests of the coalescing).
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

impl PartialEq for Contents {
    /// Equal bytes, however they are segmented.
    fn eq(&self, other: &Contents) -> bool {
        self.len == other.len && self.read(0, self.len) == other.read(0, other.len)
    }
}

impl Eq for Contents {}

impl Serialize for Contents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.read(0, self.len))
    }
}

impl<'de> Deserialize<'de> for Contents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Contents, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec();
        let len = bytes.len() as u64;
        let segments = if bytes.is_empty() {
            Vec::new()
        } else {
            vec![Bytes::from(bytes)]
        };
        Ok(Contents { segments, len })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What a test does to both the segmented contents and a plain vector.
    #[derive(Clone, Debug)]
    enum Step {
        Extend(Vec<u8>),
        Truncate(u64),
        Capture,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec(any::<u8>(), COALESCE - 20..COALESCE + 20),
            ]
            .prop_map(Step::Extend),
            1 => (0u64..200_000).prop_map(Step::Truncate),
            1 => Just(Step::Capture),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The segmented contents behave exactly like one byte vector (reads at any range,
        /// truncates, the wire form), and a captured copy keeps its bytes whatever happens to
        /// the original afterwards.
        #[test]
        fn behaves_like_a_vector(steps in proptest::collection::vec(step(), 1..30),
                                 reads in proptest::collection::vec((0u64..200_000, 0u64..200_000), 8)) {
            let mut contents = Contents::default();
            let mut model: Vec<u8> = Vec::new();
            let mut captures: Vec<(Contents, Vec<u8>)> = Vec::new();
            for step in steps {
                match step {
                    Step::Extend(data) => {
                        contents.extend(&data);
                        model.extend_from_slice(&data);
                    }
                    Step::Truncate(size) => {
                        contents.truncate(size);
                        model.truncate(size.min(model.len() as u64) as usize);
                    }
                    Step::Capture => captures.push((contents.clone(), model.clone())),
                }
                prop_assert_eq!(contents.len(), model.len() as u64);
            }
            for (offset, len) in reads {
                let start = (offset as usize).min(model.len());
                let end = start.saturating_add(len as usize).min(model.len());
                prop_assert_eq!(&*contents.read(offset, len), &model[start..end]);
            }
            for (captured, bytes) in &captures {
                prop_assert_eq!(&*captured.read(0, u64::MAX), bytes.as_slice());
            }
            let wire = rmp_serde::to_vec(&contents).unwrap();
            prop_assert_eq!(&wire, &rmp_serde::to_vec(&serde_bytes::Bytes::new(&model)).unwrap());
            let back: Contents = rmp_serde::from_slice(&wire).unwrap();
            prop_assert_eq!(back, contents);
        }
    }

    /// Tiny appends coalesce: a megabyte of 100-byte appends makes about 16 segments, not
    /// 10,000.
    #[test]
    fn tiny_appends_coalesce() {
        let mut contents = Contents::default();
        for _ in 0..10_000 {
            contents.extend(&[7u8; 100]);
        }
        assert_eq!(contents.len(), 1_000_000);
        assert!(contents.segment_count() <= 1_000_000 / COALESCE + 1);
    }
}
