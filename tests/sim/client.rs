//! Simulated clients: each opens a session (nonce, retried), keeps it alive every ttl/3 at the
//! node it believes leads, and loops: acquire (exclusive or shared; try-once, bounded or
//! unbounded wait; sometimes with a hold limit), a fenced append of a unique payload (exclusive
//! only; sometimes with a deliberately stale fence), then release. A timed-out request is sent
//! again, to the next node, with the SAME seq. Sometimes a holder pauses longer than its TTL and
//! then appends with its old fence.

use raftlock::lockspace::{Command, Fence, LockMode, Outcome, Seq, SessionId};
use raftlock::raft::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::network::{Addr, Payload};

/// A client request to a node.
#[derive(Clone, Debug)]
pub enum Request {
    /// Open a session (the leader draws the token).
    Open { nonce: u64, ttl_ms: u64 },
    /// Renew a session's lease (not logged).
    KeepAlive { session: SessionId },
    /// A session command, proposed as is.
    Cmd(Command),
}

/// A node's answer.
#[derive(Clone, Debug)]
pub enum Response {
    /// The outcome of the applied command (or of the notification that resolved it).
    Outcome(Outcome),
    /// This node does not lead; maybe it knows who does.
    NotLeader(Option<NodeId>),
    /// The proposal's entry was replaced by another term's: unknown result, retry.
    Timeout,
    /// The leader is not caught up enough to answer (keep-alive of an unknown session).
    NotReady,
    /// The keep-alive's answer: is the session alive on the leader?
    KeepAlive { session: SessionId, alive: bool },
}

/// Parameters shared by every client of a seed.
#[derive(Clone, Debug)]
pub struct ClientParams {
    pub ttl_ms: u64,
    pub locks: usize,
    /// Probability that a fresh exclusive holder pauses longer than its TTL before appending.
    pub pause_holder: f64,
    /// Probability of a deliberately stale fence on an append.
    pub stale_fence: f64,
    /// Probability of a hold limit on an acquire.
    pub hold_limit: f64,
    /// Probability that a holder with a hold limit extends it late, at 80-100 % of the limit
    /// (so the Extend races the leader's expiry).
    pub extend: f64,
}

/// An acknowledged grant.
#[derive(Clone, Debug)]
pub struct AckGrant {
    pub lock: String,
    pub mode: LockMode,
    pub fence: Fence,
    pub session: SessionId,
}

/// An acknowledged append.
#[derive(Clone, Debug)]
pub struct AckAppend {
    pub file: String,
    pub payload: Vec<u8>,
    pub offset: u64,
}

/// What the current operation is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    Acquire {
        lock: String,
        mode: LockMode,
    },
    /// `stale`: the fence is deliberately not the grant's; `foreign`: the fence was granted to
    /// another (expired) session of this client.
    Append {
        stale: bool,
        foreign: bool,
    },
    Extend,
    /// A `Truncate` to `u64::MAX` (which cuts nothing, so the acknowledged appends stay where
    /// they were acknowledged) or a `Delete` of a file nobody appends to (`NotFound`): both
    /// exercise the fence check, the exactly-once table and their replication under faults.
    /// `stale`: the fence is deliberately not the grant's, so a success is a violation.
    FileOp {
        stale: bool,
    },
    Release,
    Close,
}

/// The operation in progress.
#[derive(Clone, Debug)]
struct Op {
    id: u64,
    kind: Kind,
    req: Request,
    /// When to send it (again).
    send_at: Option<u64>,
    /// When to give up on the current try and send again to the next node.
    retry_at: u64,
    attempts: u32,
    started: u64,
}

/// A grant the client believes it holds.
#[derive(Clone, Debug)]
struct Held {
    lock: String,
    mode: LockMode,
    fence: Fence,
    /// When to extend the hold limit, if this grant is to be extended.
    extend_at: Option<u64>,
}

