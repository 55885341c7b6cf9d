//! Framing and MessagePack encoding for every raftlock connection.
//!
//! A frame is a `u32` big-endian body length followed by that many bytes of MessagePack: a map
//! with a string `type` field naming the message (see `protocol.md`). [`MsgPackCodec`] wraps
//! tokio-util's [`LengthDelimitedCodec`] (configured explicitly, never by default) and decodes
//! bodies in three steps, so that a bad body costs one error answer, not the connection:
//!
//! 1. The 4-byte header is checked against the maximum before the body is buffered or any
//!    space is reserved for it: a larger length is a fatal [`Error::FrameTooLarge`].
//! 2. The complete body must be a MessagePack map whose `type` is a str (not bin, which serde
//!    would take: `scan.rs` checks the marker); its `type` is compared with [`Message::TYPES`].
//!    Failures are *items*: `Err(FrameError::BadRequest)` or `Err(FrameError::UnknownType)`.
//!    The frame boundary is known, so the stream stays usable.
//! 3. The body is decoded as the full message; a missing or ill-typed field, or trailing bytes
//!    after the map, is again a recoverable `Err(FrameError::BadRequest)` item, whose message
//!    names the field (found on the error path only, see `blame`).
//!
//! Every error item carries the frame's `id` when it could be read, else 0 (protocol.md §3).

use std::io;
use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::message::{ErrorCode, Request, Response};
use super::scan;

/// Bytes in a frame header: the body length as a big-endian `u32`.
pub const HEADER_LEN: usize = 4;

/// Fatal codec errors: after one of these the stream cannot be trusted and must be closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame header announced a body longer than the maximum (checked before buffering it).
    /// The daemon answers `Error { id: 0, code: FrameTooLarge }` and closes the connection.
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The length the header announced, or the length of the frame being encoded.
        len: u64,
        /// The configured maximum body length.
        max: usize,
    },
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes of it received)")]
    UnexpectedEof {
        /// How many bytes of the unfinished frame (header included) had arrived.
        buffered: usize,
    },
    /// Reading or writing the socket failed.
    #[error("i/o error on the connection")]
    Io(#[from] io::Error),
    /// A message could not be serialized (a bug: every message type serializes).
    #[error("cannot encode message")]
    Encode(#[from] rmp_serde::encode::Error),
}

impl Error {
    /// The wire code to send (with id 0) before closing, if the peer can still be told.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::FrameTooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            Error::UnexpectedEof { .. } | Error::Io(_) => None,
            Error::Encode(_) => Some(ErrorCode::Internal),
        }
    }
}

/// A complete frame whose body is not an acceptable message. Recoverable: the next frame
/// decodes normally, so the daemon answers with an `Error` response and keeps the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body is not MessagePack, not a map with a string `type`, has trailing bytes, or a
    /// known message has a missing or ill-typed field (`message` says which).
    #[error("bad request: {message}")]
    BadRequest {
        /// The request's `id` when it could be read (an unsigned integer field `id`), else 0.
        id: u64,
        /// What was wrong, for the error response.
        message: String,
    },
    /// The body is a map whose `type` names no message of this protocol.
    #[error("unknown message type {type_name:?}")]
    UnknownType {
        /// The request's `id` when it could be read, else 0.
        id: u64,
        /// The unrecognised `type` value.
        type_name: String,
    },
}

impl FrameError {
    /// The wire error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::BadRequest { .. } => ErrorCode::BadRequest,
            FrameError::UnknownType { .. } => ErrorCode::UnknownType,
        }
    }

    /// The request id the answer should echo (0 when it could not be read).
    pub fn id(&self) -> u64 {
        match self {
            FrameError::BadRequest { id, .. } | FrameError::UnknownType { id, .. } => *id,
        }
    }

    /// The `Error` response that answers this frame.
    pub fn to_response(&self) -> Response {
        Response::error(self.id(), self.code(), self.to_string())
    }
}

/// A message enum that travels as a MessagePack map tagged by `type`.
pub trait Message: Serialize + DeserializeOwned {
    /// Every `type` value the enum accepts, so an unknown one is told apart from a bad body.
    const TYPES: &'static [&'static str];

    /// The message in `body` if a shape-specific fast path recognises it, else `None` (the
    /// general decoder then runs). It must never accept a body the general decoder would
    /// decode differently or refuse; the default has no fast path.
    fn decode_fast(_body: &[u8]) -> Option<Self> {
        None
    }
}

/// Every `type` of a client [`Request`], in declaration order.
pub const REQUEST_TYPES: &[&str] = &[
    "Hello",
    "OpenSession",
    "KeepAlive",
    "CloseSession",
    "Acquire",
    "Release",
    "Cancel",
    "Extend",
    "Append",
    "Truncate",
    "Delete",
    "Files",
    "Read",
    "Locks",
    "Status",
    "Sessions",
    "RevokeSession",
    "AddMember",
    "RemoveMember",
    "TransferLeader",
    "SnapshotSave",
];

