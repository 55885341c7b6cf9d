//! The wire protocol: framing (u32 big-endian length + MessagePack body), messages and limits.
//!
//! `protocol.md` at the top of the repository is the contract for client authors; this module
//! is its implementation. `tests/protocol_doc.rs` keeps the two in step.

mod bin;
mod codec;
mod fast;
mod limits;
mod message;
mod peer;
mod scan;

pub use codec::{
    decode_body, encode_frame, ClientCodec, Error, FrameError, Message, MsgPackCodec, ServerCodec,
    HEADER_LEN, REQUEST_TYPES, RESPONSE_TYPES,
};
pub use limits::{
    Invalid, Limits, HANDSHAKE_TIMEOUT, MAX_APPEND, MAX_CONNECTIONS, MAX_FILE_BYTES, MAX_FRAME,
    MAX_IN_FLIGHT, MAX_NAME_LEN, MAX_OWNER_LEN, MAX_READ, MAX_TOTAL_FILE_BYTES, MAX_TTL_MS,
    MAX_WAIT_MS, MIN_TTL_MS, SESSION_RESULTS_REMEMBERED,
};
pub use message::{
    ErrorCode, FileEntry, HolderState, LockMode, LockState, MemberStatus, PushReason, Request,
    Response, Role, SessionSummary, StatusInfo, WaiterState,
};
pub use peer::{
    mac, verify_mac, PeerCodec, PeerMessage, Side, WireEntry, WireEntryData, WireEnvelope,
    WireMembership, WireMessage, WireSnapshot, WireSnapshotMeta, MAX_CLUSTER_ID_LEN,
    PEER_HANDSHAKE_MAX_FRAME, PEER_MAC_LEN, PEER_MAX_FRAME, PEER_NONCE_LEN, PEER_TYPES,
    SNAPSHOT_CHUNK_BYTES,
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
