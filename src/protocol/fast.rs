//! A fast path for the hot client requests: reads the MessagePack map directly from the bytes.
//!
//! serde decodes an internally tagged enum (`#[serde(tag = "type")]`) by first buffering the
//! whole map into its private `Content` tree (allocating a `String` per key and value), then
//! decoding the variant's fields from that buffer. For a small request such as `Acquire` that
//! detour costs most of the decode. Our encoder (serde, so the client library) always writes
//! `type` first and then the fields in declaration order; this module reads exactly that shape
//! in one pass over the bytes and builds the [`Request`] directly.
//!
//! The fast path only ever *accepts*: it returns `Some` when the body is precisely the
//! canonical shape (a fixmap with `type` first, every field under its fixstr key in
//! declaration order, each value in an encoding the general decoder accepts, nothing trailing)
//! and `None` for anything else, however slightly different: another field order, an unknown
//! or missing field, a signed integer, a bin string, an absent optional field. The caller then
//! runs the general decoder, so the documented protocol (fields in any order) and every error
//! it gives are unchanged; a property test in `codec.rs` checks that the two agree.

use super::message::{LockMode, Request};

/// A cursor over a body, reading the few MessagePack shapes the canonical requests use.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// `len` bytes from the cursor, advancing past them.
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let bytes = self.body.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.body.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// A big-endian unsigned integer of `len` bytes (1, 2, 4 or 8).
    fn be(&mut self, len: usize) -> Option<u64> {
        Some(
            self.take(len)?
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b)),
        )
    }

    /// The key `name`, written as a fixstr (as serde writes every field name).
    fn key(&mut self, name: &str) -> Option<()> {
        let len = name.len();
        if len >= 32 || self.byte()? != 0xa0 | len as u8 {
            return None;
        }
        (self.take(len)? == name.as_bytes()).then_some(())
    }

    /// An unsigned integer (positive fixint or uint 8/16/32/64).
    fn u64(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// The value of `key`: an unsigned integer.
    fn u64_field(&mut self, key: &str) -> Option<u64> {
        self.key(key)?;
        self.u64()
    }

    /// A nil (`None`) or an unsigned integer.
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.body.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Some(None);
        }
        self.u64().map(Some)
    }

    /// The bytes of a str (fixstr or str 8/16/32), not yet checked as UTF-8.
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => usize::try_from(self.be(4)?).ok()?,
            _ => return None,
        };
        self.take(len)
    }

    /// A str holding valid UTF-8, as an owned `String`.
    fn string(&mut self) -> Option<String> {
        let bytes = self.str_bytes()?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    /// The value of `key`: a str.
    fn string_field(&mut self, key: &str) -> Option<String> {
        self.key(key)?;
        self.string()
    }

    /// A nil (`None`) or a str.
    fn opt_string(&mut self) -> Option<Option<String>> {
        if self.body.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Some(None);
        }
        self.string().map(Some)
    }

    /// A bool (`false` / `true` markers).
    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// A bin 8/16/32, copied out.
    fn bin(&mut self) -> Option<Vec<u8>> {
        let len = match self.byte()? {
            0xc4 => self.be(1)? as usize,
            0xc5 => self.be(2)? as usize,
            0xc6 => usize::try_from(self.be(4)?).ok()?,
            _ => return None,
        };
        self.take(len).map(<[u8]>::to_vec)
    }

    /// A lock mode as its wire string.
    fn mode(&mut self) -> Option<LockMode> {
        match self.str_bytes()? {
            b"exclusive" => Some(LockMode::Exclusive),
            b"shared" => Some(LockMode::Shared),
            _ => None,
        }
    }

    /// True once every byte of the body has been read.
    fn at_end(&self) -> bool {
        self.pos == self.body.len()
    }
}