/// One client.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    rng: SmallRng,
    /// Draws the Extend decisions.
    extend_rng: SmallRng,
    params: ClientParams,
    nodes: Vec<NodeId>,
    guess: usize,
    /// The session it believes it has: (id, ttl).
    pub session: Option<SessionId>,
    nonce: Option<u64>,
    next_seq: Seq,
    next_op: u64,
    op: Option<Op>,
    held: Option<Held>,
    /// The append of the current grant was done (or tried).
    op_done_append: bool,
    op_done_file: bool,
    /// An append to retry under a new session with the fence of an expired one.
    foreign_append: Option<(String, Fence)>,
    next_keepalive: u64,
    next_action: u64,
    pub paused_until: Option<u64>,
    inbox: Vec<(u64, Response)>,
    /// Stop starting new cycles (healing phase); finish the current one.
    pub quiesce: bool,
    pub acked_grants: Vec<AckGrant>,
    pub acked_appends: Vec<AckAppend>,
    /// Every payload ever sent (acknowledged or not).
    pub sent_payloads: Vec<Vec<u8>>,
    /// Client-side violations (an acknowledgement that must not happen).
    pub violations: Vec<String>,
    /// Operations completed.
    pub completed: u64,
}

const US: u64 = 1_000;

impl Client {
    /// A client of the cluster `nodes`.
    pub fn new(id: u64, rng: SmallRng, params: ClientParams, nodes: Vec<NodeId>) -> Client {
        // Its own stream, so clients that never extend replay as before it existed.
        let extend_rng = SmallRng::seed_from_u64(rng.clone().gen::<u64>() ^ 0x6578_7465_6e64);
        let mut c = Client {
            id,
            rng,
            extend_rng,
            params,
            guess: 0,
            nodes,
            session: None,
            nonce: None,
            next_seq: 1,
            next_op: 1,
            op: None,
            held: None,
            op_done_append: false,
            op_done_file: false,
            foreign_append: None,
            next_keepalive: u64::MAX,
            next_action: 0,
            paused_until: None,
            inbox: Vec::new(),
            quiesce: false,
            acked_grants: Vec::new(),
            acked_appends: Vec::new(),
            sent_payloads: Vec::new(),
            violations: Vec::new(),
            completed: 0,
        };
        c.guess = c.rng.gen_range(0..c.nodes.len());
        c.next_action = c.rng.gen_range(0..50) * US * 10;
        c
    }

    /// True if an operation is in progress or a lock is believed held.
    pub fn busy(&self) -> bool {
        self.op.is_some() || self.held.is_some() || self.foreign_append.is_some()
    }

    /// A description of the pending operation (for failures).
    pub fn pending(&self) -> String {
        match &self.op {
            Some(op) => format!(
                "{:?} op {} started at {} ms, {} tries",
                op.kind,
                op.id,
                op.started / US,
                op.attempts
            ),
            None => format!("none (holding {:?})", self.held),
        }
    }

    /// The session of a currently paused client that believes it holds a lock.
    pub fn paused_holder(&self, now: u64) -> Option<SessionId> {
        match (self.paused_until, &self.held, self.session) {
            (Some(until), Some(_), Some(s)) if until > now => Some(s),
            _ => None,
        }
    }

    /// The next time this client wants to act.
    pub fn next_time(&self) -> u64 {
        if let Some(until) = self.paused_until {
            return until;
        }
        let mut t = self.next_keepalive;
        match &self.op {
            Some(op) => {
                t = t.min(op.retry_at);
                if let Some(s) = op.send_at {
                    t = t.min(s);
                }
            }
            None if !self.quiesce || self.busy() => t = t.min(self.next_action),
            None => {}
        }
        t
    }

    fn leader(&self) -> NodeId {
        self.nodes[self.guess]
    }

    fn next_node(&mut self) {
        self.guess = (self.guess + 1) % self.nodes.len();
    }

