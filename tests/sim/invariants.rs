//! The safety properties, one function each, and the global history they are checked against.
//!
//! Raft properties are from the Raft paper (Ongaro and Ousterhout, figure 3) and the
//! dissertation; lock properties from ARCHITECTURE.md §2 and reliability.md §6.1 (L1-L6).
//! Every function returns `Err(description)` on a violation.

use std::collections::{BTreeMap, BTreeSet};

use raftlock::lockspace::{Applied, Command, Fence, LockMode, LockSpace, Outcome, Seq, SessionId};
use raftlock::raft::{Entry, EntryData, Index, NodeId, Snapshot, Term};

use crate::client::Client;
use crate::disk::Durable;

/// FNV-1a over bytes.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Mixes a value into a hash.
pub fn mix(h: u64, v: u64) -> u64 {
    let mut x = h ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

/// The hash of an entry's payload.
pub fn payload_hash(data: &EntryData) -> u64 {
    match data {
        EntryData::Noop => 1,
        EntryData::Command(b) => mix(2, fnv(b)),
        EntryData::Config(m) => mix(3, fnv(format!("{m:?}").as_bytes())),
    }
}

/// The hash chain value of `entry` following `prev` (log matching: equal chains at an index
/// mean equal logs up to it).
pub fn chain(prev: u64, entry: &Entry) -> u64 {
    mix(
        mix(mix(prev, entry.index), entry.term),
        payload_hash(&entry.data),
    )
}

/// The log a node handed out for persistence, mirrored from its `Ready`s: (term, chain) per
/// index after a base (the snapshot the node started from or installed).
#[derive(Clone, Debug, Default)]
pub struct Shadow {
    pub base: Index,
    pub base_term: Term,
    pub base_chain: u64,
    pub entries: Vec<(Term, u64)>,
}

impl Shadow {
    /// The last index.
    pub fn last(&self) -> Index {
        self.base + self.entries.len() as Index
    }

    /// (term, chain) at `index`, if known.
    pub fn at(&self, index: Index) -> Option<(Term, u64)> {
        if index == self.base {
            return Some((self.base_term, self.base_chain));
        }
        if index < self.base {
            return None;
        }
        self.entries.get((index - self.base - 1) as usize).copied()
    }
}

/// Coverage counters (anti-vacuity): a batch where one is zero fails.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// A new leader was elected while a lock was held.
    pub leader_change_holding: u64,
    /// `Ready::truncate_from` on some node (uncommitted entries removed).
    pub truncations: u64,
    /// `Ready::snapshot` on a follower (InstallSnapshot).
    pub snapshot_installs: u64,
    /// An applied `Append` answered `StaleFence`.
    pub stale_fences: u64,
    /// `ExpireSession` applied while the session's client was paused holding a lock.
    pub expired_paused_holders: u64,
    /// Crashes, and crashes that lost unsynced writes.
    pub crashes: u64,
    pub lost_writes: u64,
    /// Leaders elected, entries committed, appends acknowledged.
    pub elections: u64,
    pub committed: u64,
    pub acked_appends: u64,
    /// A leader's commit index passed its own durable log (its fsync still in flight).
    pub commit_before_own_fsync: u64,
    /// Membership entries committed (besides the bootstrap one).
    pub membership_committed: u64,
    /// `AddMember` of a node that never answered gave up without promoting it.
    pub promotion_refused: u64,
    /// A crash lost durable entries that a majority of the other nodes held.
    pub lost_tails: u64,
    /// An `ExpireHold` applied after an `Extend` had restarted the hold (it did nothing).
    pub extend_beat_expiry: u64,
    /// A crash hint about its (crashed) leader reached a follower, and a spurious one about
    /// its live leader.
    pub leader_hints: u64,
    pub spurious_leader_hints: u64,
    /// A snapshot built off the replica came back after entries past it were applied, and one
    /// came back after a snapshot received from the leader had overtaken it.
    pub late_builds: u64,
    pub overtaken_builds: u64,
}

