//! Quorum math and the one-server-at-a-time rule for membership changes (thesis §4.1).

use std::collections::BTreeMap;

use super::{Index, Membership, NodeId};

/// The number of voters that form a majority.
pub(crate) fn quorum_size(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest value a majority of voters has reached (`values` holds one per voter; voters
/// missing from it count as 0). With no voters, 0.
pub(crate) fn quorum_value(membership: &Membership, values: &BTreeMap<NodeId, Index>) -> Index {
    let mut v: Vec<Index> = membership
        .voters
        .keys()
        .map(|id| values.get(id).copied().unwrap_or(0))
        .collect();
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable_by(|a, b| b.cmp(a));
    v[quorum_size(v.len()) - 1]
}

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Counts the votes received so far.
pub(crate) fn tally(membership: &Membership, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let q = quorum_size(membership.voters.len());
    let yes = membership
        .voters
        .keys()
        .filter(|id| votes.get(id) == Some(&true))
        .count();
    let no = membership
        .voters
        .keys()
        .filter(|id| votes.get(id) == Some(&false))
        .count();
    if yes >= q {
        VoteResult::Won
    } else if no > membership.voters.len() - q {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This node is not the leader.
    #[error(transparent)]
    NotLeader(#[from] super::NotLeader),
    /// The leader has not committed an entry of its term yet, or an earlier change is not
    /// committed: retry shortly.
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    /// The new membership is not one voter or learner added or removed, or one learner
    /// promoted, relative to the current one.
    #[error("invalid membership change: {0}")]
    Invalid(&'static str),
}

/// Checks that `new` differs from `old` by exactly one single-server change.
pub(crate) fn validate_change(old: &Membership, new: &Membership) -> Result<(), MembershipError> {
    for (id, addr) in new.voters.iter().chain(new.learners.iter()) {
        if *id == 0 {
            return Err(MembershipError::Invalid("node id 0"));
        }
        if old.address(*id).is_some_and(|a| a != addr) {
            return Err(MembershipError::Invalid("a member's address changed"));
        }
    }
    if new.voters.keys().any(|id| new.learners.contains_key(id)) {
        return Err(MembershipError::Invalid("a node is both voter and learner"));
    }
    if new.voters.is_empty() {
        return Err(MembershipError::Invalid("no voters left"));
    }
    let diff = |a: &BTreeMap<NodeId, String>, b: &BTreeMap<NodeId, String>| {
        a.keys()
            .filter(|k| !b.contains_key(k))
            .copied()
            .collect::<Vec<_>>()
    };
    let voters_added = diff(&new.voters, &old.voters);
    let voters_removed = diff(&old.voters, &new.voters);
    let learners_added = diff(&new.learners, &old.learners);
    let learners_removed = diff(&old.learners, &new.learners);
    let changes =
        voters_added.len() + voters_removed.len() + learners_added.len() + learners_removed.len();
    let promotion = voters_added.len() == 1
        && learners_removed == voters_added
        && voters_removed.is_empty()
        && learners_added.is_empty();
    if changes == 1 || promotion {
        Ok(())
    } else if changes == 0 {
        Err(MembershipError::Invalid("no change"))
    } else {
        Err(MembershipError::Invalid(
            "more than one server changes at once",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        Membership {
            voters: voters.iter().map(|&i| (i, format!("n{i}"))).collect(),
            learners: learners.iter().map(|&i| (i, format!("n{i}"))).collect(),
        }
    }

    #[test]
    fn quorum_of_three_and_four() {
        let values: BTreeMap<NodeId, Index> = [(1, 5), (2, 3), (3, 9), (4, 1)].into();
        assert_eq!(quorum_value(&m(&[1, 2, 3], &[]), &values), 5);
        assert_eq!(quorum_value(&m(&[1, 2, 3, 4], &[]), &values), 3);
    }

    #[test]
    fn single_server_changes_only() {
        let old = m(&[1, 2, 3], &[4]);
        assert!(
            validate_change(&old, &m(&[1, 2, 3, 4], &[])).is_ok(),
            "promotion"
        );
        assert!(
            validate_change(&old, &m(&[1, 2], &[4])).is_ok(),
            "remove voter"
        );
        assert!(
            validate_change(&old, &m(&[1, 2, 3], &[])).is_ok(),
            "remove learner"
        );
        assert!(
            validate_change(&old, &m(&[1, 2, 3, 5], &[4])).is_ok(),
            "add voter"
        );
        assert!(validate_change(&old, &m(&[1, 2, 5], &[4])).is_err(), "swap");
        assert!(validate_change(&old, &old).is_err(), "no change");
        assert!(
            validate_change(&m(&[1], &[]), &m(&[], &[])).is_err(),
            "empty"
        );
    }

    #[test]
    fn tally_counts_majorities() {
        let mem = m(&[1, 2, 3], &[]);
        let mut votes = BTreeMap::from([(1, true)]);
        assert_eq!(tally(&mem, &votes), VoteResult::Pending);
        votes.insert(2, false);
        votes.insert(3, false);
        assert_eq!(tally(&mem, &votes), VoteResult::Lost);
        votes.insert(3, true);
        assert_eq!(tally(&mem, &votes), VoteResult::Won);
    }
}
