//! A simulated raftlockd: the real Raft `Node`, the real `LockSpace`, a simulated disk, and
//! the leader-side logic of the daemon (proposals, answers on apply, lease/wait/hold deadlines
//! on the host's own skewed clock, snapshots every K applied entries).

use std::collections::{BTreeMap, BTreeSet};

use raftlock::lockspace::{Command, Fence, LockMode, LockSpace, Outcome, Seq, SessionId};
use raftlock::raft::{
    Config, EntryData, Index, Membership, Node, NodeId, Ready, Role, Snapshot, Term,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::{Request, Response};
use crate::disk::Disk;
use crate::invariants::{chain, fnv, holder_fences, ApplyCtx, Checker, Shadow};
use crate::network::{Addr, Net, Packet, Payload};
use crate::trace::Trace;

/// Where an armed crash strikes inside the next `Ready` that writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the writes, before the fsync: unsynced writes are lost (or torn).
    BeforeFsync,
    /// After the fsync, before the persisted messages leave.
    AfterFsync,
    /// After the persisted messages, before applying.
    BeforeApply,
    /// Before the fsync of a Ready that grants a vote to another node; the node then restarts
    /// at once (a vote must survive that: it must be durable before it is sent).
    VoteBeforeFsync,
}

/// Up, down (crashed, restarts at a time) or paused (stopped, resumes at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Up,
    Down { until: u64 },
    Paused { until: u64 },
}

/// What the world passes to a host's handlers.
pub struct Ctx<'a> {
    pub now: u64,
    pub net: &'a mut Net,
    pub check: &'a mut Checker,
    pub trace: &'a mut Trace,
}

/// Per-seed host parameters.
#[derive(Clone, Debug)]
pub struct HostParams {
    pub snapshot_every: u64,
    /// Most entries per AppendEntries (small values make leaders count old-term entries
    /// one by one, the figure-8 shape).
    pub max_entries: usize,
    pub torn_writes: bool,
    /// Apply committed entries (and install a received snapshot) before this node's own write
    /// and fsync, as the daemon does (thesis §10.2.1); otherwise after them, in the strict
    /// order of the `Ready` contract. A crash before the fsync then loses writes whose entries
    /// were already applied and answered.
    pub early_apply: bool,
    /// The core's `eager_commit` (the daemon runs with it off).
    pub eager_commit: bool,
}

/// What a leader keeps in memory.
#[derive(Debug, Default)]
struct LeaderSide {
    term: Term,
    /// Proposals waiting for their entry to apply: index -> (term, client, op).
    pending: BTreeMap<Index, (Term, u64, u64)>,
    /// Queued acquires waiting for a notification: (session, seq) -> (client, op).
    waiting: BTreeMap<(SessionId, Seq), (u64, u64)>,
    /// Lease deadlines (local ms).
    sessions: BTreeMap<SessionId, u64>,
    /// Wait deadlines by (session, seq, lock).
    waits: BTreeMap<(SessionId, Seq, String), u64>,
    /// Hold deadlines by (session, lock, fence).
    holds: BTreeMap<(SessionId, String, Fence), u64>,
    /// Expiries proposed, by a key, at a local time (re-proposed after a while).
    proposed: BTreeMap<String, u64>,
    /// An entry of this term has been applied here (the state is caught up).
    caught_up: bool,
}

/// One host.
#[derive(Debug)]
pub struct Host {
    pub id: NodeId,
    /// Clock rate in permille of real time (skew).
    pub rate: u64,
    pub node: Option<Node>,
    pub space: LockSpace,
    pub disk: Disk,
    pub shadow: Shadow,
    pub life: Life,
    inbox: Vec<Packet>,
    pub next_tick: u64,
    rng: SmallRng,
    params: HostParams,
    membership: Membership,
    pub crash_armed: Option<(CrashPoint, u64)>,
    /// Commit and applied indexes seen at the last check (this life), and the highest
    /// applied ever (all lives).
    pub seen_commit: Index,
    pub seen_applied: Index,
    pub highest_applied: Index,
    lead: Option<LeaderSide>,
    pub restarts: u32,
}

