//! Where a follower keeps a snapshot while it arrives: `incoming/` in the data directory.
//!
//! Three files, each with one job:
//!
//! - `snapshot.meta`: which snapshot is staged (its [`TransferId`] and what it covers), written
//!   to a temporary name, synced and renamed into place when a new offer starts, so it always
//!   names the snapshot whose bytes follow;
//! - `snapshot.data`: the bytes received so far, appended chunk by chunk;
//! - `snapshot.progress`: how many of those bytes are durable (8 bytes, big-endian, then their
//!   CRC-32), rewritten after each chunk's data is synced and synced itself before the chunk is
//!   acknowledged. After a crash, the bytes past it (a chunk written but not synced) are cut
//!   off, so a resumed transfer never builds on a torn tail.
//!
//! The staged snapshot is kept after it has been handed to the Raft core: if the leader offers
//! the same snapshot again (its answer from the core crossed the offer), the follower answers
//! that it holds every byte and hands it over again, which the core treats as the duplicate it
//! is, instead of the leader sending it all again. A new offer replaces it. Staging never
//! touches the node's state: the core installs the snapshot through the storage writer, which
//! switches its snapshot file atomically (`storage`), so a crash at any point of a transfer or
//! an install leaves the node with either its old state or the new one.
//!
//! Every method does blocking file I/O: the inbound task calls them on a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::transfer::{Incoming, TransferError, TransferId};
use crate::protocol::WireSnapshotMeta;

/// The staging directory's name inside the data directory.
pub const STAGING_DIR: &str = "incoming";
const META: &str = "snapshot.meta";
const DATA: &str = "snapshot.data";
const PROGRESS: &str = "snapshot.progress";

/// What goes wrong while staging a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The disk refused; the transfer cannot go on here.
    #[error("snapshot staging in {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The chunk or the whole does not fit the offer.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// Another connection made a newer offer since this connection's.
    #[error("a newer snapshot offer replaced this one")]
    Superseded,
}

/// The staged snapshot's description, the content of `snapshot.meta`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedMeta {
    /// Which snapshot.
    pub id: TransferId,
    /// What it covers (index, term, membership).
    pub meta: WireSnapshotMeta,
}

struct Staged {
    meta: StagedMeta,
    incoming: Incoming,
    data: File,
    progress: File,
    /// Which offer this is (see [`Staging::offer`]).
    generation: u64,
}

/// The follower's one staged snapshot (at most one at a time), shared by its inbound
/// connections.
pub struct Staging {
    dir: PathBuf,
    current: Option<Staged>,
    generation: u64,
}

impl Staging {
    /// Opens the staging area under `data_dir`, keeping a snapshot staged before a restart
    /// (cut back to its durable length) so that the leader's next offer can resume it.
    pub fn open(data_dir: &Path) -> Result<Staging, StagingError> {
        let dir = data_dir.join(STAGING_DIR);
        let mut staging = Staging {
            dir,
            current: None,
            generation: 0,
        };
        if staging.dir.join(META).exists() {
            match staging.reopen() {
                Ok(staged) => staging.current = Some(staged),
                Err(error) => {
                    tracing::warn!(%error, "discarding an unreadable staged snapshot");
                    staging.clear()?;
                }
            }
        }
        Ok(staging)
    }

    /// What is staged now and how many bytes of it are held, if anything.
    #[cfg(test)]
    pub fn staged(&self) -> Option<(StagedMeta, u64)> {
        self.current
            .as_ref()
            .map(|s| (s.meta.clone(), s.incoming.received()))
    }

    /// Starts or resumes staging the snapshot `meta`: returns the offer's generation (which
    /// each of its chunks must name) and how many of its bytes are already held. An offer of
    /// the snapshot already staged keeps its bytes; any other replaces them.
    pub fn offer(&mut self, meta: StagedMeta) -> Result<(u64, u64), StagingError> {
        self.generation += 1;
        let generation = self.generation;
        if let Some(staged) = &mut self.current {
            if staged.meta.id == meta.id {
                staged.generation = generation;
                staged.meta = meta;
                return Ok((generation, staged.incoming.received()));
            }
        }
        self.clear()?;
        let staged = self.create(meta, generation)?;
        self.current = Some(staged);
        Ok((generation, 0))
    }

