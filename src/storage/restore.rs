//! `raftlockd restore`: a new data directory from a backup (a verified snapshot file).
//!
//! Like `etcdutl snapshot restore`, the result is the first state of a NEW cluster: the
//! snapshot is installed with the membership the caller gives (the old cluster's members are
//! forgotten), the log starts right after it, and the hard state holds the snapshot's term,
//! no vote and a commit index at the snapshot. A node started on the directory therefore
//! recovers the snapshot's lock space (every session, lock and file), knows its membership
//! from the snapshot, and needs no `--bootstrap`. The directory must be empty (or absent):
//! restoring over a live node's data would destroy it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{DataDirLock, Error, LockError, Storage};
use crate::raft::{HardState, Membership, Snapshot};

/// Why a restore failed (nothing was written into the directory unless it is `Storage`).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target directory holds something already.
    #[error("{dir} is not empty: restore only into an empty or new directory")]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory cannot be listed.
    #[error("cannot list {dir}")]
    List {
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The new membership has no voter.
    #[error("the new cluster's membership names no member")]
    NoMembers,
    /// Another process holds the directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Writing the new directory failed.
    #[error("cannot write the new data directory")]
    Storage(#[from] Error),
}

/// Creates data directory `dir` holding `snapshot` with `membership` (every voter of the new
/// cluster) and an empty log after it. Returns the directory's recovered snapshot index.
pub fn restore(
    snapshot: &Snapshot,
    membership: Membership,
    dir: &Path,
) -> Result<u64, RestoreError> {
    if membership.voters.is_empty() {
        return Err(RestoreError::NoMembers);
    }
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(RestoreError::List {
                dir: dir.to_path_buf(),
                source,
            })
        }
    }
    let lock = DataDirLock::acquire(dir)?;
    let mut snapshot = snapshot.clone();
    snapshot.meta.membership = membership;
    let (mut storage, _) = Storage::open(dir)?;
    storage.save_hard_state(&HardState {
        term: snapshot.meta.term,
        vote: None,
        commit: snapshot.meta.index,
    })?;
    storage.save_snapshot(&snapshot)?;
    storage.sync()?;
    drop(storage);
    // Read it back as a starting node would.
    let (_, recovered) = Storage::open(dir)?;
    drop(lock);
    Ok(recovered.snapshot.map_or(0, |s| s.meta.index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::SnapshotMeta;

    fn snapshot() -> Snapshot {
        let mut old = Membership::default();
        old.voters.insert(7, "old:1".into());
        Snapshot {
            meta: SnapshotMeta {
                index: 42,
                term: 3,
                membership: old,
            },
            data: vec![1, 2, 3].into(),
        }
    }

    #[test]
    fn a_restored_directory_recovers_the_snapshot_with_the_new_membership() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("new");
        let mut membership = Membership::default();
        membership.voters.insert(1, "h:1".into());
        assert_eq!(
            restore(&snapshot(), membership.clone(), &target).expect("restore"),
            42
        );
        let (storage, recovered) = Storage::open(&target).expect("open");
        let restored = recovered.snapshot.expect("a snapshot");
        assert_eq!(restored.meta.membership, membership);
        assert_eq!((restored.meta.index, restored.meta.term), (42, 3));
        assert_eq!(restored.data, vec![1, 2, 3]);
        assert!(recovered.entries.is_empty());
        assert_eq!(recovered.hard_state.term, 3);
        assert_eq!(recovered.hard_state.commit, 42);
        assert_eq!(storage.last_index(), 42);
    }

    #[test]
    fn a_non_empty_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("keep"), b"x").expect("write");
        let mut membership = Membership::default();
        membership.voters.insert(1, "h:1".into());
        let error = restore(&snapshot(), membership, dir.path()).expect_err("not empty");
        assert!(matches!(error, RestoreError::NotEmpty { .. }), "{error}");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(names.len(), 1);
    }
}