const US: u64 = 1_000;

impl Host {
    /// A host with an empty disk, started.
    pub fn new(
        id: NodeId,
        rate: u64,
        membership: Membership,
        params: HostParams,
        seed: u64,
    ) -> Host {
        let mut h = Host {
            id,
            rate,
            node: None,
            space: LockSpace::new(),
            disk: Disk::default(),
            shadow: Shadow::default(),
            life: Life::Down { until: 0 },
            inbox: Vec::new(),
            next_tick: 0,
            rng: SmallRng::seed_from_u64(seed),
            params,
            membership,
            crash_armed: None,
            seen_commit: 0,
            seen_applied: 0,
            highest_applied: 0,
            lead: None,
            restarts: 0,
        };
        h.next_tick = h.rng.gen_range(0..h.tick_us());
        h
    }

    /// Global µs between two ticks of this host's clock (10 ms local).
    pub fn tick_us(&self) -> u64 {
        10_000 * 1_000 / self.rate
    }

    /// This host's clock in ms.
    fn local_ms(&self, now: u64) -> u64 {
        now / US * self.rate / 1_000
    }

    /// The next time this host needs to act.
    pub fn next_time(&self) -> u64 {
        let t = match self.life {
            Life::Up => self.next_tick,
            Life::Down { until } | Life::Paused { until } => until,
        };
        match self.crash_armed {
            Some((_, deadline)) if self.life == Life::Up => t.min(deadline),
            _ => t,
        }
    }

    /// True if the node leads (in its own view).
    pub fn leading(&self) -> Option<Term> {
        let node = self.node.as_ref()?;
        (node.role() == Role::Leader).then(|| node.term())
    }

    /// The node's config.
    fn config(&self) -> Config {
        let mut c = Config::new(self.id);
        c.bootstrap = Some(self.membership.clone());
        c.max_entries_per_append = self.params.max_entries;
        c.eager_commit = self.params.eager_commit;
        c
    }

    /// (Re)starts the node from the durable disk.
    pub fn start(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let rec = self.disk.recover();
        let snap_index = rec.snapshot.as_ref().map_or(0, |s| s.meta.index);
        self.space = match &rec.snapshot {
            Some(s) => LockSpace::restore(&s.data)
                .map_err(|e| format!("n{}: durable snapshot does not restore: {e}", self.id))?,
            None => LockSpace::new(),
        };
        ctx.check
            .restart_continuity(self.id, snap_index, self.highest_applied, &self.space)?;
        // The shadow log: the durable snapshot, then the durable entries.
        let mut shadow = Shadow {
            base: snap_index,
            base_term: rec.snapshot.as_ref().map_or(0, |s| s.meta.term),
            base_chain: 0,
            entries: Vec::new(),
        };
        if let Some(s) = &rec.snapshot {
            shadow.base = s.meta.index;
            shadow.base_term = s.meta.term;
            // log_matching resets the shadow from the snapshot's known chain.
            ctx.check
                .log_matching(self.id, &mut shadow, Some(s), None, &[])?;
        }
        ctx.check
            .log_matching(self.id, &mut shadow, None, None, &rec.entries)?;
        self.shadow = shadow;
        let seed = self.rng.gen();
        let node = Node::new(self.config(), rec, seed);
        self.seen_commit = node.commit_index();
        self.seen_applied = node.applied_index();
        self.node = Some(node);
        self.life = Life::Up;
        self.lead = None;
        self.crash_armed = None;
        self.inbox.clear();
        self.next_tick = ctx.now + self.rng.gen_range(0..self.tick_us());
        ctx.trace.log(ctx.now, || {
            format!(
                "n{} start: snapshot {snap_index}, commit {}",
                self.id, self.seen_commit
            )
        });
        self.drive(ctx)
    }