impl Counters {
    /// How many counters [`Counters::required`] names.
    pub const REQUIRED: usize = 14;

    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Counters) {
        self.leader_change_holding += o.leader_change_holding;
        self.truncations += o.truncations;
        self.snapshot_installs += o.snapshot_installs;
        self.stale_fences += o.stale_fences;
        self.expired_paused_holders += o.expired_paused_holders;
        self.crashes += o.crashes;
        self.lost_writes += o.lost_writes;
        self.elections += o.elections;
        self.committed += o.committed;
        self.acked_appends += o.acked_appends;
        self.commit_before_own_fsync += o.commit_before_own_fsync;
        self.membership_committed += o.membership_committed;
        self.promotion_refused += o.promotion_refused;
        self.lost_tails += o.lost_tails;
        self.extend_beat_expiry += o.extend_beat_expiry;
        self.leader_hints += o.leader_hints;
        self.spurious_leader_hints += o.spurious_leader_hints;
        self.late_builds += o.late_builds;
        self.overtaken_builds += o.overtaken_builds;
    }

    /// The anti-vacuity counters, named.
    pub fn required(&self) -> [(&'static str, u64); Counters::REQUIRED] {
        [
            (
                "leader change while a lock was held",
                self.leader_change_holding,
            ),
            ("truncation of uncommitted entries", self.truncations),
            ("snapshot installed on a follower", self.snapshot_installs),
            ("stale fence rejected", self.stale_fences),
            (
                "session expired while its holder was paused",
                self.expired_paused_holders,
            ),
            (
                "commit while the leader's own fsync was in flight",
                self.commit_before_own_fsync,
            ),
            ("membership changes committed", self.membership_committed),
            (
                "promotion refused for a node that never answered",
                self.promotion_refused,
            ),
            (
                "durable entries lost on a node (repaired by the leader)",
                self.lost_tails,
            ),
            (
                "hold expiry applied after an Extend restarted the hold",
                self.extend_beat_expiry,
            ),
            (
                "crash hint about a follower's dead leader",
                self.leader_hints,
            ),
            (
                "spurious crash hint about a follower's live leader",
                self.spurious_leader_hints,
            ),
            (
                "snapshot build handed back after later entries applied",
                self.late_builds,
            ),
            (
                "snapshot build overtaken by a snapshot from the leader",
                self.overtaken_builds,
            ),
        ]
    }
}

/// A grant as the applied log made it.
#[derive(Clone, Debug)]
pub struct GrantRec {
    pub session: SessionId,
    pub lock: String,
    pub mode: LockMode,
    /// The index of the entry that made it.
    pub start: Index,
    /// The index of the entry that ended it (release, revoke, session end).
    pub end: Option<Index>,
}

/// What one node's applying of one entry looked like, for the checks.
pub struct ApplyCtx<'a> {
    pub host: NodeId,
    pub index: Index,
    pub command: &'a Command,
    pub applied: &'a Applied,
    /// The state before and after.
    pub last_fence_before: Fence,
    /// For an `Append`: was the fence the session's current exclusive grant before apply, and
    /// the file's size before and after.
    pub append_current: bool,
    pub file_before: u64,
    pub file_after: u64,
}

/// The global history every node's behaviour is checked against.
#[derive(Debug, Default)]
pub struct Checker {
    /// Election safety: the leader of each term.
    pub leaders: BTreeMap<Term, NodeId>,
    /// Log matching: the chain of every (index, term) ever handed out.
    chains: BTreeMap<(Index, Term), u64>,
    /// Committed entries as observed on any node: (term, chain) for index i at i-1.
    pub committed: Vec<(Term, u64)>,
    /// The term in which each committed entry was first seen committed (the term of the node
    /// that saw it first: the leader that committed it), non-decreasing.
    commit_terms: Vec<Term>,
    /// State machine safety: the chain of the entry applied at each index.
    applied: Vec<u64>,
    /// The LockSpace snapshot hash after each index.
    states: Vec<u64>,
    /// Every grant ever applied, by fence.
    pub grants: BTreeMap<Fence, GrantRec>,
    /// Acquires by (session, seq): (lock, mode).
    acquires: BTreeMap<(SessionId, Seq), (String, LockMode)>,
    /// The index where each (session, seq) was first applied.
    first_seq: BTreeMap<(SessionId, Seq), Index>,
    /// Sessions that ended, at the index that ended them.
    ended: BTreeMap<SessionId, Index>,
    /// Appends that changed a file, in log order: (index, file, offset, payload).
    pub appends: Vec<(Index, String, u64, Vec<u8>)>,
    /// Per leader (node, term): its last index and chain at the last check.
    leader_marks: BTreeMap<NodeId, (Term, Index, u64)>,
    /// Sessions expired (first application) during the current step.
    pub expired_now: Vec<SessionId>,
    pub counters: Counters,
}

