//! The history of a run: every operation's invocation and completion (client, monotonic times in
//! microseconds since the run started, outcome, fence, offset) and every fault the nemesis
//! injected. The workers and the nemesis write it; the checker reads it afterwards.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use raftlock::client::LockMode;

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not completed (yet).
    Pending,
    /// Acknowledged by the cluster.
    Ok,
    /// Definitely not applied (the cluster said so, or nothing was sent).
    Fail(String),
    /// Indeterminate: it may or may not have taken effect (timeout, lost connection...).
    Info(String),
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Acquire `lock` in `mode`.
    Acquire { lock: String, mode: LockMode },
    /// Release `lock` (held with the op's fence).
    Release { lock: String },
    /// Append `data` to `file` under `lock` with the op's fence. `must_fail` names why the
    /// cluster has to refuse it (a stale fence, a shared grant, an expired session).
    Append {
        file: String,
        lock: String,
        data: Vec<u8>,
        must_fail: Option<&'static str>,
    },
    /// A linearizable read of `file` from `offset`; the op's `data`/`size` hold the answer.
    Read { file: String, offset: u64 },
    /// A linearizable listing of `lock`'s queue: the waiting sessions in FIFO order.
    Queue { lock: String, waiters: Vec<u64> },
    /// The negative control: a write to the harness's own resource (outside raftlock) by a
    /// client that believes it holds `lock` with the op's fence, without checking it.
    Unfenced { lock: String },
}

impl OpKind {
    /// A short name for tables.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Acquire { .. } => "acquire",
            OpKind::Release { .. } => "release",
            OpKind::Append {
                must_fail: None, ..
            } => "append",
            OpKind::Append { .. } => "append-must-fail",
            OpKind::Read { .. } => "read",
            OpKind::Queue { .. } => "queue-list",
            OpKind::Unfenced { .. } => "unfenced-write",
        }
    }
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Unique in the history (also written into appended records).
    pub id: u64,
    /// The worker, e.g. `fa-2`.
    pub client: String,
    /// The session it ran in (0 if none).
    pub session: u64,
    pub kind: OpKind,
    /// Microseconds since the run started.
    pub invoke: u64,
    /// Microseconds since the run started; `u64::MAX` while pending.
    pub complete: u64,
    pub outcome: Outcome,
    /// The grant's fence (acquire result; fence used by release, append, unfenced write).
    pub fence: Option<u64>,
    /// Where an acknowledged append was written.
    pub offset: Option<u64>,
    /// The file size an append or read reported.
    pub size: Option<u64>,
    /// The bytes a read returned.
    pub data: Vec<u8>,
    /// Every answer offset seen for this append across resends (exactly-once workload).
    pub answers: Vec<u64>,
}

impl Op {
    /// A new op for hand-made histories and for [`History::begin`].
    pub fn new(id: u64, client: &str, session: u64, kind: OpKind, invoke: u64) -> Op {
        Op {
            id,
            client: client.to_string(),
            session,
            kind,
            invoke,
            complete: u64::MAX,
            outcome: Outcome::Pending,
            fence: None,
            offset: None,
            size: None,
            data: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// True if acknowledged.
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// The kinds of fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    KillLeader,
    KillTwo,
    KillFollower,
    PauseLeaderElection,
    PauseLeaderTtl,
    PartitionMajority,
    IsolateLeader,
    Bridge,
    Ring,
    LeaderCannotReceive,
    LeaderCannotSend,
    DropClientConns,
    RemoveReAdd,
    TruncateAtRecord,
    TruncateMidRecord,
    ZeroTail,
    FlipBit,
    AppendGarbage,
}

impl FaultKind {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillTwo => "kill-two",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PauseLeaderElection => "pause-leader>election",
            FaultKind::PauseLeaderTtl => "pause-leader>ttl",
            FaultKind::PartitionMajority => "partition-maj/min",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Bridge => "partition-bridge",
            FaultKind::Ring => "partition-ring",
            FaultKind::LeaderCannotReceive => "one-way:leader-cannot-receive",
            FaultKind::LeaderCannotSend => "one-way:leader-cannot-send",
            FaultKind::DropClientConns => "drop-client-conns",
            FaultKind::RemoveReAdd => "member:remove+wipe+re-add",
            FaultKind::TruncateAtRecord => "disk:truncate-at-record",
            FaultKind::TruncateMidRecord => "disk:truncate-mid-record",
            FaultKind::ZeroTail => "disk:zero-tail",
            FaultKind::FlipBit => "disk:flip-bit-middle",
            FaultKind::AppendGarbage => "disk:append-garbage",
        }
    }

