//! The limits every raftlock daemon enforces, with their defaults. `protocol.md` documents the
//! same numbers for client authors; the daemon may override them with flags.

use std::time::Duration;

use super::message::Request;

/// Largest frame body, in bytes (4 MiB). A larger length prefix closes the connection.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Longest lock or file name, in UTF-8 bytes. Names must also be non-empty.
pub const MAX_NAME_LEN: usize = 256;
/// Longest `OpenSession.owner`, in UTF-8 bytes.
pub const MAX_OWNER_LEN: usize = 256;
/// Largest `Append` payload, in bytes (1 MiB).
pub const MAX_APPEND: usize = 1024 * 1024;
/// Most bytes one `Read` returns (1 MiB); a larger `len` is served up to this bound.
pub const MAX_READ: u64 = 1024 * 1024;
/// Default cap on open client connections; the daemon may be configured higher.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Requests one connection may have unanswered at once (a queued `Acquire` counts until its
/// final answer). One more is refused with `TooManyRequests`.
pub const MAX_IN_FLIGHT: usize = 1024;
/// How long a new connection may take to send `Hello` before it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest session lease, in milliseconds (1 s).
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest session lease, in milliseconds (1 h).
pub const MAX_TTL_MS: u64 = 3_600_000;
/// Longest `wait_ms` or `hold_ms`, in milliseconds (24 h); nil means unbounded instead. The cap
/// keeps deadline arithmetic far from overflow.
pub const MAX_WAIT_MS: u64 = 86_400_000;
/// Default per-file size limit (16 MiB): an `Append` that would grow a file past it is
/// refused with `QuotaExceeded`.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Default limit on the total size of all files (48 MiB). File bytes live in memory and in
/// every snapshot, and a snapshot travels to a catching-up node in one peer frame of at most
/// 64 MiB (`PEER_MAX_FRAME`): the default leaves room for the rest of the state, so that a node
/// can always be replaced.
pub const MAX_TOTAL_FILE_BYTES: u64 = 48 * 1024 * 1024;
/// How many recent results the state machine remembers per session for exactly-once retries; a
/// retry of an older `seq` gets `SequenceTooOld`.
pub const SESSION_RESULTS_REMEMBERED: usize = 256;

/// The limits a daemon enforces. `Limits::default()` is the documented protocol defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body in bytes.
    pub max_frame: usize,
    /// Longest lock or file name in bytes.
    pub max_name_len: usize,
    /// Largest `Append` payload in bytes.
    pub max_append: usize,
    /// Most bytes one `Read` returns.
    pub max_read: u64,
    /// Open client connections before new ones get `TooManyConnections`.
    pub max_connections: usize,
    /// Unanswered requests per connection before `TooManyRequests`.
    pub max_in_flight: usize,
    /// Time allowed for `Hello` after accept.
    pub handshake_timeout: Duration,
    /// Shortest session TTL in ms.
    pub min_ttl_ms: u64,
    /// Longest session TTL in ms.
    pub max_ttl_ms: u64,
    /// Longest `wait_ms`/`hold_ms` in ms.
    pub max_wait_ms: u64,
    /// The largest size one file may grow to by `Append` (the leader's per-file quota).
    pub max_file_bytes: u64,
    /// The largest total size of all files (the leader's total quota).
    pub max_total_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: MAX_FRAME,
            max_name_len: MAX_NAME_LEN,
            max_append: MAX_APPEND,
            max_read: MAX_READ,
            max_connections: MAX_CONNECTIONS,
            max_in_flight: MAX_IN_FLIGHT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            min_ttl_ms: MIN_TTL_MS,
            max_ttl_ms: MAX_TTL_MS,
            max_wait_ms: MAX_WAIT_MS,
            max_file_bytes: MAX_FILE_BYTES,
            max_total_file_bytes: MAX_TOTAL_FILE_BYTES,
        }
    }
}

