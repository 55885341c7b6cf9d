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

    /// Every client request type, with generated fields: those the fast path covers and
    /// several it does not (`Hello`, `Files`, `Sessions`, `RevokeSession`, membership, ...).
    fn any_request() -> impl proptest::strategy::Strategy<Value = Request> {
        use crate::protocol::message::Role;
        use proptest::prelude::*;
        let name = || "[a-zé/._-]{0,40}";
        let mode = || prop_oneof![Just(LockMode::Exclusive), Just(LockMode::Shared)];
        let id = || any::<u64>();
        prop_oneof![
            (any::<u32>(), any::<bool>(), proptest::option::of(name())).prop_map(
                |(version, peer, token)| Request::Hello {
                    version,
                    role: if peer { Role::Peer } else { Role::Client },
                    token,
                }
            ),
            (id(), id(), id(), proptest::option::of(name())).prop_map(
                |(id, nonce, ttl_ms, owner)| Request::OpenSession {
                    id,
                    nonce,
                    ttl_ms,
                    owner
                }
            ),
            (id(), id(), id()).prop_map(|(id, session, token)| Request::KeepAlive {
                id,
                session,
                token
            }),
            (id(), id(), id(), id()).prop_map(|(id, session, token, seq)| {
                Request::CloseSession {
                    id,
                    session,
                    token,
                    seq,
                }
            }),
            (
                (id(), id(), id(), id()),
                name(),
                mode(),
                proptest::option::of(id()),
                proptest::option::of(id())
            )
                .prop_map(
                    |((id, session, token, seq), lock, mode, wait_ms, hold_ms)| {
                        Request::Acquire {
                            id,
                            session,
                            token,
                            seq,
                            lock,
                            mode,
                            wait_ms,
                            hold_ms,
                        }
                    }
                ),
            ((id(), id(), id(), id()), name()).prop_map(|((id, session, token, seq), lock)| {
                Request::Release {
                    id,
                    session,
                    token,
                    seq,
                    lock,
                }
            }),
            ((id(), id(), id(), id()), name(), id()).prop_map(
                |((id, session, token, seq), lock, acquire_seq)| Request::Cancel {
                    id,
                    session,
                    token,
                    seq,
                    lock,
                    acquire_seq,
                }
            ),
            ((id(), id(), id(), id()), name(), id(), id()).prop_map(
                |((id, session, token, seq), lock, fence, hold_ms)| Request::Extend {
                    id,
                    session,
                    token,
                    seq,
                    lock,
                    fence,
                    hold_ms,
                }
            ),
            (
                (id(), id(), id(), id()),
                name(),
                name(),
                id(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|((id, session, token, seq), file, lock, fence, data)| {
                    Request::Append {
                        id,
                        session,
                        token,
                        seq,
                        file,
                        lock,
                        fence,
                        data,
                    }
                }),
            ((id(), id(), id(), id()), name(), name(), id(), id()).prop_map(
                |((id, session, token, seq), file, lock, fence, size)| Request::Truncate {
                    id,
                    session,
                    token,
                    seq,
                    file,
                    lock,
                    fence,
                    size,
                }
            ),
            ((id(), id(), id(), id()), name(), name(), id()).prop_map(
                |((id, session, token, seq), file, lock, fence)| Request::Delete {
                    id,
                    session,
                    token,
                    seq,
                    file,
                    lock,
                    fence,
                }
            ),
            (id(), proptest::option::of(name()), any::<bool>())
                .prop_map(|(id, prefix, stale)| Request::Files { id, prefix, stale }),
            (id(), name(), id(), id(), any::<bool>()).prop_map(|(id, file, offset, len, stale)| {
                Request::Read {
                    id,
                    file,
                    offset,
                    len,
                    stale,
                }
            }),
            (id(), proptest::option::of(name()), any::<bool>())
                .prop_map(|(id, prefix, stale)| Request::Locks { id, prefix, stale }),
            id().prop_map(|id| Request::Status { id }),
            id().prop_map(|id| Request::Sessions { id }),
            (id(), id(), any::<bool>()).prop_map(|(id, session_id, force)| {
                Request::RevokeSession {
                    id,
                    session_id,
                    force,
                }
            }),
            (id(), id(), name()).prop_map(|(id, node_id, addr)| Request::AddMember {
                id,
                node_id,
                addr
            }),
            (id(), id()).prop_map(|(id, node_id)| Request::RemoveMember { id, node_id }),
            (id(), proptest::option::of(id()))
                .prop_map(|(id, node_id)| Request::TransferLeader { id, node_id }),
            id().prop_map(|id| Request::SnapshotSave { id }),
        ]
    }

    /// The body our client library sends for `request`: encoded by the client's own codec,
    /// with the frame header stripped.
    fn client_body(request: &Request) -> Vec<u8> {
        use tokio_util::codec::Encoder;
        let mut codec = crate::protocol::codec::ClientCodec::default();
        let mut frame = bytes::BytesMut::new();
        codec.encode(request.clone(), &mut frame).unwrap();
        frame[crate::protocol::codec::HEADER_LEN..].to_vec()
    }

    /// A map (fixmap or map 16) of the given encoded entries.
    fn map_of(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut map = Vec::new();
        match u8::try_from(entries.len()) {
            Ok(n) if n < 16 => map.push(0x80 | n),
            _ => {
                map.push(0xde);
                map.extend_from_slice(&(entries.len() as u16).to_be_bytes());
            }
        }
        for entry in entries {
            map.extend_from_slice(entry);
        }
        map
    }

    /// Pin: the client library writes `type` as the first key for every request type (so the
    /// fast path is what our clients hit), and for every type the fast path covers it is taken.
    #[test]
    fn the_client_encoder_writes_type_first_for_every_request_type() {
        use proptest::prelude::*;
        proptest!(|(request in any_request())| {
            let body = client_body(&request);
            prop_assert!(matches!(body[0], 0x81..=0x8f), "not a fixmap: {:#04x}", body[0]);
            prop_assert_eq!(&body[1..6], b"\xa4type");
            let covered = !matches!(
                request,
                Request::Hello { .. }
                    | Request::Files { .. }
                    | Request::Sessions { .. }
                    | Request::RevokeSession { .. }
                    | Request::AddMember { .. }
                    | Request::RemoveMember { .. }
                    | Request::TransferLeader { .. }
                    | Request::SnapshotSave { .. }
            );
            if covered {
                prop_assert_eq!(decode_request(&body), Some(request));
            }
        });
    }

    /// Equivalence over every request type: the client's body, then its fields shuffled,
    /// unknown fields added, and the result cut short or a byte flipped. The fast path plus
    /// fallback ([`decode_body`]) gives exactly the general decoder's result (the same request
    /// or the same error with the same id), and a body with only its field order changed is
    /// served exactly as the canonical one.
    #[test]
    fn fast_path_plus_fallback_equals_the_general_decoder_on_every_request_type() {
        use crate::protocol::decode_body;
        use proptest::prelude::*;
        let config = ProptestConfig {
            cases: 2048,
            ..ProptestConfig::default()
        };
        proptest!(config, |(request in any_request(),
                            order in any::<u64>(),
                            extra in proptest::collection::vec(("[a-z_]{1,12}", any::<u32>()), 0..3),
                            extra_at in any::<prop::sample::Index>(),
                            mutation in 0..3u8,
                            at in any::<prop::sample::Index>(),
                            byte in any::<u8>())| {
            let body = client_body(&request);
            prop_assert_eq!(decode_body::<Request>(&body), Ok(request.clone()));
            let entries = crate::protocol::scan::map_entries(&body).unwrap();
            let mut entries: Vec<Vec<u8>> = entries
                .iter()
                .map(|e| body[e.key.start..e.value.end].to_vec())
                .collect();
            // A deterministic shuffle drawn from `order` (Fisher-Yates over a tiny LCG).
            let mut state = order | 1;
            for i in (1..entries.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                entries.swap(i, (state >> 33) as usize % (i + 1));
            }
            let shuffled = map_of(&entries);
            prop_assert_eq!(decode_body::<Request>(&shuffled), Ok(request.clone()));
            prop_assert_eq!(decode_general::<Request>(&shuffled), Ok(request.clone()));
            let mut mutated = entries;
            for (key, value) in &extra {
                let mut entry = rmp_serde::to_vec(key).unwrap();
                entry.extend(rmp_serde::to_vec(value).unwrap());
                let i = extra_at.index(mutated.len() + 1);
                mutated.insert(i, entry);
            }
            let mut mutated = map_of(&mutated);
            let i = at.index(mutated.len());
            match mutation {
                0 => mutated.truncate(i),
                1 => mutated[i] = byte,
                _ => {}
            }
            for candidate in [&body, &shuffled, &mutated] {
                prop_assert_eq!(
                    decode_body::<Request>(candidate),
                    decode_general::<Request>(candidate)
                );
            }
            // The same mutations on the canonical body, where the fast path is live.
            let mut canonical = body.clone();
            let i = at.index(canonical.len());
            if mutation == 0 { canonical.truncate(i) } else { canonical[i] = byte }
            prop_assert_eq!(
                decode_body::<Request>(&canonical),
                decode_general::<Request>(&canonical)
            );
        });
    }

    /// Decoder level, through the server's own codec: a frame whose fields are in another
    /// order (here reversed, `type` last) is served exactly as the canonical frame.
    #[test]
    fn the_server_codec_serves_a_request_with_fields_in_another_order() {
        use proptest::prelude::*;
        use tokio_util::codec::Decoder;
        proptest!(|(request in any_request())| {
            let body = client_body(&request);
            let mut entries: Vec<Vec<u8>> = crate::protocol::scan::map_entries(&body)
                .unwrap()
                .iter()
                .map(|e| body[e.key.start..e.value.end].to_vec())
                .collect();
            entries.reverse();
            let reversed = map_of(&entries);
            let mut served = Vec::new();
            for candidate in [&body, &reversed] {
                let mut codec = crate::protocol::codec::ServerCodec::default();
                let mut src = bytes::BytesMut::new();
                src.extend_from_slice(&(candidate.len() as u32).to_be_bytes());
                src.extend_from_slice(candidate);
                served.push(codec.decode(&mut src).unwrap().unwrap());
            }
            prop_assert_eq!(&served[0], &Ok(request.clone()));
            prop_assert_eq!(&served[1], &Ok(request));
        });
    }
}
