/// Writes batches until the connection fails (`Err`), the transport is dropped (`Ok`) or
/// cancelled. `batch` may hold messages on entry; on an error the messages in hand are counted
/// as dropped and `batch` is left empty.
async fn pump(
    framed: Framed<TcpStream, PeerCodec>,
    config: &TransportConfig,
    queue: &mut mpsc::Receiver<Envelope>,
    batch: &mut Vec<Envelope>,
    cancel: &CancellationToken,
    counters: &PeerCounters,
) -> Result<(), PeerError> {
    let (mut sink, mut incoming) = framed.split();
    loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                // The acceptor sends nothing after `PeerAccepted` but an error before closing.
                frame = incoming.next() => return Err(match frame {
                    None => PeerError::Closed,
                    Some(Err(error)) => PeerError::Codec(error),
                    Some(Ok(Ok(PeerMessage::Error { code, message }))) => {
                        PeerError::RefusedByPeer { code, message }
                    }
                    Some(Ok(other)) => PeerError::Refused {
                        code: ErrorCode::BadRequest,
                        reason: format!("unexpected frame from the acceptor: {other:?}"),
                    },
                }),
                next = queue.recv() => match next {
                    Some(envelope) => batch.push(envelope),
                    None => return Ok(()),
                },
            }
        }
        while batch.len() < config.max_batch {
            match queue.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
        let total = batch.len() as u64;
        let too_large_before = read(&counters.dropped_too_large);
        let write = async {
            let mut written = 0u64;
            for envelope in batch.drain(..) {
                match sink.feed(PeerMessage::Raft { envelope }).await {
                    Ok(()) => written += 1,
                    Err(protocol::Error::FrameTooLarge { len, max }) => {
                        bump(&counters.dropped_too_large, 1);
                        tracing::warn!(len, max, "dropping a Raft message larger than a frame");
                    }
                    Err(error) => return Err(PeerError::Codec(error)),
                }
            }
            sink.flush().await?;
            Ok(written)
        };
        let written = or_cancel(cancel, async {
            timeout(config.write_timeout, write)
                .await
                .map_err(|_| PeerError::Timeout { during: "write" })?
        });
        match written.await {
            Ok(written) => bump(&counters.sent, written),
            Err(error) => {
                // Everything fed but not flushed is lost with the connection (`batch` was
                // drained as it was fed).
                let too_large = read(&counters.dropped_too_large) - too_large_before;
                bump(&counters.dropped_connection, total - too_large);
                batch.clear();
                return Err(error);
            }
        }
    }
}
