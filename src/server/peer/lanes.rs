//! Two lanes per peer, so that a heartbeat never waits behind bulk data.
//!
//! A leader shipping big entries can have megabytes of AppendEntries queued for a follower.
//! If its heartbeats and the votes and answers of an election queued behind them, a busy
//! leader would look dead to its followers, and a follower's answers would reach the leader
//! too late for check-quorum: the leader would lose office *because* it is busy.
//!
//! So every envelope goes on one of two queues ([`lane`]):
//! - **urgent**: everything small and time-critical: heartbeats and their answers, votes and
//!   pre-votes, append answers and rejections, leadership transfer;
//! - **bulk**: AppendEntries (and a snapshot, should one travel here). They stay in order
//!   among themselves: a follower that received them out of order would reject the later ones
//!   and cost the leader a probe round.
//!
//! Reordering across the lanes is safe: Raft assumes nothing of the network's order, and the
//! core caps a heartbeat's commit index at what the follower acknowledged, so a heartbeat
//! that overtakes an append never commits more than the follower holds.
//!
//! Each flush writes every urgent envelope first, then bulk ones up to [`BULK_BYTES_PER_FLUSH`]
//! of payload (always at least one), and the outbound task goes back to the queues before the
//! next flush. An urgent envelope therefore waits for at most one flush of bulk data (the core
//! bounds each append's bytes too: `raft::Config::max_append_bytes`).

use tokio::sync::mpsc;

use crate::raft::{Entry, Envelope, Message};

/// Most payload bytes of bulk envelopes written in one flush (past the first envelope).
pub(super) const BULK_BYTES_PER_FLUSH: usize = 1 << 20;

/// Which queue an envelope travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    /// Small and time-critical.
    Urgent,
    /// Log entries, in order.
    Bulk,
}

/// The lane of `envelope`.
pub(super) fn lane(envelope: &Envelope) -> Lane {
    match envelope.message {
        Message::Append { .. } | Message::InstallSnapshot { .. } => Lane::Bulk,
        _ => Lane::Urgent,
    }
}

/// The payload bytes an envelope carries (its entries' commands).
fn payload_bytes(envelope: &Envelope) -> usize {
    match &envelope.message {
        Message::Append { entries, .. } => entries.iter().map(Entry::payload_len).sum(),
        _ => 0,
    }
}

/// The sending half of a peer's two queues (held by the transport).
pub(super) struct Senders {
    urgent: mpsc::Sender<Envelope>,
    bulk: mpsc::Sender<Envelope>,
}

impl Senders {
    /// Queues `envelope` on its lane without waiting; false (and the envelope dropped) if that
    /// lane is full or closed.
    pub(super) fn try_send(&self, envelope: Envelope) -> bool {
        let queue = match lane(&envelope) {
            Lane::Urgent => &self.urgent,
            Lane::Bulk => &self.bulk,
        };
        queue.try_send(envelope).is_ok()
    }
}

/// The receiving half of a peer's two queues (held by its outbound task).
pub(super) struct Queues {
    urgent: mpsc::Receiver<Envelope>,
    bulk: mpsc::Receiver<Envelope>,
}

/// A peer's two queues, each holding up to `capacity` envelopes.
pub(super) fn queues(capacity: usize) -> (Senders, Queues) {
    let (urgent_tx, urgent) = mpsc::channel(capacity);
    let (bulk_tx, bulk) = mpsc::channel(capacity);
    (
        Senders {
            urgent: urgent_tx,
            bulk: bulk_tx,
        },
        Queues { urgent, bulk },
    )
}

impl Queues {
    /// Waits for the next envelope, urgent ones first. `None` once the transport dropped its
    /// senders (both go together) and nothing is left.
    pub(super) async fn recv(&mut self) -> Option<Envelope> {
        tokio::select! {
            biased;
            Some(envelope) = self.urgent.recv() => Some(envelope),
            Some(envelope) = self.bulk.recv() => Some(envelope),
            else => None,
        }
    }