impl Checker {
    /// The highest index applied anywhere.
    pub fn applied_len(&self) -> Index {
        self.applied.len() as Index
    }

    /// Log Matching (Raft §5.3, figure 3): an (index, term) names one entry with one history,
    /// so its hash chain is the same on every node. Also checks the `Ready` contract (appends
    /// follow the log, truncations stay above the snapshot) and that terms never decrease
    /// along a log. Updates `shadow` with the Ready's log writes.
    pub fn log_matching(
        &mut self,
        host: NodeId,
        shadow: &mut Shadow,
        snapshot: Option<&Snapshot>,
        truncate_from: Option<Index>,
        append: &[Entry],
    ) -> Result<(), String> {
        if let Some(s) = snapshot {
            let key = (s.meta.index, s.meta.term);
            let Some(&c) = self.chains.get(&key) else {
                return Err(format!(
                    "n{host}: snapshot at {key:?}: no node ever held that entry"
                ));
            };
            *shadow = Shadow {
                base: s.meta.index,
                base_term: s.meta.term,
                base_chain: c,
                entries: Vec::new(),
            };
        }
        if let Some(t) = truncate_from {
            if t <= shadow.base {
                return Err(format!(
                    "n{host}: Ready contract: truncation from {t} at or below the base {}",
                    shadow.base
                ));
            }
            if let (Some((_, c)), Some((_, cc))) =
                (shadow.at(t), self.committed.get(t as usize - 1))
            {
                if c == *cc {
                    return Err(format!(
                        "n{host}: truncation from {t} removes a committed entry"
                    ));
                }
            }
            shadow.entries.truncate((t - shadow.base - 1) as usize);
        }
        for e in append {
            if e.index != shadow.last() + 1 {
                return Err(format!(
                    "n{host}: Ready contract: append of {} after the last handed-out {}",
                    e.index,
                    shadow.last()
                ));
            }
            let (prev_term, prev_chain) = shadow
                .at(e.index - 1)
                .expect("the previous entry is the last");
            if e.term < prev_term {
                return Err(format!(
                    "n{host}: entry {} of term {} follows term {prev_term}",
                    e.index, e.term
                ));
            }
            let c = chain(prev_chain, e);
            match self.chains.get(&(e.index, e.term)) {
                Some(&known) if known != c => {
                    return Err(format!(
                        "Log Matching: n{host} holds ({}, {}) with a different history",
                        e.index, e.term
                    ))
                }
                Some(_) => {}
                None => {
                    self.chains.insert((e.index, e.term), c);
                }
            }
            shadow.entries.push((e.term, c));
        }
        Ok(())
    }

    /// Election Safety (Raft §5.2, figure 3): at most one leader per term, over all time.
    pub fn election_safety(&mut self, host: NodeId, term: Term) -> Result<bool, String> {
        match self.leaders.get(&term) {
            Some(&l) if l != host => Err(format!(
                "Election Safety: n{host} and n{l} both lead term {term}"
            )),
            Some(_) => Ok(false),
            None => {
                self.leaders.insert(term, host);
                self.counters.elections += 1;
                Ok(true)
            }
        }
    }

    /// Leader Append-Only (Raft §5.3, figure 3): during its term a leader never overwrites or
    /// deletes its entries: the entry it had last at the previous check is still there, same
    /// chain. `truncating` flags a `Ready::truncate_from` of a leader in its own term.
    pub fn leader_append_only(
        &mut self,
        host: NodeId,
        leading: Option<Term>,
        shadow: &Shadow,
        truncating: bool,
    ) -> Result<(), String> {
        let Some(term) = leading else {
            self.leader_marks.remove(&host);
            return Ok(());
        };
        if let Some(&(t, last, c)) = self.leader_marks.get(&host) {
            if t == term {
                if truncating {
                    return Err(format!(
                        "Leader Append-Only: n{host} truncated its log while leading term {term}"
                    ));
                }
                if shadow.at(last).map(|x| x.1) != Some(c) {
                    return Err(format!(
                        "Leader Append-Only: n{host} changed entry {last} while leading term {term}"
                    ));
                }
            }
        }
        let last = shadow.last();
        let c = shadow.at(last).map_or(0, |x| x.1);
        self.leader_marks.insert(host, (term, last, c));
        Ok(())
    }

