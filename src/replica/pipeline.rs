//! The write pipeline: the node's `Ready`s become sends, writes and applies, and what depends on
//! a write waits for it.
//!
//! For each `Ready`, in order: its `messages` are sent at once; its writes become one
//! [`Effect::Persist`](super::Effect::Persist) with the next [`WriteId`]; a snapshot received
//! from the leader is installed and the `committed` entries are applied at once (they are
//! durable on a quorum already, Raft thesis §10.2.1); confirmed reads are served. What must not
//! happen before the write is durable, its `persisted_messages` (votes, append
//! acknowledgements) and the node's `persisted` report, waits in the in-flight queue until the
//! shell reports [`Replica::durable`](super::Replica::durable). A `Ready` without writes but
//! with `persisted_messages` waits behind the writes in flight (its acknowledgements may vouch
//! for them). At most [`MAX_IN_FLIGHT`] `Ready`s wait at once; beyond that the replica stops
//! taking `Ready`s until a write completes.
//!
//! A hard state whose only change is the commit index is not written on its own: it rides
//! along with the next write (or the final one at shutdown). Raft recovers the commit index
//! from the leader, so a restart merely re-learns it, and the fsyncs per operation halve.

use std::collections::VecDeque;

use super::{Effect, Error, Observer, Replica, SnapshotBuild, Write, WriteId};
use crate::raft::{Envelope, HardState, Index, Ready, Snapshot, Term};

/// Most `Ready`s (and snapshots) waiting for their writes at once. Deep enough to keep the disk
/// busy while earlier batches sync; bounded so memory and answer latency stay bounded.
pub const MAX_IN_FLIGHT: usize = 8;
/// Most consecutive `Ready`s processed in one [`Replica::advance`](super::Replica::advance).
const MAX_READY_ROUNDS: usize = 16;

/// What to do once a write (and every write before it) is durable.
#[derive(Debug)]
enum AfterWrite {
    /// The parts of a `Ready` that depend on its writes.
    Ready {
        persisted_messages: Vec<Envelope>,
        last_appended: Option<(Index, Term)>,
    },
    /// A snapshot this node took: the core may now compact its log.
    Snapshot(Snapshot),
}

impl AfterWrite {
    fn is_empty(&self) -> bool {
        match self {
            AfterWrite::Ready {
                persisted_messages,
                last_appended,
            } => persisted_messages.is_empty() && last_appended.is_none(),
            AfterWrite::Snapshot(_) => false,
        }
    }
}

/// A `Ready` (or snapshot) waiting in the in-flight queue.
#[derive(Debug)]
struct InFlight {
    /// Its write, or `None` for a `Ready` without writes, due once every write before it is.
    write: Option<WriteId>,
    after: AfterWrite,
}

/// The in-flight queue and the hard-state bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    /// In submission order, at most [`MAX_IN_FLIGHT`].
    in_flight: VecDeque<InFlight>,
    /// The id of the last write handed out (ids start at 1).
    last_id: WriteId,
    /// The hard state last handed out (`None` until the first write).
    written_hard_state: Option<HardState>,
    /// A hard state whose only change is the commit index, not yet written.
    deferred_hard_state: Option<HardState>,
}

impl Pipeline {
    /// How many writes are handed out and not yet durable.
    pub(super) fn writes_in_flight(&self) -> usize {
        self.in_flight.iter().filter(|f| f.write.is_some()).count()
    }

    /// True if no more `Ready`s may wait.
    pub(super) fn is_full(&self) -> bool {
        self.in_flight.len() >= MAX_IN_FLIGHT
    }

    /// The deferred commit-only hard state, for the final write.
    pub(super) fn take_deferred(&mut self) -> Option<HardState> {
        self.deferred_hard_state.take()
    }

    /// True if the only write `ready` asks for is a hard state whose term and vote equal the
    /// last written ones (a commit index update). Term and vote changes are always written and
    /// made durable before anything that depends on them is sent.
    fn is_commit_only(&self, ready: &Ready) -> bool {
        let (Some(new), Some(written)) = (ready.hard_state, self.written_hard_state) else {
            return false;
        };
        ready.snapshot.is_none()
            && ready.truncate_from.is_none()
            && ready.append.is_empty()
            && new.term == written.term
            && new.vote == written.vote
    }

    fn next_id(&mut self) -> WriteId {
        self.last_id += 1;
        self.last_id
    }
}

