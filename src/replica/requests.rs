//! Admission: what a client request becomes on this node.
//!
//! Reads, `Status` and the admin requests have their own paths; every other request acts on a
//! session. [`session_command`] is the one place that turns such a request into the log
//! [`Command`] it proposes, so a new session request is one more arm there. Before proposing,
//! the session is checked against the lock space: an unknown session or a wrong token is
//! `SessionExpired`, unless this node cannot tell "not applied yet" from "gone" (it leads but
//! has not applied an entry of its own term, or the session's id is beyond its applied index),
//! in which case it answers the retryable `NotReady`. A revoked session's `KeepAlive` is
//! refused with `Revoked` and does not move its lease.
//!
//! An `Append` carries this leader's file size limits ([`Quota`], from `--max-file-bytes` and
//! `--max-total-file-bytes`) in its command, and the state machine checks them when the entry
//! applies. Nothing is checked here against local flags: every replica applies the same entry
//! the same way whatever its own flags, and the check at apply sees every earlier entry, which a
//! check before proposing could not (appends still in the log ahead of this one).

use rand::Rng;

use super::answers::{not_ready, revoked, session_expired};
use super::{Caller, Pending, Replica, Ticket};
use crate::auth::Principal;
use crate::lockspace::{Command, Quota, SessionId};
use crate::protocol::{ErrorCode, Request, Response};

/// A request that acts on an existing session: the session, the token it presents, and the
/// command to propose once the session checks out.
#[derive(Debug)]
pub(crate) struct SessionCommand {
    pub session: SessionId,
    pub token: u64,
    pub command: Command,
}

/// Converts a session request into its log command, or hands the request back if it is not
/// one. (`KeepAlive` is answered by the leader without the log, so it is not one.) An
/// `Append` carries `quota`, the limits it is checked against when it applies.
pub(crate) fn session_command(request: Request, quota: Quota) -> Result<SessionCommand, Request> {
    let (session, token, command) = match request {
        Request::CloseSession {
            session,
            token,
            seq,
            ..
        } => (session, token, Command::CloseSession { session, seq }),
        Request::Acquire {
            session,
            token,
            seq,
            lock,
            mode,
            wait_ms,
            hold_ms,
            ..
        } => (
            session,
            token,
            Command::Acquire {
                session,
                seq,
                lock,
                mode: mode.into(),
                wait_ms,
                hold_ms,
            },
        ),
        Request::Release {
            session,
            token,
            seq,
            lock,
            ..
        } => (session, token, Command::Release { session, seq, lock }),
        Request::Cancel {
            session,
            token,
            seq,
            lock,
            acquire_seq,
            ..
        } => (
            session,
            token,
            Command::Cancel {
                session,
                seq,
                lock,
                acquire_seq,
            },
        ),
        Request::Extend {
            session,
            token,
            seq,
            lock,
            fence,
            hold_ms,
            ..
        } => (
            session,
            token,
            Command::Extend {
                session,
                seq,
                lock,
                fence,
                hold_ms,
            },
        ),
        Request::Append {
            session,
            token,
            seq,
            file,
            lock,
            fence,
            data,
            ..
        } => (
            session,
            token,
            Command::Append {
                session,
                seq,
                file,
                lock,
                fence,
                data,
                quota: Some(quota),
            },
        ),
        Request::Truncate {
            session,
            token,
            seq,
            file,
            lock,
            fence,
            size,
            ..
        } => (
            session,
            token,
            Command::Truncate {
                session,
                seq,
                file,
                lock,
                fence,
                size,
            },
        ),
        Request::Delete {
            session,
            token,
            seq,
            file,
            lock,
            fence,
            ..
        } => (
            session,
            token,
            Command::Delete {
                session,
                seq,
                file,
                lock,
                fence,
            },
        ),
        other => return Err(other),
    };
    Ok(SessionCommand {
        session,
        token,
        command,
    })
}

/// Why a session check failed.
enum Refusal {
    /// The session does not exist here, or the token is wrong.
    Expired,
    /// This leader has not caught up: it cannot tell yet.
    NotReady,
    /// The session belongs to another principal.
    NotYours,
}