    /// Writes one checked chunk of the offer `generation` and syncs it: returns the bytes now
    /// held, which may be acknowledged.
    pub fn write_chunk(
        &mut self,
        generation: u64,
        offset: u64,
        data: &[u8],
        crc: u32,
    ) -> Result<u64, StagingError> {
        let dir = self.dir.clone();
        let staged = self.current_for(generation)?;
        staged.incoming.check(offset, data, crc)?;
        let io = |source| StagingError::Io {
            path: dir.join(DATA),
            source,
        };
        staged.data.write_all_at(data, offset).map_err(io)?;
        staged.data.sync_data().map_err(io)?;
        let held = offset + data.len() as u64;
        write_progress(&staged.progress, held).map_err(|source| StagingError::Io {
            path: dir.join(PROGRESS),
            source,
        })?;
        staged.incoming.advance(data.len() as u64);
        Ok(staged.incoming.received())
    }

    /// The whole snapshot of the offer `generation`, checked against its CRC, once every
    /// byte is held (`None` before). A snapshot that fails its CRC is discarded, so the next
    /// offer starts from zero.
    pub fn complete(
        &mut self,
        generation: u64,
    ) -> Result<Option<(WireSnapshotMeta, Bytes)>, StagingError> {
        let path = self.dir.join(DATA);
        let staged = self.current_for(generation)?;
        if !staged.incoming.is_complete() {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(staged.incoming.id().size as usize);
        let mut file = File::open(&path).map_err(|source| StagingError::Io {
            path: path.clone(),
            source,
        })?;
        file.read_to_end(&mut bytes)
            .map_err(|source| StagingError::Io { path, source })?;
        if let Err(error) = staged.incoming.verify(&bytes) {
            self.clear()?;
            return Err(error.into());
        }
        Ok(Some((staged.meta.meta.clone(), Bytes::from(bytes))))
    }

    fn current_for(&mut self, generation: u64) -> Result<&mut Staged, StagingError> {
        match &mut self.current {
            Some(staged) if staged.generation == generation => Ok(staged),
            _ => Err(StagingError::Superseded),
        }
    }

    /// Removes whatever is staged.
    fn clear(&mut self) -> Result<(), StagingError> {
        self.current = None;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StagingError::Io {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    /// An empty staging of `meta`: the description first (synced and renamed into place),
    /// then empty data and progress files.
    fn create(&self, meta: StagedMeta, generation: u64) -> Result<Staged, StagingError> {
        let dir = &self.dir;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StagingError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let body = rmp_serde::to_vec_named(&meta).expect("a staged meta always encodes");
        let temp = dir.join(format!("{META}.tmp"));
        let mut file = File::create(&temp).map_err(io(&temp))?;
        file.write_all(&body).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        let data = open_rw(&dir.join(DATA), true).map_err(io(&dir.join(DATA)))?;
        let progress = open_rw(&dir.join(PROGRESS), true).map_err(io(&dir.join(PROGRESS)))?;
        write_progress(&progress, 0).map_err(io(&dir.join(PROGRESS)))?;
        fs::rename(&temp, dir.join(META)).map_err(io(&dir.join(META)))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        let incoming = Incoming::new(meta.id, 0);
        Ok(Staged {
            meta,
            incoming,
            data,
            progress,
            generation,
        })
    }

    /// The staging left by an earlier run, cut back to its durable length.
    fn reopen(&self) -> io::Result<Staged> {
        let body = fs::read(self.dir.join(META))?;
        let meta: StagedMeta = rmp_serde::from_slice(&body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let data = open_rw(&self.dir.join(DATA), false)?;
        let progress = open_rw(&self.dir.join(PROGRESS), false)?;
        let held = read_progress(&progress)?.min(data.metadata()?.len());
        data.set_len(held)?;
        data.sync_all()?;
        Ok(Staged {
            incoming: Incoming::new(meta.id, held),
            meta,
            data,
            progress,
            generation: 0,
        })
    }
}

fn open_rw(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
}

/// `held` as 8 bytes big-endian and their CRC-32, at the start of the file, synced.
fn write_progress(file: &File, held: u64) -> io::Result<()> {
    let mut record = [0u8; 12];
    record[..8].copy_from_slice(&held.to_be_bytes());
    let crc = crc32fast::hash(&record[..8]);
    record[8..].copy_from_slice(&crc.to_be_bytes());
    file.write_all_at(&record, 0)?;
    file.sync_data()
}

/// The durable length a progress file records; 0 if it is missing, short or torn.
fn read_progress(file: &File) -> io::Result<u64> {
    let mut record = [0u8; 12];
    match file.read_exact_at(&mut record, 0) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
        Err(error) => return Err(error),
    }
    let held = u64::from_be_bytes(record[..8].try_into().expect("8 bytes"));
    let crc = u32::from_be_bytes(record[8..].try_into().expect("4 bytes"));
    Ok(if crc32fast::hash(&record[..8]) == crc {
        held
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::peer::transfer::crc32;

    fn meta_of(data: &[u8], index: u64) -> StagedMeta {
        StagedMeta {
            id: TransferId {
                index,
                term: 2,
                size: data.len() as u64,
                crc32: crc32(data),
            },
            meta: WireSnapshotMeta {
                index,
                term: 2,
                ..WireSnapshotMeta::default()
            },
        }
    }

    fn write(staging: &mut Staging, generation: u64, data: &[u8], from: usize, to: usize) {
        let part = &data[from..to];
        staging
            .write_chunk(generation, from as u64, part, crc32(part))
            .expect("chunk written");
    }

    #[test]
    fn a_restart_resumes_the_staged_snapshot_from_its_durable_length() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let meta = meta_of(&data, 9);
        let mut staging = Staging::open(dir.path()).unwrap();
        let (generation, held) = staging.offer(meta.clone()).unwrap();
        assert_eq!(held, 0);
        write(&mut staging, generation, &data, 0, 4000);
        drop(staging);

        let mut staging = Staging::open(dir.path()).unwrap();
        assert_eq!(staging.staged(), Some((meta.clone(), 4000)));
        let (generation, held) = staging.offer(meta).unwrap();
        assert_eq!(held, 4000);
        write(&mut staging, generation, &data, 4000, 10_000);
        let (_, whole) = staging.complete(generation).unwrap().expect("complete");
        assert_eq!(&whole[..], &data[..]);
    }

    #[test]
    fn a_torn_tail_past_the_progress_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![5u8; 3000];
        let meta = meta_of(&data, 4);
        let mut staging = Staging::open(dir.path()).unwrap();
        let (generation, _) = staging.offer(meta.clone()).unwrap();
        write(&mut staging, generation, &data, 0, 1000);
        drop(staging);
        // A chunk written but never synced nor recorded: garbage past the durable length.
        let path = dir.path().join(STAGING_DIR).join(DATA);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[9u8; 700], 1000).unwrap();
        let mut staging = Staging::open(dir.path()).unwrap();
        assert_eq!(staging.staged().map(|(_, held)| held), Some(1000));
        assert_eq!(fs::metadata(&path).unwrap().len(), 1000);
        let (generation, held) = staging.offer(meta).unwrap();
        assert_eq!(held, 1000);
        write(&mut staging, generation, &data, 1000, 3000);
        let (_, whole) = staging.complete(generation).unwrap().expect("complete");
        assert_eq!(&whole[..], &data[..]);
    }

    #[test]
    fn a_different_offer_replaces_the_staged_snapshot_and_stale_chunks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let old = vec![1u8; 2000];
        let new = vec![2u8; 1500];
        let mut staging = Staging::open(dir.path()).unwrap();
        let (first, _) = staging.offer(meta_of(&old, 3)).unwrap();
        write(&mut staging, first, &old, 0, 1000);
        let (second, held) = staging.offer(meta_of(&new, 8)).unwrap();
        assert_eq!(held, 0, "another snapshot starts from zero");
        let refused = staging.write_chunk(first, 1000, &old[1000..], crc32(&old[1000..]));
        assert!(
            matches!(refused, Err(StagingError::Superseded)),
            "{refused:?}"
        );
        write(&mut staging, second, &new, 0, 1500);
        let (meta, whole) = staging.complete(second).unwrap().expect("complete");
        assert_eq!(meta.index, 8);
        assert_eq!(&whole[..], &new[..]);
    }

    #[test]
    fn a_snapshot_that_fails_its_whole_crc_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![3u8; 1000];
        let mut meta = meta_of(&data, 5);
        meta.id.crc32 ^= 1;
        let mut staging = Staging::open(dir.path()).unwrap();
        let (generation, _) = staging.offer(meta.clone()).unwrap();
        write(&mut staging, generation, &data, 0, 1000);
        let failed = staging.complete(generation);
        assert!(
            matches!(failed, Err(StagingError::Transfer(TransferError::WholeCrc))),
            "{failed:?}"
        );
        assert_eq!(staging.staged(), None);
        assert_eq!(staging.offer(meta).unwrap().1, 0, "starts over");
    }
}