    /// Adds what is queued to `batch` without waiting: every urgent envelope, then bulk ones
    /// while the batch holds fewer than `max` envelopes and under [`BULK_BYTES_PER_FLUSH`] of
    /// bulk payload.
    pub(super) fn fill(&mut self, batch: &mut Batch, max: usize) {
        while batch.len() < max {
            match self.urgent.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
        while batch.len() < max
            && (batch.bulk.is_empty() || batch.bulk_bytes < BULK_BYTES_PER_FLUSH)
        {
            match self.bulk.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
    }
}

/// The envelopes of one flush: urgent ones are written first.
#[derive(Debug, Default)]
pub(super) struct Batch {
    urgent: Vec<Envelope>,
    bulk: Vec<Envelope>,
    bulk_bytes: usize,
}

impl Batch {
    /// Adds an envelope on its lane.
    pub(super) fn push(&mut self, envelope: Envelope) {
        match lane(&envelope) {
            Lane::Urgent => self.urgent.push(envelope),
            Lane::Bulk => {
                self.bulk_bytes += payload_bytes(&envelope);
                self.bulk.push(envelope);
            }
        }
    }

    /// How many envelopes it holds.
    pub(super) fn len(&self) -> usize {
        self.urgent.len() + self.bulk.len()
    }

    /// True if it holds none.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties it, in write order: urgent envelopes first, then bulk ones in queue order.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Envelope> + '_ {
        self.bulk_bytes = 0;
        self.urgent.drain(..).chain(self.bulk.drain(..))
    }

    /// Drops everything it holds.
    pub(super) fn clear(&mut self) {
        self.urgent.clear();
        self.bulk.clear();
        self.bulk_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::EntryData;

    fn append(index: u64, bytes: usize) -> Envelope {
        Envelope {
            from: 1,
            to: 2,
            term: 1,
            message: Message::Append {
                prev_index: index - 1,
                prev_term: 1,
                entries: vec![Entry {
                    index,
                    term: 1,
                    data: EntryData::Command(vec![0; bytes]),
                }],
                commit: 0,
            },
        }
    }

    fn heartbeat() -> Envelope {
        Envelope {
            from: 1,
            to: 2,
            term: 1,
            message: Message::Heartbeat {
                commit: 0,
                read_seq: 0,
            },
        }
    }

    fn kinds(batch: &mut Batch) -> Vec<&'static str> {
        batch
            .drain()
            .map(|e| match e.message {
                Message::Append { .. } => "append",
                _ => "heartbeat",
            })
            .collect()
    }

    #[tokio::test]
    async fn a_heartbeat_queued_behind_appends_is_written_first() {
        let (senders, mut queues) = queues(16);
        for index in 1..=3 {
            assert!(senders.try_send(append(index, 10)));
        }
        assert!(senders.try_send(heartbeat()));
        let mut batch = Batch::default();
        batch.push(queues.recv().await.unwrap());
        queues.fill(&mut batch, 64);
        assert_eq!(
            kinds(&mut batch),
            ["heartbeat", "append", "append", "append"]
        );
    }

    #[tokio::test]
    async fn one_flush_carries_at_most_the_bulk_byte_budget() {
        let (senders, mut queues) = queues(16);
        let big = BULK_BYTES_PER_FLUSH / 2 + 1;
        for index in 1..=4 {
            assert!(senders.try_send(append(index, big)));
        }
        let mut batch = Batch::default();
        queues.fill(&mut batch, 64);
        assert_eq!(
            batch.len(),
            2,
            "the second append passes the budget and ends the batch"
        );
        // A heartbeat queued now still goes ahead of the appends left in the queue.
        assert!(senders.try_send(heartbeat()));
        batch.clear();
        queues.fill(&mut batch, 64);
        assert_eq!(kinds(&mut batch), ["heartbeat", "append", "append"]);
    }

    #[tokio::test]
    async fn a_single_append_over_the_budget_still_goes() {
        let (senders, mut queues) = queues(4);
        assert!(senders.try_send(append(1, BULK_BYTES_PER_FLUSH * 3)));
        let mut batch = Batch::default();
        queues.fill(&mut batch, 64);
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn recv_ends_once_the_senders_are_gone_and_the_queues_are_empty() {
        let (senders, mut queues) = queues(4);
        assert!(senders.try_send(append(1, 1)));
        drop(senders);
        assert!(queues.recv().await.is_some());
        assert!(queues.recv().await.is_none());
    }
}
