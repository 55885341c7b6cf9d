/// One peer's outbound task: wait for a message, connect, pump batches; on failure drop the
/// batch in hand and back off.
async fn run_outbound(
    config: Arc<TransportConfig>,
    peer: NodeId,
    addr: String,
    mut queue: mpsc::Receiver<Envelope>,
    cancel: CancellationToken,
    counters: Arc<PeerCounters>,
) {
    let mut backoff = config.backoff_min;
    let mut batch: Vec<Envelope> = Vec::new();
    let mut failures_in_row = 0u64;
    loop {
        if batch.is_empty() {
            // Idle until there is something to send: connections are made on demand.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                next = queue.recv() => match next {
                    Some(envelope) => batch.push(envelope),
                    None => return,
                },
            }
        }
        match or_cancel(&cancel, dial(&config, peer, &addr)).await {
            Err(PeerError::Cancelled) => return,
            Err(error) => {
                bump(&counters.connect_failures, 1);
                bump(&counters.dropped_connection, batch.len() as u64);
                batch.clear();
                failures_in_row += 1;
                let refused = matches!(
                    error,
                    PeerError::Refused { .. } | PeerError::RefusedByPeer { .. }
                );
                // A refusal is a misconfiguration worth a warning, once per run of failures;
                // an unreachable peer is routine (it may be restarting).
                if refused && failures_in_row == 1 {
                    tracing::warn!(%error, "peer handshake refused");
                } else {
                    tracing::debug!(%error, failures_in_row, "cannot reach peer");
                }
            }
            Ok(framed) => {
                bump(&counters.connections, 1);
                failures_in_row = 0;
                counters.connected.store(true, Ordering::Relaxed);
                tracing::debug!("peer connected");
                let started = Instant::now();
                let result =
                    pump(framed, &config, &mut queue, &mut batch, &cancel, &counters).await;
                counters.connected.store(false, Ordering::Relaxed);
                // A connection that lived a while resets the backoff; one that dies at once
                // (e.g. the peer accepts and drops us) keeps backing off.
                if started.elapsed() >= config.backoff_max {
                    backoff = config.backoff_min;
                }
                match result {
                    // Cancelled, or the transport dropped its sender.
                    Err(PeerError::Cancelled) | Ok(()) => return,
                    Err(error) => tracing::debug!(%error, "peer connection lost"),
                }
            }
        }
        let delay = jittered(backoff);
        backoff = (backoff * 2).min(config.backoff_max);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
