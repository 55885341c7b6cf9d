/// Connects to `addr` and performs the dialer's side of the handshake, expecting to reach
/// `peer`. Bounded by the connect and handshake deadlines.
async fn dial(
    config: &TransportConfig,
    peer: NodeId,
    addr: &str,
) -> Result<Framed<TcpStream, PeerCodec>, PeerError> {
    let stream = timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| PeerError::Timeout { during: "connect" })?
        .map_err(|source| PeerError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Small Raft messages must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let framed = timeout(
        config.handshake_timeout,
        dial_handshake(config, peer, stream),
    )
    .await
    .map_err(|_| PeerError::Timeout {
        during: "handshake",
    })??;
    Ok(framed.map_codec(|_| PeerCodec::new(config.max_frame)))
}
