/// The handle of one peer's outbound task.
struct Outbound {
    addr: String,
    queue: mpsc::Sender<Envelope>,
    cancel: CancellationToken,
    counters: Arc<PeerCounters>,
}
