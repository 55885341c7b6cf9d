//! The storage writer: a dedicated OS thread that owns [`Storage`], so blocking file I/O and
//! fsync never run on the async workers. The driver hands it one job at a time; the job does its
//! writes and then ONE `sync`, and answers through a oneshot. While a job runs the driver keeps
//! queueing events, so the next job naturally carries everything that arrived meanwhile: that is
//! group commit.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::raft::{Entry, HardState, Index, Snapshot};
use crate::storage::{self, Storage};

/// The answer to a job: `Ok` once everything it wrote is durable.
pub type Done = oneshot::Receiver<Result<(), storage::Error>>;

/// A unit of durable work, done in field order and followed by one fsync.
#[derive(Debug)]
pub enum Job {
    /// The writes of one `Ready`: a snapshot received from the leader, a truncated conflicting
    /// suffix, new entries and the hard state.
    Persist {
        /// A snapshot to install (it replaces the log it covers).
        snapshot: Option<Snapshot>,
        /// Drop every entry from this index on.
        truncate_from: Option<Index>,
        /// Entries to append after the (possibly truncated) log.
        append: Vec<Entry>,
        /// The hard state to record.
        hard_state: Option<HardState>,
    },
    /// Saves a snapshot this node took of its state machine, compacting the log before it.
    SaveSnapshot(Snapshot),
    /// Only an fsync (the final one at shutdown).
    Sync,
}

/// A job and where its answer goes.
type Order = (Job, oneshot::Sender<Result<(), storage::Error>>);

/// Handle to the writer thread. Dropping it stops the thread after its current job.
#[derive(Debug)]
pub struct Writer {
    jobs: Option<std_mpsc::SyncSender<Order>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread around `storage`.
    pub fn spawn(storage: Storage) -> std::io::Result<Writer> {
        // Capacity 1: the driver has at most one job in flight, so `send` never waits.
        let (jobs, inbox) = std_mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("raftlockd-writer".into())
            .spawn(move || run(storage, inbox))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Hands a job to the thread. If the thread is gone, the returned receiver fails at once,
    /// which the driver treats like a storage failure.
    pub fn submit(&self, job: Job) -> Done {
        let (answer, done) = oneshot::channel();
        if let Some(jobs) = &self.jobs {
            // A send error drops `answer`, which the driver sees as the writer having stopped.
            let _ = jobs.send((job, answer));
        }
        done
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; join so its last fsync has finished.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("storage writer thread panicked");
            }
        }
    }
}

fn run(mut storage: Storage, inbox: std_mpsc::Receiver<Order>) {
    while let Ok((job, answer)) = inbox.recv() {
        let result = execute(&mut storage, job);
        let failed = result.is_err();
        // The driver may be gone (shutdown); nothing else to tell then.
        let _ = answer.send(result);
        if failed {
            // After an I/O error the on-disk state is unknown: write nothing more.
            return;
        }
    }
}

fn execute(storage: &mut Storage, job: Job) -> Result<(), storage::Error> {
    match job {
        Job::Persist {
            snapshot,
            truncate_from,
            append,
            hard_state,
        } => {
            // The hard state goes first: `save_snapshot` syncs the log before it renames the
            // snapshot into place, so a crash right after the rename (before the final sync
            // below) still finds the term and vote that came with the snapshot. Without that,
            // the node could restart from a new snapshot followed by stale entries under an
            // old term, and accept an old leader's appends on top of it.
            if let Some(hard_state) = &hard_state {
                storage.save_hard_state(hard_state)?;
            }
            if let Some(snapshot) = &snapshot {
                storage.save_snapshot(snapshot)?;
            }
            if let Some(index) = truncate_from {
                storage.truncate_from(index)?;
            }
            if !append.is_empty() {
                storage.append(&append)?;
            }
            storage.sync()
        }
        Job::SaveSnapshot(snapshot) => {
            storage.save_snapshot(&snapshot)?;
            storage.sync()
        }
        Job::Sync => storage.sync(),
    }
}
