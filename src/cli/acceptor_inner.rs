struct AcceptorInner<E> {
    config: Arc<TransportConfig>,
    deliver: mpsc::Sender<E>,
    counters: InboundCounters,
}
