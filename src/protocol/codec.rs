//! Framing and MessagePack encoding for every raftlock connection.
//!
//! A frame is a `u32` big-endian body length followed by that many bytes of MessagePack: a map
//! with a string `type` field naming the message (see `protocol.md`). [`MsgPackCodec`] wraps
//! tokio-util's [`LengthDelimitedCodec`] (configured explicitly, never by default) and decodes
//! bodies in three steps, so that a bad body costs one error answer, not the connection:
//!
//! 1. The 4-byte header is checked against the maximum before the body is buffered or any
//!    space is reserved for it: a larger length is a fatal [`Error::FrameTooLarge`].
//! 2. The complete body must be a MessagePack map whose `type` is a string; its `type` is
//!    compared with [`Message::TYPES`]. Failures are *items*: `Err(FrameError::BadRequest)` or
//!    `Err(FrameError::UnknownType)`. The frame boundary is known, so the stream stays usable.
//! 3. The body is decoded as the full message; a missing or ill-typed field, or trailing bytes
//!    after the map, is again a recoverable `Err(FrameError::BadRequest)` item.

use std::io;
use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::message::{ErrorCode, Request, Response};

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
}

/// Every `type` of a client [`Request`], in declaration order.
pub const REQUEST_TYPES: &[&str] = &[
    "Hello",
    "OpenSession",
    "KeepAlive",
    "CloseSession",
    "Acquire",
    "Release",
    "Append",
    "Read",
    "Locks",
    "Status",
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
    "Appended",
    "Data",
    "LockList",
    "Status",
    "Error",
];

impl Message for Request {
    const TYPES: &'static [&'static str] = REQUEST_TYPES;
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

/// Decodes `T` from the whole of `body`; trailing bytes are an error.
fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = rmp_serde::Deserializer::new(io::Cursor::new(body));
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    let trailing = (body.len() as u64).saturating_sub(de.position());
    if trailing != 0 {
        return Err(format!("{trailing} trailing bytes after the message"));
    }
    Ok(value)
}

/// True if `byte` starts a MessagePack map (fixmap, map 16 or map 32).
fn is_map_marker(byte: u8) -> bool {
    matches!(byte, 0x80..=0x8f | 0xde | 0xdf)
}

/// Classifies and decodes one complete frame body.
pub fn decode_body<T: Message>(body: &[u8]) -> Result<T, FrameError> {
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
    let head: TypeOnly = decode_exact(body)
        .map_err(|e| bad(0, format!("body is not a map with a string `type`: {e}")))?;
    let id = decode_exact::<IdOnly>(body).map(|i| i.id).unwrap_or(0);
    if !T::TYPES.contains(&head.type_name.as_str()) {
        return Err(FrameError::UnknownType {
            id,
            type_name: head.type_name,
        });
    }
    decode_exact(body).map_err(|e| bad(id, format!("bad {}: {e}", head.type_name)))
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

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), Error> {
        let body = rmp_serde::to_vec_named(&item)?;
        if body.len() > self.max_frame {
            return Err(Error::FrameTooLarge {
                len: body.len() as u64,
                max: self.max_frame,
            });
        }
        Encoder::<bytes::Bytes>::encode(&mut self.frames, bytes::Bytes::from(body), dst)?;
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
