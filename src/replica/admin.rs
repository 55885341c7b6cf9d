//! Membership administration and leadership transfer, on the leader.
//!
//! `AddMember` proposes the node as a learner, then promotes it to voter once it has
//! **acknowledged an append from this leader** (its match index is above 0: progress starts at
//! 0 for every term, so only a real answer moves it) and is within [`CATCH_UP_SLACK`] entries
//! of the commit index. A node that never answers (an unreachable address, or a node of another
//! cluster, which the handshake refuses with `WrongCluster`) is never promoted: after
//! [`Config::add_timeout_ms`](super::Config::add_timeout_ms) from the first request the add
//! fails with `Timeout` and the node stays a learner. Staying a learner costs nothing (a
//! learner never counts toward a quorum), needs no second membership change that could fail
//! in turn, and lets a retry of the same `cluster add` resume where it stopped once the node is
//! fixed; `cluster remove` takes it out.

use std::collections::BTreeMap;

use super::{Caller, Effect, Replica};
use crate::protocol::{ErrorCode, Response};
use crate::raft::{Entry, EntryData, Index, MembershipError, NodeId, Term};

/// How far behind the commit index a learner may be when it is promoted (under steady load the
/// commit index never waits for it).
pub const CATCH_UP_SLACK: Index = 64;

/// A member being added: a learner until it has answered and caught up, then promoted.
#[derive(Debug)]
struct Adding {
    /// Callers waiting for the promotion to commit.
    callers: Vec<Caller>,
    /// When the add gives up (set by the first request).
    deadline: u64,
}

/// The leader's administrative waits.
#[derive(Debug, Default)]
pub(super) struct Admin {
    /// Nodes being added, by id.
    adding: BTreeMap<NodeId, Adding>,
    /// Callers waiting for a membership entry to commit, by its index.
    config_waiters: BTreeMap<Index, (Term, Vec<Caller>)>,
    /// Callers waiting for a leadership transfer to complete, with their deadlines.
    transfers: Vec<(Caller, u64)>,
}

impl Admin {
    /// Every caller waiting on a membership change (leadership was lost).
    pub(super) fn take_all(&mut self) -> Vec<Caller> {
        let adding = std::mem::take(&mut self.adding)
            .into_values()
            .flat_map(|a| a.callers);
        let configs = std::mem::take(&mut self.config_waiters)
            .into_values()
            .flat_map(|(_, c)| c);
        adding.chain(configs).collect()
    }

    /// The callers of membership entries at or before `index` (a snapshot covered them).
    pub(super) fn covered_by(&mut self, index: Index) -> Vec<Caller> {
        let later = self.config_waiters.split_off(&(index + 1));
        std::mem::replace(&mut self.config_waiters, later)
            .into_values()
            .flat_map(|(_, c)| c)
            .collect()
    }

    fn wait_config(&mut self, index: Index, term: Term, callers: impl IntoIterator<Item = Caller>) {
        self.config_waiters
            .entry(index)
            .or_insert((term, Vec::new()))
            .1
            .extend(callers);
    }
}

impl Replica {
    /// `AddMember` on the leader: propose the node as a learner (or resume waiting for it).
    pub(super) fn add_member(&mut self, node_id: NodeId, addr: String, caller: Caller) {
        let id = caller.id;
        let membership = self.node.membership().clone();
        let deadline = self.now.saturating_add(self.config.add_timeout_ms);
        if let Some(known) = membership.address(node_id) {
            if known != addr {
                let message = format!("node {node_id} is a member at {known}, not {addr}");
                let response = Response::error(id, ErrorCode::BadRequest, message);
                return self.answer(caller, response);
            }
            if membership.voters.contains_key(&node_id) {
                let response = self.membership_changed(id, 0);
                return self.answer(caller, response);
            }
            self.admin
                .adding
                .entry(node_id)
                .or_insert(Adding {
                    callers: Vec::new(),
                    deadline,
                })
                .callers
                .push(caller);
            return;
        }
        let mut next = membership;
        next.learners.insert(node_id, addr.clone());
        match self.node.propose_membership(next) {
            Ok((index, _)) => {
                tracing::info!(node_id, %addr, index, "adding a member as a learner");
                self.admin.adding.insert(
                    node_id,
                    Adding {
                        callers: vec![caller],
                        deadline,
                    },
                );
            }
            Err(error) => {
                let response = self.membership_error(id, error);
                self.answer(caller, response);
            }
        }
    }

