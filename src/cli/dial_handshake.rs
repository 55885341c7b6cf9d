async fn dial_handshake(
    config: &TransportConfig,
    peer: NodeId,
    stream: TcpStream,
) -> Result<Framed<TcpStream, PeerCodec>, PeerError> {
    let mut hello = Framed::new(stream, ClientCodec::new(PEER_HANDSHAKE_MAX_FRAME));
    hello
        .feed(Request::Hello {
            version: protocol::VERSION,
            role: Role::Peer,
        })
        .await?;
    let mut framed = hello.map_codec(|_| PeerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
    let my_nonce = config.key.as_ref().map(|_| fresh_nonce());
    framed
        .send(PeerMessage::PeerHello {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            nonce: my_nonce.clone(),
        })
        .await?;
    let (cluster_id, node_id, their_nonce, their_mac) = match next_message(&mut framed).await? {
        PeerMessage::PeerWelcome {
            cluster_id,
            node_id,
            nonce,
            mac,
        } => (cluster_id, node_id, nonce, mac),
        other => return Err(unexpected(&mut framed, "PeerWelcome", other).await),
    };
    if cluster_id != config.cluster_id {
        let reason = format!(
            "peer is in cluster {cluster_id:?}, this node in {:?}",
            config.cluster_id
        );
        return Err(refuse(&mut framed, ErrorCode::WrongCluster, reason).await);
    }
    if node_id != peer {
        let reason = format!("reached node {node_id}, expected node {peer}");
        return Err(refuse(&mut framed, ErrorCode::BadRequest, reason).await);
    }
    let auth = match (&config.key, &my_nonce) {
        (Some(key), Some(my_nonce)) => {
            let proven = their_mac.as_deref().is_some_and(|m| {
                verify_mac(key.bytes(), Side::Acceptor, my_nonce, &cluster_id, peer, m)
            });
            if !proven {
                let reason = "the acceptor did not prove it holds the cluster key".to_string();
                return Err(refuse(&mut framed, ErrorCode::Unauthorized, reason).await);
            }
            match their_nonce {
                Some(nonce) if nonce.len() == PEER_NONCE_LEN => Some(mac(
                    key.bytes(),
                    Side::Dialer,
                    &nonce,
                    &config.cluster_id,
                    config.node_id,
                )),
                _ => {
                    let reason = "the acceptor sent no valid challenge".to_string();
                    return Err(refuse(&mut framed, ErrorCode::Unauthorized, reason).await);
                }
            }
        }
        _ => None,
    };
    framed.send(PeerMessage::PeerAuth { mac: auth }).await?;
    match next_message(&mut framed).await? {
        PeerMessage::PeerAccepted {} => Ok(framed),
        other => Err(unexpected(&mut framed, "PeerAccepted", other).await),
    }
}
