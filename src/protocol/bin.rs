//! Byte fields as MessagePack `bin`, and only `bin`.
//!
//! `serde_bytes` writes `bin` but reads leniently: a str or an array of integers decodes into
//! the same bytes. protocol.md §3 says a `bin` field is bin 8/16/32 and nothing else, so the
//! wire types use these helpers instead (`#[serde(with = "bin")]`, or `"bin::option"` for an
//! optional field): any other encoding is an ill-typed field, refused with a message naming
//! what was expected. Reading costs the same as `serde_bytes` (one copy of the bytes).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// Writes `bytes` as MessagePack bin.
pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// Reads MessagePack bin; a str, an array or anything else is an error.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BinVisitor)
}

/// Accepts only byte strings (MessagePack bin).
struct BinVisitor;

impl<'de> Visitor<'de> for BinVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("MessagePack bin")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

/// `Option<Vec<u8>>` as MessagePack bin or nil.
pub(crate) mod option {
    use std::fmt;

    use serde::de::{Deserializer, Visitor};
    use serde::Serializer;

    /// Writes bin, or nil for `None`.
    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_bytes(bytes),
            None => s.serialize_none(),
        }
    }

    /// Reads nil or bin; anything else is an error.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("MessagePack bin or nil")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        data: Vec<u8>,
        #[serde(default, with = "super::option")]
        maybe: Option<Vec<u8>>,
    }

    #[derive(Serialize)]
    struct Foreign<D, M> {
        data: D,
        maybe: M,
    }

    fn decode<D: Serialize, M: Serialize>(data: D, maybe: M) -> Result<Holder, String> {
        let body = rmp_serde::to_vec_named(&Foreign { data, maybe }).expect("encode");
        rmp_serde::from_slice(&body).map_err(|e| e.to_string())
    }

    /// Bin round-trips, written as bin 8 (`c4`).
    #[test]
    fn bin_round_trips() {
        let holder = Holder {
            data: b"ok".to_vec(),
            maybe: Some(vec![1]),
        };
        let body = rmp_serde::to_vec_named(&holder).unwrap();
        assert!(body.windows(4).any(|w| w == [0xc4, 0x02, b'o', b'k']));
        assert_eq!(rmp_serde::from_slice::<Holder>(&body).unwrap(), holder);
        let none = Holder {
            data: vec![],
            maybe: None,
        };
        let body = rmp_serde::to_vec_named(&none).unwrap();
        assert_eq!(rmp_serde::from_slice::<Holder>(&body).unwrap(), none);
    }

    /// A str or an array of integers is not bin, in either helper.
    #[test]
    fn str_and_arrays_are_refused() {
        let bin = serde_bytes::ByteBuf::from(vec![1u8]);
        let error = decode("ok", &bin).unwrap_err();
        assert!(error.contains("expected MessagePack bin"), "{error}");
        let error = decode(vec![111u8, 107], &bin).unwrap_err();
        assert!(error.contains("expected MessagePack bin"), "{error}");
        let error = decode(&bin, "ok").unwrap_err();
        assert!(error.contains("expected MessagePack bin"), "{error}");
        let error = decode(&bin, vec![1u8]).unwrap_err();
        assert!(error.contains("expected MessagePack bin"), "{error}");
        assert!(decode(&bin, Option::<u8>::None).is_ok());
    }
}
