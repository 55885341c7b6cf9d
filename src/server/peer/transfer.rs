//! Streaming a snapshot in chunks: the two halves of the exchange, without I/O.
//!
//! A snapshot can be far larger than a frame, so a leader does not send it as one
//! `InstallSnapshot` message. It *offers* it on a connection of its own (`SnapshotOffer`: the
//! snapshot's id, size and CRC), the follower answers with how much of that very snapshot it
//! already holds (`SnapshotAck`), and the leader streams the rest as `SnapshotChunk`s of at
//! most [`SNAPSHOT_CHUNK_BYTES`], each with its own CRC, keeping at most [`WINDOW_BYTES`]
//! unacknowledged. The follower acknowledges every chunk once it is durable, so after a cut
//! connection (or a follower crash) the next offer resumes from the last acknowledged byte,
//! not from zero. When the follower holds every byte and the whole CRC matches, it hands the
//! snapshot to its Raft core as the `InstallSnapshot` it stands for.
//!
//! ```text
//! leader (Outgoing)                                  follower (Incoming)
//!   | -- SnapshotOffer {term, meta, size, crc32} -->  |  same snapshot staged? keep it
//!   | <------------------ SnapshotAck {received} --  |  else start empty (received 0)
//!   | -- SnapshotChunk {offset: received, ..} ---->  |  offset == held, CRC ok: append,
//!   | -- SnapshotChunk {..} ------------------------> |  fsync, then ack
//!   | <------------------ SnapshotAck {received} --  |
//!   |                    ...                          |
//!   | <------------------ SnapshotAck {size} ------  |  whole CRC ok: InstallSnapshot
//! ```
//!
//! This file holds only the bookkeeping of each side, so it can be checked over many seeded
//! runs: the simulation below runs both halves against connections that are cut at any
//! point, messages of dead connections delivered late, chunks corrupted (with and without a
//! matching CRC), follower crashes, and snapshots replaced mid-transfer. `snapshot_out.rs`
//! and `staging.rs` do the network and disk work around it. Safety never rests on the chunks: whatever happens to
//! them, the follower installs a snapshot only when its bytes match the offer's whole CRC, and
//! the Raft core decides, as for any message, whether the leader's term still counts.

use bytes::Bytes;

use crate::protocol::SNAPSHOT_CHUNK_BYTES;

/// Snapshot bytes a leader sends ahead of the follower's acknowledgements (4 chunks): enough
/// to keep the link busy while the follower syncs one chunk, little enough that a slow
/// follower holds back no more than this in the leader's socket buffers.
pub const WINDOW_BYTES: u64 = 4 * SNAPSHOT_CHUNK_BYTES as u64;

/// CRC-32 (IEEE), the checksum of a chunk and of a whole snapshot on the wire.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Which snapshot a transfer carries: a follower resumes only a transfer of the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferId {
    /// The index of the last entry the snapshot covers.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The snapshot's length in bytes.
    pub size: u64,
    /// CRC-32 of the whole snapshot.
    pub crc32: u32,
}

/// A protocol violation in a transfer; the side that sees one closes the connection, and the
/// next offer starts over from what the follower holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// An acknowledgement outside what was sent (`acked..=sent`).
    #[error("acknowledgement of {received} bytes outside {acked}..={sent}")]
    BadAck {
        /// The acknowledged length.
        received: u64,
        /// What was acknowledged before.
        acked: u64,
        /// What was sent so far.
        sent: u64,
    },
    /// A chunk that does not start where the held bytes end.
    #[error("chunk at offset {offset}, expected {expected}")]
    OutOfOrder {
        /// The chunk's offset.
        offset: u64,
        /// The length held.
        expected: u64,
    },
    /// A chunk that reaches past the offered size.
    #[error("chunk of {len} bytes at {offset} passes the snapshot's size {size}")]
    TooLong {
        /// The chunk's offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The offered size.
        size: u64,
    },
    /// A chunk that is empty or longer than [`SNAPSHOT_CHUNK_BYTES`].
    #[error("chunk of {len} bytes at {offset}: a chunk holds 1 to {max} bytes", max = SNAPSHOT_CHUNK_BYTES)]
    ChunkLength {
        /// The chunk's offset.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// A chunk whose bytes do not match its CRC.
    #[error("chunk at offset {offset} fails its CRC")]
    ChunkCrc {
        /// The chunk's offset.
        offset: u64,
    },
    /// Every byte arrived but the whole does not match the offer's CRC.
    #[error("the received snapshot fails its CRC")]
    WholeCrc,
}

