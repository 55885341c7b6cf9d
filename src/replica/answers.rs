//! The wire answers the replica builds: the one place where state-machine outcomes, node
//! status and errors become [`Response`]s.

use std::collections::BTreeMap;

use super::deadlines::{Key, What};
use super::Replica;
use crate::lockspace::{LockInfo, LockSpace, Outcome};
use crate::protocol::{
    ErrorCode, FileEntry, HolderState, LockState, MemberStatus, Request, Response, SessionSummary,
    StatusInfo, WaiterState,
};
use crate::raft::{Index, MembershipError, NodeId, Role};

impl Replica {
    /// `NotLeader`, naming the leader if this node knows it.
    pub(super) fn not_leader(&self, id: u64) -> Response {
        let info = self.leader_info();
        Response::Error {
            id,
            code: ErrorCode::NotLeader,
            message: match &info.addr {
                Some(addr) => format!("not the leader; the leader is at {addr}"),
                None => "not the leader; no leader is known yet".into(),
            },
            leader: info.leader,
            leader_addr: info.addr,
        }
    }

    /// Answers a read from the local lock space.
    pub(super) fn answer_read(&self, request: &Request, id: u64) -> Response {
        match request {
            Request::Read {
                file, offset, len, ..
            } => {
                match self
                    .lockspace
                    .read(file, *offset, self.config.limits.read_len(*len))
                {
                    Some((data, size)) => Response::Data {
                        id,
                        data: data.to_vec(),
                        size,
                    },
                    None => Response::error(id, ErrorCode::NotFound, format!("no file {file:?}")),
                }
            }
            Request::Files { prefix, .. } => Response::FileList {
                id,
                files: self
                    .lockspace
                    .file_list(prefix.as_deref())
                    .into_iter()
                    .map(|f| FileEntry {
                        name: f.name,
                        size: f.size,
                        lock: f.lock,
                        fence: f.fence,
                    })
                    .collect(),
            },
            Request::Locks { prefix, .. } => Response::LockList {
                id,
                locks: self
                    .lockspace
                    .locks(prefix.as_deref())
                    .into_iter()
                    .map(|info| self.lock_state(info))
                    .collect(),
            },
            other => Response::error(
                id,
                ErrorCode::Internal,
                format!("{} is not a read", other.type_name()),
            ),
        }
    }

    /// Answers `Sessions` (leader only): every live session, with the time since the leader
    /// last restarted its lease deadline (`ttl - time left`).
    pub(super) fn session_list(&self, id: u64) -> Response {
        let sessions = self
            .lockspace
            .sessions()
            .into_iter()
            .map(|info| {
                let key = Key {
                    session: info.id,
                    what: What::Lease,
                };
                let since_renewal_ms = self.leases.deadline(&key).map(|deadline| {
                    let left = deadline.saturating_sub(self.now);
                    info.ttl_ms.saturating_sub(left)
                });
                SessionSummary {
                    session: info.id,
                    owner: info.owner,
                    ttl_ms: info.ttl_ms,
                    since_renewal_ms,
                }
            })
            .collect();
        Response::SessionList { id, sessions }
    }

    /// This node's `Status`.
    pub(super) fn status(&self, id: u64) -> Response {
        let status = self.node.status();
        let leader_addr = status
            .leader
            .and_then(|leader| status.membership.address(leader).map(String::from));
        let match_index: BTreeMap<NodeId, Index> = status.match_index.iter().copied().collect();
        let voters = status
            .membership
            .voters
            .iter()
            .map(|(id, addr)| (id, addr, true));
        let learners = status
            .membership
            .learners
            .iter()
            .map(|(id, addr)| (id, addr, false));
        let members = voters
            .chain(learners)
            .map(|(node_id, addr, voter)| MemberStatus {
                node_id: *node_id,
                addr: addr.clone(),
                voter,
                match_index: match_index.get(node_id).copied(),
            })
            .collect();
        Response::Status(Box::new(StatusInfo {
            id,
            node_id: status.id,
            role: role_name(status.role).into(),
            term: status.term,
            leader: status.leader,
            leader_addr,
            commit_index: status.commit_index,
            applied_index: self.lockspace.applied_index(),
            last_log_index: status.last_index,
            sessions: self.lockspace.sessions().len() as u64,
            locks: self.lockspace.locks(None).len() as u64,
            members,
        }))
    }

    /// `MembershipChanged` with the current members.
    pub(super) fn membership_changed(&self, id: u64, index: Index) -> Response {
        let membership = self.node.membership();
        let voters = membership.voters.iter().map(|(n, a)| (n, a, true));
        let learners = membership.learners.iter().map(|(n, a)| (n, a, false));
        Response::MembershipChanged {
            id,
            index,
            members: voters
                .chain(learners)
                .map(|(node_id, addr, voter)| MemberStatus {
                    node_id: *node_id,
                    addr: addr.clone(),
                    voter,
                    match_index: None,
                })
                .collect(),
        }
    }

