//! A client session: its lease parameters, its exactly-once table and the locks it touches.

use serde::{Deserialize, Serialize};

use super::dedup::Dedup;

/// A live session.
///
/// Invariants:
/// - `locks` is sorted and without duplicates;
/// - `locks` names exactly the locks where this session is a holder or a waiter (at most one of
///   the two per lock, and at most one waiter per lock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The secret the client presents with each request (checked by the daemon, not here).
    pub(crate) token: u64,
    /// The lease length the leader enforces; kept so a retried open returns it.
    pub(crate) ttl_ms: u64,
    /// The open request's nonce, freed with the session.
    pub(crate) nonce: u64,
    /// Results of recent requests.
    pub(crate) dedup: Dedup,
    /// Names of the locks this session holds or waits for, sorted: closing the session visits
    /// only these, in name order, instead of scanning every lock.
    pub(crate) locks: Vec<String>,
    /// Who opened it, as the client said. Last, with a default, so snapshots written before
    /// owners existed still restore.
    #[serde(default)]
    pub(crate) owner: Option<String>,
    /// An administrator revoked it (`MarkRevoked`): its keep-alives are refused, it may not
    /// acquire, extend or append, and its grants stay only until it closes or its lease runs
    /// out. After `owner`, with a default, so older snapshots restore.
    #[serde(default)]
    pub(crate) revoked: bool,
    /// The authenticated principal that opened it (`None` with authentication off). Last,
    /// with a default, so older snapshots restore.
    #[serde(default)]
    pub(crate) principal: Option<String>,
}

impl Session {
    /// A fresh session with an empty table.
    pub(crate) fn new(token: u64, ttl_ms: u64, nonce: u64, owner: Option<String>) -> Session {
        Session {
            token,
            ttl_ms,
            nonce,
            dedup: Dedup::default(),
            locks: Vec::new(),
            owner,
            revoked: false,
            principal: None,
        }
    }

    /// Notes that the session now holds or waits for `lock`.
    pub(crate) fn touch(&mut self, lock: &str) {
        if let Err(at) = self.locks.binary_search_by(|name| name.as_str().cmp(lock)) {
            self.locks.insert(at, lock.to_owned());
        }
    }

    /// Notes that the session neither holds nor waits for `lock` any more.
    pub(crate) fn untouch(&mut self, lock: &str) {
        if let Ok(at) = self.locks.binary_search_by(|name| name.as_str().cmp(lock)) {
            self.locks.remove(at);
        }
    }
}