    /// Records that `host` knows entries up to `commit` committed, and checks them against
    /// what other nodes saw committed: committed entries never differ (State Machine Safety,
    /// Raft §5.4.3, seen at commit time).
    pub fn observe_commit(
        &mut self,
        host: NodeId,
        host_term: Term,
        shadow: &Shadow,
        from: Index,
        commit: Index,
    ) -> Result<(), String> {
        for i in (from + 1)..=commit {
            let Some((term, c)) = shadow.at(i) else {
                continue;
            };
            let len = self.committed.len() as Index;
            if i <= len {
                if self.committed[i as usize - 1].1 != c {
                    return Err(format!(
                        "Committed entries differ: n{host} committed ({i}, {term}) but ({i}, {}) was committed elsewhere",
                        self.committed[i as usize - 1].0
                    ));
                }
            } else if i == len + 1 {
                self.committed.push((term, c));
                let t = self
                    .commit_terms
                    .last()
                    .copied()
                    .unwrap_or(0)
                    .max(host_term);
                self.commit_terms.push(t);
                self.counters.committed += 1;
            } else {
                return Err(format!(
                    "n{host} committed {i} but nothing was seen committed after {len}"
                ));
            }
        }
        Ok(())
    }

    /// Leader Completeness (Raft §5.4, figure 3): every entry committed (as seen on any node)
    /// in a term before T is in the log of the leader of term T. (An entry of an old term
    /// committed later by a newer leader need not be in the log of a leader in between.)
    pub fn leader_completeness(
        &self,
        host: NodeId,
        term: Term,
        shadow: &Shadow,
    ) -> Result<(), String> {
        // Commit terms never decrease along the committed log: the last one before T.
        let n = self.commit_terms.partition_point(|t| *t < term);
        if n == 0 {
            return Ok(());
        }
        let idx = n as Index;
        let check_at = idx.max(shadow.base);
        let want = self.committed.get(check_at as usize - 1).map(|x| x.1);
        match (shadow.at(check_at), want) {
            (Some((_, c)), Some(w)) if c == w => Ok(()),
            (_, None) => Ok(()),
            (got, _) => Err(format!(
                "Leader Completeness: n{host}, leader of term {term}, lacks committed entry {idx} (has {got:?} at {check_at}, last {})",
                shadow.last()
            )),
        }
    }

    /// Commit durability (dissertation §3.8, reliability.md R6): a committed entry is durable
    /// on a quorum of nodes (in their log or covered by their snapshot).
    pub fn commit_durable(&self, index: Index, disks: &[&Durable]) -> Result<(), String> {
        let (term, _) = self.committed[index as usize - 1];
        let holders = disks
            .iter()
            .filter(|d| d.snap_index() >= index || d.term_at(index) == Some(term))
            .count();
        if holders * 2 <= disks.len() {
            return Err(format!(
                "Commit durability: ({index}, {term}) committed but durable on only {holders} of {} nodes",
                disks.len()
            ));
        }
        Ok(())
    }

    /// State Machine Safety (Raft §5.4.3, figure 3): every node applies the same entry at an
    /// index, and reaches the same state (snapshot bytes) after it, across restarts too.
    pub fn state_machine_safety(
        &mut self,
        host: NodeId,
        index: Index,
        entry_chain: u64,
        state: u64,
    ) -> Result<bool, String> {
        let len = self.applied.len() as Index;
        if index <= len {
            let i = index as usize - 1;
            if self.applied[i] != entry_chain {
                return Err(format!(
                    "State Machine Safety: n{host} applied a different entry at {index}"
                ));
            }
            if self.states[i] != state {
                return Err(format!(
                    "State Machine Safety: n{host}'s state after {index} differs from another node's"
                ));
            }
            Ok(false)
        } else if index == len + 1 {
            self.applied.push(entry_chain);
            self.states.push(state);
            Ok(true)
        } else {
            Err(format!(
                "n{host} applied {index} but nothing was seen applied after {len}"
            ))
        }
    }

