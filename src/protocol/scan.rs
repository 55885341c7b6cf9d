//! A MessagePack skimmer: finds where each entry of a body's top-level map starts and ends,
//! without decoding the values.
//!
//! The codec decodes bodies with serde; this module answers the two questions serde cannot:
//! is the `type` value really a str (serde's tag reader also takes bin), and which field of a
//! body that failed to decode is to blame (serde's error for an internally tagged enum does not
//! say). Skipping is iterative (a count of values still to skip, no recursion), so a deeply
//! nested body cannot overflow the stack, and every length is checked against the bytes left,
//! so a lying length cannot make it read out of bounds or allocate.

use std::ops::Range;

/// One entry of a map: the byte ranges of its encoded key and its encoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The key, marker included.
    pub key: Range<usize>,
    /// The value, marker included.
    pub value: Range<usize>,
}

/// The bytes a value's marker says follow it directly (payload and length fields), and how
/// many nested values it contains. `None` for the never-used marker 0xc1 or a short buffer.
fn head(body: &[u8], at: usize) -> Option<(usize, u64)> {
    let marker = *body.get(at)?;
    let uint = |from: usize, len: usize| -> Option<u64> {
        let bytes = body.get(from..from + len)?;
        Some(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    };
    let sized = |len_bytes: usize, extra: usize| -> Option<(usize, u64)> {
        let len = usize::try_from(uint(at + 1, len_bytes)?).ok()?;
        Some((1 + len_bytes + extra + len, 0))
    };
    Some(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0),
        0x80..=0x8f => (1, 2 * u64::from(marker & 0x0f)),
        0x90..=0x9f => (1, u64::from(marker & 0x0f)),
        0xa0..=0xbf => (1 + usize::from(marker & 0x1f), 0),
        0xc1 => return None,
        0xc4 | 0xd9 => sized(1, 0)?,
        0xc5 | 0xda => sized(2, 0)?,
        0xc6 | 0xdb => sized(4, 0)?,
        0xc7 => sized(1, 1)?,
        0xc8 => sized(2, 1)?,
        0xc9 => sized(4, 1)?,
        0xca | 0xce | 0xd2 => (5, 0),
        0xcb | 0xcf | 0xd3 => (9, 0),
        0xcc | 0xd0 => (2, 0),
        0xcd | 0xd1 => (3, 0),
        0xd4 => (3, 0),
        0xd5 => (4, 0),
        0xd6 => (6, 0),
        0xd7 => (10, 0),
        0xd8 => (18, 0),
        0xdc => (3, uint(at + 1, 2)?),
        0xdd => (5, uint(at + 1, 4)?),
        0xde => (3, 2 * uint(at + 1, 2)?),
        0xdf => (5, 2 * uint(at + 1, 4)?),
    })
}

/// The end of the value starting at `at`, or `None` if the bytes end first or are invalid.
pub(crate) fn skip(body: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    let mut pending: u64 = 1;
    while pending > 0 {
        let (len, children) = head(body, pos)?;
        pos = pos.checked_add(len)?;
        if pos > body.len() {
            return None;
        }
        // Every nested value takes at least one byte: more than the bytes left is a lie.
        pending = pending - 1 + children;
        if pending > (body.len() - pos) as u64 {
            return None;
        }
    }
    Some(pos)
}

/// The entries of the map that `body` starts with (in wire order), or `None` if the body does
/// not start with a complete map. Bytes after the map are not looked at.
pub(crate) fn map_entries(body: &[u8]) -> Option<Vec<Entry>> {
    let (header, children) = match *body.first()? {
        b @ 0x80..=0x8f => (1, u64::from(b & 0x0f)),
        0xde | 0xdf => {
            let (len, children) = head(body, 0)?;
            (len, children / 2)
        }
        _ => return None,
    };
    if children > (body.len() as u64) / 2 {
        return None;
    }
    let mut entries = Vec::with_capacity(children as usize);
    let mut pos = header;
    for _ in 0..children {
        let key_end = skip(body, pos)?;
        let value_end = skip(body, key_end)?;
        entries.push(Entry {
            key: pos..key_end,
            value: key_end..value_end,
        });
        pos = value_end;
    }
    Some(entries)
}

/// The UTF-8 text of an encoded MessagePack str, or `None` if `encoded` is not a str.
pub(crate) fn as_str(encoded: &[u8]) -> Option<&str> {
    let start = match *encoded.first()? {
        0xa0..=0xbf => 1,
        0xd9 => 2,
        0xda => 3,
        0xdb => 5,
        _ => return None,
    };
    std::str::from_utf8(encoded.get(start..)?).ok()
}