/// Every `type` of a daemon [`Response`], in declaration order.
pub const RESPONSE_TYPES: &[&str] = &[
    "Welcome",
    "SessionOpened",
    "KeptAlive",
    "SessionClosed",
    "Queued",
    "Granted",
    "Released",
    "Cancelled",
    "Extended",
    "Appended",
    "Truncated",
    "Deleted",
    "FileList",
    "Data",
    "LockList",
    "SessionList",
    "Status",
    "SnapshotHeader",
    "SnapshotChunk",
    "MembershipChanged",
    "LeaderTransferred",
    "Revoked",
    "QueuePosition",
    "HoldExpiring",
    "SessionExpiring",
    "SessionExpired",
    "Error",
];

impl Message for Request {
    const TYPES: &'static [&'static str] = REQUEST_TYPES;

    fn decode_fast(body: &[u8]) -> Option<Self> {
        super::fast::decode_request(body)
    }
}

impl Message for Response {
    const TYPES: &'static [&'static str] = RESPONSE_TYPES;
}

/// The codec the daemon uses on a client connection.
pub type ServerCodec = MsgPackCodec<Request, Response>;
/// The codec a client uses towards the daemon.
pub type ClientCodec = MsgPackCodec<Response, Request>;

/// Frames of `u32` big-endian length + MessagePack body: decodes `In`, encodes `Out`.
///
/// Decoded items are `Result<In, FrameError>`: an `Err` item is a bad but complete frame and
/// the stream goes on; an `Err` from the stream itself ([`Error`]) is fatal.
#[derive(Debug)]
pub struct MsgPackCodec<In, Out> {
    frames: LengthDelimitedCodec,
    max_frame: usize,
    /// True once the inner codec has consumed a header and waits for that frame's body. Mirrors
    /// `LengthDelimitedCodec`'s own state so the header is inspected exactly once, and so EOF
    /// right after a header is still reported as a truncated frame.
    in_body: bool,
    _types: PhantomData<fn(In) -> Out>,
}

impl<In, Out> MsgPackCodec<In, Out> {
    /// A codec that refuses bodies longer than `max_frame` bytes, in both directions.
    pub fn new(max_frame: usize) -> Self {
        let frames = LengthDelimitedCodec::builder()
            .length_field_type::<u32>()
            .big_endian()
            .max_frame_length(max_frame)
            .new_codec();
        MsgPackCodec {
            frames,
            max_frame,
            in_body: false,
            _types: PhantomData,
        }
    }

    /// The maximum body length this codec accepts and emits.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl<In, Out> Default for MsgPackCodec<In, Out> {
    /// A codec with the protocol's default maximum frame ([`super::MAX_FRAME`]).
    fn default() -> Self {
        Self::new(super::MAX_FRAME)
    }
}

/// The part of every body needed to classify it: its `type` (other fields are ignored).
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    type_name: String,
}

/// The request id, read separately so a body with a bad `id` is still classified by `type`.
#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

/// Why a body did not decode as a whole message.
enum DecodeFailure {
    /// serde refused it; its message (which may not name the field).
    Serde(String),
    /// The message decoded but bytes follow it.
    Trailing(u64),
}

impl std::fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeFailure::Serde(message) => f.write_str(message),
            DecodeFailure::Trailing(n) => write!(f, "{n} trailing bytes after the message"),
        }
    }
}

/// Decodes `T` from the whole of `body`; trailing bytes are an error.
fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeFailure> {
    let mut de = rmp_serde::Deserializer::new(io::Cursor::new(body));
    let value = T::deserialize(&mut de).map_err(|e| DecodeFailure::Serde(e.to_string()))?;
    let trailing = (body.len() as u64).saturating_sub(de.position());
    if trailing != 0 {
        return Err(DecodeFailure::Trailing(trailing));
    }
    Ok(value)
}

/// True if `byte` starts a MessagePack map (fixmap, map 16 or map 32).
fn is_map_marker(byte: u8) -> bool {
    matches!(byte, 0x80..=0x8f | 0xde | 0xdf)
}

/// Maps with more entries than this are not searched for the field to blame (every message
/// has at most a dozen fields; the bound keeps a hostile map from buying many re-decodes).
const MAX_BLAME_ENTRIES: usize = 64;