    /// `LeaderTransferred` to `leader`.
    pub(super) fn leader_transferred(&self, id: u64, leader: NodeId) -> Response {
        Response::LeaderTransferred {
            id,
            leader,
            leader_addr: self.node.membership().address(leader).map(String::from),
        }
    }

    /// The answer to a refused membership proposal.
    pub(super) fn membership_error(&self, id: u64, error: MembershipError) -> Response {
        match error {
            MembershipError::NotLeader(_) => self.not_leader(id),
            MembershipError::ChangeInProgress => Response::error(
                id,
                ErrorCode::Timeout,
                "another membership change is in progress; retry",
            ),
            MembershipError::Invalid(reason) => Response::error(id, ErrorCode::BadRequest, reason),
        }
    }
}

/// The wire name of a role.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::PreCandidate | Role::Candidate => "candidate",
        Role::Learner => "learner",
    }
}

impl Replica {
    /// One lock for `LockList`, with the leader-local times this node knows (none on a
    /// follower: it keeps no deadlines and no grant or queue times).
    fn lock_state(&self, info: LockInfo) -> LockState {
        let space: &LockSpace = &self.lockspace;
        let owner = |session| space.owner(session).map(str::to_owned);
        let since = |at: Option<u64>| at.map(|at| self.now.saturating_sub(at));
        LockState {
            holders: info
                .holders
                .into_iter()
                .map(|(session, fence)| {
                    let hold = Key {
                        session,
                        what: What::Hold {
                            lock: info.name.clone(),
                            fence,
                        },
                    };
                    HolderState {
                        session,
                        fence,
                        owner: owner(session),
                        held_ms: since(self.times.granted(fence)),
                        hold_left_ms: self
                            .leases
                            .deadline(&hold)
                            .map(|at| at.saturating_sub(self.now)),
                    }
                })
                .collect(),
            waiters: info
                .waiters
                .into_iter()
                .map(|wait| WaiterState {
                    session: wait.session,
                    seq: wait.seq,
                    mode: wait.mode.into(),
                    owner: owner(wait.session),
                    waited_ms: since(self.times.queued(wait.session, wait.seq)),
                })
                .collect(),
            name: info.name,
            mode: info.mode.map(Into::into),
        }
    }
}

/// `SessionExpired` for a session this (caught-up) leader does not know.
pub(super) fn session_expired(id: u64) -> Response {
    Response::error(
        id,
        ErrorCode::SessionExpired,
        "no such session, or a wrong token",
    )
}

/// `Revoked`: an administrator revoked the session; its keep-alives no longer renew it.
pub(super) fn revoked(id: u64) -> Response {
    Response::error(
        id,
        ErrorCode::Revoked,
        "the session was revoked by an administrator: stop using its locks and close it",
    )
}

/// `NotReady`: a new leader has not yet applied its log up to its own term.
pub(super) fn not_ready(id: u64) -> Response {
    Response::error(
        id,
        ErrorCode::NotReady,
        "the leader has not caught up with its log yet; retry shortly",
    )
}

/// `Timeout` for a proposal whose outcome is unknown.
pub(super) fn timeout_error(id: u64) -> Response {
    Response::error(
        id,
        ErrorCode::Timeout,
        "leadership changed before the request committed; the outcome is unknown, retry with the same seq",
    )
}