/// One chunk to send: bytes `offset..offset + data.len()` of the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Where `data` starts in the snapshot.
    pub offset: u64,
    /// The bytes (a slice of the snapshot, not a copy).
    pub data: Bytes,
    /// CRC-32 of `data`.
    pub crc32: u32,
}

/// The leader's side of one transfer: what was sent and what the follower acknowledged.
#[derive(Clone, Debug)]
pub struct Outgoing {
    data: Bytes,
    id: TransferId,
    chunk: usize,
    window: u64,
    /// Bytes the follower holds (its latest acknowledgement).
    acked: u64,
    /// Bytes sent on the current connection (from `acked` on when it was resumed).
    sent: u64,
}

impl Outgoing {
    /// A transfer of `data`, the snapshot at (`index`, `term`), in chunks of `chunk` bytes with
    /// `window` bytes in flight at most (both at least 1).
    pub fn new(data: Bytes, index: u64, term: u64, chunk: usize, window: u64) -> Outgoing {
        assert!(chunk > 0 && window > 0, "chunk and window must be positive");
        let id = TransferId {
            index,
            term,
            size: data.len() as u64,
            crc32: crc32(&data),
        };
        Outgoing {
            data,
            id,
            chunk,
            window,
            acked: 0,
            sent: 0,
        }
    }

    /// The snapshot this transfer carries.
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// Bytes the follower has acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// True once the follower has acknowledged every byte.
    pub fn is_done(&self) -> bool {
        self.acked == self.id.size
    }

    /// Starts a new connection's stream at `received`, the follower's answer to the offer (which
    /// may be less than it acknowledged before: a follower that crashed may have lost its
    /// unsynced tail, or replaced the staged snapshot).
    pub fn resume(&mut self, received: u64) -> Result<(), TransferError> {
        if received > self.id.size {
            return Err(TransferError::BadAck {
                received,
                acked: 0,
                sent: self.id.size,
            });
        }
        self.acked = received;
        self.sent = received;
        Ok(())
    }

    /// The next chunk to send, if the window has room and bytes are left.
    pub fn next_chunk(&mut self) -> Option<Chunk> {
        if self.sent >= self.id.size || self.sent - self.acked >= self.window {
            return None;
        }
        let start = self.sent as usize;
        let end = (start + self.chunk).min(self.data.len());
        let data = self.data.slice(start..end);
        self.sent = end as u64;
        Some(Chunk {
            offset: start as u64,
            crc32: crc32(&data),
            data,
        })
    }

    /// Records the follower's acknowledgement of `received` bytes, which must lie between the
    /// previous acknowledgement and what was sent.
    pub fn on_ack(&mut self, received: u64) -> Result<(), TransferError> {
        if received < self.acked || received > self.sent {
            return Err(TransferError::BadAck {
                received,
                acked: self.acked,
                sent: self.sent,
            });
        }
        self.acked = received;
        Ok(())
    }
}

/// The follower's side of one transfer: the offered snapshot and how much of it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    id: TransferId,
    received: u64,
}

impl Incoming {
    /// A transfer of the snapshot `id` with `received` bytes already held (0 for a new one).
    pub fn new(id: TransferId, received: u64) -> Incoming {
        Incoming {
            id,
            received: received.min(id.size),
        }
    }