    /// `RemoveMember` on the leader.
    pub(super) fn remove_member(&mut self, node_id: NodeId, caller: Caller) {
        let id = caller.id;
        let mut next = self.node.membership().clone();
        if !next.contains(node_id) {
            let response = self.membership_changed(id, 0);
            return self.answer(caller, response);
        }
        next.voters.remove(&node_id);
        next.learners.remove(&node_id);
        match self.node.propose_membership(next) {
            Ok((index, term)) => {
                tracing::info!(node_id, index, "removing a member");
                if let Some(adding) = self.admin.adding.remove(&node_id) {
                    for waiting in adding.callers {
                        let message = format!("node {node_id} was removed while being added");
                        let response = Response::error(waiting.id, ErrorCode::Conflict, message);
                        self.answer(waiting, response);
                    }
                }
                self.admin.wait_config(index, term, [caller]);
            }
            Err(error) => {
                let response = self.membership_error(id, error);
                self.answer(caller, response);
            }
        }
    }

    /// `TransferLeader` on the leader.
    pub(super) fn transfer_leader(&mut self, to: Option<NodeId>, caller: Caller) {
        let id = caller.id;
        if to == Some(self.config.id) {
            let response = self.leader_transferred(id, self.config.id);
            return self.answer(caller, response);
        }
        let voters = &self.node.membership().voters;
        let valid = match to {
            Some(to) => voters.contains_key(&to),
            None => self.has_other_voter(),
        };
        if !valid {
            let message = match to {
                Some(to) => format!("node {to} is not a voter"),
                None => "there is no other voter to transfer to".to_string(),
            };
            let response = Response::error(id, ErrorCode::BadRequest, message);
            return self.answer(caller, response);
        }
        if self.node.transfer_leadership(to).is_err() {
            let response = self.not_leader(id);
            return self.answer(caller, response);
        }
        // The core gives up after an election timeout; allow a few.
        let wait = self.config.tick_ms * u64::from(self.config.election_ticks_max) * 3;
        self.admin
            .transfers
            .push((caller, self.now.saturating_add(wait)));
    }

    /// True if the membership has a voter other than this node.
    pub(super) fn has_other_voter(&self) -> bool {
        self.node
            .membership()
            .voters
            .keys()
            .any(|id| *id != self.config.id)
    }

    /// Answers the callers of the membership entry at `index`, which is being applied.
    pub(super) fn config_committed(&mut self, index: Index, entry: &Entry) {
        if let Some((term, callers)) = self.admin.config_waiters.remove(&index) {
            let committed = term == entry.term && matches!(entry.data, EntryData::Config(_));
            for caller in callers {
                let response = if committed {
                    self.membership_changed(caller.id, index)
                } else {
                    super::answers::timeout_error(caller.id)
                };
                self.answer(caller, response);
            }
        }
    }

    /// Work that follows the node's state after each turn: the transport's peer list, learners
    /// to promote or give up on, and transfers that completed or timed out.
    pub(super) fn cluster_upkeep(&mut self) {
        if self.transport_membership.as_ref() != Some(self.node.membership()) {
            let membership = self.node.membership().clone();
            let mut peers = self.config.peers.clone();
            for (id, addr) in membership.voters.iter().chain(membership.learners.iter()) {
                peers.insert(*id, addr.clone());
            }
            peers.remove(&self.config.id);
            tracing::info!(?peers, "peer set");
            self.effects.push(Effect::Peers(peers));
            self.transport_membership = Some(membership);
        }
        if !self.admin.adding.is_empty() && self.is_leader() {
            self.promote_caught_up();
            self.give_up_adding();
        }
        if !self.admin.transfers.is_empty() {
            let leader = self.node.leader().filter(|l| *l != self.config.id);
            for (caller, deadline) in std::mem::take(&mut self.admin.transfers) {
                if let Some(leader) = leader {
                    let response = self.leader_transferred(caller.id, leader);
                    self.answer(caller, response);
                } else if self.now >= deadline {
                    let response = Response::error(
                        caller.id,
                        ErrorCode::Timeout,
                        "leadership did not move in time; retry",
                    );
                    self.answer(caller, response);
                } else {
                    self.admin.transfers.push((caller, deadline));
                }
            }
        }
    }