    /// Crashes the node: volatile state and unsynced writes are gone.
    pub fn crash(&mut self, ctx: &mut Ctx<'_>, down_for: u64) -> Result<(), String> {
        let torn = self.params.torn_writes;
        let lost = self.disk.crash(&mut self.rng, torn)?;
        // A torn write may have kept a received snapshot: committed state, now durable.
        self.highest_applied = self.highest_applied.max(self.disk.durable().snap_index());
        ctx.check.counters.crashes += 1;
        if lost > 0 {
            ctx.check.counters.lost_writes += 1;
        }
        ctx.trace.log(ctx.now, || {
            format!(
                "n{} CRASH ({lost} unsynced writes lost), down {} ms",
                self.id,
                down_for / US
            )
        });
        self.node = None;
        self.lead = None;
        self.inbox.clear();
        self.crash_armed = None;
        self.restarts += 1;
        self.life = Life::Down {
            until: ctx.now + down_for,
        };
        Ok(())
    }

    /// Acts at `now`: restart, resume, tick, or an armed crash that found no write to hit.
    pub fn wake(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        match self.life {
            Life::Down { until } if until <= ctx.now => return self.start(ctx),
            Life::Paused { until } if until <= ctx.now => {
                self.life = Life::Up;
                ctx.trace.log(ctx.now, || {
                    format!("n{} resumes ({} queued)", self.id, self.inbox.len())
                });
                for p in std::mem::take(&mut self.inbox) {
                    self.deliver(ctx, p)?;
                    if self.life != Life::Up {
                        return Ok(());
                    }
                }
                self.next_tick = ctx.now;
                return Ok(());
            }
            Life::Up => {}
            _ => return Ok(()),
        }
        if let Some((point, deadline)) = self.crash_armed {
            if deadline <= ctx.now && point == CrashPoint::VoteBeforeFsync {
                self.crash_armed = None;
            } else if deadline <= ctx.now {
                let down = self.rng.gen_range(100..2_000) * US;
                return self.crash(ctx, down);
            }
        }
        if self.next_tick <= ctx.now {
            self.next_tick += self.tick_us();
            if let Some(node) = self.node.as_mut() {
                node.tick();
            }
            self.leader_timers(ctx)?;
            self.drive(ctx)?;
        }
        Ok(())
    }

    /// Pauses the host until `until`; messages queue up meanwhile.
    pub fn pause(&mut self, ctx: &mut Ctx<'_>, until: u64) {
        if self.life == Life::Up {
            ctx.trace.log(ctx.now, || {
                format!("n{} PAUSE for {} ms", self.id, (until - ctx.now) / US)
            });
            self.life = Life::Paused { until };
        }
    }

    /// Handles a delivered message.
    pub fn deliver(&mut self, ctx: &mut Ctx<'_>, p: Packet) -> Result<(), String> {
        match self.life {
            Life::Up => {}
            Life::Paused { .. } => {
                self.inbox.push(p);
                return Ok(());
            }
            Life::Down { .. } => return Ok(()),
        }
        let Some(node) = self.node.as_mut() else {
            return Ok(());
        };
        match p.payload {
            Payload::Raft(env) => {
                ctx.trace
                    .log(ctx.now, || format!("n{} <- {:?}", self.id, env));
                node.step(env);
            }
            Payload::Request { op, req } => {
                let Addr::Client(client) = p.from else {
                    return Ok(());
                };
                self.request(ctx, client, op, req);
            }
            Payload::Response { .. } => {}
        }
        self.drive(ctx)
    }

    fn respond(&self, ctx: &mut Ctx<'_>, client: u64, op: u64, resp: Response) {
        ctx.trace.log(ctx.now, || {
            format!("n{} -> c{client} op {op}: {resp:?}", self.id)
        });
        ctx.net.send(
            ctx.now,
            Packet {
                from: Addr::Node(self.id),
                to: Addr::Client(client),
                payload: Payload::Response { op, resp },
            },
        );
    }

