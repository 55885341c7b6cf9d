//! `SnapshotSave` on the leader: a backup covering everything acknowledged before it.
//!
//! The request records the commit index at its arrival (every write acknowledged before it is
//! at or below it). Once the lock space has applied that far, a snapshot is taken at the
//! applied index if the durable one is older (whatever `--snapshot-threshold` says), and once
//! a snapshot at or past the recorded index is durable, [`Effect::StreamSnapshot`] hands the
//! request to the shell, which streams the durable snapshot file off the driver. A leader
//! that loses office answers the waiting requests `NotLeader` (`Replica::observe_role`).

use super::{Caller, Effect, Replica};
use crate::raft::Index;

impl Replica {
    /// Admits a `SnapshotSave` (on the leader): it waits for the commit index of now.
    pub(super) fn snapshot_save(&mut self, caller: Caller) {
        let target = self.node.commit_index();
        self.backups.push((caller, target));
    }

    /// The durable snapshot's index (0 without one).
    fn durable_snapshot_index(&self) -> Index {
        self.node.snapshot_meta().map_or(0, |meta| meta.index)
    }

    /// True if a waiting backup needs a snapshot the threshold would not take yet: the lock
    /// space has applied its index, and the durable snapshot is older.
    pub(super) fn backup_needs_snapshot(&self) -> bool {
        let applied = self.lockspace.applied_index();
        let durable = self.durable_snapshot_index();
        self.backups
            .iter()
            .any(|(_, target)| *target <= applied && durable < (*target).max(1))
    }

    /// Hands every backup whose snapshot is durable to the shell.
    pub(super) fn serve_backups(&mut self) {
        let durable = self.durable_snapshot_index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.backups)
            .into_iter()
            .partition(|(_, target)| durable > 0 && durable >= *target);
        self.backups = waiting;
        for (caller, _) in ready {
            self.effects.push(Effect::StreamSnapshot {
                ticket: caller.ticket,
                id: caller.id,
            });
        }
    }

    /// Takes the waiting backups (leadership lost: they are answered `NotLeader`).
    pub(super) fn take_backups(&mut self) -> Vec<Caller> {
        std::mem::take(&mut self.backups)
            .into_iter()
            .map(|(caller, _)| caller)
            .collect()
    }
}