    fn seq(&mut self) -> Seq {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn start(&mut self, now: u64, kind: Kind, req: Request) {
        let id = self.next_op;
        self.next_op += 1;
        self.op = Some(Op {
            id,
            kind,
            req,
            send_at: Some(now),
            retry_at: u64::MAX,
            attempts: 0,
            started: now,
        });
    }

    fn timeout_for(&self, op: &Op) -> u64 {
        match &op.req {
            Request::Cmd(Command::Acquire { wait_ms, .. }) => match wait_ms {
                Some(ms) => (ms + 400) * US,
                None => 1_500 * US,
            },
            _ => 400 * US,
        }
    }

    /// Acts at `now`: resumes from a pause, sends keep-alives, (re)sends the current
    /// operation, or starts the next one. Messages go to `out`.
    pub fn wake(&mut self, now: u64, out: &mut Vec<(Addr, Addr, Payload)>) {
        if let Some(until) = self.paused_until {
            if until > now {
                return;
            }
            self.paused_until = None;
            for (op, resp) in std::mem::take(&mut self.inbox) {
                self.on_response(now, op, resp, out);
            }
        }
        if now >= self.next_keepalive {
            if let Some(session) = self.session {
                self.send(out, 0, Request::KeepAlive { session });
                self.next_keepalive = now + self.params.ttl_ms * US / 3;
            } else {
                self.next_keepalive = u64::MAX;
            }
        }
        if self.op.is_none() && now >= self.next_action && (!self.quiesce || self.busy()) {
            self.next_step(now);
        }
        let timeout = self.op.as_ref().map(|op| self.timeout_for(op));
        if let (Some(op), Some(timeout)) = (self.op.as_mut(), timeout) {
            if now >= op.retry_at {
                // No answer: try the next node, same request, same seq.
                self.guess = (self.guess + 1) % self.nodes.len();
                op.send_at = Some(now);
            }
            if op.send_at.is_some_and(|t| t <= now) {
                op.send_at = None;
                op.attempts += 1;
                op.retry_at = now + timeout;
                let (id, req) = (op.id, op.req.clone());
                self.send(out, id, req);
            }
        }
    }

    fn send(&mut self, out: &mut Vec<(Addr, Addr, Payload)>, op: u64, req: Request) {
        out.push((
            Addr::Client(self.id),
            Addr::Node(self.leader()),
            Payload::Request { op, req },
        ));
    }

    /// Chooses the next operation of the cycle.
    fn next_step(&mut self, now: u64) {
        let Some(session) = self.session else {
            let nonce = *self.nonce.get_or_insert_with(|| self.rng.gen());
            let ttl_ms = self.params.ttl_ms;
            self.start(now, Kind::Open, Request::Open { nonce, ttl_ms });
            return;
        };
        if let Some((lock, fence)) = self.foreign_append.take() {
            // The fence of a grant to an expired session of ours: must be refused.
            let seq = self.seq();
            let data = self.payload(seq);
            let cmd = Command::Append {
                session,
                seq,
                file: format!("f-{lock}"),
                lock,
                fence,
                data,
                quota: None,
            };
            self.start(
                now,
                Kind::Append {
                    stale: true,
                    foreign: true,
                },
                Request::Cmd(cmd),
            );
            return;
        }
        if let Some(held) = self.held.clone() {
            if let Some(at) = held.extend_at {
                if now < at {
                    self.next_action = at;
                    return;
                }
                if let Some(h) = self.held.as_mut() {
                    h.extend_at = None;
                }
                let seq = self.seq();
                let hold_ms = self.extend_rng.gen_range(100..2_000);
                let cmd = Command::Extend {
                    session,
                    seq,
                    lock: held.lock.clone(),
                    fence: held.fence,
                    hold_ms,
                };
                self.start(now, Kind::Extend, Request::Cmd(cmd));
                return;
            }
            let appended = self.op_done_append;
            if held.mode == LockMode::Exclusive && !appended {
                self.op_done_append = true;
                let seq = self.seq();
                let stale = self.rng.gen_bool(self.params.stale_fence);
                let fence = if stale {
                    if self.rng.gen_bool(0.5) {
                        held.fence.saturating_sub(1)
                    } else {
                        held.fence + 1 + self.rng.gen_range(0..3)
                    }
                } else {
                    held.fence
                };
                let data = self.payload(seq);
                let cmd = Command::Append {
                    session,
                    seq,
                    file: format!("f-{}", held.lock),
                    lock: held.lock.clone(),
                    fence,
                    data,
                    quota: None,
                };
                self.start(
                    now,
                    Kind::Append {
                        stale,
                        foreign: false,
                    },
                    Request::Cmd(cmd),
                );
            } else if held.mode == LockMode::Exclusive
                && !self.op_done_file
                && self.rng.gen_bool(0.3)
            {
                self.op_done_file = true;
                let seq = self.seq();
                let stale = self.rng.gen_bool(self.params.stale_fence);
                let fence = if stale {
                    held.fence.saturating_sub(1)
                } else {
                    held.fence
                };
                let cmd = if self.rng.gen_bool(0.5) {
                    Command::Truncate {
                        session,
                        seq,
                        file: format!("f-{}", held.lock),
                        lock: held.lock.clone(),
                        fence,
                        size: u64::MAX,
                    }
                } else {
                    Command::Delete {
                        session,
                        seq,
                        file: format!("gone-{}", held.lock),
                        lock: held.lock.clone(),
                        fence,
                    }
                };
                self.start(now, Kind::FileOp { stale }, Request::Cmd(cmd));
            } else {
                let seq = self.seq();
                let cmd = Command::Release {
                    session,
                    seq,
                    lock: held.lock.clone(),
                };
                self.start(now, Kind::Release, Request::Cmd(cmd));
            }
            return;
        }
        if self.rng.gen_bool(0.03) {
            let seq = self.seq();
            let cmd = Command::CloseSession { session, seq };
            self.start(now, Kind::Close, Request::Cmd(cmd));
            return;
        }
        let lock = format!("L{}", self.rng.gen_range(0..self.params.locks));
        let mode = if self.rng.gen_bool(0.75) {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let wait_ms = match self.rng.gen_range(0..10) {
            0..=2 => Some(0),
            3..=5 => Some(self.rng.gen_range(50..1_000)),
            _ => None,
        };
        let hold_ms = self
            .rng
            .gen_bool(self.params.hold_limit)
            .then(|| self.rng.gen_range(100..2_000));
        let seq = self.seq();
        let cmd = Command::Acquire {
            session,
            seq,
            lock: lock.clone(),
            mode,
            wait_ms,
            hold_ms,
        };
        self.op_done_append = false;
        self.op_done_file = false;
        self.start(now, Kind::Acquire { lock, mode }, Request::Cmd(cmd));
    }

    fn payload(&mut self, seq: Seq) -> Vec<u8> {
        let p = format!("<c{}s{}>", self.id, seq).into_bytes();
        self.sent_payloads.push(p.clone());
        p
    }

    fn finish(&mut self, now: u64) {
        self.op = None;
        self.completed += 1;
        self.next_action = now + self.rng.gen_range(0..30) * US;
    }

    fn lose_session(&mut self) {
        if let Some(held) = self.held.take() {
            if held.mode == LockMode::Exclusive && self.rng.gen_bool(0.5) {
                self.foreign_append = Some((held.lock, held.fence));
            }
        }
        self.session = None;
        self.nonce = None;
        self.next_keepalive = u64::MAX;
    }

    /// Handles a node's answer to operation `op_id` (0: a keep-alive).
    pub fn on_response(
        &mut self,
        now: u64,
        op_id: u64,
        resp: Response,
        _out: &mut Vec<(Addr, Addr, Payload)>,
    ) {
        if self.paused_until.is_some_and(|t| t > now) {
            self.inbox.push((op_id, resp));
            return;
        }
        if let Response::KeepAlive { session, alive } = resp {
            if !alive && self.session == Some(session) {
                self.lose_session();
            }
            return;
        }
        let Some(op) = self.op.as_mut() else { return };
        if op.id != op_id {
            return;
        }
        let outcome = match resp {
            Response::NotLeader(hint) => {
                op.send_at = Some(now + 10 * US);
                match hint.and_then(|h| self.nodes.iter().position(|n| *n == h)) {
                    Some(i) if i != self.guess => self.guess = i,
                    _ => self.next_node(),
                }
                return;
            }
            Response::Timeout => {
                op.send_at = Some(now + US);
                return;
            }
            Response::NotReady => {
                op.send_at = Some(now + 30 * US);
                return;
            }
            Response::KeepAlive { .. } => return,
            Response::Outcome(o) => o,
        };
        let kind = op.kind.clone();
        let req = op.req.clone();
        match (kind, outcome) {
            (_, Outcome::Queued { .. }) => {
                // The leader answers queued acquires when they resolve; a replayed Queued
                // means we are re-attached: keep waiting.
            }
            (Kind::Open, Outcome::SessionOpened { session, .. }) => {
                self.session = Some(session);
                self.nonce = None;
                self.next_keepalive = now + self.params.ttl_ms * US / 3;
                self.finish(now);
            }
            (Kind::Acquire { lock, mode }, Outcome::Granted { fence }) => {
                let session = self.session_of(&req);
                self.acked_grants.push(AckGrant {
                    lock: lock.clone(),
                    mode,
                    fence,
                    session,
                });
                if self.session == Some(session) {
                    let hold_ms = match &req {
                        Request::Cmd(Command::Acquire { hold_ms, .. }) => *hold_ms,
                        _ => None,
                    };
                    let extend = self.params.extend > 0.0
                        && hold_ms.is_some()
                        && self.extend_rng.gen_bool(self.params.extend);
                    let extend_at = hold_ms
                        .filter(|_| extend)
                        .map(|hold| now + hold * US * self.extend_rng.gen_range(80..100) / 100);
                    self.held = Some(Held {
                        lock,
                        mode,
                        fence,
                        extend_at,
                    });
                    if mode == LockMode::Exclusive && self.rng.gen_bool(self.params.pause_holder) {
                        // Pause longer than the lease, still believing we hold the lock.
                        let ms = self.params.ttl_ms * self.rng.gen_range(12..30) / 10;
                        self.paused_until = Some(now + ms * US);
                    }
                }
                self.finish(now);
            }
            (Kind::Append { stale, foreign }, Outcome::Appended { offset, .. }) => {
                if let Request::Cmd(Command::Append { file, data, .. }) = &req {
                    if stale {
                        self.violations.push(format!(
                            "client {}: append with a {} fence acknowledged ({:?})",
                            self.id,
                            if foreign { "foreign" } else { "wrong" },
                            req
                        ));
                    }
                    self.acked_appends.push(AckAppend {
                        file: file.clone(),
                        payload: data.clone(),
                        offset,
                    });
                }
                self.finish(now);
            }
            (Kind::Append { .. }, Outcome::StaleFence) => {
                self.finish(now);
            }
            (Kind::FileOp { stale }, outcome) => {
                let wrong = match outcome {
                    // Nobody ever appends to the file a Delete names.
                    Outcome::Deleted { .. } => true,
                    // The fence is checked before the file: a stale one never gets this far.
                    Outcome::Truncated { .. } | Outcome::NotFound => stale,
                    _ => false,
                };
                if wrong {
                    self.violations.push(format!(
                        "client {}: {req:?} (stale fence: {stale}) answered {outcome:?}",
                        self.id
                    ));
                }
                if outcome == Outcome::SessionExpired && self.session == Some(self.session_of(&req))
                {
                    self.lose_session();
                }
                self.finish(now);
            }
            (_, Outcome::SessionExpired) => {
                if self.session == Some(self.session_of(&req)) {
                    self.lose_session();
                }
                self.finish(now);
            }
            (Kind::Extend, Outcome::StaleFence) => {
                // The hold limit ended first: the grant is gone.
                self.held = None;
                self.finish(now);
            }
            (Kind::Release, _) => {
                self.held = None;
                self.finish(now);
            }
            (Kind::Close, _) => {
                self.held = None;
                self.session = None;
                self.next_keepalive = u64::MAX;
                self.finish(now);
            }
            (_, _) => {
                // Busy, TimedOut, NotHolder, Conflict, SequenceTooOld, ...: the cycle ends.
                self.finish(now);
            }
        }
    }

    fn session_of(&self, req: &Request) -> SessionId {
        match req {
            Request::Cmd(
                Command::Acquire { session, .. }
                | Command::Append { session, .. }
                | Command::Release { session, .. }
                | Command::Extend { session, .. }
                | Command::Truncate { session, .. }
                | Command::Delete { session, .. }
                | Command::CloseSession { session, .. },
            ) => *session,
            _ => 0,
        }
    }
}
