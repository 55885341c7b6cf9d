/// The peer transport of one node: outbound tasks per peer and the inbound acceptor. Owned by
/// the driver (sends and membership changes come from it); dropping it stops the outbound
/// tasks. `E` is the driver's inbox event, built from each received envelope.
pub struct Transport<E> {
    config: Arc<TransportConfig>,
    peers: BTreeMap<NodeId, Outbound>,
    acceptor: PeerAcceptor<E>,
    dropped_unknown_peer: AtomicU64,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl<E: From<Envelope> + Send + 'static> Transport<E> {
    /// Starts a transport (must be called inside a tokio runtime): one outbound task per entry
    /// of `peers` (node id → `host:port`; this node's own id is ignored) and an acceptor that
    /// delivers received envelopes, converted to `E`, into `deliver`.
    pub fn new(
        config: TransportConfig,
        peers: BTreeMap<NodeId, String>,
        deliver: mpsc::Sender<E>,
    ) -> Result<Transport<E>, ConfigError> {
        config.validate()?;
        let config = Arc::new(config);
        let acceptor = PeerAcceptor {
            inner: Arc::new(AcceptorInner {
                config: config.clone(),
                deliver,
                counters: InboundCounters::default(),
            }),
        };
        let mut transport = Transport {
            config,
            peers: BTreeMap::new(),
            acceptor,
            dropped_unknown_peer: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        transport.set_peers(peers);
        Ok(transport)
    }
}

impl<E> Transport<E> {
    /// Queues an envelope for `envelope.to`. Never blocks: if that peer's queue is full, or the
    /// peer is unknown, the envelope is dropped and counted (Raft retries).
    pub fn send(&self, envelope: Envelope) {
        let Some(peer) = self.peers.get(&envelope.to) else {
            bump(&self.dropped_unknown_peer, 1);
            tracing::debug!(to = envelope.to, "dropping a message to an unknown peer");
            return;
        };
        match peer.queue.try_send(envelope) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(envelope)) => {
                bump(&peer.counters.dropped_queue_full, 1);
                tracing::trace!(to = envelope.to, "peer queue full, dropping a message");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The task is gone only after cancellation; count it like a full queue.
                bump(&peer.counters.dropped_queue_full, 1);
            }
        }
    }

    /// Replaces the set of peers (membership change): tasks of removed peers stop (their
    /// queued messages are dropped), a peer whose address changed is redialed at the new one,
    /// new peers get a task. This node's own id is ignored.
    pub fn set_peers(&mut self, mut peers: BTreeMap<NodeId, String>) {
        peers.remove(&self.config.node_id);
        peers.remove(&0);
        self.peers.retain(|id, outbound| {
            let keep = peers.get(id) == Some(&outbound.addr);
            if !keep {
                outbound.cancel.cancel();
            }
            keep
        });
        for (id, addr) in peers {
            if self.peers.contains_key(&id) {
                continue;
            }
            let (queue, receiver) = mpsc::channel(self.config.queue_capacity);
            let cancel = self.cancel.child_token();
            let counters = Arc::new(PeerCounters::default());
            let span =
                tracing::info_span!("peer_out", node = self.config.node_id, peer = id, %addr);
            self.tasks.spawn(
                run_outbound(
                    self.config.clone(),
                    id,
                    addr.clone(),
                    receiver,
                    cancel.clone(),
                    counters.clone(),
                )
                .instrument(span),
            );
            self.peers.insert(
                id,
                Outbound {
                    addr,
                    queue,
                    cancel,
                    counters,
                },
            );
        }
    }

    /// The configured peers and their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers
            .iter()
            .map(|(id, outbound)| (*id, outbound.addr.clone()))
            .collect()
    }

    /// The inbound entry point, to hand to the connection code.
    pub fn acceptor(&self) -> PeerAcceptor<E> {
        self.acceptor.clone()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> TransportStats {
        let peers = self
            .peers
            .iter()
            .map(|(id, outbound)| {
                let c = &outbound.counters;
                let stats = PeerStats {
                    addr: outbound.addr.clone(),
                    connected: c.connected.load(Ordering::Relaxed),
                    sent: read(&c.sent),
                    dropped_queue_full: read(&c.dropped_queue_full),
                    dropped_connection: read(&c.dropped_connection),
                    dropped_too_large: read(&c.dropped_too_large),
                    connections: read(&c.connections),
                    connect_failures: read(&c.connect_failures),
                };
                (*id, stats)
            })
            .collect();
        TransportStats {
            peers,
            dropped_unknown_peer: read(&self.dropped_unknown_peer),
            inbound: self.acceptor.stats(),
        }
    }

    /// Stops every outbound task and waits for them to end (each ends at its next await).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl<E> Drop for Transport<E> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
