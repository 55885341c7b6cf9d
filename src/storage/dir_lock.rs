//! One daemon per data directory: an exclusive advisory lock on `<dir>/lock`.
//!
//! Two daemons writing one log interleave their records, and the next start finds entries out
//! of order (`corrupt log record ... entry 3 where entry 4 was expected`). So the daemon takes
//! an exclusive lock on a file in the data directory before it reads anything there, and holds
//! it for as long as the process lives. The lock is `flock(2)` (through `rustix`): the
//! kernel drops it when the process exits, however it exits (kill -9 included), so a stale lock
//! file never keeps a restarted daemon out. The file also records the holder's pid, so that a
//! second daemon can say who holds it.
//!
//! The descriptor is close-on-exec (std opens every file so): a child process never inherits
//! the lock.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: another daemon serves this directory.
    #[error(
        "the data directory {dir} is in use by another raftlockd ({holder}); one daemon per data directory",
        holder = match pid { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_string() }
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid as it recorded it in the lock file, if it could be read.
        pid: Option<u32>,
    },
    /// Creating, opening, locking or writing the lock file failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// The held lock on a data directory; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked file; the lock lives as long as this descriptor.
    _file: File,
    /// The lock file's path.
    path: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes the lock without waiting; records this process's pid.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create the data directory", dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open the lock file", &path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: read_pid(&path),
                })
            }
            Err(errno) => {
                return Err(LockError::Io {
                    op: "lock",
                    path,
                    source: errno.into(),
                })
            }
        }
        // Only the holder writes the file, so a reader sees the current holder's pid (or, in
        // the instant between the lock and this write, nothing or the previous holder's).
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io("write the lock file", &path))?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid recorded in a lock file, if it holds one.
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("node");
        let first = DataDirLock::acquire(&data).expect("first lock");
        assert_eq!(
            std::fs::read_to_string(first.path()).expect("lock file"),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file description: a second open in this process
        // conflicts just as another process would.
        let error = DataDirLock::acquire(&data).expect_err("second lock refused");
        match &error {
            LockError::Held { dir, pid } => {
                assert_eq!(dir, &data);
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("unexpected error {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains(&data.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        DataDirLock::acquire(&data).expect("free again once the holder is gone");
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        let error = DataDirLock::acquire(&file.join("data")).expect_err("not a directory");
        assert!(
            error.to_string().contains(&file.display().to_string()),
            "{error}"
        );
    }
}