    /// A client request: proposed if this node leads, else NotLeader.
    fn request(&mut self, ctx: &mut Ctx<'_>, client: u64, op: u64, req: Request) {
        let local = self.local_ms(ctx.now);
        let node = self.node.as_mut().expect("up");
        let leader = node.leader();
        let lead = match self.lead.as_mut() {
            Some(l) if node.role() == Role::Leader && node.term() == l.term => l,
            _ => {
                self.respond(ctx, client, op, Response::NotLeader(leader));
                return;
            }
        };
        let cmd = match req {
            Request::KeepAlive { session } => {
                let resp = match self.space.session(session) {
                    Some(info) => {
                        let dl = local + info.ttl_ms;
                        lead.sessions.insert(session, dl);
                        Response::KeepAlive {
                            session,
                            alive: true,
                        }
                    }
                    None if lead.caught_up => Response::KeepAlive {
                        session,
                        alive: false,
                    },
                    None => Response::NotReady,
                };
                self.respond(ctx, client, op, resp);
                return;
            }
            Request::Open { nonce, ttl_ms } => Command::OpenSession {
                nonce,
                ttl_ms,
                token: self.rng.gen(),
                owner: None,
            },
            Request::Cmd(c) => c,
        };
        let bytes = rmp_serde::to_vec_named(&cmd).expect("commands serialize");
        match node.propose(bytes) {
            Ok((index, term)) => {
                ctx.trace.log(ctx.now, || {
                    format!(
                        "n{} propose ({index}, {term}) for c{client} op {op}: {cmd:?}",
                        self.id
                    )
                });
                lead.pending.insert(index, (term, client, op));
            }
            Err(e) => self.respond(ctx, client, op, Response::NotLeader(e.leader)),
        }
    }

    /// Proposes an internal command (an expiry) unless one with the same key went out
    /// recently.
    fn propose_internal(&mut self, ctx: &mut Ctx<'_>, key: String, cmd: Command) {
        let local = self.local_ms(ctx.now);
        let (Some(node), Some(lead)) = (self.node.as_mut(), self.lead.as_mut()) else {
            return;
        };
        if lead.proposed.get(&key).is_some_and(|t| local < t + 300) {
            return;
        }
        lead.proposed.insert(key, local);
        let bytes = rmp_serde::to_vec_named(&cmd).expect("commands serialize");
        if let Ok((index, term)) = node.propose(bytes) {
            ctx.trace.log(ctx.now, || {
                format!("n{} propose ({index}, {term}) internal: {cmd:?}", self.id)
            });
        }
    }

    /// The leader's deadlines: lease, wait and hold expiries on this host's clock. A deadline
    /// starts at the first tick this leader sees the session, wait or grant in its state.
    fn leader_timers(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let local = self.local_ms(ctx.now);
        let Some(lead) = self.lead.as_mut() else {
            return Ok(());
        };
        let sessions = self.space.sessions();
        let live: BTreeSet<SessionId> = sessions.iter().map(|s| s.id).collect();
        lead.sessions.retain(|s, _| live.contains(s));
        for s in &sessions {
            lead.sessions.entry(s.id).or_insert(local + s.ttl_ms);
        }
        let waits = self.space.bounded_waits();
        let keys: BTreeSet<(SessionId, Seq, String)> = waits
            .iter()
            .map(|w| (w.session, w.seq, w.lock.clone()))
            .collect();
        lead.waits.retain(|k, _| keys.contains(k));
        for w in &waits {
            lead.waits
                .entry((w.session, w.seq, w.lock.clone()))
                .or_insert(local + w.wait_ms.unwrap_or(0));
        }
        let holds = self.space.limited_holds();
        let keys: BTreeSet<(SessionId, String, Fence)> = holds
            .iter()
            .map(|h| (h.session, h.lock.clone(), h.fence))
            .collect();
        lead.holds.retain(|k, _| keys.contains(k));
        for h in &holds {
            lead.holds
                .entry((h.session, h.lock.clone(), h.fence))
                .or_insert(local + h.hold_ms);
        }
        let mut due: Vec<(String, Command)> = Vec::new();
        for (s, dl) in &lead.sessions {
            if local >= *dl {
                due.push((format!("s{s}"), Command::ExpireSession { session: *s }));
            }
        }
        for ((session, seq, lock), dl) in &lead.waits {
            if local >= *dl {
                due.push((
                    format!("w{session}/{seq}"),
                    Command::ExpireWait {
                        session: *session,
                        seq: *seq,
                        lock: lock.clone(),
                    },
                ));
            }
        }
        for ((session, lock, fence), dl) in &lead.holds {
            if local >= *dl {
                due.push((
                    format!("h{fence}"),
                    Command::ExpireHold {
                        session: *session,
                        lock: lock.clone(),
                        fence: *fence,
                    },
                ));
            }
        }
        for (key, cmd) in due {
            self.propose_internal(ctx, key, cmd);
        }
        Ok(())
    }