    /// The recovery class of a fault that takes the leader away, for the failover figures.
    pub fn leader_fault_class(self) -> Option<&'static str> {
        match self {
            FaultKind::KillLeader | FaultKind::KillTwo => Some("leader kill"),
            FaultKind::PauseLeaderElection | FaultKind::PauseLeaderTtl => Some("leader pause"),
            FaultKind::LeaderCannotReceive | FaultKind::LeaderCannotSend => {
                Some("one-way partition")
            }
            FaultKind::IsolateLeader => Some("isolated leader"),
            _ => None,
        }
    }
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Microseconds since the run started.
    pub start: u64,
    /// When it was healed.
    pub end: u64,
    /// The nodes it hit.
    pub nodes: Vec<u64>,
    /// What happened (e.g. "restart refused: corrupt log; wiped and re-added").
    pub note: String,
}

/// The shared, append-only history of one run.
#[derive(Clone)]
pub struct History {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    faults: Vec<Fault>,
}

/// What a worker learns when it completes an op.
#[derive(Clone, Debug, Default)]
pub struct Done {
    pub fence: Option<u64>,
    pub offset: Option<u64>,
    pub size: Option<u64>,
    pub data: Vec<u8>,
    pub answers: Vec<u64>,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// Microseconds since the run started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an invocation and returns the op id.
    pub fn begin(&self, client: &str, session: u64, kind: OpKind, fence: Option<u64>) -> u64 {
        let now = self.now();
        let mut inner = self.lock();
        let id = inner.ops.len() as u64 + 1;
        let mut op = Op::new(id, client, session, kind, now);
        op.fence = fence;
        inner.ops.push(op);
        id
    }

    /// Records the invocation of an append of a fresh record (naming the op) and returns the
    /// op id and the record's bytes.
    pub fn begin_append(
        &self,
        client: &str,
        session: u64,
        file: &str,
        lock: &str,
        fence: u64,
        must_fail: Option<&'static str>,
    ) -> (u64, Vec<u8>) {
        let now = self.now();
        let mut inner = self.lock();
        let id = inner.ops.len() as u64 + 1;
        let data = record(id, client, fence);
        let kind = OpKind::Append {
            file: file.to_string(),
            lock: lock.to_string(),
            data: data.clone(),
            must_fail,
        };
        let mut op = Op::new(id, client, session, kind, now);
        op.fence = Some(fence);
        inner.ops.push(op);
        (id, data)
    }

    /// Records the completion of op `id`.
    pub fn end(&self, id: u64, outcome: Outcome, done: Done) {
        let now = self.now();
        let mut inner = self.lock();
        let op = &mut inner.ops[id as usize - 1];
        op.complete = now;
        op.outcome = outcome;
        if done.fence.is_some() {
            op.fence = done.fence;
        }
        op.offset = done.offset;
        op.size = done.size;
        op.data = done.data;
        op.answers = done.answers;
    }

    /// Records the completion of a queue listing `id` with the waiters it saw.
    pub fn end_queue(&self, id: u64, seen: Vec<u64>) {
        let now = self.now();
        let mut inner = self.lock();
        let op = &mut inner.ops[id as usize - 1];
        op.complete = now;
        op.outcome = Outcome::Ok;
        if let OpKind::Queue { waiters, .. } = &mut op.kind {
            *waiters = seen;
        }
    }

    /// Records a fault (once healed).
    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> (Vec<Op>, Vec<Fault>) {
        let inner = self.lock();
        (inner.ops.clone(), inner.faults.clone())
    }
}

/// The bytes an append writes: one line that names the op, so the checker can find every
/// record in the final files.
pub fn record(op_id: u64, client: &str, fence: u64) -> Vec<u8> {
    format!("op={op_id} c={client} f={fence}\n").into_bytes()
}

/// The op id and fence of a record line (without its newline), if it is one.
pub fn parse_record(line: &[u8]) -> Option<(u64, u64)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut op = None;
    let mut fence = None;
    for word in line.split(' ') {
        if let Some(v) = word.strip_prefix("op=") {
            op = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("f=") {
            fence = v.parse().ok();
        }
    }
    Some((op?, fence?))
}
