//! What a leader knows about each follower's log, and how much it may send it.
//!
//! A follower is in one of three states (as in etcd/raft):
//! - `Probe`: the leader does not know where the follower's log matches; it sends one
//!   AppendEntries at a time and waits for the answer (or the next heartbeat answer).
//! - `Replicate`: the logs match up to `matched`; the leader streams batches optimistically,
//!   at most `max_inflight_appends` unacknowledged at a time and at most `max_inflight_bytes`
//!   of payload in them (the first append after an acknowledgement always goes, however big).
//! - `Snapshot`: the follower needs entries the leader has compacted; an InstallSnapshot is on
//!   its way and nothing else is sent until it is acknowledged.

use std::collections::VecDeque;

use super::Index;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// One append at a time until the match point is found.
    Probe,
    /// Pipelined appends.
    Replicate,
    /// Waiting for an InstallSnapshot at this index to be acknowledged.
    Snapshot(Index),
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The next index to send.
    pub next: Index,
    /// The highest index known to match the leader's log (durable on the follower).
    pub matched: Index,
    /// The replication state.
    pub state: State,
    /// In `Probe`: an append is outstanding, wait for an answer or a heartbeat.
    pub paused: bool,
    /// In `Replicate`: the last index and payload bytes of each unacknowledged append, oldest
    /// first.
    pub inflight: VecDeque<(Index, usize)>,
    /// The payload bytes of `inflight`, summed.
    pub inflight_bytes: usize,
    /// Heard from the follower since the last check-quorum round.
    pub recent_active: bool,
    /// The highest read-index sequence number the follower confirmed.
    pub read_ack: u64,
    /// `matched` at the previous heartbeat answer, to spot a stalled follower.
    pub heartbeat_match: Index,
    /// Heartbeat answers in a row without progress.
    pub stalls: u32,
}

impl Progress {
    /// A follower of a new leader whose last index is `last`: probe from the end.
    pub fn new(last: Index) -> Progress {
        Progress {
            next: last + 1,
            matched: 0,
            state: State::Probe,
            paused: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            read_ack: 0,
            heartbeat_match: 0,
            stalls: 0,
        }
    }

    /// Records that the follower matches up to `index`. Returns true if that is news.
    pub fn update(&mut self, index: Index) -> bool {
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        if index <= self.matched {
            return false;
        }
        self.matched = index;
        self.next = self.next.max(index + 1);
        self.paused = false;
        true
    }

    /// Falls back to probing right after the known match point.
    pub fn become_probe(&mut self) {
        self.state = State::Probe;
        self.next = self.matched + 1;
        self.paused = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalls = 0;
    }

    /// Starts pipelining after the known match point.
    pub fn become_replicate(&mut self) {
        self.state = State::Replicate;
        self.next = self.matched + 1;
        self.paused = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalls = 0;
    }

    /// Waits for a snapshot at `index` to be installed.
    pub fn become_snapshot(&mut self, index: Index) {
        self.state = State::Snapshot(index);
        self.paused = true;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalls = 0;
    }

    /// True if nothing more may be sent for now.
    pub fn is_paused(&self, max_inflight: usize, max_inflight_bytes: usize) -> bool {
        match self.state {
            State::Probe => self.paused,
            State::Replicate => {
                self.inflight.len() >= max_inflight || self.inflight_bytes >= max_inflight_bytes
            }
            State::Snapshot(_) => true,
        }
    }

    /// Records an append whose last entry is `last` (entries not empty), with `bytes` of
    /// payload.
    pub fn sent(&mut self, last: Index, bytes: usize) {
        match self.state {
            State::Probe => self.paused = true,
            State::Replicate => {
                self.next = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            State::Snapshot(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_frees_inflight_on_ack() {
        let mut p = Progress::new(10);
        p.matched = 10;
        p.become_replicate();
        p.sent(12, 0);
        p.sent(14, 0);
        assert!(p.is_paused(2, usize::MAX));
        assert!(p.update(12));
        assert!(!p.is_paused(2, usize::MAX));
        assert_eq!(p.next, 15);
        assert!(!p.update(11), "a stale ack is no news");
    }

    #[test]
    fn replicate_pauses_on_bytes_in_flight_and_frees_them_on_ack() {
        let mut p = Progress::new(10);
        p.matched = 10;
        p.become_replicate();
        p.sent(11, 600);
        assert!(!p.is_paused(16, 1000), "under the byte budget");
        p.sent(12, 600);
        assert!(p.is_paused(16, 1000), "the byte budget is spent");
        assert!(p.update(11));
        assert_eq!(p.inflight_bytes, 600);
        assert!(!p.is_paused(16, 1000));
        p.become_probe();
        assert_eq!(p.inflight_bytes, 0, "probing forgets what was in flight");
    }

    #[test]
    fn probe_pauses_until_answer() {
        let mut p = Progress::new(5);
        p.sent(6, 0);
        assert!(p.is_paused(16, usize::MAX));
        assert!(p.update(6));
        assert!(!p.is_paused(16, usize::MAX));
    }
}