    /// Applied-index continuity across a restart (reliability.md R6): a node restarts from its
    /// durable snapshot, which never covers more than it applied before or received durably
    /// from a leader (a received snapshot is committed state), whose state is the one every
    /// node had at that index, and
    /// re-applying from there must reproduce, index by index, the states it had (checked by
    /// `state_machine_safety` against the global state hash of each index).
    pub fn restart_continuity(
        &self,
        host: NodeId,
        snap_index: Index,
        highest_applied: Index,
        space: &LockSpace,
    ) -> Result<(), String> {
        if snap_index > highest_applied {
            return Err(format!(
                "n{host} restarted from snapshot {snap_index} beyond anything it applied ({highest_applied})"
            ));
        }
        if space.applied_index() != snap_index {
            return Err(format!(
                "n{host}: restored state at {} but snapshot at {snap_index}",
                space.applied_index()
            ));
        }
        if snap_index > 0 {
            let want = self.states.get(snap_index as usize - 1).copied();
            if want.is_some_and(|w| w != fnv(&space.snapshot())) {
                return Err(format!(
                    "n{host}: durable snapshot at {snap_index} differs from the applied state there"
                ));
            }
        }
        Ok(())
    }

    /// L1 mutual exclusion (ARCHITECTURE §2 "Locks"): in a node's applied state an exclusive
    /// lock has exactly one holder, and every holder's grant was made in the lock's mode (so
    /// shared and exclusive grants never coexist).
    pub fn mutual_exclusion(&self, host: NodeId, space: &LockSpace) -> Result<(), String> {
        for lock in space.locks(None) {
            if lock.mode == Some(LockMode::Exclusive) && lock.holders.len() != 1 {
                return Err(format!(
                    "Mutual exclusion: n{host}: lock {} held exclusively by {:?}",
                    lock.name, lock.holders
                ));
            }
            for (s, f) in &lock.holders {
                match self.grants.get(f) {
                    Some(g) if g.session == *s && g.lock == lock.name => {
                        if Some(g.mode) != lock.mode {
                            return Err(format!(
                                "Mutual exclusion: n{host}: lock {} mixes a {:?} grant {f} into {:?}",
                                lock.name, g.mode, lock.mode
                            ));
                        }
                    }
                    other => {
                        return Err(format!(
                        "n{host}: lock {} holder ({s}, {f}) matches no applied grant ({other:?})",
                        lock.name
                    ))
                    }
                }
            }
        }
        Ok(())
    }