    /// Runs the `Ready` loop until the node has nothing more to do, then notes role changes.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        loop {
            let Some(node) = self.node.as_mut() else {
                return Ok(());
            };
            let rd = node.ready();
            if rd.is_empty() {
                break;
            }
            self.handle_ready(ctx, rd)?;
        }
        self.observe_role(ctx)
    }

    fn observe_role(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let Some(node) = self.node.as_ref() else {
            return Ok(());
        };
        let leading = (node.role() == Role::Leader).then(|| node.term());
        let hint = node.leader();
        let same = matches!((&self.lead, leading), (Some(l), Some(t)) if l.term == t);
        if same {
            return Ok(());
        }
        if let Some(old) = self.lead.take() {
            ctx.trace.log(ctx.now, || {
                format!("n{} steps down from term {}", self.id, old.term)
            });
            for (_, (_, client, op)) in old.pending {
                self.respond(ctx, client, op, Response::NotLeader(hint));
            }
            for (_, (client, op)) in old.waiting {
                self.respond(ctx, client, op, Response::NotLeader(hint));
            }
        }
        if let Some(term) = leading {
            ctx.trace.log(ctx.now, || {
                format!("n{} becomes LEADER of term {term}", self.id)
            });
            if ctx.check.election_safety(self.id, term)?
                && self.space.locks(None).iter().any(|l| !l.holders.is_empty())
            {
                ctx.check.counters.leader_change_holding += 1;
            }
            self.lead = Some(LeaderSide {
                term,
                ..LeaderSide::default()
            });
        }
        Ok(())
    }

    fn send_all(&self, ctx: &mut Ctx<'_>, msgs: Vec<raftlock::raft::Envelope>) {
        for m in msgs {
            ctx.trace
                .log(ctx.now, || format!("n{} -> {:?}", self.id, m));
            ctx.net.send(
                ctx.now,
                Packet {
                    from: Addr::Node(self.id),
                    to: Addr::Node(m.to),
                    payload: Payload::Raft(m),
                },
            );
        }
    }

    fn armed(&self, point: CrashPoint) -> bool {
        matches!(self.crash_armed, Some((p, _)) if p == point)
    }

    fn crash_now(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let down = self.rng.gen_range(100..2_000) * US;
        self.crash(ctx, down)
    }

    /// Does one `Ready` in the contract's order, with the armed crash point if any.
    fn handle_ready(&mut self, ctx: &mut Ctx<'_>, rd: Ready) -> Result<(), String> {
        let Ready {
            messages,
            snapshot,
            truncate_from,
            append,
            hard_state,
            persisted_messages,
            mut committed,
            reads: _,
        } = rd;
        // 1. Messages that depend on nothing unpersisted.
        self.send_all(ctx, messages);
        // The log writes, mirrored and checked.
        let leading = self.leading();
        let kept_lead = leading.filter(|t| self.lead.as_ref().is_some_and(|l| l.term == *t));
        ctx.check
            .leader_append_only(self.id, kept_lead, &self.shadow, truncate_from.is_some())?;
        ctx.check.log_matching(
            self.id,
            &mut self.shadow,
            snapshot.as_ref(),
            truncate_from,
            &append,
        )?;
        // Observe the commit index now: a crash later in this Ready must not hide it.
        let node = self.node.as_ref().expect("up");
        let (term, commit) = (node.term(), node.commit_index());
        ctx.check
            .observe_commit(self.id, term, &self.shadow, self.seen_commit, commit)?;
        self.seen_commit = self.seen_commit.max(commit);
        if truncate_from.is_some() {
            ctx.check.counters.truncations += 1;
            ctx.trace.log(ctx.now, || {
                format!("n{} truncates from {truncate_from:?}", self.id)
            });
        }
        if let Some(s) = &snapshot {
            ctx.check.counters.snapshot_installs += 1;
            ctx.trace.log(ctx.now, || {
                format!(
                    "n{} installs snapshot ({}, {})",
                    self.id, s.meta.index, s.meta.term
                )
            });
        }
        if self.params.early_apply {
            self.apply_ready(ctx, snapshot.as_ref(), std::mem::take(&mut committed))?;
        }
        // 2. Write, then fsync.
        let writes = snapshot.is_some()
            || truncate_from.is_some()
            || !append.is_empty()
            || hard_state.is_some();
        self.disk
            .write(snapshot.as_ref(), truncate_from, &append, hard_state);
        if writes && self.armed(CrashPoint::BeforeFsync) {
            return self.crash_now(ctx);
        }
        let durable = self.disk.durable().hard_state;
        let grants_vote = hard_state.is_some_and(|hs| {
            hs.vote.is_some_and(|v| v != self.id)
                && (hs.term, hs.vote) != (durable.term, durable.vote)
        });
        if grants_vote && self.armed(CrashPoint::VoteBeforeFsync) {
            let down = self.rng.gen_range(1..30) * US;
            return self.crash(ctx, down);
        }
        self.disk.fsync()?;
        if let Some(s) = &snapshot {
            // A received snapshot is committed state: once durable, the node is at least there.
            self.highest_applied = self.highest_applied.max(s.meta.index);
        }
        if writes && self.armed(CrashPoint::AfterFsync) {
            return self.crash_now(ctx);
        }
        // 3. Messages that needed the writes, then report them.
        self.send_all(ctx, persisted_messages);
        if let Some(last) = append.last() {
            self.node
                .as_mut()
                .expect("up")
                .persisted(last.index, last.term);
        }
        if writes && self.armed(CrashPoint::BeforeApply) {
            return self.crash_now(ctx);
        }
        // 4. Apply (unless done before the write).
        if !self.params.early_apply {
            self.apply_ready(ctx, snapshot.as_ref(), committed)?;
        }
        self.maybe_snapshot()?;
        Ok(())
    }

    /// Step 4 of the contract: a received snapshot replaces the state machine, then the
    /// committed entries are applied.
    fn apply_ready(
        &mut self,
        ctx: &mut Ctx<'_>,
        snapshot: Option<&Snapshot>,
        committed: Vec<raftlock::raft::Entry>,
    ) -> Result<(), String> {
        if let Some(s) = snapshot {
            // Committed state: the node is at least there from now on.
            self.highest_applied = self.highest_applied.max(s.meta.index);
            self.space = LockSpace::restore(&s.data)
                .map_err(|e| format!("n{}: received snapshot does not restore: {e}", self.id))?;
            if self.space.applied_index() != s.meta.index {
                return Err(format!(
                    "n{}: snapshot at {} holds a state at {}",
                    self.id,
                    s.meta.index,
                    self.space.applied_index()
                ));
            }
            if let Some(lead) = self.lead.as_mut() {
                lead.caught_up = false;
            }
        }
        for entry in committed {
            self.apply(ctx, entry)?;
        }
        Ok(())
    }

    /// Applies one committed entry, checks the lock invariants around it, and answers the
    /// clients waiting on it.
    fn apply(&mut self, ctx: &mut Ctx<'_>, entry: raftlock::raft::Entry) -> Result<(), String> {
        let index = entry.index;
        let (_, entry_chain) = self.shadow.at(index).ok_or_else(|| {
            format!(
                "n{}: applies {index}, which it never handed out (base {}, last {})",
                self.id,
                self.shadow.base,
                self.shadow.last()
            )
        })?;
        let expected_chain = chain(self.shadow.at(index - 1).map_or(0, |x| x.1), &entry);
        if self.shadow.at(index - 1).is_some() && expected_chain != entry_chain {
            return Err(format!(
                "n{}: committed entry {index} differs from the one it persisted",
                self.id
            ));
        }
        if index != self.space.applied_index() + 1 {
            return Err(format!(
                "n{}: applies {index} after {} (a gap or a repeat)",
                self.id,
                self.space.applied_index()
            ));
        }
        let first = index > ctx.check.applied_len();
        let mut answer = None;
        match &entry.data {
            EntryData::Noop | EntryData::Config(_) => self.space.skip(index),
            EntryData::Command(bytes) => {
                let cmd: Command = rmp_serde::from_slice(bytes)
                    .map_err(|e| format!("n{}: entry {index} does not decode: {e}", self.id))?;
                let before = first.then(|| holder_fences(&self.space));
                let last_fence_before = self.space.last_fence();
                let (append_current, file_before) = match &cmd {
                    Command::Append {
                        session,
                        file,
                        lock,
                        fence,
                        ..
                    } => {
                        let current = self.space.session(*session).is_some()
                            && self.space.lock(lock).is_some_and(|l| {
                                l.mode == Some(LockMode::Exclusive)
                                    && l.holders == vec![(*session, *fence)]
                            });
                        (current, self.file_size(file))
                    }
                    _ => (false, 0),
                };
                let applied = self.space.apply(index, &cmd);
                let file_after = match &cmd {
                    Command::Append { file, .. } => self.file_size(file),
                    _ => 0,
                };
                ctx.trace.log(ctx.now, || {
                    format!("n{} apply {index}: {cmd:?} -> {applied:?}", self.id)
                });
                let a = ApplyCtx {
                    host: self.id,
                    index,
                    command: &cmd,
                    applied: &applied,
                    last_fence_before,
                    append_current,
                    file_before,
                    file_after,
                };
                ctx.check.fencing(&a, &self.space)?;
                ctx.check.fenced_append(&a, first)?;
                ctx.check.mutual_exclusion(self.id, &self.space)?;
                if let Some(before) = before {
                    let after = holder_fences(&self.space);
                    ctx.check
                        .record_first_apply(index, &cmd, &applied, &before, &after);
                }
                answer = Some(applied);
            }
        }
        let state = fnv(&self.space.snapshot());
        ctx.check
            .state_machine_safety(self.id, index, entry_chain, state)?;
        self.highest_applied = self.highest_applied.max(index);
        // Answer the clients.
        let Some(lead) = self.lead.as_mut() else {
            return Ok(());
        };
        if entry.term == lead.term {
            lead.caught_up = true;
        }
        let mut out: Vec<(u64, u64, Response)> = Vec::new();
        if let Some((term, client, op)) = lead.pending.remove(&index) {
            if term != entry.term {
                out.push((client, op, Response::Timeout));
            } else if let Some(applied) = &answer {
                match (&applied.outcome, &entry.data) {
                    (Outcome::Queued { .. }, EntryData::Command(bytes)) => {
                        if let Ok(Command::Acquire { session, seq, .. }) =
                            rmp_serde::from_slice::<Command>(bytes)
                        {
                            lead.waiting.insert((session, seq), (client, op));
                        }
                    }
                    (o, _) => out.push((client, op, Response::Outcome(o.clone()))),
                }
            }
        }
        if let Some(applied) = &answer {
            for n in &applied.notifications {
                if let Some((client, op)) = lead.waiting.remove(&(n.session, n.seq)) {
                    out.push((client, op, Response::Outcome(n.outcome.clone())));
                }
            }
        }
        for (client, op, resp) in out {
            self.respond(ctx, client, op, resp);
        }
        Ok(())
    }

    fn file_size(&self, file: &str) -> u64 {
        self.space.read(file, 0, 0).map_or(0, |(_, size)| size)
    }

    /// Takes a snapshot every `snapshot_every` applied entries.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let Some(node) = self.node.as_mut() else {
            return Ok(());
        };
        let applied = self.space.applied_index();
        let snap = node.snapshot_meta().map_or(0, |m| m.index);
        if applied < snap + self.params.snapshot_every {
            return Ok(());
        }
        let Some(meta) = node.snapshot_meta_at(applied) else {
            return Err(format!(
                "n{}: no snapshot metadata at applied index {applied}",
                self.id
            ));
        };
        let s = Snapshot {
            meta,
            data: self.space.snapshot(),
        };
        self.disk.save_own_snapshot(s.clone())?;
        node.compacted(s);
        Ok(())
    }
}
