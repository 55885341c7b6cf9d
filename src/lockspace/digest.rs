//! The fingerprint of a session request, kept with its result in the exactly-once table.
//!
//! A client that reuses a sequence number for a *different* request (a bug: §10 of protocol.md
//! says a seq is re-sent only with the identical request) must not be handed the earlier
//! request's result as if it were its own, say the grant of another lock. So the table stores,
//! with each result, a digest of the request that produced it, and a replay whose digest
//! differs answers `SequenceReused` instead.
//!
//! The digest is computed from the decoded command's canonical fields (never from the client's
//! bytes, whose key order and integer widths may vary between two honest retries), so every
//! replica computes the same value from the same log entry and snapshots stay identical. Each
//! field is fed with a fixed-width length or value, so no two different requests feed the same
//! bytes. SHA-256 truncated to 8 bytes: a collision needs a client that reuses a seq *and*
//! is unlucky at odds of 2^-64; the session and seq are the slot, not part of the digest.

use sha2::{Digest as _, Sha256};

use super::{Command, LockMode};

/// A request's fingerprint (the first 8 bytes of a SHA-256, big-endian).
pub(crate) type Digest = u64;

/// Feeds the fields of one request, each unambiguously delimited.
struct Feed(Sha256);

impl Feed {
    fn new(kind: &str) -> Feed {
        let mut feed = Feed(Sha256::new());
        feed.bytes(kind.as_bytes());
        feed
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn uint(&mut self, value: u64) {
        self.0.update(value.to_be_bytes());
    }

    fn option(&mut self, value: Option<u64>) {
        match value {
            Some(value) => {
                self.0.update([1]);
                self.uint(value);
            }
            None => self.0.update([0]),
        }
    }

    fn finish(self) -> Digest {
        let hash = self.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(first)
    }
}

/// The digest of a sequenced session command, or `None` for commands without a seq (they are
/// not deduplicated by seq: opens by nonce, expiries and revokes not at all).
pub(crate) fn of(command: &Command) -> Option<Digest> {
    let feed = match command {
        Command::CloseSession { .. } => Feed::new("CloseSession"),
        Command::Acquire {
            lock,
            mode,
            wait_ms,
            hold_ms,
            ..
        } => {
            let mut feed = Feed::new("Acquire");
            feed.bytes(lock.as_bytes());
            feed.bytes(match mode {
                LockMode::Exclusive => b"exclusive",
                LockMode::Shared => b"shared",
            });
            feed.option(*wait_ms);
            feed.option(*hold_ms);
            feed
        }
        Command::Release { lock, .. } => {
            let mut feed = Feed::new("Release");
            feed.bytes(lock.as_bytes());
            feed
        }
        Command::Cancel {
            lock, acquire_seq, ..
        } => {
            let mut feed = Feed::new("Cancel");
            feed.bytes(lock.as_bytes());
            feed.uint(*acquire_seq);
            feed
        }
        Command::Extend {
            lock,
            fence,
            hold_ms,
            ..
        } => {
            let mut feed = Feed::new("Extend");
            feed.bytes(lock.as_bytes());
            feed.uint(*fence);
            feed.uint(*hold_ms);
            feed
        }
        Command::Append {
            file,
            lock,
            fence,
            data,
            // The leader's limits are not the client's request: a retry through a leader with
            // other flags is still the same request.
            quota: _,
            ..
        } => {
            let mut feed = Feed::new("Append");
            feed.bytes(file.as_bytes());
            feed.bytes(lock.as_bytes());
            feed.uint(*fence);
            feed.bytes(data);
            feed
        }
        Command::Truncate {
            file,
            lock,
            fence,
            size,
            ..
        } => {
            let mut feed = Feed::new("Truncate");
            feed.bytes(file.as_bytes());
            feed.bytes(lock.as_bytes());
            feed.uint(*fence);
            feed.uint(*size);
            feed
        }
        Command::Delete {
            file, lock, fence, ..
        } => {
            let mut feed = Feed::new("Delete");
            feed.bytes(file.as_bytes());
            feed.bytes(lock.as_bytes());
            feed.uint(*fence);
            feed
        }
        Command::OpenSession { .. }
        | Command::ExpireSession { .. }
        | Command::RevokeSession { .. }
        | Command::MarkRevoked { .. }
        | Command::ExpireWait { .. }
        | Command::ExpireHold { .. } => return None,
    };
    Some(feed.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(lock: &str, seq: u64, wait_ms: Option<u64>) -> Command {
        Command::Acquire {
            session: 2,
            seq,
            lock: lock.into(),
            mode: LockMode::Exclusive,
            wait_ms,
            hold_ms: None,
        }
    }

    /// The same request digests alike whatever its seq; any field change changes it; the
    /// value is pinned, since every replica and every snapshot depends on it.
    #[test]
    fn digests_depend_on_the_request_only() {
        let a = of(&acquire("a", 1, None)).unwrap();
        assert_eq!(a, of(&acquire("a", 7, None)).unwrap());
        assert_ne!(a, of(&acquire("b", 1, None)).unwrap());
        assert_ne!(a, of(&acquire("a", 1, Some(0))).unwrap());
        let release = Command::Release {
            session: 2,
            seq: 1,
            lock: "a".into(),
        };
        assert_ne!(a, of(&release).unwrap());
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        let append = |file: &str, lock: &str| Command::Append {
            session: 2,
            seq: 1,
            file: file.into(),
            lock: lock.into(),
            fence: 3,
            data: vec![],
            quota: None,
        };
        assert_ne!(of(&append("ab", "c")), of(&append("a", "bc")));
        // The leader's quota is not part of the request.
        let mut limited = append("a", "b");
        if let Command::Append { quota, .. } = &mut limited {
            *quota = Some(crate::lockspace::Quota {
                max_file_bytes: 1,
                max_total_bytes: 2,
            });
        }
        assert_eq!(of(&limited), of(&append("a", "b")));
        // Truncate and Delete digest their fields, apart from each other and from Append.
        let truncate = |size| Command::Truncate {
            session: 2,
            seq: 1,
            file: "f".into(),
            lock: "l".into(),
            fence: 3,
            size,
        };
        let delete = |fence| Command::Delete {
            session: 2,
            seq: 1,
            file: "f".into(),
            lock: "l".into(),
            fence,
        };
        assert_eq!(of(&truncate(4)), of(&truncate(4)));
        assert_ne!(of(&truncate(4)), of(&truncate(5)));
        assert_ne!(of(&delete(3)), of(&delete(4)));
        assert_ne!(of(&truncate(3)), of(&delete(3)));
        assert_eq!(of(&Command::ExpireSession { session: 2 }), None);
        assert_eq!(a, 0x3b4c_976d_c4d4_560b, "{a:#018x}");
    }
}