/// The text of an encoded key for messages: a str as itself, anything else as a placeholder.
pub(crate) fn key_name(encoded: &[u8]) -> String {
    match as_str(encoded) {
        Some(name) => name.to_owned(),
        None => format!(
            "(non-str key, marker {:#04x})",
            encoded.first().copied().unwrap_or(0)
        ),
    }
}

/// True if the value of the map's `type` key is a MessagePack str (or there is no such key,
/// which the decoder reports itself). Clients put `type` first, so that case is a few byte
/// comparisons; any other layout pays for one skim of the map.
pub(crate) fn type_is_str(body: &[u8]) -> bool {
    const TYPE_KEY: &[u8] = b"\xa4type";
    if matches!(body.first(), Some(0x81..=0x8f))
        && body.get(1..1 + TYPE_KEY.len()) == Some(TYPE_KEY)
    {
        return matches!(
            body.get(1 + TYPE_KEY.len()),
            Some(0xa0..=0xbf | 0xd9 | 0xda | 0xdb)
        );
    }
    let Some(entries) = map_entries(body) else {
        return true;
    };
    entries
        .iter()
        .filter(|e| is_type_key(&body[e.key.clone()]))
        .all(|e| as_str(&body[e.value.clone()]).is_some())
}

/// True if `encoded` is the key `type`, as a str or (which serde also takes) as bin.
pub(crate) fn is_type_key(encoded: &[u8]) -> bool {
    as_str(encoded) == Some("type") || encoded == b"\xc4\x04type"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Sample<'a> {
        r#type: &'a str,
        id: u64,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
        nested: Vec<Vec<u64>>,
        float: f64,
        neg: i64,
    }

    /// Every entry of an encoded map is found, its key and value spans decode on their own.
    #[test]
    fn entries_of_an_encoded_map() {
        let body = rmp_serde::to_vec_named(&Sample {
            r#type: "Append",
            id: u64::MAX,
            data: &[7; 300],
            nested: vec![vec![1, 2], vec![], vec![70_000]],
            float: 1.5,
            neg: -40_000,
        })
        .unwrap();
        let entries = map_entries(&body).expect("a map");
        let keys: Vec<_> = entries
            .iter()
            .map(|e| key_name(&body[e.key.clone()]))
            .collect();
        assert_eq!(keys, ["type", "id", "data", "nested", "float", "neg"]);
        assert_eq!(entries.last().unwrap().value.end, body.len());
        assert_eq!(as_str(&body[entries[0].value.clone()]), Some("Append"));
        assert!(type_is_str(&body));
    }

    /// A `type` given as bin is told apart from a str, first or elsewhere in the map.
    #[test]
    fn type_as_bin_is_not_a_str() {
        let first = b"\x82\xa4type\xc4\x06Status\xa2id\x01";
        assert!(!type_is_str(first));
        let later = b"\x82\xa2id\x01\xa4type\xc4\x06Status";
        assert!(!type_is_str(later));
        let later_str = b"\x82\xa2id\x01\xa4type\xa6Status";
        assert!(type_is_str(later_str));
        let bin_key = b"\x82\xa2id\x01\xc4\x04type\xc4\x06Status";
        assert!(!type_is_str(bin_key));
    }

    /// Truncated bodies, lying lengths and the never-used marker end the skim, never panic.
    #[test]
    fn lies_and_truncations_are_refused() {
        assert_eq!(skip(&[0xc1], 0), None);
        assert_eq!(skip(&[0xdd, 0xff, 0xff, 0xff, 0xff], 0), None);
        assert_eq!(skip(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0], 0), None);
        assert_eq!(map_entries(&[0xdf, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(map_entries(&[0x81, 0xa1, b'a']), None);
        assert_eq!(map_entries(&[0x90]), None);
        // A deep nesting costs a count, not the stack.
        let deep: Vec<u8> = std::iter::repeat(0x91)
            .take(100_000)
            .chain([0xc0])
            .collect();
        assert_eq!(skip(&deep, 0), Some(deep.len()));
    }

    /// Arbitrary bytes never panic the skimmer.
    #[test]
    fn garbage_never_panics() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..64))| {
            let _ = map_entries(&bytes);
            let _ = type_is_str(&bytes);
            if let Some(end) = skip(&bytes, 0) {
                prop_assert!(end <= bytes.len());
            }
        });
    }
}
