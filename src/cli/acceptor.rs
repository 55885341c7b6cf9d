/// The inbound side of the transport: serves connections whose first frame was a peer
/// `Hello`. Cheap to clone; hand one to the connection code.
pub struct PeerAcceptor<E> {
    inner: Arc<AcceptorInner<E>>,
}

impl<E> Clone for PeerAcceptor<E> {
    fn clone(&self) -> Self {
        PeerAcceptor {
            inner: self.inner.clone(),
        }
    }
}

impl<E> PeerAcceptor<E> {
    /// A snapshot of the inbound counters.
    pub fn stats(&self) -> InboundStats {
        let c = &self.inner.counters;
        InboundStats {
            accepted: read(&c.accepted),
            refused: read(&c.refused),
            received: read(&c.received),
            rejected: read(&c.rejected),
            deliver_waits: read(&c.deliver_waits),
        }
    }
}

impl<E: From<Envelope> + Send + 'static> PeerAcceptor<E> {
    /// Serves a peer connection whose client `Hello {version, role: "peer"}` the caller has just
    /// read (and whose version it has checked) from `framed`; frames already buffered are kept.
    /// Runs the acceptor's side of the handshake within the handshake deadline, then delivers
    /// envelopes until the dialer closes, the connection fails, `cancel` fires or the driver's
    /// inbox is closed. Refusals are sent as an `Error` frame, logged and counted.
    pub async fn serve_peer<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: Framed<T, ServerCodec>,
        remote: SocketAddr,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let config = &self.inner.config;
        let counters = &self.inner.counters;
        let span = tracing::info_span!("peer_in", node = config.node_id, %remote);
        async move {
            let mut framed = framed.map_codec(|_| PeerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
            let deadline = Instant::now() + config.handshake_timeout;
            let handshake = async {
                timeout_at(deadline, accept_handshake(config, &mut framed))
                    .await
                    .unwrap_or(Err(PeerError::Timeout {
                        during: "handshake",
                    }))
            };
            let dialer = match or_cancel(cancel, handshake).await {
                Ok(dialer) => dialer,
                Err(error) => {
                    if let PeerError::Timeout { .. } = error {
                        let told = framed.send(PeerMessage::error(
                            ErrorCode::HandshakeTimeout,
                            "peer handshake not completed in time",
                        ));
                        let _ = timeout(Duration::from_millis(100), told).await;
                    }
                    bump(&counters.refused, 1);
                    tracing::warn!(%error, "peer handshake failed");
                    return Err(error);
                }
            };
            bump(&counters.accepted, 1);
            tracing::debug!(dialer, "peer connection accepted");
            let framed = framed.map_codec(|_| PeerCodec::new(config.max_frame));
            self.receive(framed, dialer, cancel)
                .instrument(tracing::info_span!("from", dialer))
                .await
        }
        .instrument(span)
        .await
    }

    /// Reads the client `Hello` from a fresh stream (within the handshake deadline), then
    /// [`serve_peer`](Self::serve_peer). For a listener dedicated to peers; the daemon's shared
    /// listener reads `Hello` itself and calls `serve_peer`.
    pub async fn serve_stream<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: T,
        remote: SocketAddr,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let config = &self.inner.config;
        let mut framed = Framed::new(stream, ServerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
        let first = or_cancel(cancel, async {
            timeout(config.handshake_timeout, framed.next())
                .await
                .map_err(|_| PeerError::Timeout { during: "Hello" })
        })
        .await;
        let refusal = match first {
            Err(error) => {
                bump(&self.inner.counters.refused, 1);
                return Err(error);
            }
            Ok(None) => {
                bump(&self.inner.counters.refused, 1);
                return Err(PeerError::Closed);
            }
            Ok(Some(Err(error))) => {
                bump(&self.inner.counters.refused, 1);
                return Err(PeerError::Codec(error));
            }
            Ok(Some(Ok(Ok(Request::Hello {
                version,
                role: Role::Peer,
            }))))
                if version == protocol::VERSION =>
            {
                None
            }
            Ok(Some(Ok(Ok(Request::Hello { version, .. })))) if version != protocol::VERSION => {
                Some((
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {version} is not supported"),
                ))
            }
            Ok(Some(Ok(_))) => Some((
                ErrorCode::BadRequest,
                "this listener serves peers only: expected Hello with role peer".to_string(),
            )),
        };
        if let Some((code, reason)) = refusal {
            bump(&self.inner.counters.refused, 1);
            let _ = timeout(
                config.handshake_timeout,
                framed.send(protocol::Response::error(0, code, reason.clone())),
            )
            .await;
            return Err(PeerError::Refused { code, reason });
        }
        self.serve_peer(framed, remote, cancel).await
    }

    /// Delivers the dialer's envelopes until the connection ends.
    async fn receive<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut framed: Framed<T, PeerCodec>,
        dialer: NodeId,
        cancel: &CancellationToken,
    ) -> Result<(), PeerError> {
        let me = self.inner.config.node_id;
        let counters = &self.inner.counters;
        loop {
            let frame = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                frame = framed.next() => frame,
            };
            let envelope = match frame {
                None => return Err(PeerError::Closed),
                Some(Err(error)) => return Err(PeerError::Codec(error)),
                Some(Ok(Err(bad_frame))) => {
                    bump(&counters.rejected, 1);
                    tracing::warn!(error = %bad_frame, "dropping an undecodable peer frame");
                    continue;
                }
                Some(Ok(Ok(PeerMessage::Raft { envelope }))) => envelope,
                Some(Ok(Ok(PeerMessage::Error { code, message }))) => {
                    return Err(PeerError::RefusedByPeer { code, message })
                }
                Some(Ok(Ok(other))) => {
                    bump(&counters.rejected, 1);
                    tracing::warn!(
                        r#type = other.type_name(),
                        "dropping an unexpected peer frame"
                    );
                    continue;
                }
            };
            if envelope.from != dialer || envelope.to != me {
                bump(&counters.rejected, 1);
                tracing::warn!(
                    from = envelope.from,
                    to = envelope.to,
                    "dropping an envelope not from the authenticated dialer to this node"
                );
                continue;
            }
            let event = E::from(envelope);
            let event = match self.inner.deliver.try_send(event) {
                Ok(()) => {
                    bump(&counters.received, 1);
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(PeerError::Cancelled),
                Err(mpsc::error::TrySendError::Full(event)) => event,
            };
            // The driver is behind: wait for room, which stops reading this connection only.
            bump(&counters.deliver_waits, 1);
            let sent = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                sent = self.inner.deliver.send(event) => sent,
            };
            if sent.is_err() {
                return Err(PeerError::Cancelled);
            }
            bump(&counters.received, 1);
        }
    }
}
