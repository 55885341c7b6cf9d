/// Identity, secrets, limits and timers of a node's peer transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id (never 0).
    pub node_id: NodeId,
    /// The cluster this node belongs to; every peer must state the same id.
    pub cluster_id: String,
    /// The cluster key, if the cluster uses one (then every peer must prove it holds it).
    pub key: Option<ClusterKey>,
    /// Messages queued per peer before `send` drops new ones.
    pub queue_capacity: usize,
    /// Most messages written per flush.
    pub max_batch: usize,
    /// Deadline for the TCP connect.
    pub connect_timeout: Duration,
    /// Deadline for the whole handshake, on either side.
    pub handshake_timeout: Duration,
    /// Deadline for writing and flushing one batch; past it the connection is recycled.
    pub write_timeout: Duration,
    /// First reconnect delay (before jitter).
    pub backoff_min: Duration,
    /// Longest reconnect delay (before jitter).
    pub backoff_max: Duration,
    /// Largest frame body after the handshake, both directions.
    pub max_frame: usize,
}

impl TransportConfig {
    /// Defaults for a node: 1024 queued messages per peer, batches of 256, 1 s connect and 2 s
    /// handshake deadlines, 5 s write deadline, backoff 20 ms doubling to 1 s, no key.
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id: cluster_id.into(),
            key: None,
            queue_capacity: 1024,
            max_batch: 256,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_frame: PEER_MAX_FRAME,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(ConfigError::ClusterIdLength {
                len: self.cluster_id.len(),
                max: MAX_CLUSTER_ID_LEN,
            });
        }
        if self.queue_capacity == 0 || self.max_batch == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(ConfigError::Backoff);
        }
        if self.max_frame < PEER_HANDSHAKE_MAX_FRAME {
            return Err(ConfigError::MaxFrame {
                max_frame: self.max_frame,
                min: PEER_HANDSHAKE_MAX_FRAME,
            });
        }
        Ok(())
    }
}

/// A [`TransportConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node ids start at 1.
    #[error("the node id must be non-zero")]
    ZeroNodeId,
    /// The cluster id is empty or too long.
    #[error("the cluster id is {len} bytes; it must be 1..={max}")]
    ClusterIdLength {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A queue or batch of size 0 could carry nothing.
    #[error("queue_capacity and max_batch must be non-zero")]
    ZeroCapacity,
    /// The backoff bounds are zero or inverted.
    #[error("backoff_min must be non-zero and at most backoff_max")]
    Backoff,
    /// The frame limit is below the handshake's.
    #[error("max_frame {max_frame} is below the handshake frame size {min}")]
    MaxFrame {
        /// The configured limit.
        max_frame: usize,
        /// The smallest allowed.
        min: usize,
    },
}
