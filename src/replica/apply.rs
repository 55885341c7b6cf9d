//! Apply and answer: committed entries go into the lock space, and the callers waiting on
//! them get their answers.
//!
//! A proposal's answer is keyed by its (index, term): if the entry applied at that index has
//! another term, the proposal was lost to a new leader and the outcome is unknown (`Timeout`,
//! the client retries with the same seq). A queued acquire is answered `Queued` (interim) and
//! finally by the notification of the entry that grants it or ends its wait.

use super::answers::{outcome_response, timeout_error};
use super::{Error, Observer, Replica};
use crate::lockspace::{Command, LockSpace, Notification, Outcome};
use crate::protocol::Response;
use crate::raft::{Entry, EntryData, Index, Snapshot};

impl Replica {
    /// Applies one committed entry and answers the callers waiting on it.
    pub(super) fn apply(&mut self, entry: Entry, observer: &mut dyn Observer) -> Result<(), Error> {
        let index = entry.index;
        if index <= self.lockspace.applied_index() {
            // Already in the state machine (restored from the snapshot).
            return Ok(());
        }
        self.last_applied_term = entry.term;
        self.applied_since_snapshot += 1;
        if let EntryData::Command(bytes) = &entry.data {
            self.applied_bytes_since_snapshot += bytes.len() as u64;
        }
        let pending = self.pending.remove(&index);
        self.config_committed(index, &entry);
        let EntryData::Command(bytes) = &entry.data else {
            observer.applying(&self.lockspace, &entry, None);
            self.lockspace.skip(index);
            observer.applied(&self.lockspace, &entry, None, None);
            if let Some(pending) = pending {
                self.answer(pending.caller, timeout_error(pending.caller.id));
            }
            return Ok(());
        };
        let command: Command = rmp_serde::from_slice(bytes)
            .map_err(|source| Error::CorruptCommand { index, source })?;
        observer.applying(&self.lockspace, &entry, Some(&command));
        let scan = self.is_leader().then(|| self.scan_before(&command));
        let applied = self.lockspace.apply(index, &command);
        observer.applied(&self.lockspace, &entry, Some(&command), Some(&applied));
        if scan.is_some() {
            self.track_deadlines(&command, &applied);
            self.times
                .track(self.now, &command, &applied, &self.lockspace);
        }
        for notification in &applied.notifications {
            self.notify(notification);
        }
        if let Some(pending) = pending {
            let caller = pending.caller;
            if pending.term != entry.term {
                self.answer(caller, timeout_error(caller.id));
            } else if let Outcome::Queued { position } = applied.outcome {
                self.interim(
                    caller,
                    Response::Queued {
                        id: caller.id,
                        position,
                    },
                );
                if let Command::Acquire { session, seq, .. } = command {
                    self.waiters.entry((session, seq)).or_default().push(caller);
                }
            } else {
                self.answer(caller, outcome_response(caller.id, &applied.outcome));
            }
        }
        // After the answers: a client hears what happened before its consequences.
        if let Some(scan) = scan {
            self.push_after(scan);
        }
        Ok(())
    }

    /// Answers every caller waiting on the acquire a notification resolves.
    fn notify(&mut self, notification: &Notification) {
        let key = (notification.session, notification.seq);
        if let Some(callers) = self.waiters.remove(&key) {
            for caller in callers {
                self.answer(caller, outcome_response(caller.id, &notification.outcome));
            }
        }
    }

    /// Replaces the state machine with a snapshot received from the leader.
    pub(super) fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        observer: &mut dyn Observer,
    ) -> Result<(), Error> {
        self.lockspace = LockSpace::restore(&snapshot.data).map_err(Error::Restore)?;
        self.last_applied_term = snapshot.meta.term;
        self.applied_since_snapshot = 0;
        self.applied_bytes_since_snapshot = 0;
        observer.installed(snapshot, &self.lockspace);
        tracing::info!(
            index = snapshot.meta.index,
            "installed snapshot from the leader"
        );
        // Proposals the snapshot covers can no longer be matched with their outcome.
        let covered: Vec<Index> = self
            .pending
            .range(..=snapshot.meta.index)
            .map(|(i, _)| *i)
            .collect();
        for index in covered {
            let pending = self.pending.remove(&index).expect("key from range");
            self.answer(pending.caller, timeout_error(pending.caller.id));
        }
        for caller in self.admin.covered_by(snapshot.meta.index) {
            self.answer(caller, timeout_error(caller.id));
        }
        Ok(())
    }

    /// Answers the confirmed reads whose index the state machine has reached.
    pub(super) fn serve_reads(&mut self) {
        let applied = self.lockspace.applied_index();
        while let Some(entry) = self.confirmed_reads.first_entry() {
            if entry.key().0 > applied {
                break;
            }
            let (request, caller) = entry.remove();
            let response = self.answer_read(&request, caller.id);
            self.answer(caller, response);
        }
    }
}
