/// Everything the transport counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Per configured peer.
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Messages addressed to a node that is not a configured peer (dropped).
    pub dropped_unknown_peer: u64,
    /// The inbound side.
    pub inbound: InboundStats,
}
