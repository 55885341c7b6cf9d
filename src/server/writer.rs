//! The storage writer: a dedicated OS thread that owns [`Storage`], so blocking file I/O and
//! fsync never run on the async workers. The driver may have several jobs queued (up to
//! [`CAPACITY`]). The thread takes one, drains every job already queued behind it, does all
//! their writes in submission order, then ONE `sync`, and only then answers each of them through
//! its oneshot: that is group commit across jobs. A job is never answered `Ok` before the sync
//! that covers it, and jobs are answered in the order they were submitted.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::metrics::StorageMetrics;
use crate::replica::Write;
use crate::storage::{self, Storage};

/// The answer to a job: `Ok` once everything it wrote is durable.
pub type Done = oneshot::Receiver<Result<(), storage::Error>>;

/// A unit of durable work: the replica's [`Write`], done in field order; durable once the
/// group's fsync is done.
pub type Job = Write;

/// How many jobs may wait in the writer's queue. The driver keeps fewer than this in flight
/// (plus its final sync), so [`Writer::submit`] never blocks an async worker.
pub const CAPACITY: usize = 16;

/// A job and where its answer goes.
type Order = (Job, oneshot::Sender<Result<(), storage::Error>>);

/// Handle to the writer thread. Dropping it stops the thread after its current job.
#[derive(Debug)]
pub struct Writer {
    jobs: Option<std_mpsc::SyncSender<Order>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread around `storage`; it times its syncs and snapshots into
    /// `metrics`.
    pub fn spawn(storage: Storage, metrics: StorageMetrics) -> std::io::Result<Writer> {
        // The driver keeps fewer than CAPACITY jobs in flight, so `send` never waits.
        let (jobs, inbox) = std_mpsc::sync_channel(CAPACITY);
        let thread = std::thread::Builder::new()
            .name("raftlockd-writer".into())
            .spawn(move || run(storage, inbox, metrics))?;
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

fn run(mut storage: Storage, inbox: std_mpsc::Receiver<Order>, metrics: StorageMetrics) {
    while let Ok(first) = inbox.recv() {
        let mut jobs = vec![first.0];
        let mut answers = vec![first.1];
        // Everything already queued joins this group: one fsync for all of it.
        while jobs.len() < CAPACITY {
            match inbox.try_recv() {
                Ok((job, answer)) => {
                    jobs.push(job);
                    answers.push(answer);
                }
                Err(_) => break,
            }
        }
        let result = jobs
            .into_iter()
            .try_for_each(|job| write(&mut storage, job, &metrics))
            .and_then(|()| {
                let started = std::time::Instant::now();
                let synced = storage.sync();
                metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
                synced
            });
        if let Err(error) = result {
            // The first job of the group is the one the driver waits on next: it gets the
            // error. The others are dropped unanswered, which the driver also treats as fatal.
            if let Some(answer) = answers.into_iter().next() {
                let _ = answer.send(Err(error));
            }
            // After an I/O error the on-disk state is unknown: write nothing more.
            return;
        }
        for answer in answers {
            // The driver may be gone (shutdown); nothing else to tell then.
            let _ = answer.send(Ok(()));
        }
    }
}

/// Does a job's writes, without the final fsync (a snapshot file is synced by the storage
/// itself, which also syncs the log before it).
fn write(storage: &mut Storage, job: Job, metrics: &StorageMetrics) -> Result<(), storage::Error> {
    match job {
        Write::Persist {
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
                timed_snapshot(storage, snapshot, "installed", metrics)?;
            }
            if let Some(index) = truncate_from {
                storage.truncate_from(index)?;
            }
            if !append.is_empty() {
                storage.append(&append)?;
            }
            Ok(())
        }
        Write::SaveSnapshot(snapshot) => timed_snapshot(storage, &snapshot, "taken", metrics),
        Write::Sync => Ok(()),
    }
}

/// Saves a snapshot, counting it (by `kind`) with its size and duration.
fn timed_snapshot(
    storage: &mut Storage,
    snapshot: &crate::raft::Snapshot,
    kind: &'static str,
    metrics: &StorageMetrics,
) -> Result<(), storage::Error> {
    let started = std::time::Instant::now();
    storage.save_snapshot(snapshot)?;
    metrics
        .snapshot_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.snapshot_bytes.set(snapshot.data.len() as f64);
    metrics
        .snapshots
        .get_or_create(&vec![("kind", kind.to_string())])
        .inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, EntryData, HardState, Index};

    fn entry(index: Index) -> Entry {
        Entry {
            index,
            term: 1,
            data: EntryData::Command(vec![index as u8]),
        }
    }

    #[test]
    fn queued_jobs_are_all_written_in_order_and_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (storage, _) = Storage::open(dir.path()).expect("open");
        let writer =
            Writer::spawn(storage, super::super::metrics::Metrics::new().storage).expect("spawn");
        // Submit more jobs than one group can take, without waiting in between.
        let count = CAPACITY as Index + 4;
        let done: Vec<Done> = (1..=count)
            .map(|index| {
                writer.submit(Write::Persist {
                    snapshot: None,
                    truncate_from: None,
                    append: vec![entry(index)],
                    hard_state: Some(HardState {
                        term: 1,
                        vote: Some(1),
                        commit: index - 1,
                    }),
                })
            })
            .collect();
        for answer in done {
            assert!(matches!(answer.blocking_recv(), Ok(Ok(()))));
        }
        assert!(matches!(
            writer.submit(Write::Sync).blocking_recv(),
            Ok(Ok(()))
        ));
        drop(writer);
        let (_, recovered) = Storage::open(dir.path()).expect("reopen");
        let expected: Vec<Entry> = (1..=count).map(entry).collect();
        assert_eq!(recovered.entries, expected);
        assert_eq!(recovered.hard_state.commit, count - 1);
    }
}
