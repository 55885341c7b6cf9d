/// Counters of the inbound side, for status and debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Peer connections that completed the handshake.
    pub accepted: u64,
    /// Peer connections refused or failed during the handshake.
    pub refused: u64,
    /// Envelopes delivered to the driver.
    pub received: u64,
    /// Frames dropped after the handshake: envelopes with a forged `from` or a wrong `to`,
    /// undecodable frames, unexpected message types.
    pub rejected: u64,
    /// Envelopes that found the driver's inbox full and waited for room (backpressure).
    pub deliver_waits: u64,
}
