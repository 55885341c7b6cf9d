//! The Raft node: roles, elections, replication, commit, reads, transfers and membership, as a
//! deterministic state machine driven by `tick`, `step` and the client calls, whose output is
//! collected by `ready`.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::log::Log;
pub use super::membership::MembershipError;
use super::membership::{quorum_value, tally, validate_change, VoteResult};
pub use super::message::Message;
use super::progress::{Progress, State};
pub use super::ready::Ready;
use super::{
    Config, Entry, EntryData, Envelope, HardState, Index, Membership, NodeId, Recovered, Snapshot,
    SnapshotMeta, Term,
};

/// Heartbeat answers without progress before a pipelining follower falls back to probing (its
/// appends were probably lost).
const REPLICATE_STALLS: u32 = 1;
/// Heartbeat answers without progress before an InstallSnapshot is sent again.
const SNAPSHOT_STALLS: u32 = 10;

/// The node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes; its term has not changed yet.
    PreCandidate,
    /// Campaigning in its current term.
    Candidate,
    /// Leads its term.
    Leader,
    /// A non-voting member catching up.
    Learner,
}

/// A snapshot of the node's state for status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit_index: Index,
    /// The index of its last log entry.
    pub last_index: Index,
    /// The membership in force (the latest appended config).
    pub membership: Membership,
    /// On a leader: the match index of each member (itself included).
    pub match_index: Vec<(NodeId, Index)>,
}

/// Returned when a request needs the leader and this node is not it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (leader: {leader:?})")]
pub struct NotLeader {
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
}

/// A read-index request waiting for its quorum round.
#[derive(Debug)]
struct PendingRead {
    id: u64,
    index: Index,
    seq: u64,
}

/// What only a leader keeps.
#[derive(Debug)]
struct LeaderState {
    /// Every other member's replication progress.
    progress: BTreeMap<NodeId, Progress>,
    /// The target of a leadership transfer in progress.
    transferee: Option<NodeId>,
    /// Ticks since the transfer started; it is abandoned after an election timeout.
    transfer_elapsed: u32,
    /// The latest read-index round.
    read_seq: u64,
    /// Reads waiting for a quorum to confirm their round, oldest first.
    reads: VecDeque<PendingRead>,
    /// Reads waiting for the first commit of this term.
    waiting_reads: Vec<u64>,
    /// New entries to replicate at the next `ready`.
    append_pending: bool,
    /// A heartbeat round to start at the next `ready` (for reads).
    heartbeat_pending: bool,
    /// The commit index last sent to followers.
    commit_sent: Index,
}

/// The role-specific state.
#[derive(Debug)]
enum RoleState {
    Follower,
    PreCandidate { votes: BTreeMap<NodeId, bool> },
    Candidate { votes: BTreeMap<NodeId, bool> },
    Leader(Box<LeaderState>),
}

/// One Raft node. See the module documentation of `raft` for the protocol it implements.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    config: Config,
    rng: SmallRng,
    /// The current term (durable via the hard state).
    term: Term,
    /// The vote cast in `term` (durable via the hard state).
    vote: Option<NodeId>,
    /// The highest index known committed.
    commit: Index,
    /// The highest index handed out in `Ready::committed` (or covered by a snapshot).
    applied: Index,
    /// The highest index the runtime reported durable.
    persisted: Index,
    role: RoleState,
    leader: Option<NodeId>,
    log: Log,
    /// The membership in force: the latest config entry in the log, else the snapshot's.
    membership: Membership,
    /// The index of the config entry that set `membership` (0: the snapshot's, or none).
    config_index: Index,
    /// Ticks since the last heartbeat from the leader (followers) or since the last
    /// check-quorum round (leader).
    election_elapsed: u32,
    /// Ticks since the last heartbeat (leader).
    heartbeat_elapsed: u32,
    /// The current randomized election timeout.
    election_timeout: u32,
    /// Outbox: messages that depend on nothing unpersisted.
    messages: Vec<Envelope>,
    /// Outbox: messages to send once this batch is durable.
    persisted_messages: Vec<Envelope>,
    /// A snapshot received from the leader, to hand to the runtime.
    pending_snapshot: Option<Snapshot>,
    /// The hard state last handed to the runtime (or recovered).
    saved_hard_state: HardState,
    /// Confirmed reads to hand to the runtime.
    ready_reads: Vec<(u64, Index)>,
}