impl Replica {
    /// Admits one request: answers it at once, or records what it waits for.
    pub(super) fn on_request(
        &mut self,
        ticket: Ticket,
        request: Request,
        principal: Option<&Principal>,
    ) {
        let caller = Caller {
            ticket,
            id: request.id(),
        };
        let id = caller.id;
        if self.shutdown.deadline.is_some() {
            let response =
                Response::error(id, ErrorCode::ShuttingDown, "the node is shutting down");
            self.answer(caller, response);
            return;
        }
        let request = match request {
            Request::Hello { .. } => {
                let response =
                    Response::error(id, ErrorCode::BadRequest, "Hello was already received");
                return self.answer(caller, response);
            }
            Request::Status { .. } => {
                let response = self.status(id);
                return self.answer(caller, response);
            }
            Request::Read { stale: true, .. }
            | Request::Locks { stale: true, .. }
            | Request::Files { stale: true, .. } => {
                let response = self.answer_read(&request, id);
                return self.answer(caller, response);
            }
            Request::Read { .. } | Request::Locks { .. } | Request::Files { .. } => {
                let read_id = self.next_read_id;
                self.next_read_id += 1;
                match self.node.read_index(read_id) {
                    Ok(()) => {
                        self.reads.insert(read_id, (request, caller));
                    }
                    Err(_) => {
                        let response = self.not_leader(id);
                        self.answer(caller, response);
                    }
                }
                return;
            }
            _ if !self.is_leader() => {
                let response = self.not_leader(id);
                return self.answer(caller, response);
            }
            Request::AddMember { node_id, addr, .. } => {
                return self.add_member(node_id, addr, caller);
            }
            Request::RemoveMember { node_id, .. } => return self.remove_member(node_id, caller),
            Request::SnapshotSave { .. } => return self.snapshot_save(caller),
            Request::TransferLeader { node_id, .. } => {
                return self.transfer_leader(node_id, caller);
            }
            Request::OpenSession {
                nonce,
                ttl_ms,
                owner,
                ..
            } => {
                let token = self.token_rng.gen();
                let command = Command::OpenSession {
                    nonce,
                    ttl_ms,
                    token,
                    owner,
                    principal: principal.map(|p| p.name().to_string()),
                };
                return self.propose(command, caller);
            }
            Request::Sessions { .. } => {
                let response = self.session_list(id);
                return self.answer(caller, response);
            }
            Request::RevokeSession {
                session_id, force, ..
            } => {
                // The ordinary revoke only marks the session (its locks stay held until its
                // holder stops and closes, or its lease runs out); `force` ends it at once.
                let command = if force {
                    Command::RevokeSession {
                        session: session_id,
                    }
                } else {
                    Command::MarkRevoked {
                        session: session_id,
                    }
                };
                return self.propose(command, caller);
            }
            Request::KeepAlive { session, token, .. } => {
                return self.keep_alive(session, token, principal, caller);
            }
            other => other,
        };
        let quota = Quota {
            max_file_bytes: self.config.limits.max_file_bytes,
            max_total_bytes: self.config.limits.max_total_file_bytes,
        };
        match session_command(request, quota) {
            Ok(SessionCommand {
                session,
                token,
                command,
            }) => match self.check_session(session, token, principal) {
                Ok(_) => self.propose(command, caller),
                Err(refusal) => self.refuse(caller, refusal),
            },
            Err(other) => {
                let message = format!("{} is not handled here", other.type_name());
                let response = Response::error(id, ErrorCode::Internal, message);
                self.answer(caller, response);
            }
        }
    }

    /// `KeepAlive` on the leader: moves the session's lease, answered without the log.
    fn keep_alive(
        &mut self,
        session: SessionId,
        token: u64,
        principal: Option<&Principal>,
        caller: Caller,
    ) {
        // Before catching up, even a known session may have an expiry committed but not yet
        // applied here: only a caught-up leader vouches for a lease.
        if !self.caught_up() {
            return self.refuse(caller, Refusal::NotReady);
        }
        match self.check_session(session, token, principal) {
            Ok(_) if self.lockspace.session(session).is_some_and(|s| s.revoked) => {
                // A revoked session's lease runs out: that is what frees its locks safely.
                self.answer(caller, revoked(caller.id));
            }
            Ok(ttl_ms) => {
                self.renew_lease(session, ttl_ms);
                let response = Response::KeptAlive {
                    id: caller.id,
                    ttl_ms,
                };
                self.answer(caller, response);
            }
            Err(refusal) => self.refuse(caller, refusal),
        }
    }

    /// Checks a session request against the lock space. The state machine checks again when
    /// the command applies; this spares the log requests that cannot succeed.
    ///
    /// A session's id is the log index of its `OpenSession`. So an unknown session with an id
    /// above this node's applied index may simply not be applied here yet (a leader that was
    /// deposed without knowing it, or one that has not caught up): that is `NotReady`, never
    /// `SessionExpired`. Only a caught-up leader that has applied past the session's creation
    /// and does not have it can say it is gone.
    ///
    /// With authentication on, the session must also be the principal's own (or the principal
    /// an admin): another principal's session is `PermissionDenied`, even with its token.
    /// Returns the session's TTL.
    fn check_session(
        &self,
        session: SessionId,
        token: u64,
        principal: Option<&Principal>,
    ) -> Result<u64, Refusal> {
        match self.lockspace.session(session) {
            Some(info) if info.token == token => match principal {
                Some(principal) if !principal.may_use_session(info.principal.as_deref()) => {
                    Err(Refusal::NotYours)
                }
                _ => Ok(info.ttl_ms),
            },
            _ if session > self.lockspace.applied_index() || !self.caught_up() => {
                Err(Refusal::NotReady)
            }
            _ => Err(Refusal::Expired),
        }
    }

    fn refuse(&mut self, caller: Caller, refusal: Refusal) {
        let response = match refusal {
            Refusal::Expired => session_expired(caller.id),
            Refusal::NotReady => not_ready(caller.id),
            Refusal::NotYours => Response::error(
                caller.id,
                ErrorCode::PermissionDenied,
                "this session was opened by another principal",
            ),
        };
        self.answer(caller, response);
    }

    /// Proposes a client's command; its entry's apply answers the caller.
    fn propose(&mut self, command: Command, caller: Caller) {
        let bytes = rmp_serde::to_vec_named(&command).expect("commands always serialize");
        match self.node.propose(bytes) {
            Ok((index, term)) => {
                self.pending.insert(index, Pending { term, caller });
            }
            Err(_) => {
                let response = self.not_leader(caller.id);
                self.answer(caller, response);
            }
        }
    }

    /// Proposes an internal command (an expiry); it has no client to answer.
    /// Returns false if the node refused it: it no longer leads (the next leader restarts
    /// every deadline), or it is handing leadership over (and may keep it if that fails).
    pub(super) fn propose_internal(&mut self, command: Command) -> bool {
        tracing::debug!(?command, "proposing expiry");
        let bytes = rmp_serde::to_vec_named(&command).expect("commands always serialize");
        let proposed = self.node.propose(bytes).is_ok();
        if !proposed {
            tracing::debug!("expiry not proposed: leadership is moving");
        }
        proposed
    }
}