    /// L2 fencing (ARCHITECTURE §2 "Locks"): new grants get fences strictly increasing in apply
    /// order, at least the granting entry's index; a fence at or below the last one is only
    /// ever a replay of the same grant to the same session. L3: no grant to a session that
    /// has ended (in the node's applied state or earlier in the log). L5: a retried request
    /// (a (session, seq) applied before) makes no new grant.
    pub fn fencing(&mut self, a: &ApplyCtx<'_>, space: &LockSpace) -> Result<(), String> {
        let (index, host) = (a.index, a.host);
        let mut grants: Vec<(SessionId, Seq, Fence)> = Vec::new();
        if let (
            Command::Acquire {
                session,
                seq,
                lock,
                mode,
                ..
            },
            Outcome::Granted { fence },
        ) = (a.command, &a.applied.outcome)
        {
            self.acquires
                .entry((*session, *seq))
                .or_insert_with(|| (lock.clone(), *mode));
            grants.push((*session, *seq, *fence));
        } else if let Command::Acquire {
            session,
            seq,
            lock,
            mode,
            ..
        } = a.command
        {
            self.acquires
                .entry((*session, *seq))
                .or_insert_with(|| (lock.clone(), *mode));
        }
        for n in &a.applied.notifications {
            if let Outcome::Granted { fence } = n.outcome {
                grants.push((n.session, n.seq, fence));
            }
        }
        let fresh = self.is_fresh(a.command, index);
        let mut last = a.last_fence_before;
        for (session, seq, fence) in grants {
            let Some((lock, mode)) = self.acquires.get(&(session, seq)).cloned() else {
                return Err(format!(
                    "n{host}@{index}: grant {fence} to ({session}, {seq}) of no known acquire"
                ));
            };
            if fence > a.last_fence_before {
                if fence <= last || fence < index {
                    return Err(format!(
                        "Fencing: n{host}@{index}: new fence {fence} after {last} (index {index})"
                    ));
                }
                last = fence;
                if !fresh && matches!(a.command, Command::Acquire { .. }) {
                    return Err(format!(
                        "Exactly-once: n{host}@{index}: retried acquire ({session}, {seq}) granted again with fence {fence}"
                    ));
                }
                if space.session(session).is_none() {
                    return Err(format!(
                        "Grant to a dead session: n{host}@{index}: fence {fence} to {session}, which is not live"
                    ));
                }
                if let Some(e) = self.ended.get(&session) {
                    if *e < index {
                        return Err(format!(
                            "Grant to a dead session: n{host}@{index}: fence {fence} to {session}, ended at {e}"
                        ));
                    }
                }
                match self.grants.get(&fence) {
                    Some(g) if g.session != session || g.lock != lock || g.start != index => {
                        return Err(format!(
                            "Fencing: n{host}@{index}: fence {fence} granted to ({session}, {lock}) but elsewhere to {g:?}"
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.grants.insert(
                            fence,
                            GrantRec {
                                session,
                                lock,
                                mode,
                                start: index,
                                end: None,
                            },
                        );
                    }
                }
            } else {
                match self.grants.get(&fence) {
                    Some(g) if g.session == session && g.lock == lock => {}
                    other => {
                        return Err(format!(
                            "Fencing: n{host}@{index}: old fence {fence} answered to ({session}, {lock}), but it was {other:?}"
                        ))
                    }
                }
            }
        }
        if space.last_fence() < last {
            return Err(format!(
                "Fencing: n{host}@{index}: last fence {} below granted {last}",
                space.last_fence()
            ));
        }
        Ok(())
    }

    /// True if this is the first application (log-wide) of the command's (session, seq).
    fn is_fresh(&mut self, command: &Command, index: Index) -> bool {
        let key = match command {
            Command::Acquire { session, seq, .. }
            | Command::Release { session, seq, .. }
            | Command::Append { session, seq, .. }
            | Command::CloseSession { session, seq } => (*session, *seq),
            _ => return true,
        };
        *self.first_seq.entry(key).or_insert(index) == index
    }

    /// L6 fenced append (ARCHITECTURE §2 "Files"): an applied `Append` changes its file only if
    /// its fence was the session's current exclusive grant of the lock before apply, and only
    /// the first time its (session, seq) is applied (L5); a current fence on a fresh request
    /// is never refused.
    pub fn fenced_append(&mut self, a: &ApplyCtx<'_>, first: bool) -> Result<(), String> {
        let Command::Append {
            session,
            seq,
            file,
            fence,
            data,
            ..
        } = a.command
        else {
            return Ok(());
        };
        let fresh = self.first_seq.get(&(*session, *seq)) == Some(&a.index);
        let grew = a.file_after > a.file_before;
        if grew && !a.append_current {
            return Err(format!(
                "Fenced append: n{}@{}: append with fence {fence} applied but it is not the current grant",
                a.host, a.index
            ));
        }
        if grew && !fresh {
            return Err(format!(
                "Exactly-once: n{}@{}: retried append ({session}, {seq}) applied again",
                a.host, a.index
            ));
        }
        if grew && a.file_after - a.file_before != data.len() as u64 {
            return Err(format!(
                "n{}@{}: append grew {file} by {} bytes, not {}",
                a.host,
                a.index,
                a.file_after - a.file_before,
                data.len()
            ));
        }
        if !grew && fresh && a.append_current && !data.is_empty() {
            return Err(format!(
                "Fenced append: n{}@{}: current fence {fence} refused ({:?})",
                a.host, a.index, a.applied.outcome
            ));
        }
        if first {
            if grew {
                self.appends
                    .push((a.index, file.clone(), a.file_before, data.clone()));
            }
            if a.applied.outcome == Outcome::StaleFence {
                self.counters.stale_fences += 1;
            }
        }
        Ok(())
    }

    /// Records what the first application of an entry ended: grants that left their lock
    /// (for the holder intervals) and sessions that ended.
    pub fn record_first_apply(
        &mut self,
        index: Index,
        command: &Command,
        applied: &Applied,
        holders_before: &BTreeSet<Fence>,
        holders_after: &BTreeSet<Fence>,
    ) {
        for f in holders_before.difference(holders_after) {
            if let Some(g) = self.grants.get_mut(f) {
                g.end.get_or_insert(index);
            }
        }
        let ended = match command {
            Command::ExpireSession { session } => Some((*session, true)),
            Command::CloseSession { session, .. } => Some((*session, false)),
            _ => None,
        };
        if let (Some((s, expired)), Outcome::SessionClosed) = (ended, &applied.outcome) {
            self.ended.entry(s).or_insert(index);
            if expired {
                self.expired_now.push(s);
            }
        }
    }

    /// Session answers: a node may tell a client that its session is gone (`SessionExpired`, a
    /// keep-alive answered not alive) only once the committed log has ended the session. A
    /// new leader that has not applied the session's `OpenSession` yet must say `NotReady`.
    pub fn session_gone(&self, host: NodeId, session: SessionId) -> Result<(), String> {
        if self.ended.contains_key(&session) {
            return Ok(());
        }
        Err(format!(
            "Session answers: n{host} answered that session {session} is gone, but the committed \
             log has not ended it"
        ))
    }

    /// Client-visible mutual exclusion (reliability.md L7, in log order): every acknowledged
    /// grant is an applied grant to that session; and for each lock the applied intervals
    /// [grant, end) of acknowledged exclusive grants are disjoint.
    pub fn acknowledged_grants(&self, clients: &[Client]) -> Result<(), String> {
        let mut by_lock: BTreeMap<&str, BTreeSet<(Index, Index, Fence)>> = BTreeMap::new();
        for c in clients {
            for g in &c.acked_grants {
                let Some(rec) = self.grants.get(&g.fence) else {
                    return Err(format!(
                        "client {} was told it holds {} with fence {}, never granted",
                        c.id, g.lock, g.fence
                    ));
                };
                if rec.session != g.session || rec.lock != g.lock || rec.mode != g.mode {
                    return Err(format!(
                        "client {} was told fence {} for ({}, {}, {:?}) but it was {rec:?}",
                        c.id, g.fence, g.session, g.lock, g.mode
                    ));
                }
                if g.mode == LockMode::Exclusive {
                    by_lock.entry(&rec.lock).or_default().insert((
                        rec.start,
                        rec.end.unwrap_or(Index::MAX),
                        g.fence,
                    ));
                }
            }
        }
        for (lock, intervals) in by_lock {
            let mut prev: Option<(Index, Index, Fence)> = None;
            for iv in intervals {
                if let Some(p) = prev {
                    if p.2 != iv.2 && iv.0 < p.1 {
                        return Err(format!(
                            "Client-visible exclusion: lock {lock}: acknowledged grants {} [{}, {}) and {} [{}, {}) overlap",
                            p.2, p.0, p.1, iv.2, iv.0, iv.1
                        ));
                    }
                }
                prev = Some(iv);
            }
        }
        Ok(())
    }

    /// L6 after recovery: every acknowledged append is in its file exactly once, at the offset
    /// it was acknowledged at (so in commit order); no payload appears twice.
    pub fn acknowledged_appends(
        &self,
        clients: &[Client],
        space: &LockSpace,
    ) -> Result<(), String> {
        let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (name, size) in space.files(None) {
            let (data, _) = space.read(&name, 0, size).expect("listed file exists");
            for rec in data.split_inclusive(|b| *b == b'>') {
                *seen.entry(rec.to_vec()).or_default() += 1;
            }
        }
        if let Some((p, n)) = seen.iter().find(|(_, n)| **n > 1) {
            return Err(format!(
                "Exactly-once: payload {} appears {n} times",
                String::from_utf8_lossy(p)
            ));
        }
        for c in clients {
            for a in &c.acked_appends {
                let Some((bytes, _)) = space.read(&a.file, a.offset, a.payload.len() as u64) else {
                    return Err(format!("acknowledged append to missing file {}", a.file));
                };
                if bytes != a.payload.as_slice() || seen.get(&a.payload) != Some(&1) {
                    return Err(format!(
                        "acknowledged append {} not at offset {} of {} exactly once",
                        String::from_utf8_lossy(&a.payload),
                        a.offset,
                        a.file
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every (lock holder) fence in a state.
pub fn holder_fences(space: &LockSpace) -> BTreeSet<Fence> {
    space
        .locks(None)
        .iter()
        .flat_map(|l| l.holders.iter().map(|h| h.1))
        .collect()
}