/// The request in `body` if it has exactly the canonical shape our encoder writes, else `None`
/// (the caller then decodes it with the general decoder, which also gives every error).
pub(crate) fn decode_request(body: &[u8]) -> Option<Request> {
    let mut r = Reader { body, pos: 0 };
    let entries = match r.byte()? {
        b @ 0x81..=0x8f => b & 0x0f,
        _ => return None,
    };
    r.key("type")?;
    let type_name = r.str_bytes()?;
    // Each arm reads the fields in declaration order: `entries` must match exactly.
    let request = match (type_name, entries) {
        (b"Acquire", 9) => Request::Acquire {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
            lock: r.string_field("lock")?,
            mode: {
                r.key("mode")?;
                r.mode()?
            },
            wait_ms: {
                r.key("wait_ms")?;
                r.opt_u64()?
            },
            hold_ms: {
                r.key("hold_ms")?;
                r.opt_u64()?
            },
        },
        (b"Release", 6) => Request::Release {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
            lock: r.string_field("lock")?,
        },
        (b"KeepAlive", 4) => Request::KeepAlive {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
        },
        (b"Append", 9) => Request::Append {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
            file: r.string_field("file")?,
            lock: r.string_field("lock")?,
            fence: r.u64_field("fence")?,
            data: {
                r.key("data")?;
                r.bin()?
            },
        },
        (b"CloseSession", 5) => Request::CloseSession {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
        },
        (b"OpenSession", 4 | 5) => Request::OpenSession {
            id: r.u64_field("id")?,
            nonce: r.u64_field("nonce")?,
            ttl_ms: r.u64_field("ttl_ms")?,
            // Written only when present (`skip_serializing_if`).
            owner: if entries == 5 {
                Some(r.string_field("owner")?)
            } else {
                None
            },
        },
        (b"Cancel", 7) => Request::Cancel {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
            lock: r.string_field("lock")?,
            acquire_seq: r.u64_field("acquire_seq")?,
        },
        (b"Extend", 8) => Request::Extend {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
            lock: r.string_field("lock")?,
            fence: r.u64_field("fence")?,
            hold_ms: r.u64_field("hold_ms")?,
        },
        (b"Truncate", 9) => Request::Truncate {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
            file: r.string_field("file")?,
            lock: r.string_field("lock")?,
            fence: r.u64_field("fence")?,
            size: r.u64_field("size")?,
        },
        (b"Delete", 8) => Request::Delete {
            id: r.u64_field("id")?,
            session: r.u64_field("session")?,
            token: r.u64_field("token")?,
            seq: r.u64_field("seq")?,
            file: r.string_field("file")?,
            lock: r.string_field("lock")?,
            fence: r.u64_field("fence")?,
        },
        (b"Read", 6) => Request::Read {
            id: r.u64_field("id")?,
            file: r.string_field("file")?,
            offset: r.u64_field("offset")?,
            len: r.u64_field("len")?,
            stale: {
                r.key("stale")?;
                r.bool()?
            },
        },
        (b"Locks", 4) => Request::Locks {
            id: r.u64_field("id")?,
            prefix: {
                r.key("prefix")?;
                r.opt_string()?
            },
            stale: {
                r.key("stale")?;
                r.bool()?
            },
        },
        (b"Status", 2) => Request::Status {
            id: r.u64_field("id")?,
        },
        _ => return None,
    };
    r.at_end().then_some(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::decode_general;

    /// Our encoder writes `type` first; the fast path reads it and agrees with the general
    /// decoder, and the same fields in another order still decode (through the general path).
    #[test]
    fn canonical_bodies_take_the_fast_path_and_other_orders_still_decode() {
        let acquire = Request::Acquire {
            id: 4,
            session: 3,
            token: 400,
            seq: 70_000,
            lock: "ünïcode".into(),
            mode: LockMode::Shared,
            wait_ms: Some(0),
            hold_ms: None,
        };
        let body = rmp_serde::to_vec_named(&acquire).unwrap();
        assert_eq!(&body[..6], b"\x89\xa4type");
        assert_eq!(decode_request(&body), Some(acquire.clone()));
        assert_eq!(decode_general::<Request>(&body), Ok(acquire.clone()));
        let reordered = rmp_serde::to_vec_named(&serde_json::json!({
            "lock": "ünïcode", "id": 4, "session": 3, "token": 400, "seq": 70_000,
            "mode": "shared", "wait_ms": 0, "hold_ms": null, "type": "Acquire",
        }))
        .unwrap();
        assert_eq!(decode_request(&reordered), None);
        assert_eq!(
            crate::protocol::decode_body::<Request>(&reordered),
            Ok(acquire)
        );
        for cut in 0..body.len() {
            assert_eq!(decode_request(&body[..cut]), None);
        }
    }

    /// Equivalence: on canonical bodies and on mutations of them (a byte flipped, the body
    /// cut short), the fast path plus fallback gives exactly the general decoder's result.
    #[test]
    fn fast_path_plus_fallback_equals_the_general_decoder() {
        use proptest::prelude::*;
        let release = Request::Release {
            id: 6,
            session: 3,
            token: 4,
            seq: 12,
            lock: "a".into(),
        };
        let append = Request::Append {
            id: 7,
            session: 3,
            token: 4,
            seq: 300,
            file: "f".into(),
            lock: "a".into(),
            fence: 1 << 40,
            data: vec![1, 2, 3],
        };
        let bodies: Vec<Vec<u8>> = [release, append]
            .iter()
            .map(|r| rmp_serde::to_vec_named(r).unwrap())
            .collect();
        proptest!(|(which in 0..2usize, at in any::<prop::sample::Index>(),
                    byte in any::<u8>(), cut in any::<bool>())| {
            let mut body = bodies[which].clone();
            let i = at.index(body.len());
            if cut { body.truncate(i); } else { body[i] = byte; }
            prop_assert_eq!(
                crate::protocol::decode_body::<Request>(&body),
                decode_general::<Request>(&body)
            );
        });
    }
}
