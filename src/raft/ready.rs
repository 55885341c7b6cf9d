//! The seam between the pure core and its runtime: what to send, persist and apply, in order.

use super::{Entry, Envelope, HardState, Index, Snapshot};

/// Work for the runtime, taken with `Node::ready` and done in this order:
/// 1. send `messages`: they do not depend on this batch's writes (the leader's AppendEntries go
///    here, so followers write in parallel with the leader's own fsync, thesis §10.2.1);
/// 2. persist `snapshot` (the runtime's storage drops the entries it covers), then
///    `truncate_from`, `append` and `hard_state`, then fsync once (group commit);
/// 3. send `persisted_messages` (vote grants, append acknowledgements, vote requests: they must
///    never leave before the writes they depend on are durable), then call
///    `Node::persisted(last_index, last_term)` with the last entry appended;
/// 4. apply `committed` in order: a received `snapshot` first replaces the state machine; Noop
///    and Config entries are skipped by the state machine but still count as applied. Every
///    committed entry is handed out exactly once in a node's life (after a restart, from the
///    snapshot's index on);
/// 5. answer each read in `reads` once the state machine has applied its index.
///
/// Committed entries are never beyond the commit index, and never beyond what this or an
/// earlier `Ready` handed out for persistence, so step 2 makes them durable before step 4.
///
/// Two relaxations keep that order safe and are what the daemon does:
/// - step 4 (and 5) may run before step 2's fsync has finished: a committed entry is durable on
///   a quorum already, and the leader counts itself toward a quorum only after `persisted`
///   (thesis §10.2.1). Step 3 must still wait for the fsync;
/// - `ready` may be called again before the previous batch is durable (pipelining): entries are
///   handed out once, so each batch's writes are new. The runtime must then make batches durable
///   and do their step 3 in the order it took them.
#[derive(Debug, Default)]
pub struct Ready {
    /// Messages to send now.
    pub messages: Vec<Envelope>,
    /// A snapshot received from the leader: persist it, then restore the state machine from it.
    pub snapshot: Option<Snapshot>,
    /// Remove every durable entry at or after this index (a conflicting, uncommitted suffix).
    pub truncate_from: Option<Index>,
    /// Entries to append after the last durable one (after the truncation, if any).
    pub append: Vec<Entry>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Messages to send only once this batch's writes are durable.
    pub persisted_messages: Vec<Envelope>,
    /// Newly committed entries, in order.
    pub committed: Vec<Entry>,
    /// Read-index requests confirmed by a quorum: (read id, index to wait for).
    pub reads: Vec<(u64, Index)>,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.snapshot.is_none()
            && self.truncate_from.is_none()
            && self.append.is_empty()
            && self.hard_state.is_none()
            && self.persisted_messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
    }
}
