#[derive(Default)]
struct InboundCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    deliver_waits: AtomicU64,
}