impl Replica {
    /// Processes the node's output until it has none, or the in-flight queue is full.
    pub(super) fn drain_ready(&mut self, observer: &mut dyn Observer) -> Result<(), Error> {
        for _ in 0..MAX_READY_ROUNDS {
            if self.pipeline.in_flight.len() >= MAX_IN_FLIGHT {
                return Ok(());
            }
            let mut ready = self.node.ready();
            if self.pipeline.is_commit_only(&ready) {
                self.pipeline.deferred_hard_state = ready.hard_state.take();
            }
            if ready.is_empty() {
                return Ok(());
            }
            let has_writes = ready.snapshot.is_some()
                || ready.truncate_from.is_some()
                || !ready.append.is_empty()
                || ready.hard_state.is_some();
            self.effects
                .extend(ready.messages.into_iter().map(Effect::Send));
            let after = AfterWrite::Ready {
                persisted_messages: ready.persisted_messages,
                last_appended: ready.append.last().map(|entry| (entry.index, entry.term)),
            };
            let snapshot = ready.snapshot;
            if has_writes {
                // A newer hard state in this batch supersedes the deferred one.
                let deferred = self.pipeline.deferred_hard_state.take();
                let hard_state = ready.hard_state.or(deferred);
                if hard_state.is_some() {
                    self.pipeline.written_hard_state = hard_state;
                }
                let id = self.pipeline.next_id();
                let write = Write::Persist {
                    snapshot: snapshot.clone(),
                    truncate_from: ready.truncate_from,
                    append: ready.append,
                    hard_state,
                };
                observer.persist(id, &write);
                self.effects.push(Effect::Persist { id, write });
                self.pipeline.in_flight.push_back(InFlight {
                    write: Some(id),
                    after,
                });
            } else if !after.is_empty() {
                if self.pipeline.in_flight.is_empty() {
                    self.after_write(after);
                } else {
                    // Acknowledgements may vouch for writes still in flight: they leave once
                    // every earlier write is durable.
                    self.pipeline
                        .in_flight
                        .push_back(InFlight { write: None, after });
                }
            }
            // What is committed is durable on a quorum already, so applying it does not wait
            // for this node's own write (which the shell was handed just above, so a snapshot
            // this node takes of its applied state is saved after the entries it covers). A
            // snapshot received from the leader is committed state too: installed at once, and
            // the entries after it build on it.
            if let Some(snapshot) = &snapshot {
                self.install_snapshot(snapshot, observer)?;
            }
            for entry in ready.committed {
                self.apply(entry, observer)?;
            }
            for (read_id, index) in ready.reads {
                if let Some(read) = self.reads.remove(&read_id) {
                    self.confirmed_reads.insert((index, read_id), read);
                }
            }
            self.serve_reads();
        }
        Ok(())
    }

    /// Every write up to `id` is durable: runs, in order, what waited for them and for nothing
    /// later.
    pub(super) fn complete_writes(&mut self, id: WriteId) {
        while let Some(front) = self.pipeline.in_flight.front() {
            if front.write.is_some_and(|write| write > id) {
                break;
            }
            let front = self.pipeline.in_flight.pop_front().expect("front exists");
            self.after_write(front.after);
        }
    }

    fn after_write(&mut self, after: AfterWrite) {
        match after {
            AfterWrite::Ready {
                persisted_messages,
                last_appended,
            } => {
                self.effects
                    .extend(persisted_messages.into_iter().map(Effect::Send));
                if let Some((index, term)) = last_appended {
                    self.node.persisted(index, term);
                }
            }
            AfterWrite::Snapshot(snapshot) => {
                tracing::info!(
                    index = snapshot.meta.index,
                    bytes = snapshot.data.len(),
                    "snapshot saved"
                );
                self.node.compacted(snapshot);
            }
        }
    }

    /// Takes a snapshot of the lock space every `snapshot_threshold` applied entries, or once
    /// the entries applied since the last one carry `snapshot_threshold_bytes` of data, one at
    /// a time: the state is captured here (O(metadata)) and handed out as
    /// [`Effect::BuildSnapshot`], so the shell serializes it away from the driver; when it comes
    /// back it is saved, and the core compacts its log once the snapshot is durable.
    pub(super) fn maybe_snapshot(&mut self, observer: &mut dyn Observer) {
        let in_flight = &self.pipeline.in_flight;
        let snapshot_in_flight = in_flight
            .iter()
            .any(|f| matches!(f.after, AfterWrite::Snapshot(_)));
        if in_flight.len() >= MAX_IN_FLIGHT || snapshot_in_flight {
            return;
        }
        if let Some(snapshot) = self.snapshot_built.take() {
            self.persist_snapshot(snapshot, observer);
            return;
        }
        if self.snapshot_building
            || (self.applied_since_snapshot < self.config.snapshot_threshold
                && self.applied_bytes_since_snapshot < self.config.snapshot_threshold_bytes
                && !self.backup_needs_snapshot())
        {
            return;
        }
        let index = self.lockspace.applied_index();
        if index == 0 || self.holds_snapshot_at(index) {
            return;
        }
        // The term and the membership in force at `index`, as the core's log has them.
        let Some(meta) = self.node.snapshot_meta_at(index) else {
            return;
        };
        tracing::debug!(index, "capturing the state for a snapshot");
        self.applied_since_snapshot = 0;
        self.applied_bytes_since_snapshot = 0;
        self.snapshot_building = true;
        self.effects.push(Effect::BuildSnapshot(SnapshotBuild {
            meta,
            space: Box::new(self.lockspace.capture()),
        }));
    }

    /// True if the core already holds a snapshot at or past `index`.
    fn holds_snapshot_at(&self, index: Index) -> bool {
        self.node
            .snapshot_meta()
            .is_some_and(|meta| meta.index >= index)
    }

    /// The shell built the snapshot of the last [`Effect::BuildSnapshot`]; it is saved as soon
    /// as the write pipeline has room (`maybe_snapshot`).
    pub(super) fn snapshot_built(&mut self, snapshot: Snapshot) {
        self.snapshot_building = false;
        self.snapshot_built = Some(snapshot);
    }

    /// Saves a built snapshot; once durable, the core compacts its log up to it. A snapshot
    /// that a newer one overtook while it was being built (one received from the leader) is
    /// dropped: saving it would put an older state over the newer one.
    fn persist_snapshot(&mut self, snapshot: Snapshot, observer: &mut dyn Observer) {
        let index = snapshot.meta.index;
        if self.holds_snapshot_at(index) {
            tracing::info!(index, "dropping a built snapshot that a newer one overtook");
            return;
        }
        tracing::info!(index, bytes = snapshot.data.len(), "taking a snapshot");
        let id = self.pipeline.next_id();
        let write = Write::SaveSnapshot(snapshot.clone());
        observer.persist(id, &write);
        self.effects.push(Effect::Persist { id, write });
        self.pipeline.in_flight.push_back(InFlight {
            write: Some(id),
            after: AfterWrite::Snapshot(snapshot),
        });
    }
}
