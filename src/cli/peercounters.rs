#[derive(Default)]
struct PeerCounters {
    connected: AtomicBool,
    sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_connection: AtomicU64,
    dropped_too_large: AtomicU64,
    connections: AtomicU64,
    connect_failures: AtomicU64,
}
