#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        let delay = Duration::from_millis(100);
        for _ in 0..1000 {
            let d = jittered(delay);
            assert!(d >= delay / 2 && d <= delay, "{d:?}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn config_validation_names_the_problem() {
        let ok = TransportConfig::new(1, "c");
        assert_eq!(ok.validate(), Ok(()));
        type Breaker = fn(&mut TransportConfig);
        let cases: [(Breaker, ConfigError); 5] = [
            (|c| c.node_id = 0, ConfigError::ZeroNodeId),
            (
                |c| c.cluster_id = "x".repeat(MAX_CLUSTER_ID_LEN + 1),
                ConfigError::ClusterIdLength {
                    len: MAX_CLUSTER_ID_LEN + 1,
                    max: MAX_CLUSTER_ID_LEN,
                },
            ),
            (|c| c.max_batch = 0, ConfigError::ZeroCapacity),
            (|c| c.backoff_min = c.backoff_max * 2, ConfigError::Backoff),
            (
                |c| c.max_frame = 1,
                ConfigError::MaxFrame {
                    max_frame: 1,
                    min: PEER_HANDSHAKE_MAX_FRAME,
                },
            ),
        ];
        for (break_it, want) in cases {
            let mut config = ok.clone();
            break_it(&mut config);
            assert_eq!(config.validate(), Err(want));
        }
    }

    #[test]
    fn key_files_lose_only_trailing_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b" secret with spaces inside \r\n\n").unwrap();
        let key = ClusterKey::from_file(&path).unwrap();
        assert_eq!(key.bytes(), b" secret with spaces inside");
        std::fs::write(&path, b"short\n").unwrap();
        assert!(matches!(
            ClusterKey::from_file(&path),
            Err(KeyError::TooShort { len: 5, min: 16 })
        ));
    }
}
