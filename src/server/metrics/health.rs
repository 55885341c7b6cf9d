//! Liveness (`/healthz`) and readiness (`/readyz`).
//!
//! **Alive** means the driver loop turns: it stamps [`Health::beat`] on every turn (it turns at
//! least once per tick), and `/healthz` fails once the stamp is older than [`STALE`]. A
//! deadlocked driver or a blocked runtime stops the stamps while the HTTP task may still
//! answer, which is exactly what a liveness probe must catch.
//!
//! **Ready** means the node knows a leader, is a member, and has applied the leader's commit
//! index as it learned it from the leader after starting: [`Readiness`] keeps the highest
//! commit index carried by the leader's `Append` and `Heartbeat` messages (zero is ignored: a
//! leader caps a heartbeat's commit at what it knows the follower holds, which is 0 for a node
//! it has just added) and, once the applied index reaches it, the node is caught up and stays
//! so; from then on only losing the leader makes it unready. A leader is ready once it has
//! applied its own commit index. A node started empty without `--bootstrap` is not ready until
//! it is added and catches up.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::raft::{Envelope, Message, NodeId};

/// A driver stamp older than this makes `/healthz` fail.
pub(crate) const STALE: Duration = Duration::from_secs(5);

/// Why a node is not ready, as the driver last decided (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadyState {
    /// Ready to serve.
    Ready,
    /// The node has not evaluated readiness yet (before its first tick).
    Starting,
    /// No leader is known (an election, or no quorum).
    NoLeader,
    /// The node is not in the membership (started empty, waiting to be added).
    NotMember,
    /// A leader is known but none of its messages carried a commit index yet.
    NotHeard,
    /// Applied index behind the leader's commit index as learned (the numbers are in
    /// [`Health`]).
    CatchingUp,
}

impl ReadyState {
    fn code(self) -> u8 {
        match self {
            ReadyState::Ready => 0,
            ReadyState::Starting => 1,
            ReadyState::NoLeader => 2,
            ReadyState::NotMember => 3,
            ReadyState::NotHeard => 4,
            ReadyState::CatchingUp => 5,
        }
    }

    fn from_code(code: u8) -> ReadyState {
        match code {
            0 => ReadyState::Ready,
            2 => ReadyState::NoLeader,
            3 => ReadyState::NotMember,
            4 => ReadyState::NotHeard,
            5 => ReadyState::CatchingUp,
            _ => ReadyState::Starting,
        }
    }
}