/// Finds the field that makes `body` fail with `error`, for a message that names it.
///
/// serde decodes an internally tagged enum by buffering the map and then decoding the
/// variant's fields from the buffer, in wire order, stopping at the first ill-typed one; its
/// error does not say which. A map made of the `type` entry and the first `k` other entries
/// fails with the same error exactly when it contains that field (before it, the shorter map
/// can only miss fields, which serde reports only after the last entry). So a binary search
/// over `k` finds the field in a few re-decodes. This runs only for a body that already failed
/// (the hot path decodes once); a missing or duplicate field is named by serde itself.
fn blame<T: DeserializeOwned>(body: &[u8], error: &str) -> Option<String> {
    if error.starts_with("missing field `") || error.starts_with("duplicate field `") {
        return None;
    }
    let entries = scan::map_entries(body)?;
    if entries.len() > MAX_BLAME_ENTRIES {
        return None;
    }
    let (tags, fields): (Vec<_>, Vec<_>) = entries
        .iter()
        .partition(|e| scan::is_type_key(&body[e.key.clone()]));
    let prefix = |k: usize| -> Vec<u8> {
        let count = tags.len() + k;
        let mut map = Vec::with_capacity(body.len());
        match u8::try_from(count) {
            Ok(n) if n < 16 => map.push(0x80 | n),
            _ => {
                map.push(0xde);
                map.extend_from_slice(&(count as u16).to_be_bytes());
            }
        }
        for entry in tags.iter().chain(&fields[..k]) {
            map.extend_from_slice(&body[entry.key.start..entry.value.end]);
        }
        map
    };
    let fails_alike = |k: usize| match decode_exact::<T>(&prefix(k)) {
        Err(DecodeFailure::Serde(e)) => e == error,
        _ => false,
    };
    // The smallest k whose prefix fails alike; the whole map (k = len) does by definition.
    let (mut low, mut high) = (0, fields.len());
    if high == 0 || !fails_alike(high) {
        return None;
    }
    while low + 1 < high {
        let mid = (low + high) / 2;
        if fails_alike(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    if fails_alike(low) {
        high = low;
    }
    let culprit = fields.get(high.checked_sub(1)?)?;
    Some(scan::key_name(&body[culprit.key.clone()]))
}

/// Classifies and decodes one complete frame body.
///
/// A body in the canonical shape our encoder writes (`type` first, fields in declaration
/// order) is read by the message's fast path ([`Message::decode_fast`], `fast.rs`) without
/// serde's buffering; any other body goes to the general decoder, which gives the same result
/// for canonical bodies and every error answer.
pub fn decode_body<T: Message>(body: &[u8]) -> Result<T, FrameError> {
    if let Some(message) = T::decode_fast(body) {
        return Ok(message);
    }
    decode_general(body)
}

/// The general decoder: any field order, every error answer (protocol.md §3).
pub(crate) fn decode_general<T: Message>(body: &[u8]) -> Result<T, FrameError> {
    let bad = |id, message: String| FrameError::BadRequest { id, message };
    match body.first() {
        None => return Err(bad(0, "empty frame body".into())),
        Some(&b) if !is_map_marker(b) => {
            return Err(bad(
                0,
                format!("body is not a MessagePack map (first byte {b:#04x})"),
            ))
        }
        Some(_) => {}
    }
    let id = || {
        rmp_serde::from_slice::<IdOnly>(body)
            .map(|i| i.id)
            .unwrap_or(0)
    };
    // serde's tag reader takes a bin `type` as readily as a str; §3 says str. Checking costs a
    // few byte comparisons when `type` comes first, as every client writes it.
    if !scan::type_is_str(body) {
        return Err(bad(id(), "field type: must be a MessagePack str".into()));
    }
    // A well-formed body decodes in one pass. Only a body that fails pays for the two peeks
    // that find its id and type for the error answer (they used to run first, on every frame:
    // three parses per message, a third of the daemon's instructions per operation).
    let error = match decode_exact(body) {
        Ok(message) => return Ok(message),
        Err(error) => error,
    };
    let id = id();
    // The peeks tolerate trailing bytes so such a body is still answered with its id (the full
    // decode above rejected it).
    let head: TypeOnly = rmp_serde::from_slice(body)
        .map_err(|e| bad(id, format!("body is not a map with a string `type`: {e}")))?;
    if !T::TYPES.contains(&head.type_name.as_str()) {
        return Err(FrameError::UnknownType {
            id,
            type_name: head.type_name,
        });
    }
    let detail = match &error {
        DecodeFailure::Serde(message) => match blame::<T>(body, message) {
            Some(field) => format!("field {field}: {message}"),
            None => message.clone(),
        },
        DecodeFailure::Trailing(_) => error.to_string(),
    };
    Err(bad(id, format!("bad {}: {detail}", head.type_name)))
}

impl<In: Message, Out> Decoder for MsgPackCodec<In, Out> {
    type Item = Result<In, FrameError>;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        if !self.in_body && src.len() >= HEADER_LEN {
            // Check the header ourselves before the inner codec reserves space for the body,
            // so the error carries the announced length.
            let len = u64::from(u32::from_be_bytes([src[0], src[1], src[2], src[3]]));
            if len > self.max_frame as u64 {
                return Err(Error::FrameTooLarge {
                    len,
                    max: self.max_frame,
                });
            }
        }
        let had_header = self.in_body || src.len() >= HEADER_LEN;
        let frame = self.frames.decode(src).map_err(|e| match e.kind() {
            // Unreachable after the check above, but map it faithfully if it ever happens.
            io::ErrorKind::InvalidData => Error::FrameTooLarge {
                len: u64::MAX,
                max: self.max_frame,
            },
            _ => Error::Io(e),
        })?;
        match frame {
            Some(body) => {
                self.in_body = false;
                Ok(Some(decode_body(&body)))
            }
            None => {
                self.in_body = had_header;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() && !self.in_body => Ok(None),
            None => {
                let buffered = src.len() + if self.in_body { HEADER_LEN } else { 0 };
                src.advance(src.len());
                self.in_body = false;
                Err(Error::UnexpectedEof { buffered })
            }
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for MsgPackCodec<In, Out> {
    type Error = Error;

    /// Serializes `item` straight into `dst` behind a placeholder header, then writes the
    /// header: no intermediate body buffer to allocate, grow and copy per frame. On any error
    /// `dst` is left as it was.
    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), Error> {
        use bytes::BufMut;
        let start = dst.len();
        // Most answers are a few dozen bytes: one reservation covers header and body.
        dst.reserve(HEADER_LEN + 64);
        dst.put_u32(0);
        let mut serializer = rmp_serde::Serializer::new((&mut *dst).writer()).with_struct_map();
        if let Err(error) = item.serialize(&mut serializer) {
            dst.truncate(start);
            return Err(error.into());
        }
        let len = dst.len() - start - HEADER_LEN;
        let header = match u32::try_from(len) {
            Ok(header) if len <= self.max_frame => header,
            _ => {
                dst.truncate(start);
                return Err(Error::FrameTooLarge {
                    len: len as u64,
                    max: self.max_frame,
                });
            }
        };
        dst[start..start + HEADER_LEN].copy_from_slice(&header.to_be_bytes());
        Ok(())
    }
}

/// Encodes one message as a complete frame (header + body), e.g. for tests and examples.
pub fn encode_frame<T: Serialize>(message: &T, max_frame: usize) -> Result<Vec<u8>, Error> {
    let body = rmp_serde::to_vec_named(message)?;
    if body.len() > max_frame {
        return Err(Error::FrameTooLarge {
            len: body.len() as u64,
            max: max_frame,
        });
    }
    let len = u32::try_from(body.len()).map_err(|_| Error::FrameTooLarge {
        len: body.len() as u64,
        max: max_frame,
    })?;
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LockMode;
    use crate::protocol::{HolderState, LockState, MemberStatus, Role, StatusInfo, WaiterState};

    fn every_request() -> Vec<Request> {
        vec![
            Request::Hello {
                version: 1,
                role: Role::Client,
                token: None,
            },
            Request::Hello {
                version: 7,
                role: Role::Peer,
                token: None,
            },
            Request::OpenSession {
                id: 1,
                nonce: u64::MAX,
                ttl_ms: 10_000,
                owner: None,
            },
            Request::KeepAlive {
                id: 2,
                session: 3,
                token: 4,
            },
            Request::CloseSession {
                id: 3,
                session: 3,
                token: 4,
                seq: 9,
            },
            Request::Acquire {
                id: 4,
                session: 3,
                token: 4,
                seq: 10,
                lock: "build-cache".into(),
                mode: LockMode::Shared,
                wait_ms: Some(0),
                hold_ms: None,
            },
            Request::Acquire {
                id: 5,
                session: 3,
                token: 4,
                seq: 11,
                lock: "ünïcode".into(),
                mode: LockMode::Exclusive,
                wait_ms: None,
                hold_ms: Some(60_000),
            },
            Request::Sessions { id: 23 },
            Request::RevokeSession {
                id: 24,
                session_id: 3,
                force: false,
            },
            Request::RevokeSession {
                id: 25,
                session_id: 3,
                force: true,
            },
            Request::Cancel {
                id: 21,
                session: 3,
                token: 9,
                seq: 7,
                lock: "build".into(),
                acquire_seq: 6,
            },
            Request::Extend {
                id: 22,
                session: 3,
                token: 9,
                seq: 8,
                lock: "build".into(),
                fence: 12,
                hold_ms: 30_000,
            },
            Request::Release {
                id: 6,
                session: 3,
                token: 4,
                seq: 12,
                lock: "a".into(),
            },
            Request::Append {
                id: 7,
                session: 3,
                token: 4,
                seq: 13,
                file: "f".into(),
                lock: "a".into(),
                fence: 42,
                data: (0..=255).collect(),
            },
            Request::Truncate {
                id: 24,
                session: 3,
                token: 4,
                seq: 14,
                file: "f".into(),
                lock: "a".into(),
                fence: 42,
                size: 1 << 33,
            },
            Request::Delete {
                id: 25,
                session: 3,
                token: 4,
                seq: 15,
                file: "f".into(),
                lock: "a".into(),
                fence: 42,
            },
            Request::Files {
                id: 26,
                prefix: Some("logs/".into()),
                stale: true,
            },
            Request::Read {
                id: 8,
                file: "f".into(),
                offset: 1 << 40,
                len: 5,
                stale: true,
            },
            Request::Locks {
                id: 9,
                prefix: Some("build/".into()),
                stale: false,
            },
            Request::Locks {
                id: 10,
                prefix: None,
                stale: true,
            },
            Request::Status { id: 11 },
            Request::AddMember {
                id: 12,
                node_id: 4,
                addr: "10.0.0.4:7400".into(),
            },
            Request::RemoveMember { id: 13, node_id: 4 },
            Request::TransferLeader {
                id: 14,
                node_id: Some(2),
            },
            Request::TransferLeader {
                id: 15,
                node_id: None,
            },
            Request::SnapshotSave { id: 16 },
        ]
    }

    fn every_response() -> Vec<Response> {
        use crate::protocol::PushReason;
        vec![
            Response::Revoked {
                id: 0,
                session: 3,
                lock: "l".into(),
                fence: 9,
                reason: PushReason::Hold,
            },
            Response::QueuePosition {
                id: 0,
                session: 3,
                lock: "l".into(),
                seq: 4,
                ahead: 1,
                mode: Some(LockMode::Shared),
                holders: 2,
            },
            Response::HoldExpiring {
                id: 0,
                session: 3,
                lock: "l".into(),
                fence: 9,
                left_ms: 500,
            },
            Response::SessionExpiring {
                id: 0,
                session: 3,
                left_ms: 1_000,
            },
            Response::SessionExpired {
                id: 0,
                session: 3,
                reason: PushReason::Admin,
            },
            Response::Welcome {
                version: 1,
                node_id: 2,
                leader: Some(1),
                leader_addr: None,
            },
            Response::SessionOpened {
                id: 1,
                session: 3,
                token: 4,
                ttl_ms: 10_000,
            },
            Response::KeptAlive {
                id: 2,
                ttl_ms: 10_000,
            },
            Response::SessionClosed { id: 3 },
            Response::Queued { id: 4, position: 0 },
            Response::Granted { id: 4, fence: 17 },
            Response::Released { id: 5 },
            Response::Cancelled { id: 21 },
            Response::SessionList {
                id: 23,
                sessions: vec![crate::protocol::SessionSummary {
                    session: 3,
                    owner: Some("ann@host 7 make".into()),
                    ttl_ms: 10_000,
                    since_renewal_ms: None,
                }],
            },
            Response::Extended {
                id: 22,
                hold_ms: 30_000,
            },
            Response::Appended {
                id: 6,
                offset: 0,
                size: 5,
            },
            Response::Data {
                id: 7,
                data: b"hello".to_vec(),
                size: 5,
            },
            Response::Truncated { id: 24, size: 3 },
            Response::Deleted { id: 25, size: 3 },
            Response::FileList {
                id: 26,
                files: vec![
                    crate::protocol::FileEntry {
                        name: "logs/a".into(),
                        size: 5,
                        lock: Some("a".into()),
                        fence: Some(42),
                    },
                    crate::protocol::FileEntry {
                        name: "logs/b".into(),
                        size: 0,
                        lock: None,
                        fence: None,
                    },
                ],
            },
            Response::LockList {
                id: 8,
                locks: vec![
                    LockState {
                        name: "a".into(),
                        mode: Some(LockMode::Shared),
                        holders: vec![HolderState {
                            session: 3,
                            fence: 17,
                            owner: None,
                            held_ms: Some(1_500),
                            hold_left_ms: None,
                        }],
                        waiters: vec![WaiterState {
                            session: 5,
                            seq: 2,
                            mode: LockMode::Exclusive,
                            owner: None,
                            waited_ms: Some(700),
                        }],
                    },
                    LockState {
                        name: "b".into(),
                        mode: None,
                        holders: vec![],
                        waiters: vec![],
                    },
                ],
            },
            Response::Status(Box::new(StatusInfo {
                id: 9,
                node_id: 1,
                role: "leader".into(),
                term: 3,
                leader: Some(1),
                leader_addr: Some("127.0.0.1:7400".into()),
                commit_index: 10,
                applied_index: 10,
                last_log_index: 11,
                sessions: 2,
                locks: 1,
                members: vec![MemberStatus {
                    node_id: 1,
                    addr: "127.0.0.1:7400".into(),
                    voter: true,
                    match_index: Some(11),
                }],
            })),
            Response::MembershipChanged {
                id: 12,
                index: 40,
                members: vec![MemberStatus {
                    node_id: 4,
                    addr: "10.0.0.4:7400".into(),
                    voter: true,
                    match_index: None,
                }],
            },
            Response::LeaderTransferred {
                id: 14,
                leader: 2,
                leader_addr: Some("10.0.0.2:7400".into()),
            },
            Response::SnapshotHeader {
                id: 16,
                index: 9,
                term: 2,
                size: 3,
                checksum: 7,
            },
            Response::SnapshotChunk {
                id: 16,
                offset: 0,
                data: vec![1, 2, 3],
                last: true,
            },
            Response::error(10, ErrorCode::StaleFence, "fence 3 is not current"),
            Response::Error {
                id: 11,
                code: ErrorCode::NotLeader,
                message: "not the leader".into(),
                leader: Some(2),
                leader_addr: Some("10.0.0.2:7400".into()),
            },
        ]
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    /// Every request and response survives encode → decode unchanged, in both codecs, and its
    /// `type` is listed in the matching TYPES table.
    #[test]
    fn every_message_round_trips() {
        let mut client = ClientCodec::default();
        let mut server = ServerCodec::default();
        let mut buf = BytesMut::new();
        for request in every_request() {
            assert!(REQUEST_TYPES.contains(&request.type_name()));
            client.encode(request.clone(), &mut buf).unwrap();
            assert_eq!(server.decode(&mut buf).unwrap(), Some(Ok(request)));
            assert!(buf.is_empty());
        }
        for response in every_response() {
            assert!(RESPONSE_TYPES.contains(&response.type_name()));
            server.encode(response.clone(), &mut buf).unwrap();
            assert_eq!(client.decode(&mut buf).unwrap(), Some(Ok(response)));
        }
    }

    /// The TYPES tables name exactly the enum variants: each listed name decodes as a known
    /// type (a bad body, not UnknownType) and the type_name() of every variant is listed.
    #[test]
    fn type_tables_match_the_enums() {
        let names: std::collections::BTreeSet<_> =
            every_request().iter().map(|r| r.type_name()).collect();
        assert_eq!(names.len(), REQUEST_TYPES.len());
        let names: std::collections::BTreeSet<_> =
            every_response().iter().map(|r| r.type_name()).collect();
        assert_eq!(names.len(), RESPONSE_TYPES.len());
    }

    #[test]
    fn bytes_travel_as_msgpack_bin() {
        let body = rmp_serde::to_vec_named(&Response::Data {
            id: 1,
            data: vec![1, 2],
            size: 2,
        })
        .unwrap();
        // bin 8 marker, length 2, then the raw bytes.
        assert!(
            body.windows(4).any(|w| w == [0xc4, 0x02, 0x01, 0x02]),
            "{body:02x?}"
        );
    }

    /// A 4 GiB length prefix is refused from the header alone: nothing is reserved for a body.
    #[test]
    fn huge_length_prefix_is_frame_too_large_without_allocating() {
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        match codec.decode(&mut buf) {
            Err(Error::FrameTooLarge { len, max }) => {
                assert_eq!(
                    (len, max),
                    (u64::from(u32::MAX), crate::protocol::MAX_FRAME)
                );
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert!(buf.capacity() < 1024, "capacity grew to {}", buf.capacity());
        assert_eq!(
            Error::FrameTooLarge { len: 1, max: 0 }.code(),
            Some(ErrorCode::FrameTooLarge)
        );
    }

    #[test]
    fn frame_of_exactly_max_is_accepted_and_one_more_is_not() {
        let mut codec = MsgPackCodec::<Request, Response>::new(16);
        let mut buf = BytesMut::from(&[0, 0, 0, 16][..]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        let mut codec = MsgPackCodec::<Request, Response>::new(16);
        let mut buf = BytesMut::from(&[0, 0, 0, 17][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(Error::FrameTooLarge { len: 17, max: 16 })
        ));
    }

    /// A request whose frame is larger than 64 bytes.
    fn oversized_read() -> Request {
        Request::Read {
            id: 1,
            file: "f".repeat(100),
            offset: 0,
            len: 1,
            stale: false,
        }
    }

    #[test]
    fn encoding_over_the_max_is_refused() {
        let mut codec = MsgPackCodec::<Response, Request>::new(64);
        let request = Request::Status { id: 1 };
        codec.encode(request, &mut BytesMut::new()).unwrap();
        let big = oversized_read();
        assert!(matches!(
            codec.encode(big, &mut BytesMut::new()),
            Err(Error::FrameTooLarge { max: 64, .. })
        ));
    }

    /// The encoder serializes in place behind its header: the bytes are exactly
    /// `encode_frame`'s (header + `to_vec_named` body), appended after what the buffer already
    /// held, and a refused message leaves the buffer as it was.
    #[test]
    fn in_place_encoding_appends_the_same_bytes_and_undoes_a_refusal() {
        let mut server = ServerCodec::default();
        let mut client = ClientCodec::default();
        let mut buf = BytesMut::from(&b"queued"[..]);
        let mut expected = b"queued".to_vec();
        for response in every_response() {
            expected.extend(encode_frame(&response, crate::protocol::MAX_FRAME).unwrap());
            server.encode(response, &mut buf).unwrap();
        }
        for request in every_request() {
            expected.extend(encode_frame(&request, crate::protocol::MAX_FRAME).unwrap());
            client.encode(request, &mut buf).unwrap();
        }
        assert_eq!(&buf[..], &expected[..]);
        let mut small = MsgPackCodec::<Response, Request>::new(16);
        let big = oversized_read();
        assert!(matches!(
            small.encode(big, &mut buf),
            Err(Error::FrameTooLarge { max: 16, .. })
        ));
        assert_eq!(&buf[..], &expected[..]);
    }

    /// Bad bodies are items, each answered precisely, and the next frame still decodes.
    #[test]
    fn bad_bodies_are_recoverable_items() {
        let status = rmp_serde::to_vec_named(&Request::Status { id: 5 }).unwrap();
        let unknown = rmp_serde::to_vec_named(&serde_json_like::Unknown {
            r#type: "Frobnicate",
            id: 12,
        })
        .unwrap();
        let missing = rmp_serde::to_vec_named(&serde_json_like::Unknown {
            r#type: "Acquire",
            id: 13,
        })
        .unwrap();
        let cases: Vec<(Vec<u8>, &str, u64)> = vec![
            (vec![0xc1], "BadRequest", 0),          // never-used msgpack byte
            (vec![], "BadRequest", 0),              // empty body
            (vec![0x93, 1, 2, 3], "BadRequest", 0), // an array, not a map
            (vec![0x81, 0xa2, b'i', b'd', 1], "BadRequest", 1), // map without `type`
            (vec![0x81, 0xa4, b't', b'y', b'p', b'e', 7], "BadRequest", 0), // `type` not a string
            ([status.clone(), vec![0xc0]].concat(), "BadRequest", 5), // trailing byte
            (unknown, "UnknownType", 12),
            (missing, "BadRequest", 13),
        ];
        let mut codec = ServerCodec::default();
        for (body, want, want_id) in cases {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&frame(&body));
            buf.extend_from_slice(&frame(&status));
            let item = codec.decode(&mut buf).unwrap().expect("a complete frame");
            let err = item.expect_err("a bad body");
            assert_eq!(format!("{:?}", err.code()), want, "{body:02x?}: {err}");
            assert_eq!(err.id(), want_id, "{body:02x?}");
            match err.to_response() {
                Response::Error { id, code, .. } => assert_eq!((id, code), (want_id, err.code())),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                codec.decode(&mut buf).unwrap(),
                Some(Ok(Request::Status { id: 5 }))
            );
        }
    }

    #[test]
    fn unknown_type_names_the_type() {
        let body = rmp_serde::to_vec_named(&serde_json_like::Unknown {
            r#type: "Welcome",
            id: 1,
        })
        .unwrap();
        let mut buf = BytesMut::from(&frame(&body)[..]);
        // A response type sent to the server is unknown there.
        let item = ServerCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            item,
            Err(FrameError::UnknownType {
                id: 1,
                type_name: "Welcome".into()
            })
        );
    }

    /// The BadRequest message of `body`, which must be refused with id `id`.
    fn bad_request_message(body: &[u8], want_id: u64) -> String {
        match decode_body::<Request>(body) {
            Err(FrameError::BadRequest { id, message }) => {
                assert_eq!(id, want_id, "{message}");
                message
            }
            other => panic!("expected BadRequest, got {other:?}"),
        }
    }

    /// An ill-typed field is named, wherever it stands in the map and whatever is wrong with
    /// it; the error is serde's, prefixed with `field NAME: `.
    #[test]
    fn ill_typed_fields_are_named() {
        #[derive(Serialize)]
        struct Open<'a, T> {
            r#type: &'a str,
            id: u64,
            nonce: u64,
            ttl_ms: T,
        }
        let body = rmp_serde::to_vec_named(&Open {
            r#type: "OpenSession",
            id: 4,
            nonce: 1,
            ttl_ms: "5000",
        })
        .unwrap();
        assert_eq!(
            bad_request_message(&body, 4),
            "bad OpenSession: field ttl_ms: invalid type: string \"5000\", expected u64"
        );
        #[derive(Serialize)]
        struct Hello<'a, V, R> {
            version: V,
            role: R,
            r#type: &'a str,
        }
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                rmp_serde::to_vec_named(&Hello {
                    version: "1",
                    role: "client",
                    r#type: "Hello",
                })
                .unwrap(),
                "field version: invalid type: string \"1\"",
            ),
            (
                rmp_serde::to_vec_named(&Hello {
                    version: 1,
                    role: "admin",
                    r#type: "Hello",
                })
                .unwrap(),
                "field role: unknown variant `admin`",
            ),
            (
                rmp_serde::to_vec_named(&Hello {
                    version: 1,
                    role: 7,
                    r#type: "Hello",
                })
                .unwrap(),
                "field role: ",
            ),
        ];
        for (body, want) in cases {
            let message = bad_request_message(&body, 0);
            assert!(
                message.starts_with(&format!("bad Hello: {want}")),
                "{message}"
            );
        }
        // Two bad fields: the first in wire order is named.
        let body = rmp_serde::to_vec_named(&Open {
            r#type: "OpenSession",
            id: 5,
            nonce: 1,
            ttl_ms: "x",
        })
        .unwrap();
        let mut twice = body.clone();
        twice[0] += 1;
        twice.extend_from_slice(b"\xa5owner\x07");
        let message = bad_request_message(&twice, 5);
        assert!(message.contains("field ttl_ms: "), "{message}");
    }

    /// `type` must be a str: the same body with a bin `type` is BadRequest naming `type`.
    #[test]
    fn a_bin_type_is_refused() {
        let status = rmp_serde::to_vec_named(&Request::Status { id: 9 }).unwrap();
        assert_eq!(&status[..7], b"\x82\xa4type\xa6");
        let mut bin = status[..6].to_vec();
        bin.extend_from_slice(b"\xc4\x06");
        bin.extend_from_slice(&status[7..]);
        let message = bad_request_message(&bin, 9);
        assert!(message.contains("field type: "), "{message}");
        // The same with `type` after `id`.
        let later = b"\x82\xa2id\x09\xa4type\xc4\x06Status";
        let message = bad_request_message(later, 9);
        assert!(message.contains("field type: "), "{message}");
        let later_str = b"\x82\xa2id\x09\xa4type\xa6Status";
        assert_eq!(
            decode_body::<Request>(later_str),
            Ok(Request::Status { id: 9 })
        );
    }

    /// `Append.data` is bin only: a str or an array of integers is BadRequest naming `data`;
    /// so is `Data.data` for a client.
    #[test]
    fn byte_fields_accept_only_bin() {
        #[derive(Serialize)]
        struct Append<'a, D> {
            r#type: &'a str,
            id: u64,
            session: u64,
            token: u64,
            seq: u64,
            file: &'a str,
            lock: &'a str,
            fence: u64,
            data: D,
        }
        let append = |data| Append {
            r#type: "Append",
            id: 3,
            session: 2,
            token: 1,
            seq: 1,
            file: "f",
            lock: "l",
            fence: 3,
            data,
        };
        let as_str = rmp_serde::to_vec_named(&append(Stringish::Str("ok\n"))).unwrap();
        let as_array = rmp_serde::to_vec_named(&append(Stringish::Ints(vec![111, 107]))).unwrap();
        for body in [as_str, as_array] {
            let message = bad_request_message(&body, 3);
            assert!(
                message.starts_with("bad Append: field data: invalid type: ")
                    && message.ends_with("expected MessagePack bin"),
                "{message}"
            );
        }
        let as_bin = rmp_serde::to_vec_named(&append(Stringish::Bin(b"ok\n"))).unwrap();
        assert!(matches!(
            decode_body::<Request>(&as_bin),
            Ok(Request::Append { data, .. }) if data == b"ok\n"
        ));
        #[derive(Serialize)]
        struct Data<'a> {
            r#type: &'a str,
            id: u64,
            data: &'a str,
            size: u64,
        }
        let body = rmp_serde::to_vec_named(&Data {
            r#type: "Data",
            id: 8,
            data: "ok",
            size: 2,
        })
        .unwrap();
        match decode_body::<Response>(&body) {
            Err(FrameError::BadRequest { id: 8, message }) => {
                assert!(message.contains("field data: "), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A value of several wire shapes, for the byte-field tests.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Stringish<'a> {
        Str(&'a str),
        Ints(Vec<u8>),
        Bin(#[serde(with = "serde_bytes")] &'a [u8]),
    }

    /// Field errors carry serde's message so the client can see which field is wrong.
    #[test]
    fn missing_field_message_names_the_field() {
        let body = rmp_serde::to_vec_named(&serde_json_like::Unknown {
            r#type: "Acquire",
            id: 13,
        })
        .unwrap();
        match decode_body::<Request>(&body) {
            Err(FrameError::BadRequest { id: 13, message }) => {
                assert!(message.contains("session"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Absent optional fields decode as nil/false; unknown extra fields are ignored.
    #[test]
    fn optional_fields_may_be_absent_and_extra_fields_are_ignored() {
        #[derive(Serialize)]
        struct Minimal<'a> {
            r#type: &'a str,
            id: u64,
            session: u64,
            token: u64,
            seq: u64,
            lock: &'a str,
            mode: &'a str,
            future_field: bool,
        }
        let body = rmp_serde::to_vec_named(&Minimal {
            r#type: "Acquire",
            id: 1,
            session: 2,
            token: 3,
            seq: 4,
            lock: "a",
            mode: "exclusive",
            future_field: true,
        })
        .unwrap();
        assert_eq!(
            decode_body::<Request>(&body),
            Ok(Request::Acquire {
                id: 1,
                session: 2,
                token: 3,
                seq: 4,
                lock: "a".into(),
                mode: LockMode::Exclusive,
                wait_ms: None,
                hold_ms: None,
            })
        );
    }

    /// A frame split anywhere waits for more bytes; it then decodes whole.
    #[test]
    fn truncated_frame_waits_for_more_bytes() {
        let full = encode_frame(&Request::Status { id: 77 }, MAX_TEST).unwrap();
        for cut in 0..full.len() {
            let mut codec = ServerCodec::default();
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&full[cut..]);
            assert_eq!(
                codec.decode(&mut buf).unwrap(),
                Some(Ok(Request::Status { id: 77 }))
            );
        }
    }

    const MAX_TEST: usize = crate::protocol::MAX_FRAME;

    /// EOF in the middle of a frame (even right after a complete header) is an error; EOF on a
    /// frame boundary is a clean end.
    #[test]
    fn eof_mid_frame_is_an_error() {
        let full = encode_frame(&Request::Status { id: 77 }, MAX_TEST).unwrap();
        for cut in 1..full.len() {
            let mut codec = ServerCodec::default();
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            match codec.decode_eof(&mut buf) {
                Err(Error::UnexpectedEof { buffered }) => assert_eq!(buffered, cut),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&full[..]);
        assert_eq!(
            codec.decode_eof(&mut buf).unwrap(),
            Some(Ok(Request::Status { id: 77 }))
        );
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    /// Arbitrary bytes never panic the decoder: each call yields an item, waits, or fails.
    #[test]
    fn garbage_never_panics() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..64))| {
            let mut codec = ServerCodec::new(32);
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..bytes.len() + 1 {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = decode_body::<Request>(&bytes);
        });
    }

    /// Helper messages that are not in the protocol, to build foreign bodies.
    mod serde_json_like {
        #[derive(serde::Serialize)]
        pub struct Unknown<'a> {
            pub r#type: &'a str,
            pub id: u64,
        }
    }
}