    /// Promotes learners being added once they have acknowledged an append from this leader
    /// and caught up with the commit index.
    fn promote_caught_up(&mut self) {
        let status = self.node.status();
        let ids: Vec<NodeId> = self.admin.adding.keys().copied().collect();
        for node_id in ids {
            if status.membership.voters.contains_key(&node_id) {
                // Promoted meanwhile (by an earlier leader): nothing left to wait for.
                if let Some(adding) = self.admin.adding.remove(&node_id) {
                    for caller in adding.callers {
                        let response = self.membership_changed(caller.id, 0);
                        self.answer(caller, response);
                    }
                }
                continue;
            }
            let Some(addr) = status.membership.learners.get(&node_id) else {
                continue;
            };
            let matched = status
                .match_index
                .iter()
                .find(|(id, _)| *id == node_id)
                .map_or(0, |(_, m)| *m);
            if !ready_to_promote(matched, status.commit_index) {
                continue;
            }
            let mut next = status.membership.clone();
            next.learners.remove(&node_id);
            next.voters.insert(node_id, addr.clone());
            match self.node.propose_membership(next) {
                Ok((index, term)) => {
                    tracing::info!(node_id, index, "learner caught up; promoting it to voter");
                    let adding = self.admin.adding.remove(&node_id).expect("id from keys");
                    self.admin.wait_config(index, term, adding.callers);
                    // One change at a time: the next learner waits for this one to commit.
                    return;
                }
                Err(MembershipError::ChangeInProgress) => return,
                Err(error) => {
                    tracing::warn!(node_id, %error, "cannot promote the learner");
                    return;
                }
            }
        }
    }

    /// Fails the adds whose wait is over: the node stays a learner.
    fn give_up_adding(&mut self) {
        let now = self.now;
        let expired: Vec<NodeId> = self
            .admin
            .adding
            .iter()
            .filter(|(_, adding)| now >= adding.deadline)
            .map(|(id, _)| *id)
            .collect();
        for node_id in expired {
            let adding = self.admin.adding.remove(&node_id).expect("id from keys");
            let addr = self
                .node
                .membership()
                .address(node_id)
                .unwrap_or("its address")
                .to_string();
            tracing::warn!(node_id, %addr, "learner never caught up; not promoting it");
            let seconds = self.config.add_timeout_ms.div_ceil(1000);
            for caller in adding.callers {
                let message = format!(
                    "node {node_id} at {addr} did not answer or catch up within {seconds} s, so \
                     it was not made a voter (is it running, reachable at that address, and \
                     started with this cluster's --cluster-id?); it stays a learner: retry the \
                     add once it is fixed, or take it out with `cluster remove {node_id}`"
                );
                let response = Response::error(caller.id, ErrorCode::Timeout, message);
                self.answer(caller, response);
            }
        }
    }
}

/// The promotion rule: the learner has acknowledged an append from this leader (its match
/// index moved from 0) and is within [`CATCH_UP_SLACK`] of the commit index.
pub fn ready_to_promote(matched: Index, commit: Index) -> bool {
    matched > 0 && matched.saturating_add(CATCH_UP_SLACK) >= commit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learner_that_never_answered_is_not_promoted_even_with_a_low_commit_index() {
        assert!(!ready_to_promote(0, 0));
        assert!(!ready_to_promote(0, 5));
        assert!(ready_to_promote(5, 5));
        assert!(ready_to_promote(1, 1 + CATCH_UP_SLACK));
        assert!(!ready_to_promote(1, 2 + CATCH_UP_SLACK));
    }
}
