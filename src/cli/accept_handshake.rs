/// The acceptor's side of the handshake, after `Hello`: returns the authenticated dialer's id.
async fn accept_handshake<T: AsyncRead + AsyncWrite + Unpin>(
    config: &TransportConfig,
    framed: &mut Framed<T, PeerCodec>,
) -> Result<NodeId, PeerError> {
    let (cluster_id, dialer, dialer_nonce) = match next_message(framed).await? {
        PeerMessage::PeerHello {
            cluster_id,
            node_id,
            nonce,
        } => (cluster_id, node_id, nonce),
        other => return Err(unexpected(framed, "PeerHello", other).await),
    };
    if cluster_id != config.cluster_id {
        let reason = format!(
            "this node is in cluster {:?}, the dialer in {cluster_id:?}",
            config.cluster_id
        );
        return Err(refuse(framed, ErrorCode::WrongCluster, reason).await);
    }
    if dialer == 0 || dialer == config.node_id {
        let reason = format!("node id {dialer} cannot dial node {}", config.node_id);
        return Err(refuse(framed, ErrorCode::BadRequest, reason).await);
    }
    let (my_nonce, my_mac) = match &config.key {
        None => (None, None),
        Some(key) => match dialer_nonce {
            None => {
                let reason = "this cluster requires a cluster key: PeerHello has no nonce";
                return Err(refuse(framed, ErrorCode::Unauthorized, reason.to_string()).await);
            }
            Some(nonce) if nonce.len() != PEER_NONCE_LEN => {
                let reason = format!("nonce must be {PEER_NONCE_LEN} bytes, got {}", nonce.len());
                return Err(refuse(framed, ErrorCode::BadRequest, reason).await);
            }
            Some(nonce) => {
                let answer = mac(
                    key.bytes(),
                    Side::Acceptor,
                    &nonce,
                    &config.cluster_id,
                    config.node_id,
                );
                (Some(fresh_nonce()), Some(answer))
            }
        },
    };
    framed
        .send(PeerMessage::PeerWelcome {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            nonce: my_nonce.clone(),
            mac: my_mac,
        })
        .await?;
    let dialer_mac = match next_message(framed).await? {
        PeerMessage::PeerAuth { mac } => mac,
        other => return Err(unexpected(framed, "PeerAuth", other).await),
    };
    if let (Some(key), Some(my_nonce)) = (&config.key, &my_nonce) {
        let proven = dialer_mac.as_deref().is_some_and(|m| {
            verify_mac(
                key.bytes(),
                Side::Dialer,
                my_nonce,
                &config.cluster_id,
                dialer,
                m,
            )
        });
        if !proven {
            let reason = format!("node {dialer} did not prove it holds the cluster key");
            return Err(refuse(framed, ErrorCode::Unauthorized, reason).await);
        }
    }
    framed.send(PeerMessage::PeerAccepted {}).await?;
    Ok(dialer)
}
