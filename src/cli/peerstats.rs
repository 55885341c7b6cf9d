/// Counters of one outbound peer, for status and debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The address dialed.
    pub addr: String,
    /// True while a handshaken connection is up.
    pub connected: bool,
    /// Messages written and flushed to the socket.
    pub sent: u64,
    /// Messages dropped by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because the connection failed (or could not be made) while they were
    /// in hand.
    pub dropped_connection: u64,
    /// Messages dropped because they exceed the frame limit (e.g. a huge snapshot).
    pub dropped_too_large: u64,
    /// Successful handshakes (the first connection and every reconnection).
    pub connections: u64,
    /// Failed connects and handshakes.
    pub connect_failures: u64,
}