/// What the HTTP task reads: the driver's stamp and its readiness verdict, in atomics.
#[derive(Debug)]
pub(crate) struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` at the driver's last turn, plus one (0: never turned).
    beat_ms: AtomicU64,
    state: AtomicU8,
    applied: AtomicU64,
    target: AtomicU64,
}

impl Health {
    /// Not yet alive (no turn) and not ready.
    pub fn new() -> Health {
        Health {
            epoch: Instant::now(),
            beat_ms: AtomicU64::new(0),
            state: AtomicU8::new(ReadyState::Starting.code()),
            applied: AtomicU64::new(0),
            target: AtomicU64::new(0),
        }
    }

    /// The driver turned.
    pub fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.beat_ms.store(ms, Ordering::Relaxed);
    }

    /// `Ok` while the driver turned within `stale`; else why not.
    pub fn alive(&self, stale: Duration) -> Result<(), String> {
        let beat = self.beat_ms.load(Ordering::Relaxed);
        if beat == 0 {
            return Err("the driver has not started".into());
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let age = Duration::from_millis(now.saturating_sub(beat));
        if age > stale {
            return Err(format!(
                "the driver loop has not turned for {} ms",
                age.as_millis()
            ));
        }
        Ok(())
    }

    /// Records the driver's verdict (and the numbers behind a `CatchingUp`).
    pub fn set_ready(&self, state: ReadyState, applied: u64, target: u64) {
        self.applied.store(applied, Ordering::Relaxed);
        self.target.store(target, Ordering::Relaxed);
        self.state.store(state.code(), Ordering::Relaxed);
    }

    /// `Ok` when ready; else a short reason for the `/readyz` body.
    pub fn ready(&self) -> Result<(), String> {
        let applied = self.applied.load(Ordering::Relaxed);
        let target = self.target.load(Ordering::Relaxed);
        match ReadyState::from_code(self.state.load(Ordering::Relaxed)) {
            ReadyState::Ready => Ok(()),
            ReadyState::Starting => Err("starting".into()),
            ReadyState::NoLeader => Err("no leader known".into()),
            ReadyState::NotMember => {
                Err("not a member yet (waiting to be added: raftlock cluster add)".into())
            }
            ReadyState::NotHeard => Err("waiting for the leader's commit index".into()),
            ReadyState::CatchingUp => Err(format!(
                "catching up: applied {applied} of the leader's commit index {target}"
            )),
        }
    }
}

/// What readiness is decided from, read from the node by the driver.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// This node leads.
    pub is_leader: bool,
    /// This node is in the membership (voter or learner).
    pub member: bool,
    /// The node's commit index.
    pub commit: u64,
    /// The lock space's applied index.
    pub applied: u64,
}

/// The driver's side of readiness: the leader's commit index as heard, and whether the node
/// has caught up with it since it started.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    heard: u64,
    caught_up: bool,
}

impl Readiness {
    /// Notes the commit index a leader's message carries.
    pub fn heard(&mut self, envelope: &Envelope) {
        let commit = match &envelope.message {
            Message::Append { commit, .. } | Message::Heartbeat { commit, .. } => *commit,
            _ => return,
        };
        self.heard = self.heard.max(commit);
    }

    /// The verdict for `view`, with the applied and target indexes behind it.
    pub fn evaluate(&mut self, view: View) -> (ReadyState, u64, u64) {
        let state = if view.leader.is_none() {
            ReadyState::NoLeader
        } else if !view.member {
            ReadyState::NotMember
        } else if view.is_leader {
            if view.applied >= view.commit {
                ReadyState::Ready
            } else {
                ReadyState::CatchingUp
            }
        } else if self.caught_up {
            ReadyState::Ready
        } else if self.heard == 0 {
            ReadyState::NotHeard
        } else if view.applied >= self.heard {
            self.caught_up = true;
            ReadyState::Ready
        } else {
            ReadyState::CatchingUp
        };
        let target = if view.is_leader {
            view.commit
        } else {
            self.heard
        };
        (state, view.applied, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(commit: u64) -> Envelope {
        Envelope {
            from: 1,
            to: 2,
            term: 1,
            message: Message::Append {
                prev_index: 0,
                prev_term: 0,
                entries: Vec::new(),
                commit,
            },
        }
    }

    fn view(applied: u64) -> View {
        View {
            leader: Some(1),
            is_leader: false,
            member: true,
            commit: applied,
            applied,
        }
    }

    #[test]
    fn a_follower_is_ready_once_it_applied_what_the_leader_said_was_committed() {
        let mut readiness = Readiness::default();
        assert_eq!(readiness.evaluate(view(0)).0, ReadyState::NotHeard);
        readiness.heard(&append(0));
        assert_eq!(readiness.evaluate(view(0)).0, ReadyState::NotHeard);
        readiness.heard(&append(40));
        assert_eq!(
            readiness.evaluate(view(39)),
            (ReadyState::CatchingUp, 39, 40)
        );
        assert_eq!(readiness.evaluate(view(40)).0, ReadyState::Ready);
        // Caught up once: a later, higher commit does not make it unready...
        readiness.heard(&append(90));
        assert_eq!(readiness.evaluate(view(41)).0, ReadyState::Ready);
        // ...but losing the leader does.
        let lost = View {
            leader: None,
            ..view(41)
        };
        assert_eq!(readiness.evaluate(lost).0, ReadyState::NoLeader);
    }

    #[test]
    fn a_node_outside_the_membership_is_not_ready() {
        let mut readiness = Readiness::default();
        readiness.heard(&append(5));
        let outside = View {
            member: false,
            ..view(5)
        };
        assert_eq!(readiness.evaluate(outside).0, ReadyState::NotMember);
    }

    #[test]
    fn health_reports_a_stale_driver_and_the_reason_for_unreadiness() {
        let health = Health::new();
        assert!(health.alive(STALE).is_err(), "no turn yet");
        health.beat();
        assert!(health.alive(STALE).is_ok());
        health.set_ready(ReadyState::CatchingUp, 3, 9);
        let reason = health.ready().unwrap_err();
        assert!(
            reason.contains("applied 3") && reason.contains('9'),
            "{reason}"
        );
        health.set_ready(ReadyState::Ready, 9, 9);
        assert!(health.ready().is_ok());
    }
}
