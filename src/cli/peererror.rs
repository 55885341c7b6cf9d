/// Why a peer connection (or an attempt at one) ended. Every variant ends that connection
/// only; the outbound task retries, the inbound handler returns.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The TCP connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The peer's address.
        addr: String,
        /// The failure.
        source: io::Error,
    },
    /// Framing or socket failure.
    #[error("peer connection failed")]
    Codec(#[from] protocol::Error),
    /// A deadline passed.
    #[error("timed out during {during}")]
    Timeout {
        /// What was being waited for.
        during: &'static str,
    },
    /// The other side closed the connection.
    #[error("the other side closed the connection")]
    Closed,
    /// The other side refused the handshake (or closed with an error frame).
    #[error("refused by the other side: {code:?}: {message}")]
    RefusedByPeer {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// This side refused the other (told with an error frame where possible).
    #[error("refused: {code:?}: {reason}")]
    Refused {
        /// The code sent.
        code: ErrorCode,
        /// Why.
        reason: String,
    },
    /// The transport or the connection is shutting down.
    #[error("cancelled")]
    Cancelled,
}