impl Node {
    /// Creates a node from its recovered state. `seed` drives the election-timeout jitter.
    ///
    /// A node with an empty disk and a bootstrap membership writes that membership as entry 1
    /// (term 0): every bootstrapped node writes the same entry, and nodes added later learn the
    /// membership from the log itself.
    pub fn new(config: Config, recovered: Recovered, seed: u64) -> Node {
        let mut config = config;
        config.heartbeat_ticks = config.heartbeat_ticks.max(1);
        config.election_ticks_min = config.election_ticks_min.max(1);
        config.election_ticks_max = config.election_ticks_max.max(config.election_ticks_min + 1);
        config.max_entries_per_append = config.max_entries_per_append.max(1);
        config.max_inflight_appends = config.max_inflight_appends.max(1);
        config.max_append_bytes = config.max_append_bytes.max(1);
        config.max_inflight_bytes = config.max_inflight_bytes.max(1);
        let Recovered {
            hard_state,
            snapshot,
            entries,
        } = recovered;
        let mut log = Log::new(snapshot, entries);
        let persisted = log.last_index();
        if log.last_index() == 0 && log.snapshot().is_none() {
            if let Some(bootstrap) = &config.bootstrap {
                log.append(Entry {
                    index: 1,
                    term: 0,
                    data: EntryData::Config(bootstrap.clone()),
                });
            }
        }
        let (membership, config_index) = log.membership_at(log.last_index()).unwrap_or_default();
        let commit = hard_state.commit.min(persisted).max(log.snap_index());
        let applied = log.snap_index();
        let mut node = Node {
            id: config.id,
            rng: SmallRng::seed_from_u64(seed),
            term: hard_state.term,
            vote: hard_state.vote,
            commit,
            applied,
            persisted,
            role: RoleState::Follower,
            leader: None,
            log,
            membership,
            config_index,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout: 0,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            pending_snapshot: None,
            saved_hard_state: hard_state,
            ready_reads: Vec::new(),
            config,
        };
        node.reset_election_timeout();
        node
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if let RoleState::Leader(ls) = &mut self.role {
            self.heartbeat_elapsed += 1;
            self.election_elapsed += 1;
            if ls.transferee.is_some() {
                ls.transfer_elapsed += 1;
                if ls.transfer_elapsed >= self.config.election_ticks_min {
                    ls.transferee = None;
                }
            }
            if self.election_elapsed >= self.config.election_ticks_min {
                self.election_elapsed = 0;
                if self.config.check_quorum && !self.quorum_active() {
                    self.become_follower(self.term, None);
                    return;
                }
                if let RoleState::Leader(ls) = &mut self.role {
                    for pr in ls.progress.values_mut() {
                        pr.recent_active = false;
                    }
                }
            }
            if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                self.broadcast_heartbeat();
            }
            return;
        }
        self.election_elapsed += 1;
        let alone = self.membership.voters.len() == 1 && self.is_voter();
        if self.is_voter() && (alone || self.election_elapsed >= self.election_timeout) {
            self.campaign(self.config.pre_vote, false);
        }
    }

    /// Evidence from the runtime that `peer`'s *process* is gone, not merely slow: its
    /// connection ended and a redial was refused at once, as when a crashed process's kernel
    /// resets its sockets and its port refuses connections. A partition or a paused process
    /// gives no such evidence, so those still take the election timeout.
    ///
    /// On a voting follower whose leader is `peer`, the leader is forgotten, which ends leader
    /// stickiness here (this node grants pre-votes at once), and the election timer is cut to
    /// a random delay of 1 to `heartbeat_ticks` ticks (never lengthened). The delay is random
    /// so that the followers, told at the same instant, do not campaign in the same instant and
    /// split the vote. Ignored otherwise: when `peer` is not this node's leader, on a leader, a
    /// (pre-)candidate, and a learner.
    ///
    /// A wrong hint (the leader is alive) is harmless: this node's pre-vote asks for no new
    /// term, the leader and the followers that still hear it refuse it (stickiness), and the
    /// leader's next heartbeat makes this node follow it again.
    pub fn peer_down(&mut self, peer: NodeId) {
        let follower = matches!(self.role, RoleState::Follower);
        if !follower || !self.is_voter() || self.leader != Some(peer) || peer == self.id {
            return;
        }
        self.leader = None;
        let delay = self.rng.gen_range(1..=self.config.heartbeat_ticks);
        self.election_timeout = self
            .election_timeout
            .min(self.election_elapsed.saturating_add(delay));
    }

    /// Handles a message from a peer. Messages not addressed to this node are ignored.
    pub fn step(&mut self, envelope: Envelope) {
        let Envelope {
            from,
            to,
            term,
            message,
        } = envelope;
        if to != self.id || from == self.id || from == 0 {
            return;
        }
        if term > self.term {
            match &message {
                Message::PreVote { .. }
                | Message::Vote {
                    transfer: false, ..
                } if self.in_lease() => {
                    // Leader stickiness: a leader was heard from recently, so this candidate
                    // is disruptive (or partitioned); neither answer nor adopt its term.
                    return;
                }
                Message::PreVote { .. } | Message::PreVoteResponse { granted: true } => {}
                Message::Append { .. }
                | Message::Heartbeat { .. }
                | Message::InstallSnapshot { .. } => self.become_follower(term, Some(from)),
                _ => self.become_follower(term, None),
            }
        } else if term < self.term {
            // A stale sender: tell it our term (figure 2) so a deposed leader or a candidate
            // stuck in an old term catches up; drop stale answers.
            let reply = match message {
                Message::Append { .. }
                | Message::Heartbeat { .. }
                | Message::InstallSnapshot { .. } => {
                    Some(Message::HeartbeatResponse { read_seq: 0 })
                }
                Message::PreVote { .. } => Some(Message::PreVoteResponse { granted: false }),
                Message::Vote { .. } => Some(Message::VoteResponse { granted: false }),
                _ => None,
            };
            if let Some(reply) = reply {
                self.send(from, reply);
            }
            return;
        }

        match message {
            Message::PreVote {
                last_index,
                last_term,
            } => {
                let fresh = term > self.term
                    || self.vote == Some(from)
                    || (self.vote.is_none() && self.leader.is_none());
                let granted = fresh
                    && self.is_voter()
                    && !self.in_lease()
                    && self.log_up_to_date(last_index, last_term);
                let reply_term = if granted { term } else { self.term };
                self.messages.push(Envelope {
                    from: self.id,
                    to: from,
                    term: reply_term,
                    message: Message::PreVoteResponse { granted },
                });
            }
            Message::PreVoteResponse { granted } => {
                let expected = if granted { self.term + 1 } else { self.term };
                if term != expected {
                    return;
                }
                if let RoleState::PreCandidate { votes } = &mut self.role {
                    votes.insert(from, granted);
                    match tally(&self.membership, votes) {
                        VoteResult::Won => self.campaign(false, false),
                        VoteResult::Lost => self.become_follower(self.term, None),
                        VoteResult::Pending => {}
                    }
                }
            }
            Message::Vote {
                last_index,
                last_term,
                transfer: _,
            } => {
                let can_vote =
                    self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
                if can_vote && self.is_voter() && self.log_up_to_date(last_index, last_term) {
                    self.vote = Some(from);
                    self.election_elapsed = 0;
                    // The grant leaves only once the vote is durable.
                    self.persisted_messages.push(Envelope {
                        from: self.id,
                        to: from,
                        term: self.term,
                        message: Message::VoteResponse { granted: true },
                    });
                } else {
                    self.send(from, Message::VoteResponse { granted: false });
                }
            }
            Message::VoteResponse { granted } => {
                if let RoleState::Candidate { votes } = &mut self.role {
                    votes.insert(from, granted);
                    match tally(&self.membership, votes) {
                        VoteResult::Won => self.become_leader(),
                        VoteResult::Lost => self.become_follower(self.term, None),
                        VoteResult::Pending => {}
                    }
                }
            }
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if !self.accept_leader(from) {
                    return;
                }
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            Message::AppendResponse { index } => self.handle_append_response(from, index),
            Message::AppendReject {
                rejected,
                conflict_index,
                conflict_term,
            } => self.handle_append_reject(from, rejected, conflict_index, conflict_term),
            Message::Heartbeat { commit, read_seq } => {
                if !self.accept_leader(from) {
                    return;
                }
                let last = self.log.last_index();
                if commit > last {
                    // The leader caps `commit` at what this node acknowledged to it, so this
                    // node lost entries it had made durable (a damaged disk, a restored
                    // backup). Say where its log really ends, or the leader, believing the
                    // acknowledgement, would never send those entries again.
                    self.send(
                        from,
                        Message::AppendReject {
                            rejected: commit,
                            conflict_index: last + 1,
                            conflict_term: None,
                        },
                    );
                }
                let commit = commit.min(last);
                if commit > self.commit {
                    self.commit_to(commit);
                }
                self.send(from, Message::HeartbeatResponse { read_seq });
            }
            Message::HeartbeatResponse { read_seq } => {
                self.handle_heartbeat_response(from, read_seq)
            }
            Message::InstallSnapshot { snapshot } => {
                if !self.accept_leader(from) {
                    return;
                }
                self.handle_install_snapshot(from, snapshot);
            }
            Message::TimeoutNow => {
                if self.is_voter() && !matches!(self.role, RoleState::Leader(_)) {
                    self.campaign(false, true);
                }
            }
        }
    }

    /// Appends a state machine command (leader only). Returns its (index, term).
    /// Refused while a leadership transfer is in progress.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<(Index, Term), NotLeader> {
        self.check_proposable()?;
        Ok(self.append_new(EntryData::Command(command)))
    }

    /// Proposes a membership change (leader only; one at a time). `membership` must differ from
    /// the current one by one voter or learner added or removed, or one learner promoted. The
    /// leader must have committed an entry of its term and every earlier change. The change
    /// takes effect as soon as it is appended.
    pub fn propose_membership(
        &mut self,
        membership: Membership,
    ) -> Result<(Index, Term), MembershipError> {
        self.check_proposable()?;
        if self.log.term_at(self.commit) != Some(self.term) || self.config_index > self.commit {
            return Err(MembershipError::ChangeInProgress);
        }
        validate_change(&self.membership, &membership)?;
        Ok(self.append_new(EntryData::Config(membership)))
    }

    /// Starts a linearizable read; its id comes back in `Ready::reads` once a quorum confirmed
    /// this node still leads (with the commit index at the time of the request). A new leader
    /// holds reads until it has committed an entry of its term. Reads pending when the node
    /// loses leadership are never answered: the runtime fails them when `role()` changes.
    pub fn read_index(&mut self, read_id: u64) -> Result<(), NotLeader> {
        let leader = self.leader;
        let own_term_committed = self.log.term_at(self.commit) == Some(self.term);
        let RoleState::Leader(ls) = &mut self.role else {
            return Err(NotLeader { leader });
        };
        if !own_term_committed {
            ls.waiting_reads.push(read_id);
            return Ok(());
        }
        ls.read_seq += 1;
        ls.reads.push_back(PendingRead {
            id: read_id,
            index: self.commit,
            seq: ls.read_seq,
        });
        ls.heartbeat_pending = true;
        self.resolve_reads();
        Ok(())
    }

    /// Hands leadership to `to` (or the most up-to-date voter): the leader stops taking
    /// proposals, catches the target up, then sends it `TimeoutNow`. The transfer is abandoned
    /// after an election timeout. Without a suitable target (no other voter, or `to` is not a
    /// voter), nothing happens.
    pub fn transfer_leadership(&mut self, to: Option<NodeId>) -> Result<(), NotLeader> {
        let leader = self.leader;
        let last = self.log.last_index();
        let RoleState::Leader(ls) = &mut self.role else {
            return Err(NotLeader { leader });
        };
        let target = match to {
            Some(t) => Some(t),
            None => ls
                .progress
                .iter()
                .filter(|(id, _)| self.membership.voters.contains_key(id))
                .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id),
        };
        let Some(target) = target else { return Ok(()) };
        if target == self.id || !self.membership.voters.contains_key(&target) {
            return Ok(());
        }
        ls.transferee = Some(target);
        ls.transfer_elapsed = 0;
        let Some(pr) = ls.progress.get_mut(&target) else {
            return Ok(());
        };
        if pr.matched == last {
            self.send(target, Message::TimeoutNow);
        } else {
            // Catch the target up now rather than wait for lost appends to time out.
            if pr.state == State::Replicate {
                pr.become_probe();
            }
            self.send_append(target, false);
        }
        Ok(())
    }

    /// Takes the work accumulated since the last call (see [`Ready`] for the contract).
    pub fn ready(&mut self) -> Ready {
        self.flush_leader();
        let (truncate_from, append) = self.log.take_unstable();
        let hard_state = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        };
        let hard_state = (hard_state != self.saved_hard_state).then(|| {
            self.saved_hard_state = hard_state;
            hard_state
        });
        // Everything up to the last index was handed out for persistence by now (step 2 of the
        // contract runs before step 4), so the commit index bounds what may be applied.
        let committed = if self.commit > self.applied {
            let c = self
                .log
                .slice(self.applied + 1, self.commit, usize::MAX, usize::MAX);
            self.applied = self.commit;
            c
        } else {
            Vec::new()
        };
        Ready {
            messages: std::mem::take(&mut self.messages),
            snapshot: self.pending_snapshot.take(),
            truncate_from,
            append,
            hard_state,
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed,
            reads: std::mem::take(&mut self.ready_reads),
        }
    }

    /// Reports that the log is durable up to (index, term). A report about entries that were
    /// truncated since is ignored.
    pub fn persisted(&mut self, index: Index, term: Term) {
        if index > self.persisted && self.log.term_at(index) == Some(term) {
            self.persisted = index;
            self.maybe_commit();
        }
    }

    /// Reports that the runtime saved a snapshot (at most at the applied index, with the term
    /// and membership given by [`Node::snapshot_meta_at`]); the core drops the entries it
    /// covers and keeps the snapshot to send to lagging followers (the entries after the
    /// previous snapshot stay, to catch up a follower that installed that one).
    pub fn compacted(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if self.log.snapshot().is_some_and(|s| s.meta.index >= index) {
            return;
        }
        assert!(
            index <= self.applied,
            "snapshot at {index} beyond applied {}",
            self.applied
        );
        assert_eq!(
            self.log.term_at(index),
            Some(snapshot.meta.term),
            "snapshot term differs from the log's at {index}"
        );
        self.log.compact(snapshot);
    }

    /// The metadata a snapshot taken at `index` must carry (its term and the membership in
    /// force there), or None if the index is not in the log.
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        let term = self.log.term_at(index)?;
        let membership = self
            .log
            .membership_at(index)
            .map(|(m, _)| m)
            .unwrap_or_default();
        Some(SnapshotMeta {
            index,
            term,
            membership,
        })
    }

    /// The node's current status.
    pub fn status(&self) -> Status {
        let match_index = match &self.role {
            RoleState::Leader(ls) => {
                let mut v: Vec<(NodeId, Index)> = ls
                    .progress
                    .iter()
                    .map(|(id, pr)| (*id, pr.matched))
                    .collect();
                if self.membership.contains(self.id) {
                    v.push((self.id, self.persisted));
                }
                v.sort_unstable();
                v
            }
            _ => Vec::new(),
        };
        Status {
            id: self.id,
            role: self.role(),
            term: self.term,
            leader: self.leader,
            commit_index: self.commit,
            last_index: self.log.last_index(),
            membership: self.membership.clone(),
            match_index,
        }
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Leader(_) => Role::Leader,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Follower if self.membership.learners.contains_key(&self.id) => Role::Learner,
            RoleState::Follower => Role::Follower,
        }
    }

    /// The metadata of the latest snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.log.snapshot().map(|s| &s.meta)
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.commit
    }

    /// The highest index handed out in `Ready::committed` (or covered by a snapshot).
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The highest index reported durable with `persisted`.
    pub fn persisted_index(&self) -> Index {
        self.persisted
    }

    /// The index of the last log entry.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The entry at `index`, if still held (not compacted).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The membership in force (the latest appended config).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Test hook: campaigns at once, as after a `TimeoutNow` (no pre-vote, bypassing leader
    /// stickiness), so scripts can pick the next leader.
    #[cfg(test)]
    pub(crate) fn campaign_now(&mut self) {
        if self.is_voter() && !matches!(self.role, RoleState::Leader(_)) {
            self.campaign(false, true);
        }
    }

    // ---- roles -------------------------------------------------------------------------------

    fn is_voter(&self) -> bool {
        self.membership.voters.contains_key(&self.id)
    }

    /// True if a leader was heard from (or, on the leader, a quorum confirmed it) within the
    /// minimum election timeout: (pre-)votes that would disrupt it are ignored.
    fn in_lease(&self) -> bool {
        let enabled = match self.role {
            RoleState::Leader(_) => self.config.check_quorum,
            _ => self.config.check_quorum || self.config.pre_vote,
        };
        enabled && self.leader.is_some() && self.election_elapsed < self.config.election_ticks_min
    }

    fn reset_election_timeout(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self
            .rng
            .gen_range(self.config.election_ticks_min..self.config.election_ticks_max);
    }

    fn set_term(&mut self, term: Term) {
        assert!(
            term >= self.term,
            "term regressed from {} to {term}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
    }

    /// Becomes a follower in `term` (adopting it if higher) of `leader`.
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let new_term = term > self.term;
        self.set_term(term);
        self.role = RoleState::Follower;
        if new_term || leader.is_some() || self.leader == Some(self.id) {
            self.leader = leader;
        }
        self.heartbeat_elapsed = 0;
        self.reset_election_timeout();
    }

    /// A message from the leader of the current term: follow it. Returns false if the message
    /// must be ignored (it claims leadership of this leader's own term).
    fn accept_leader(&mut self, from: NodeId) -> bool {
        if matches!(self.role, RoleState::Leader(_)) {
            return false;
        }
        if !matches!(self.role, RoleState::Follower) || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        true
    }

    /// Starts a pre-vote round or a real election (`transfer`: after a `TimeoutNow`).
    fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .keys()
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        self.leader = None;
        self.reset_election_timeout();
        let votes = BTreeMap::from([(self.id, true)]);
        if pre_vote {
            let result = tally(&self.membership, &votes);
            self.role = RoleState::PreCandidate { votes };
            for to in voters {
                self.messages.push(Envelope {
                    from: self.id,
                    to,
                    term: self.term + 1,
                    message: Message::PreVote {
                        last_index,
                        last_term,
                    },
                });
            }
            if result == VoteResult::Won {
                self.campaign(false, false);
            }
        } else {
            self.set_term(self.term + 1);
            self.vote = Some(self.id);
            let result = tally(&self.membership, &votes);
            self.role = RoleState::Candidate { votes };
            // Vote requests leave after the new term and self-vote are durable, so a crash
            // cannot make this node vote for someone else in the same term.
            for to in voters {
                self.persisted_messages.push(Envelope {
                    from: self.id,
                    to,
                    term: self.term,
                    message: Message::Vote {
                        last_index,
                        last_term,
                        transfer,
                    },
                });
            }
            if result == VoteResult::Won {
                self.become_leader();
            }
        }
    }

    fn become_leader(&mut self) {
        let last = self.log.last_index();
        let progress = self
            .membership
            .voters
            .keys()
            .chain(self.membership.learners.keys())
            .filter(|id| **id != self.id)
            .map(|id| (*id, Progress::new(last)))
            .collect();
        self.role = RoleState::Leader(Box::new(LeaderState {
            progress,
            transferee: None,
            transfer_elapsed: 0,
            read_seq: 0,
            reads: VecDeque::new(),
            waiting_reads: Vec::new(),
            append_pending: true,
            heartbeat_pending: false,
            commit_sent: self.commit,
        }));
        self.leader = Some(self.id);
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        // The Noop lets this term commit, and with it every earlier entry (figure 8).
        self.append_new(EntryData::Noop);
    }

    /// True if a quorum of voters was heard from since the last check (the leader counts).
    fn quorum_active(&self) -> bool {
        let RoleState::Leader(ls) = &self.role else {
            return false;
        };
        let active: BTreeMap<NodeId, Index> = self
            .membership
            .voters
            .keys()
            .map(|id| {
                let on = *id == self.id || ls.progress.get(id).is_some_and(|p| p.recent_active);
                (*id, Index::from(on))
            })
            .collect();
        quorum_value(&self.membership, &active) == 1
    }

    // ---- log and membership ------------------------------------------------------------------

    fn check_proposable(&self) -> Result<(), NotLeader> {
        match &self.role {
            RoleState::Leader(ls) if ls.transferee.is_none() => Ok(()),
            RoleState::Leader(_) => Err(NotLeader { leader: None }),
            _ => Err(NotLeader {
                leader: self.leader,
            }),
        }
    }

    /// Appends a new entry of this leader's term.
    fn append_new(&mut self, data: EntryData) -> (Index, Term) {
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            data,
        };
        let at = (entry.index, entry.term);
        self.append_entry(entry);
        if let RoleState::Leader(ls) = &mut self.role {
            ls.append_pending = true;
        }
        at
    }

    /// Appends an entry; a config entry takes effect at once.
    fn append_entry(&mut self, entry: Entry) {
        let config = match &entry.data {
            EntryData::Config(m) => Some((m.clone(), entry.index)),
            _ => None,
        };
        self.log.append(entry);
        if let Some((m, index)) = config {
            self.set_membership(m, index);
        }
    }

    /// Removes a conflicting suffix; a config it held is reverted.
    fn truncate_log(&mut self, index: Index) {
        assert!(
            index > self.commit,
            "truncating at {index}, at or below commit {}",
            self.commit
        );
        self.log.truncate_from(index);
        self.persisted = self.persisted.min(index - 1);
        if self.config_index >= index {
            let (m, i) = self
                .log
                .membership_at(self.log.last_index())
                .unwrap_or_default();
            self.set_membership(m, i);
        }
    }

    fn set_membership(&mut self, membership: Membership, index: Index) {
        self.membership = membership;
        self.config_index = index;
        let last = self.log.last_index();
        if let RoleState::Leader(ls) = &mut self.role {
            let members = &self.membership;
            ls.progress.retain(|id, _| members.contains(*id));
            for id in members.voters.keys().chain(members.learners.keys()) {
                if *id != self.id {
                    ls.progress
                        .entry(*id)
                        .or_insert_with(|| Progress::new(last));
                }
            }
            if ls
                .transferee
                .is_some_and(|t| !members.voters.contains_key(&t))
            {
                ls.transferee = None;
            }
        }
    }

    fn commit_to(&mut self, index: Index) {
        assert!(
            index >= self.commit,
            "commit regressed from {} to {index}",
            self.commit
        );
        assert!(
            index <= self.log.last_index(),
            "commit {index} past the log"
        );
        self.commit = index;
    }

    fn log_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.log.last_term(), self.log.last_index())
    }

    // ---- follower side -----------------------------------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == prev_index + 1 + i as Index);
        if !contiguous {
            return;
        }
        let last = self.log.last_index();
        if prev_index > last {
            self.send(
                from,
                Message::AppendReject {
                    rejected: prev_index,
                    conflict_index: last + 1,
                    conflict_term: None,
                },
            );
            return;
        }
        // Committed entries match every leader's log, so no check below the commit index.
        if prev_index > self.commit && !self.log.matches(prev_index, prev_term) {
            let conflict_term = self.log.term_at(prev_index);
            let conflict_index = self.log.first_index_of_term_at(prev_index, self.commit + 1);
            self.send(
                from,
                Message::AppendReject {
                    rejected: prev_index,
                    conflict_index,
                    conflict_term,
                },
            );
            return;
        }
        let last_new = prev_index + entries.len() as Index;
        for entry in entries {
            if entry.index <= self.commit {
                continue;
            }
            match self.log.term_at(entry.index) {
                // Already held: a duplicate or reordered append must not truncate it.
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    self.truncate_log(entry.index);
                    self.append_entry(entry);
                }
                None => self.append_entry(entry),
            }
        }
        let commit = leader_commit.min(last_new);
        if commit > self.commit {
            self.commit_to(commit);
        }
        self.persisted_messages.push(Envelope {
            from: self.id,
            to: from,
            term: self.term,
            message: Message::AppendResponse { index: last_new },
        });
    }

    fn handle_install_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let ack = if index <= self.commit {
            self.commit
        } else if self.log.matches(index, term) {
            // The log already holds the snapshot's last entry: keep what follows it.
            self.commit_to(index);
            index
        } else {
            self.membership = snapshot.meta.membership.clone();
            self.config_index = 0;
            self.log.install(snapshot.clone());
            assert!(index >= self.commit, "snapshot below commit");
            self.commit = index;
            self.applied = index;
            self.persisted = index;
            self.pending_snapshot = Some(snapshot);
            index
        };
        self.persisted_messages.push(Envelope {
            from: self.id,
            to: from,
            term: self.term,
            message: Message::AppendResponse { index: ack },
        });
    }

    // ---- leader side -------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, message: Message) {
        self.messages.push(Envelope {
            from: self.id,
            to,
            term: self.term,
            message,
        });
    }

    /// Sends `to` the entries it lacks (or the snapshot), within its flow-control window.
    /// `allow_empty` sends an empty append to carry the commit index.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let max_inflight = self.config.max_inflight_appends;
        let max_inflight_bytes = self.config.max_inflight_bytes;
        let max_entries = self.config.max_entries_per_append;
        let max_bytes = self.config.max_append_bytes;
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let Some(pr) = ls.progress.get_mut(&to) else {
            return;
        };
        if pr.is_paused(max_inflight, max_inflight_bytes) {
            return;
        }
        let message = if pr.next <= self.log.snap_index() {
            let Some(snapshot) = self.log.snapshot() else {
                return;
            };
            pr.become_snapshot(snapshot.meta.index);
            Message::InstallSnapshot {
                snapshot: snapshot.clone(),
            }
        } else {
            let prev_index = pr.next - 1;
            let Some(prev_term) = self.log.term_at(prev_index) else {
                return;
            };
            let entries = self
                .log
                .slice(pr.next, self.log.last_index(), max_entries, max_bytes);
            if entries.is_empty() && !allow_empty {
                return;
            }
            if let Some(last) = entries.last() {
                pr.sent(last.index, entries.iter().map(Entry::payload_len).sum());
            }
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit: self.commit,
            }
        };
        self.messages.push(Envelope {
            from: self.id,
            to,
            term: self.term,
            message,
        });
    }

    fn broadcast_heartbeat(&mut self) {
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        ls.heartbeat_pending = false;
        for (id, pr) in &ls.progress {
            self.messages.push(Envelope {
                from: self.id,
                to: *id,
                term: self.term,
                message: Message::Heartbeat {
                    commit: self.commit.min(pr.matched),
                    read_seq: ls.read_seq,
                },
            });
        }
    }

    /// Sends what accumulated since the last `ready`: new entries and commit updates (one batch
    /// per follower) and a heartbeat round for new reads.
    fn flush_leader(&mut self) {
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let send_commit = ls.commit_sent != self.commit && self.config.eager_commit;
        if ls.append_pending || send_commit {
            ls.append_pending = false;
            ls.commit_sent = self.commit;
            let ids: Vec<NodeId> = ls.progress.keys().copied().collect();
            for id in ids {
                self.send_append(id, send_commit);
            }
        }
        if let RoleState::Leader(ls) = &self.role {
            if ls.heartbeat_pending {
                self.broadcast_heartbeat();
            }
        }
    }

    fn handle_append_response(&mut self, from: NodeId, index: Index) {
        let last = self.log.last_index();
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let Some(pr) = ls.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let news = pr.update(index);
        match pr.state {
            State::Probe if index + 1 >= pr.next => pr.become_replicate(),
            State::Snapshot(at) if pr.matched >= at => pr.become_replicate(),
            _ => {}
        }
        let caught_up = ls.transferee == Some(from) && pr.matched == last;
        if news {
            self.maybe_commit();
        }
        if caught_up {
            self.send(from, Message::TimeoutNow);
        }
        self.send_append(from, false);
    }

    fn handle_append_reject(
        &mut self,
        from: NodeId,
        rejected: Index,
        conflict_index: Index,
        conflict_term: Option<Term>,
    ) {
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let Some(pr) = ls.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if conflict_term.is_none() && conflict_index <= pr.matched {
            // The follower's log ends below what it acknowledged: it lost durable entries
            // (outside Raft's crash model, but disks and operators do it). Believe it and
            // probe from where its log ends. A stale rejection reordered behind a later
            // acknowledgement lands here too; then the cost is a redundant probe, never
            // safety: a lower match only delays commits, and the commit index never regresses.
            pr.matched = conflict_index.saturating_sub(1);
            pr.become_probe();
            self.send_append(from, true);
            return;
        }
        let stale = rejected <= pr.matched
            || match pr.state {
                State::Probe => rejected + 1 != pr.next,
                State::Replicate => false,
                State::Snapshot(_) => true,
            };
        if stale {
            return;
        }
        let hint = match conflict_term.and_then(|t| self.log.last_index_of_term(t)) {
            Some(i) => i + 1,
            None => conflict_index,
        };
        pr.become_probe();
        pr.next = hint.min(rejected).max(pr.matched + 1);
        self.send_append(from, true);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        let last = self.log.last_index();
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let Some(pr) = ls.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.read_ack = pr.read_ack.max(read_seq);
        if pr.matched < last {
            let stalled = pr.matched == pr.heartbeat_match;
            pr.stalls = if stalled { pr.stalls + 1 } else { 0 };
            match pr.state {
                State::Probe => pr.paused = false,
                State::Replicate if pr.stalls >= REPLICATE_STALLS => pr.become_probe(),
                State::Snapshot(_) if pr.stalls >= SNAPSHOT_STALLS => pr.become_probe(),
                _ => {}
            }
        }
        pr.heartbeat_match = pr.matched;
        // A follower that lacks entries gets an append even when there is nothing new to send
        // it: with a probe lost (or never sent, as to a learner added while the log was idle)
        // the empty append is the probe, and without it nothing would move until the next
        // proposal.
        let behind = pr.matched < last;
        self.resolve_reads();
        self.send_append(from, behind);
    }

    /// Advances the commit index to what a quorum holds durably, if it is of this term.
    fn maybe_commit(&mut self) {
        let RoleState::Leader(ls) = &self.role else {
            return;
        };
        let mut matched: BTreeMap<NodeId, Index> = ls
            .progress
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect();
        matched.insert(self.id, self.persisted);
        let index = quorum_value(&self.membership, &matched);
        if index <= self.commit || self.log.term_at(index) != Some(self.term) {
            return;
        }
        let first_of_term = self.log.term_at(self.commit) != Some(self.term);
        self.commit_to(index);
        if first_of_term {
            self.release_waiting_reads();
        }
        if !self.is_voter() && self.config_index <= self.commit {
            self.step_down_removed();
        }
    }

    /// The first entry of this term is committed: reads held until then get a round.
    fn release_waiting_reads(&mut self) {
        let commit = self.commit;
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        if ls.waiting_reads.is_empty() {
            return;
        }
        ls.read_seq += 1;
        for id in std::mem::take(&mut ls.waiting_reads) {
            ls.reads.push_back(PendingRead {
                id,
                index: commit,
                seq: ls.read_seq,
            });
        }
        ls.heartbeat_pending = true;
        self.resolve_reads();
    }

    /// Hands out the reads whose round a quorum confirmed.
    fn resolve_reads(&mut self) {
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let mut acks: BTreeMap<NodeId, Index> = ls
            .progress
            .iter()
            .map(|(id, pr)| (*id, pr.read_ack))
            .collect();
        acks.insert(self.id, ls.read_seq);
        let confirmed = quorum_value(&self.membership, &acks);
        while ls.reads.front().is_some_and(|r| r.seq <= confirmed) {
            let Some(read) = ls.reads.pop_front() else {
                break;
            };
            self.ready_reads.push((read.id, read.index));
        }
    }

    /// This leader committed its own removal: tell the others the commit index, hand over to
    /// the most up-to-date voter, and step down.
    fn step_down_removed(&mut self) {
        let last = self.log.last_index();
        let RoleState::Leader(ls) = &mut self.role else {
            return;
        };
        let ids: Vec<NodeId> = ls.progress.keys().copied().collect();
        let successor = ls
            .progress
            .iter()
            .filter(|(id, pr)| self.membership.voters.contains_key(id) && pr.matched == last)
            .map(|(id, _)| *id)
            .next();
        for id in ids {
            self.send_append(id, true);
        }
        if let RoleState::Leader(ls) = &mut self.role {
            ls.commit_sent = self.commit;
        }
        if let Some(to) = successor {
            self.send(to, Message::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }
}