/// The answer to a request whose command applied with `outcome`: the one place where state
/// machine outcomes become wire responses.
pub fn outcome_response(id: u64, outcome: &Outcome) -> Response {
    let error = |code, message: &str| Response::error(id, code, message);
    match *outcome {
        Outcome::SessionOpened {
            session,
            token,
            ttl_ms,
        } => Response::SessionOpened {
            id,
            session,
            token,
            ttl_ms,
        },
        Outcome::SessionClosed => Response::SessionClosed { id },
        Outcome::Granted { fence } => Response::Granted { id, fence },
        Outcome::Queued { position } => Response::Queued { id, position },
        Outcome::Busy => error(ErrorCode::Busy, "the lock is held"),
        Outcome::TimedOut => error(
            ErrorCode::WaitTimeout,
            "the wait bound passed before a grant",
        ),
        Outcome::Released => Response::Released { id },
        Outcome::Cancelled => Response::Cancelled { id },
        Outcome::NotWaiting => error(
            ErrorCode::NotWaiting,
            "the acquire does not wait in the queue (granted, ended or never applied)",
        ),
        Outcome::Extended { hold_ms } => Response::Extended { id, hold_ms },
        Outcome::NotHolder => error(ErrorCode::NotHolder, "the session does not hold the lock"),
        Outcome::Conflict => error(
            ErrorCode::Conflict,
            "the session holds or waits for the lock in another mode, or already waits for it",
        ),
        Outcome::Appended { offset, size } => Response::Appended { id, offset, size },
        Outcome::Truncated { size } => Response::Truncated { id, size },
        Outcome::Deleted { size } => Response::Deleted { id, size },
        Outcome::NotFound => error(ErrorCode::NotFound, "no such file"),
        Outcome::FileQuotaExceeded { limit, size } => Response::error(
            id,
            ErrorCode::QuotaExceeded,
            format!(
                "the append would make the file {size} bytes, over the per-file limit of \
                 {limit} bytes (--max-file-bytes); nothing was written"
            ),
        ),
        Outcome::TotalQuotaExceeded { limit, size } => Response::error(
            id,
            ErrorCode::QuotaExceeded,
            format!(
                "the append would make all files together {size} bytes, over the total limit \
                 of {limit} bytes (--max-total-file-bytes); nothing was written"
            ),
        ),
        Outcome::StaleFence => error(
            ErrorCode::StaleFence,
            "the fence is not the session's current exclusive grant of the lock",
        ),
        Outcome::SessionExpired => error(
            ErrorCode::SessionExpired,
            "the session expired or was closed",
        ),
        Outcome::SequenceTooOld => error(
            ErrorCode::SequenceTooOld,
            "the sequence number is older than the results the session remembers",
        ),
        Outcome::SequenceReused => error(
            ErrorCode::SequenceReused,
            "the sequence number was already used by a different request of the session",
        ),
        Outcome::Revoked => error(
            ErrorCode::Revoked,
            "the session was revoked by an administrator: stop using its locks and close it",
        ),
        Outcome::Ignored => error(ErrorCode::Internal, "the request had no effect"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_maps_to_its_documented_response() {
        let code = |outcome: Outcome| match outcome_response(7, &outcome) {
            Response::Error { id: 7, code, .. } => Some(code),
            Response::Error { .. } => panic!("wrong id"),
            _ => None,
        };
        assert_eq!(code(Outcome::Busy), Some(ErrorCode::Busy));
        assert_eq!(code(Outcome::TimedOut), Some(ErrorCode::WaitTimeout));
        assert_eq!(code(Outcome::NotHolder), Some(ErrorCode::NotHolder));
        assert_eq!(code(Outcome::NotWaiting), Some(ErrorCode::NotWaiting));
        assert_eq!(
            outcome_response(7, &Outcome::Cancelled),
            Response::Cancelled { id: 7 }
        );
        assert_eq!(
            outcome_response(7, &Outcome::Extended { hold_ms: 500 }),
            Response::Extended {
                id: 7,
                hold_ms: 500
            }
        );
        assert_eq!(code(Outcome::Conflict), Some(ErrorCode::Conflict));
        assert_eq!(code(Outcome::StaleFence), Some(ErrorCode::StaleFence));
        assert_eq!(code(Outcome::NotFound), Some(ErrorCode::NotFound));
        assert_eq!(
            outcome_response(7, &Outcome::Truncated { size: 3 }),
            Response::Truncated { id: 7, size: 3 }
        );
        assert_eq!(
            outcome_response(7, &Outcome::Deleted { size: 3 }),
            Response::Deleted { id: 7, size: 3 }
        );
        for over in [
            Outcome::FileQuotaExceeded {
                limit: 10,
                size: 12,
            },
            Outcome::TotalQuotaExceeded {
                limit: 10,
                size: 12,
            },
        ] {
            let Response::Error { code, message, .. } = outcome_response(7, &over) else {
                panic!("{over:?} is an error");
            };
            assert_eq!(code, ErrorCode::QuotaExceeded);
            assert!(
                message.contains("12 bytes") && message.contains("limit of 10 bytes"),
                "{message}"
            );
        }
        assert_eq!(code(Outcome::Revoked), Some(ErrorCode::Revoked));
        assert_eq!(
            code(Outcome::SessionExpired),
            Some(ErrorCode::SessionExpired)
        );
        assert_eq!(
            code(Outcome::SequenceTooOld),
            Some(ErrorCode::SequenceTooOld)
        );
        assert_eq!(
            code(Outcome::SequenceReused),
            Some(ErrorCode::SequenceReused)
        );
        assert_eq!(
            outcome_response(7, &Outcome::Granted { fence: 12 }),
            Response::Granted { id: 7, fence: 12 }
        );
        assert_eq!(
            outcome_response(
                7,
                &Outcome::SessionOpened {
                    session: 3,
                    token: 9,
                    ttl_ms: 1000
                }
            ),
            Response::SessionOpened {
                id: 7,
                session: 3,
                token: 9,
                ttl_ms: 1000
            }
        );
        assert_eq!(
            outcome_response(
                7,
                &Outcome::Appended {
                    offset: 4,
                    size: 10
                }
            ),
            Response::Appended {
                id: 7,
                offset: 4,
                size: 10
            }
        );
        assert_eq!(
            outcome_response(7, &Outcome::Released),
            Response::Released { id: 7 }
        );
        assert_eq!(
            outcome_response(7, &Outcome::SessionClosed),
            Response::SessionClosed { id: 7 }
        );
    }
}