/// Why a decoded request breaks the limits. Its text is the `BadRequest` message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Request ids must be non-zero (0 marks connection-level errors).
    #[error("id must be non-zero")]
    ZeroId,
    /// Session ids are log indexes, never 0.
    #[error("session must be non-zero")]
    ZeroSession,
    /// A lock or file name is empty.
    #[error("{field} must not be empty")]
    EmptyName {
        /// The offending field.
        field: &'static str,
    },
    /// A lock or file name (or a prefix) is too long.
    #[error("{field} is {len} bytes, the maximum is {max}")]
    NameTooLong {
        /// The offending field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An `Append` payload is too large.
    #[error("data is {len} bytes, the maximum is {max}")]
    DataTooLarge {
        /// Payload length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A session TTL is outside the allowed range.
    #[error("ttl_ms {ttl_ms} is outside {min}..={max}")]
    TtlOutOfRange {
        /// The requested TTL.
        ttl_ms: u64,
        /// Shortest allowed.
        min: u64,
        /// Longest allowed.
        max: u64,
    },
    /// `wait_ms` or `hold_ms` is above the maximum (use nil for unbounded).
    #[error("{field} {value} exceeds the maximum of {max} (use nil for no limit)")]
    DurationTooLong {
        /// `wait_ms` or `hold_ms`.
        field: &'static str,
        /// The requested value.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// Node ids start at 1.
    #[error("node_id must be non-zero")]
    ZeroNode,
    /// A member address is not `host:port` (or is longer than 256 bytes).
    #[error("addr {addr:?} is not host:port")]
    BadAddr {
        /// The address given.
        addr: String,
    },
    /// A hold limit of 0 would revoke the grant at once.
    #[error("hold_ms must be at least 1 (use nil for no limit)")]
    ZeroHold,
}

impl Limits {
    /// The number of bytes a `Read` of `len` bytes returns at most.
    pub fn read_len(&self, len: u64) -> u64 {
        len.min(self.max_read)
    }

    /// Checks a decoded request against these limits, before it reaches the state machine.
    /// `Hello`'s version and role are the handshake's business and are not checked here.
    pub fn validate(&self, request: &Request) -> Result<(), Invalid> {
        match request {
            Request::Hello { .. } => Ok(()),
            Request::OpenSession {
                id, ttl_ms, owner, ..
            } => {
                check_id(*id)?;
                if let Some(owner) = owner {
                    if owner.len() > MAX_OWNER_LEN {
                        return Err(Invalid::NameTooLong {
                            field: "owner",
                            len: owner.len(),
                            max: MAX_OWNER_LEN,
                        });
                    }
                }
                if !(self.min_ttl_ms..=self.max_ttl_ms).contains(ttl_ms) {
                    return Err(Invalid::TtlOutOfRange {
                        ttl_ms: *ttl_ms,
                        min: self.min_ttl_ms,
                        max: self.max_ttl_ms,
                    });
                }
                Ok(())
            }
            Request::KeepAlive { id, session, .. } | Request::CloseSession { id, session, .. } => {
                check_id(*id)?;
                check_session(*session)
            }
            Request::Acquire {
                id,
                session,
                lock,
                wait_ms,
                hold_ms,
                ..
            } => {
                check_id(*id)?;
                check_session(*session)?;
                self.check_name("lock", lock)?;
                if let Some(wait) = *wait_ms {
                    self.check_duration("wait_ms", wait)?;
                }
                if let Some(hold) = *hold_ms {
                    if hold == 0 {
                        return Err(Invalid::ZeroHold);
                    }
                    self.check_duration("hold_ms", hold)?;
                }
                Ok(())
            }
            Request::Release {
                id, session, lock, ..
            } => {
                check_id(*id)?;
                check_session(*session)?;
                self.check_name("lock", lock)
            }
            Request::Cancel {
                id, session, lock, ..
            } => {
                check_id(*id)?;
                check_session(*session)?;
                self.check_name("lock", lock)
            }
            Request::Extend {
                id,
                session,
                lock,
                hold_ms,
                ..
            } => {
                check_id(*id)?;
                check_session(*session)?;
                self.check_name("lock", lock)?;
                if *hold_ms == 0 {
                    return Err(Invalid::ZeroHold);
                }
                self.check_duration("hold_ms", *hold_ms)
            }
            Request::Append {
                id,
                session,
                file,
                lock,
                data,
                ..
            } => {
                check_id(*id)?;
                check_session(*session)?;
                self.check_name("file", file)?;
                self.check_name("lock", lock)?;
                if data.len() > self.max_append {
                    return Err(Invalid::DataTooLarge {
                        len: data.len(),
                        max: self.max_append,
                    });
                }
                Ok(())
            }
            Request::Truncate {
                id,
                session,
                file,
                lock,
                ..
            }
            | Request::Delete {
                id,
                session,
                file,
                lock,
                ..
            } => {
                check_id(*id)?;
                check_session(*session)?;
                self.check_name("file", file)?;
                self.check_name("lock", lock)
            }
            Request::Read { id, file, .. } => {
                check_id(*id)?;
                self.check_name("file", file)
            }
            Request::Locks { id, prefix, .. } | Request::Files { id, prefix, .. } => {
                check_id(*id)?;
                match prefix {
                    Some(p) if p.len() > self.max_name_len => Err(Invalid::NameTooLong {
                        field: "prefix",
                        len: p.len(),
                        max: self.max_name_len,
                    }),
                    _ => Ok(()),
                }
            }
            Request::Status { id } | Request::Sessions { id } | Request::SnapshotSave { id } => {
                check_id(*id)
            }
            Request::RevokeSession { id, session_id, .. } => {
                check_id(*id)?;
                check_session(*session_id)
            }
            Request::AddMember { id, node_id, addr } => {
                check_id(*id)?;
                check_node(*node_id)?;
                check_addr(addr)
            }
            Request::RemoveMember { id, node_id } => {
                check_id(*id)?;
                check_node(*node_id)
            }
            Request::TransferLeader { id, node_id } => {
                check_id(*id)?;
                node_id.map_or(Ok(()), check_node)
            }
        }
    }

    fn check_name(&self, field: &'static str, name: &str) -> Result<(), Invalid> {
        if name.is_empty() {
            return Err(Invalid::EmptyName { field });
        }
        if name.len() > self.max_name_len {
            return Err(Invalid::NameTooLong {
                field,
                len: name.len(),
                max: self.max_name_len,
            });
        }
        Ok(())
    }

    fn check_duration(&self, field: &'static str, value: u64) -> Result<(), Invalid> {
        if value > self.max_wait_ms {
            return Err(Invalid::DurationTooLong {
                field,
                value,
                max: self.max_wait_ms,
            });
        }
        Ok(())
    }
}

fn check_id(id: u64) -> Result<(), Invalid> {
    if id == 0 {
        return Err(Invalid::ZeroId);
    }
    Ok(())
}

fn check_session(session: u64) -> Result<(), Invalid> {
    if session == 0 {
        return Err(Invalid::ZeroSession);
    }
    Ok(())
}

fn check_node(node_id: u64) -> Result<(), Invalid> {
    if node_id == 0 {
        Err(Invalid::ZeroNode)
    } else {
        Ok(())
    }
}

/// A member address: `host:port` with a non-empty host and a numeric port, at most
/// [`MAX_NAME_LEN`] bytes.
fn check_addr(addr: &str) -> Result<(), Invalid> {
    let ok = addr.len() <= MAX_NAME_LEN
        && addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Invalid::BadAddr {
            addr: addr.chars().take(64).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LockMode;

    fn acquire(lock: &str, wait_ms: Option<u64>, hold_ms: Option<u64>) -> Request {
        Request::Acquire {
            id: 1,
            session: 1,
            token: 7,
            seq: 1,
            lock: lock.into(),
            mode: LockMode::Exclusive,
            wait_ms,
            hold_ms,
        }
    }

    #[test]
    fn validate_accepts_requests_within_limits() {
        let l = Limits::default();
        let ok = [
            Request::Hello {
                version: 1,
                role: super::super::Role::Client,
                token: None,
            },
            Request::OpenSession {
                id: 1,
                nonce: 0,
                ttl_ms: MIN_TTL_MS,
                owner: None,
            },
            Request::OpenSession {
                id: 1,
                nonce: 0,
                ttl_ms: MAX_TTL_MS,
                owner: None,
            },
            acquire(&"x".repeat(MAX_NAME_LEN), Some(0), Some(1)),
            acquire("a", None, Some(MAX_WAIT_MS)),
            Request::Append {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                file: "f".into(),
                lock: "a".into(),
                fence: 3,
                data: vec![0; MAX_APPEND],
            },
            Request::Read {
                id: 9,
                file: "f".into(),
                offset: 0,
                len: u64::MAX,
                stale: true,
            },
            Request::Locks {
                id: 2,
                prefix: Some(String::new()),
                stale: false,
            },
            Request::Status { id: 3 },
        ];
        for r in &ok {
            assert_eq!(l.validate(r), Ok(()), "{r:?}");
        }
    }

    #[test]
    fn validate_rejects_each_broken_limit() {
        let l = Limits::default();
        let cases = [
            (Request::Status { id: 0 }, Invalid::ZeroId),
            (
                Request::KeepAlive {
                    id: 1,
                    session: 0,
                    token: 1,
                },
                Invalid::ZeroSession,
            ),
            (
                Request::OpenSession {
                    id: 1,
                    nonce: 0,
                    ttl_ms: MIN_TTL_MS - 1,
                    owner: None,
                },
                Invalid::TtlOutOfRange {
                    ttl_ms: 999,
                    min: MIN_TTL_MS,
                    max: MAX_TTL_MS,
                },
            ),
            (
                Request::OpenSession {
                    id: 1,
                    nonce: 0,
                    ttl_ms: MAX_TTL_MS + 1,
                    owner: None,
                },
                Invalid::TtlOutOfRange {
                    ttl_ms: MAX_TTL_MS + 1,
                    min: MIN_TTL_MS,
                    max: MAX_TTL_MS,
                },
            ),
            (
                acquire("", None, None),
                Invalid::EmptyName { field: "lock" },
            ),
            (
                acquire(&"é".repeat(129), None, None),
                Invalid::NameTooLong {
                    field: "lock",
                    len: 258,
                    max: MAX_NAME_LEN,
                },
            ),
            (acquire("a", None, Some(0)), Invalid::ZeroHold),
            (
                acquire("a", Some(MAX_WAIT_MS + 1), None),
                Invalid::DurationTooLong {
                    field: "wait_ms",
                    value: MAX_WAIT_MS + 1,
                    max: MAX_WAIT_MS,
                },
            ),
            (
                Request::Append {
                    id: 1,
                    session: 1,
                    token: 1,
                    seq: 1,
                    file: "f".into(),
                    lock: "a".into(),
                    fence: 3,
                    data: vec![0; MAX_APPEND + 1],
                },
                Invalid::DataTooLarge {
                    len: MAX_APPEND + 1,
                    max: MAX_APPEND,
                },
            ),
            (
                Request::Truncate {
                    id: 1,
                    session: 1,
                    token: 1,
                    seq: 1,
                    file: String::new(),
                    lock: "a".into(),
                    fence: 3,
                    size: 0,
                },
                Invalid::EmptyName { field: "file" },
            ),
            (
                Request::Delete {
                    id: 1,
                    session: 0,
                    token: 1,
                    seq: 1,
                    file: "f".into(),
                    lock: "a".into(),
                    fence: 3,
                },
                Invalid::ZeroSession,
            ),
            (
                Request::Files {
                    id: 1,
                    prefix: Some("p".repeat(MAX_NAME_LEN + 1)),
                    stale: false,
                },
                Invalid::NameTooLong {
                    field: "prefix",
                    len: MAX_NAME_LEN + 1,
                    max: MAX_NAME_LEN,
                },
            ),
            (
                Request::Read {
                    id: 1,
                    file: String::new(),
                    offset: 0,
                    len: 1,
                    stale: false,
                },
                Invalid::EmptyName { field: "file" },
            ),
            (
                Request::Locks {
                    id: 1,
                    prefix: Some("p".repeat(257)),
                    stale: false,
                },
                Invalid::NameTooLong {
                    field: "prefix",
                    len: 257,
                    max: MAX_NAME_LEN,
                },
            ),
            (
                Request::Cancel {
                    id: 1,
                    session: 0,
                    token: 1,
                    seq: 2,
                    lock: "l".into(),
                    acquire_seq: 1,
                },
                Invalid::ZeroSession,
            ),
            (
                Request::Cancel {
                    id: 1,
                    session: 1,
                    token: 1,
                    seq: 2,
                    lock: String::new(),
                    acquire_seq: 1,
                },
                Invalid::EmptyName { field: "lock" },
            ),
            (extend(0), Invalid::ZeroHold),
            (
                extend(MAX_WAIT_MS + 1),
                Invalid::DurationTooLong {
                    field: "hold_ms",
                    value: MAX_WAIT_MS + 1,
                    max: MAX_WAIT_MS,
                },
            ),
        ];
        for (request, want) in cases {
            assert_eq!(l.validate(&request), Err(want), "{request:?}");
        }
        assert_eq!(l.validate(&extend(1)), Ok(()));
        assert_eq!(l.validate(&extend(MAX_WAIT_MS)), Ok(()));
    }

    fn extend(hold_ms: u64) -> Request {
        Request::Extend {
            id: 1,
            session: 1,
            token: 1,
            seq: 2,
            lock: "l".into(),
            fence: 3,
            hold_ms,
        }
    }

    #[test]
    fn read_len_is_clamped_to_max_read() {
        let l = Limits::default();
        assert_eq!(l.read_len(10), 10);
        assert_eq!(l.read_len(u64::MAX), MAX_READ);
    }
}
