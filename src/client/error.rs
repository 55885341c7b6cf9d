//! The client library's error type, grouped by how a caller reacts to it.

use std::io;

use crate::protocol::ErrorCode;

/// The result of a client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a client operation failed.
///
/// The first group are lock outcomes the application handles (try later, give up, stop
/// writing); `SessionExpired` means every lock of the session is gone; the rest are failures of
/// the service or the connection after the library's own retries ran out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A try-once acquire found the lock taken.
    #[error("lock is busy")]
    Busy,
    /// An acquire waited for its whole wait bound without being granted.
    #[error("timed out waiting for the lock")]
    WaitTimeout,
    /// The fence is not the lock's current exclusive grant to this session: the lock moved on.
    #[error("stale fencing token: the lock is no longer held with this fence")]
    StaleFence,
    /// The session does not hold the lock.
    #[error("the session does not hold the lock")]
    NotHolder,
    /// The session holds or waits for the lock in another mode, or already waits for it.
    #[error("conflicting request: the session holds or waits for the lock in another way")]
    Conflict,
    /// The queued acquire was cancelled ([`super::Session::cancel`]) before it was granted.
    #[error("the queued acquire was cancelled")]
    Cancelled,
    /// A cancel found no queued acquire to cancel: it was granted (the session holds the lock
    /// and must release it), ended, or never reached the cluster.
    #[error("no queued acquire to cancel")]
    NotWaiting,
    /// The session expired or was closed (or its token is wrong); its locks are released.
    #[error("session expired")]
    SessionExpired,
    /// An administrator revoked the session: the daemon refuses its keep-alives, acquires,
    /// extends and appends. Its locks stay held only until it closes or its lease runs out, so
    /// stop the work they guard, then close the session (which frees them at once).
    #[error("session revoked by an administrator")]
    Revoked,
    /// The file does not exist.
    #[error("file not found")]
    NotFound,
    /// The request was refused by the daemon for a reason the library cannot retry.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The wire error code.
        code: ErrorCode,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon answered something the protocol does not allow here (a bug on one side).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The frame codec failed (oversized frame, broken stream).
    #[error("framing error")]
    Codec(#[from] crate::protocol::Error),
    /// A socket operation failed.
    #[error("i/o error")]
    Io(#[from] io::Error),
    /// No answer within the request timeout, even after retries. The outcome is unknown.
    #[error("request timed out")]
    Timeout,
    /// None of the servers could be reached (or none had a leader) before the retry deadline.
    #[error("no server available: {last}")]
    NoServerAvailable {
        /// The last failure seen while trying.
        last: String,
    },
    /// An argument is outside the protocol's limits; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The error for a wire error code that the retry loop did not absorb.
    pub(crate) fn from_code(code: ErrorCode, message: String) -> Error {
        match code {
            ErrorCode::Busy => Error::Busy,
            ErrorCode::WaitTimeout => Error::WaitTimeout,
            ErrorCode::StaleFence => Error::StaleFence,
            ErrorCode::NotHolder => Error::NotHolder,
            ErrorCode::Conflict => Error::Conflict,
            ErrorCode::NotWaiting => Error::NotWaiting,
            ErrorCode::SessionExpired => Error::SessionExpired,
            ErrorCode::Revoked => Error::Revoked,
            ErrorCode::NotFound => Error::NotFound,
            ErrorCode::Timeout => Error::Timeout,
            code => Error::Server { code, message },
        }
    }

    /// True when the server refused the connection's token (or its lack of one): retrying
    /// elsewhere cannot help.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Error::Server {
                code: ErrorCode::Unauthenticated,
                ..
            }
        )
    }

    /// True for lock outcomes that say "not now" rather than "something is broken"
    /// (`Busy`, `WaitTimeout`).
    pub fn is_lock_unavailable(&self) -> bool {
        matches!(self, Error::Busy | Error::WaitTimeout)
    }
}
