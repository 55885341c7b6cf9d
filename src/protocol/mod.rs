//! The wire protocol: framing (u32 big-endian length + MessagePack body), messages and limits.

mod message;

pub use message::{
    ErrorCode, HolderState, LockState, MemberStatus, Request, Response, Role, StatusInfo,
    WaiterState,
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