    /// The snapshot offered.
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// Bytes held, from the start.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// True once every byte is held.
    pub fn is_complete(&self) -> bool {
        self.received == self.id.size
    }

    /// Checks a chunk before it is written: it must start where the held bytes end, hold 1
    /// to [`SNAPSHOT_CHUNK_BYTES`] bytes, stay within the size and match its CRC.
    pub fn check(&self, offset: u64, data: &[u8], crc: u32) -> Result<(), TransferError> {
        if offset != self.received {
            return Err(TransferError::OutOfOrder {
                offset,
                expected: self.received,
            });
        }
        let len = data.len() as u64;
        if data.is_empty() || data.len() > SNAPSHOT_CHUNK_BYTES {
            return Err(TransferError::ChunkLength { offset, len });
        }
        if offset + len > self.id.size {
            return Err(TransferError::TooLong {
                offset,
                len,
                size: self.id.size,
            });
        }
        if crc32(data) != crc {
            return Err(TransferError::ChunkCrc { offset });
        }
        Ok(())
    }

    /// Records that a checked chunk of `len` bytes is now held durably.
    pub fn advance(&mut self, len: u64) {
        self.received = (self.received + len).min(self.id.size);
    }

    /// Checks the whole snapshot once every byte is held.
    pub fn verify(&self, whole: &[u8]) -> Result<(), TransferError> {
        if whole.len() as u64 != self.id.size || crc32(whole) != self.id.crc32 {
            return Err(TransferError::WholeCrc);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! A seeded simulation of whole transfers. The leader's half is an [`Outgoing`] driven the
    //! way `snapshot_out.rs` drives it (offer, resume at the answer, chunks while the window
    //! has room, acknowledgements); the follower's half is an [`Incoming`] with the staging
    //! rules of `staging.rs` kept in memory (an offer of the staged snapshot keeps its bytes,
    //! any other replaces them; each offer gets a generation and only the latest offer's
    //! chunks count; a whole that fails its CRC is discarded; a crash keeps what was
    //! acknowledged). Faults come from the seed; every failure names it.
    //!
    //! What must hold: the follower installs only the exact bytes of a snapshot the leader
    //! offered; once the faults stop, the transfer completes; and the leader never sends much
    //! more than the snapshot: at most one window per connection (what was in flight when it
    //! was cut) plus a restart from zero per corruption that slipped past a chunk CRC.

    use std::collections::{BTreeMap, VecDeque};

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Leader → follower.
    #[derive(Clone, Debug)]
    enum ToFollower {
        Offer(TransferId),
        Chunk(u64, Vec<u8>, u32),
    }

    /// The follower, as `staging.rs` and `inbound.rs` behave.
    #[derive(Default)]
    struct Follower {
        /// The staged snapshot: its bookkeeping and the bytes held.
        staged: Option<(Incoming, Vec<u8>)>,
        generation: u64,
        /// The generation of each connection's latest offer.
        offers: BTreeMap<u64, u64>,
        installed: Vec<(TransferId, Vec<u8>)>,
    }

    /// What the follower does with a message: acknowledge it, or refuse and close (the
    /// reason goes to the leader in an `Error`, which the simulation has no use for).
    enum Answer {
        Ack(u64),
        Refuse,
    }

    impl Follower {
        fn receive(&mut self, conn: u64, message: ToFollower) -> Answer {
            match message {
                ToFollower::Offer(id) => {
                    self.generation += 1;
                    self.offers.insert(conn, self.generation);
                    let keep = matches!(&self.staged, Some((incoming, _)) if incoming.id() == id);
                    if !keep {
                        self.staged = Some((Incoming::new(id, 0), Vec::new()));
                    }
                    self.finish()
                }
                ToFollower::Chunk(offset, data, crc) => {
                    if self.offers.get(&conn) != Some(&self.generation) {
                        return Answer::Refuse;
                    }
                    let Some((incoming, bytes)) = &mut self.staged else {
                        return Answer::Refuse;
                    };
                    if incoming.check(offset, &data, crc).is_err() {
                        return Answer::Refuse;
                    }
                    bytes.extend_from_slice(&data);
                    incoming.advance(data.len() as u64);
                    self.finish()
                }
            }
        }

        /// Installs a complete, checked snapshot (the core takes it), or discards a bad one.
        fn finish(&mut self) -> Answer {
            let (incoming, bytes) = self.staged.as_ref().expect("staged by the offer");
            if !incoming.is_complete() {
                return Answer::Ack(incoming.received());
            }
            let (id, received) = (incoming.id(), incoming.received());
            if incoming.verify(bytes).is_err() {
                self.staged = None;
                return Answer::Refuse;
            }
            self.installed.push((id, bytes.clone()));
            Answer::Ack(received)
        }

        /// A restart: connections are gone, the staged bytes survive (each was synced before
        /// its acknowledgement), and an unreadable staging is sometimes lost entirely.
        fn crash(&mut self, lose_staging: bool) {
            self.offers.clear();
            if lose_staging {
                self.staged = None;
            }
        }
    }

    /// The leader's transfer task for one snapshot.
    struct Leader {
        outgoing: Outgoing,
        data: Bytes,
        /// The live connection and whether its offer was answered.
        conn: Option<(u64, bool)>,
        next_conn: u64,
        connections: u64,
        sent: u64,
    }

    impl Leader {
        fn new(data: Vec<u8>, index: u64, chunk: usize, window: u64) -> Leader {
            let data = Bytes::from(data);
            Leader {
                outgoing: Outgoing::new(data.clone(), index, 1, chunk, window),
                data,
                conn: None,
                next_conn: 0,
                connections: 0,
                sent: 0,
            }
        }
    }

    struct World {
        rng: SmallRng,
        leader: Leader,
        follower: Follower,
        /// Every snapshot offered, by id.
        offered: BTreeMap<(u64, u64, u64, u32), Bytes>,
        to_follower: VecDeque<(u64, ToFollower)>,
        to_leader: VecDeque<(u64, u64)>,
        /// Messages of cut connections that the follower may still read.
        late: Vec<(u64, ToFollower)>,
        chunk: usize,
        window: u64,
        next_index: u64,
        /// Corruptions that carried a matching CRC (each may cost a restart from zero).
        forged: u64,
        /// All bytes sent, over all snapshots.
        total_sent: u64,
        /// The sizes of every snapshot offered.
        total_size: u64,
        connections: u64,
    }

    fn key(id: TransferId) -> (u64, u64, u64, u32) {
        (id.index, id.term, id.size, id.crc32)
    }

    impl World {
        fn new(seed: u64) -> World {
            let mut rng = SmallRng::seed_from_u64(seed);
            let chunk = rng.gen_range(1..=512);
            let window = rng.gen_range(chunk as u64..=4 * chunk as u64);
            let mut world = World {
                leader: Leader::new(Vec::new(), 0, chunk, window),
                rng,
                follower: Follower::default(),
                offered: BTreeMap::new(),
                to_follower: VecDeque::new(),
                to_leader: VecDeque::new(),
                late: Vec::new(),
                chunk,
                window,
                next_index: 1,
                forged: 0,
                total_sent: 0,
                total_size: 0,
                connections: 0,
            };
            world.new_snapshot();
            world
        }

        /// The leader has a new snapshot: the current transfer is abandoned for it.
        fn new_snapshot(&mut self) {
            self.cut();
            let size = match self.rng.gen_range(0..10) {
                0 => 0,
                1 => self.chunk * self.rng.gen_range(1..=8),
                _ => self.rng.gen_range(1..=6000),
            };
            let data: Vec<u8> = (0..size).map(|_| self.rng.gen()).collect();
            self.connections += self.leader.connections;
            self.leader = Leader::new(data, self.next_index, self.chunk, self.window);
            self.next_index += 1;
            self.offered
                .insert(key(self.leader.outgoing.id()), self.leader.data.clone());
            self.total_size += self.leader.data.len() as u64;
        }

        /// The live connection breaks: what it still carried toward the follower may yet be
        /// read there, its acknowledgements are lost.
        fn cut(&mut self) {
            self.leader.conn = None;
            self.late.extend(self.to_follower.drain(..));
            self.to_leader.clear();
        }

        /// The leader's next move: dial and offer, or fill the window.
        fn leader_step(&mut self) {
            let leader = &mut self.leader;
            match leader.conn {
                None => {
                    let conn = leader.next_conn + self.next_index * 1_000_000;
                    leader.next_conn += 1;
                    leader.connections += 1;
                    leader.conn = Some((conn, false));
                    self.to_follower
                        .push_back((conn, ToFollower::Offer(leader.outgoing.id())));
                }
                Some((conn, true)) => {
                    while let Some(chunk) = leader.outgoing.next_chunk() {
                        leader.sent += chunk.data.len() as u64;
                        self.total_sent += chunk.data.len() as u64;
                        self.to_follower.push_back((
                            conn,
                            ToFollower::Chunk(chunk.offset, chunk.data.to_vec(), chunk.crc32),
                        ));
                    }
                }
                Some((_, false)) => {}
            }
        }

        /// The leader reads one acknowledgement.
        fn leader_reads(&mut self, seed: u64) {
            let Some((conn, received)) = self.to_leader.pop_front() else {
                return;
            };
            let Some((live, answered)) = self.leader.conn else {
                return;
            };
            assert_eq!(conn, live, "seed {seed}: an ack crossed connections");
            let outcome = if answered {
                self.leader.outgoing.on_ack(received)
            } else {
                self.leader.conn = Some((live, true));
                self.leader.outgoing.resume(received)
            };
            if let Err(error) = outcome {
                panic!("seed {seed}: the leader got an impossible ack: {error}");
            }
        }

        /// The follower reads one message, from the live connection or (if `late`) one of a
        /// cut connection; `corrupt` flips a byte of a chunk, `forge` also fixes its CRC.
        fn follower_reads(&mut self, seed: u64, late: bool, corrupt: bool, forge: bool) {
            let (conn, mut message) = if late {
                if self.late.is_empty() {
                    return;
                }
                let at = self.rng.gen_range(0..self.late.len());
                self.late.swap_remove(at)
            } else {
                match self.to_follower.pop_front() {
                    Some(next) => next,
                    None => return,
                }
            };
            if let ToFollower::Chunk(_, data, crc) = &mut message {
                if corrupt && !data.is_empty() {
                    let at = self.rng.gen_range(0..data.len());
                    data[at] ^= 1 << self.rng.gen_range(0..8);
                    if forge {
                        *crc = crc32(data);
                        self.forged += 1;
                    }
                }
            }
            let live = self.leader.conn.map(|(c, _)| c) == Some(conn);
            match self.follower.receive(conn, message) {
                Answer::Ack(received) if live => self.to_leader.push_back((conn, received)),
                Answer::Ack(_) => {}
                Answer::Refuse if live => self.cut(),
                Answer::Refuse => {}
            }
            self.check_installs(seed);
        }

        fn check_installs(&self, seed: u64) {
            for (id, bytes) in &self.follower.installed {
                let offered = self.offered.get(&key(*id));
                assert_eq!(
                    offered.map(|b| &b[..]),
                    Some(&bytes[..]),
                    "seed {seed}: the follower installed bytes that were not offered as {id:?}"
                );
            }
        }

        fn installed_current(&self) -> bool {
            let id = self.leader.outgoing.id();
            self.follower.installed.iter().any(|(i, _)| *i == id)
        }
    }

    fn run(seed: u64) {
        let mut world = World::new(seed);
        // Faults, for a while.
        for _ in 0..400 {
            match world.rng.gen_range(0..100) {
                0..=29 => world.leader_step(),
                30..=54 => world.follower_reads(seed, false, false, false),
                55..=74 => world.leader_reads(seed),
                75..=79 => world.follower_reads(seed, true, false, false),
                80..=83 => world.cut(),
                84..=86 => world.follower_reads(seed, false, true, false),
                87 => world.follower_reads(seed, false, true, true),
                88..=89 => {
                    let lose = world.rng.gen_bool(0.2);
                    world.follower.crash(lose);
                    world.cut();
                }
                90..=91 => world.new_snapshot(),
                _ => {}
            }
        }
        // Calm: late messages of dead connections are gone, the transfer must finish.
        world.late.clear();
        let mut steps = 0;
        while !(world.leader.outgoing.is_done() && world.installed_current()) {
            steps += 1;
            assert!(
                steps < 100_000,
                "seed {seed}: the transfer did not finish without faults"
            );
            world.leader_step();
            world.follower_reads(seed, false, false, false);
            world.leader_reads(seed);
        }
        world.connections += world.leader.connections;
        let bound =
            world.total_size + world.connections * world.window + world.forged * world.total_size;
        assert!(
            world.total_sent <= bound,
            "seed {seed}: sent {} bytes for {} bytes of snapshots over {} connections \
             (window {}, {} forged chunks): resumed transfers repeat too much",
            world.total_sent,
            world.total_size,
            world.connections,
            world.window,
            world.forged
        );
    }

    #[test]
    fn transfers_install_only_offered_bytes_finish_and_resume_under_faults() {
        for seed in 0..2000 {
            run(seed);
        }
    }

    #[test]
    fn a_clean_transfer_sends_each_byte_once_in_window_sized_bursts() {
        let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let mut out = Outgoing::new(data.clone(), 3, 2, 1000, 2500);
        out.resume(0).unwrap();
        let mut incoming = Incoming::new(out.id(), 0);
        let mut received = Vec::new();
        while !out.is_done() {
            let mut burst = Vec::new();
            while let Some(chunk) = out.next_chunk() {
                burst.push(chunk);
            }
            assert!(
                burst.iter().map(|c| c.data.len()).sum::<usize>() <= 3000,
                "at most the window (rounded up to a chunk) is in flight"
            );
            for chunk in burst {
                incoming
                    .check(chunk.offset, &chunk.data, chunk.crc32)
                    .unwrap();
                received.extend_from_slice(&chunk.data);
                incoming.advance(chunk.data.len() as u64);
                out.on_ack(incoming.received()).unwrap();
            }
        }
        assert_eq!(received, &data[..]);
        incoming.verify(&received).unwrap();
    }

    #[test]
    fn the_follower_refuses_chunks_that_do_not_fit_the_offer() {
        let out = Outgoing::new(Bytes::from_static(b"abcdef"), 1, 1, 4, 8);
        let incoming = Incoming::new(out.id(), 2);
        let ok = |data: &[u8]| crc32(data);
        assert!(matches!(
            incoming.check(0, b"ab", ok(b"ab")),
            Err(TransferError::OutOfOrder { .. })
        ));
        assert!(matches!(
            incoming.check(2, b"", ok(b"")),
            Err(TransferError::ChunkLength { .. })
        ));
        assert!(matches!(
            incoming.check(2, b"cdefg", ok(b"cdefg")),
            Err(TransferError::TooLong { .. })
        ));
        assert!(matches!(
            incoming.check(2, b"cd", ok(b"xx")),
            Err(TransferError::ChunkCrc { .. })
        ));
        assert!(incoming.check(2, b"cdef", ok(b"cdef")).is_ok());
        assert_eq!(
            Incoming::new(out.id(), 6).verify(b"abcdeX"),
            Err(TransferError::WholeCrc)
        );
    }
}
