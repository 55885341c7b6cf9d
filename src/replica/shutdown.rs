//! Graceful shutdown: hand leadership to an up-to-date follower, refuse new requests, let the
//! requests in flight finish (up to the shutdown timeout), then stop.

use super::answers::timeout_error;
use super::{Caller, Replica, Write};
use crate::protocol::{ErrorCode, Response};

/// Longest a graceful shutdown waits for another node to take over leadership, in ms.
pub const HANDOFF_LIMIT_MS: u64 = 3_000;

/// Where a shutdown stands.
#[derive(Debug, Default)]
pub(super) struct Shutdown {
    /// Set at shutdown: the time after which in-flight requests are abandoned.
    pub deadline: Option<u64>,
    /// While this node still leads: when to give up handing leadership over, and when to ask
    /// the core for a transfer again.
    handoff: Option<(u64, u64)>,
    /// The work is done: the shell syncs and stops.
    pub stopped: bool,
}

fn shutting_down(id: u64) -> Response {
    Response::error(id, ErrorCode::ShuttingDown, "the node is shutting down")
}

impl Replica {
    /// Starts a graceful shutdown (again is a no-op).
    pub(super) fn begin_shutdown(&mut self) {
        if self.shutdown.deadline.is_some() {
            return;
        }
        tracing::info!(
            pending = self.pending.len(),
            waiters = self.waiters.len(),
            "shutting down: finishing in-flight proposals"
        );
        let now = self.now;
        self.shutdown.deadline = Some(now.saturating_add(self.config.shutdown_timeout_ms));
        if self.is_leader() && self.has_other_voter() {
            // Hand leadership to an up-to-date follower first, so clients barely notice.
            let limit = now + self.config.shutdown_timeout_ms.min(HANDOFF_LIMIT_MS);
            self.shutdown.handoff = Some((limit, now));
            self.continue_handoff();
        }
        // Queued acquires may wait forever: tell them now; they retry elsewhere with their seq.
        let waiting: Vec<Caller> = std::mem::take(&mut self.waiters)
            .into_values()
            .flatten()
            .collect();
        for caller in waiting {
            self.answer(caller, shutting_down(caller.id));
        }
    }

    /// At shutdown, while this node still leads: (re)asks the core to transfer leadership,
    /// once per election timeout, until the hand-off limit.
    pub(super) fn continue_handoff(&mut self) {
        let Some((limit, next)) = self.shutdown.handoff else {
            return;
        };
        let now = self.now;
        if !self.is_leader() || now >= limit {
            if self.is_leader() {
                tracing::warn!("no follower took over in time; stopping as leader");
            }
            self.shutdown.handoff = None;
            return;
        }
        if now >= next {
            tracing::info!("shutting down: transferring leadership");
            if self.node.transfer_leadership(None).is_err() {
                self.shutdown.handoff = None;
                return;
            }
            let retry = self.config.tick_ms * u64::from(self.config.election_ticks_max);
            self.shutdown.handoff = Some((limit, now + retry));
        }
    }

    /// Sets `stopped` once the shutdown's work is done (or its time is up), answering what is
    /// still in flight.
    pub(super) fn check_shutdown(&mut self) {
        let Some(deadline) = self.shutdown.deadline else {
            return;
        };
        if self.shutdown.stopped {
            return;
        }
        let now = self.now;
        if self.shutdown.handoff.is_some() && self.is_leader() && now < deadline {
            return;
        }
        let idle =
            self.pending.is_empty() && self.reads.is_empty() && self.confirmed_reads.is_empty();
        if !idle && now < deadline {
            return;
        }
        if !idle {
            tracing::warn!(
                pending = self.pending.len(),
                "shutdown timeout: abandoning in-flight requests"
            );
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            let caller = pending.caller;
            let response = Response::error(
                caller.id,
                ErrorCode::Timeout,
                "the node shut down before the outcome was known; retry with the same seq",
            );
            self.answer(caller, response);
        }
        let reads = std::mem::take(&mut self.reads).into_values();
        let confirmed = std::mem::take(&mut self.confirmed_reads).into_values();
        let callers: Vec<Caller> = reads.chain(confirmed).map(|(_, c)| c).collect();
        for caller in callers {
            self.answer(caller, shutting_down(caller.id));
        }
        // Nothing else may wait forever on a stopped node.
        for caller in self.admin.take_all() {
            self.answer(caller, timeout_error(caller.id));
        }
        self.shutdown.stopped = true;
    }

    /// The last write before the process stops: the deferred commit index, or a bare fsync.
    pub fn final_write(&mut self) -> Write {
        match self.pipeline.take_deferred() {
            Some(hard_state) => Write::Persist {
                snapshot: None,
                truncate_from: None,
                append: Vec::new(),
                hard_state: Some(hard_state),
            },
            None => Write::Sync,
        }
    }
}
