//! A simulated raftlockd: the daemon's own [`Replica`] (the real Raft `Node` and `LockSpace`,
//! admission, the write pipeline, apply and answers, the lease/wait/hold deadlines) on a
//! simulated disk and a skewed clock. The host is only a shell: it turns simulated client
//! requests into wire requests, carries out the replica's effects (messages onto the network,
//! writes onto the disk, answers back to the clients), injects crashes at chosen points of the
//! write path, and feeds the invariant checks through the replica's [`Observer`] hooks.

use std::collections::BTreeMap;

use raftlock::lockspace::{Applied, Command, LockMode, LockSpace, Outcome, SessionId};
use raftlock::protocol::{self, ErrorCode};
use raftlock::raft::{
    Config, Entry, EntryData, Index, Membership, Node, NodeId, Role, Snapshot, Term,
};
use raftlock::replica::{self, Effect, Input, Observer, Replica, Ticket, Write, WriteId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::{Request, Response};
use crate::deadlines::Deadlines;
use crate::disk::Disk;
use crate::invariants::{chain, fnv, holder_fences, ApplyCtx, Checker, Shadow};
use crate::network::{Addr, Net, Packet, Payload};
use crate::trace::Trace;

/// Where an armed crash strikes on the write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the writes, before the fsync: unsynced writes are lost (or torn).
    BeforeFsync,
    /// After the fsync, before the replica learns the writes are durable (the messages that
    /// wait for them never leave).
    AfterFsync,
    /// After the replica learned the writes are durable and the messages they released left.
    AfterDurable,
    /// Before the fsync of writes that grant a vote to another node; the node then restarts
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
    /// The core's `max_append_bytes` and `max_inflight_bytes`.
    pub max_append_bytes: usize,
    pub max_inflight_bytes: usize,
    pub torn_writes: bool,
    /// The core's `eager_commit` (the daemon runs with it off).
    pub eager_commit: bool,
    /// `None`: every write is made durable right after the replica hands it out. `Some((lo,
    /// hi))`: an fsync takes `lo..hi` µs and the host keeps serving meanwhile (sending,
    /// applying, handing out more writes, which join the next fsync), as the daemon's writer
    /// thread does: fsyncs complete out of step with sends.
    pub fsync_us: Option<(u64, u64)>,
}

/// What a ticket answers: the client's operation, and whether it is a keep-alive (whose wire
/// answers map to the simulated `KeepAlive` response).
#[derive(Clone, Copy, Debug)]
struct Asked {
    client: u64,
    op: u64,
    /// The session the request names, if any.
    session: Option<SessionId>,
    keep_alive: bool,
}

/// The id of a member that exists only in the membership: nothing ever answers for it.
pub const GHOST: NodeId = 99;

/// An administrative request the world made through a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AdminAsk {
    Transfer,
    AddGhost,
    RemoveGhost,
}

/// One host.
#[derive(Debug)]
pub struct Host {
    pub id: NodeId,
    /// Clock rate in permille of real time (skew).
    pub rate: u64,
    replica: Option<Replica>,
    /// The lock space of the last life, while the host is down.
    last_space: LockSpace,
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
    /// The term this host was last seen leading in (role changes are checked against it).
    lead_term: Option<Term>,
    /// Requests in flight, by ticket.
    tickets: BTreeMap<Ticket, Asked>,
    /// Administrative requests in flight, by ticket.
    admin: BTreeMap<Ticket, AdminAsk>,
    next_ticket: Ticket,
    /// Writes handed out and not yet durable (asynchronous disk), and when their fsync ends.
    unsynced: Vec<(WriteId, Write)>,
    fsync_at: Option<u64>,
    /// A snapshot the replica asked to have built, and when its (simulated) blocking thread
    /// hands it back: later than the request, so writes, elections and installs overtake it.
    build: Option<(u64, Snapshot)>,
    pub restarts: u32,
    /// When, on this host's clock, its deadlines started and its expiries were proposed.
    deadlines: Deadlines,
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
            replica: None,
            last_space: LockSpace::new(),
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
            lead_term: None,
            tickets: BTreeMap::new(),
            admin: BTreeMap::new(),
            next_ticket: 1,
            unsynced: Vec::new(),
            fsync_at: None,
            build: None,
            restarts: 0,
            deadlines: Deadlines::default(),
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

    /// The Raft node, while up.
    pub fn node(&self) -> Option<&Node> {
        self.replica.as_ref().map(Replica::node)
    }

    /// True if the replica has taken all of its node's output (its pipeline is not full), so
    /// the node's log is exactly what was handed out for writing.
    pub fn drained(&self) -> bool {
        self.replica.as_ref().is_some_and(|r| !r.pipeline_full())
    }

    /// The lock space (of the last life while down).
    pub fn space(&self) -> &LockSpace {
        match &self.replica {
            Some(replica) => replica.lockspace(),
            None => &self.last_space,
        }
    }

    /// The next time this host needs to act.
    pub fn next_time(&self) -> u64 {
        let t = match self.life {
            Life::Up => [self.fsync_at, self.build.as_ref().map(|(at, _)| *at)]
                .into_iter()
                .flatten()
                .fold(self.next_tick, u64::min),
            Life::Down { until } | Life::Paused { until } => until,
        };
        match self.crash_armed {
            Some((_, deadline)) if self.life == Life::Up => t.min(deadline),
            _ => t,
        }
    }

    /// True if the node leads (in its own view).
    pub fn leading(&self) -> Option<Term> {
        let node = self.node()?;
        (node.role() == Role::Leader).then(|| node.term())
    }

    /// The node's config.
    fn config(&self) -> Config {
        let mut c = Config::new(self.id);
        c.bootstrap = Some(self.membership.clone());
        c.max_entries_per_append = self.params.max_entries;
        c.max_append_bytes = self.params.max_append_bytes;
        c.max_inflight_bytes = self.params.max_inflight_bytes;
        c.eager_commit = self.params.eager_commit;
        c
    }

    /// The replica's config: the daemon's defaults on a 10 ms tick.
    fn replica_config(&mut self, raft: &Config) -> replica::Config {
        replica::Config {
            id: self.id,
            peers: BTreeMap::new(),
            tick_ms: 10,
            election_ticks_max: raft.election_ticks_max,
            snapshot_threshold: self.params.snapshot_every,
            snapshot_threshold_bytes: replica::SNAPSHOT_THRESHOLD_BYTES,
            shutdown_timeout_ms: 5_000,
            // Shorter than the daemon's 10 s, so that a seed sees adds give up.
            add_timeout_ms: 2_000,
            limits: protocol::Limits::default(),
            seed: self.rng.gen(),
        }
    }

    /// (Re)starts the node from the durable disk.
    pub fn start(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let rec = self.disk.recover();
        let snap_index = rec.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let space = match &rec.snapshot {
            Some(s) => LockSpace::restore(&s.data)
                .map_err(|e| format!("n{}: durable snapshot does not restore: {e}", self.id))?,
            None => LockSpace::new(),
        };
        ctx.check
            .restart_continuity(self.id, snap_index, self.highest_applied, &space)?;
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
        let last_term = rec.snapshot.as_ref().map_or(0, |s| s.meta.term);
        let config = self.config();
        let replica_config = self.replica_config(&config);
        let node = Node::new(config, rec, seed);
        self.seen_commit = node.commit_index();
        self.seen_applied = node.applied_index();
        self.replica = Some(Replica::new(replica_config, node, space, last_term));
        self.life = Life::Up;
        self.lead_term = None;
        self.deadlines.led(None);
        self.tickets.clear();
        self.admin.clear();
        self.unsynced.clear();
        self.fsync_at = None;
        self.build = None;
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
        if let Some(replica) = self.replica.take() {
            self.last_space = replica.into_lockspace();
        }
        self.lead_term = None;
        self.deadlines.led(None);
        self.tickets.clear();
        self.admin.clear();
        self.unsynced.clear();
        self.fsync_at = None;
        self.build = None;
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
                self.deadlines.resumed(self.local_ms(ctx.now));
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
        if self.fsync_at.is_some_and(|at| at <= ctx.now) {
            self.fsync_at = None;
            let writes = std::mem::take(&mut self.unsynced);
            let crash_after_sends = self.sync(ctx, writes)?;
            if self.replica.is_none() {
                return Ok(());
            }
            return self.drive_from(ctx, crash_after_sends);
        }
        if self.build.as_ref().is_some_and(|(at, _)| *at <= ctx.now) {
            let (_, snapshot) = self.build.take().expect("checked above");
            ctx.trace.log(ctx.now, || {
                format!("n{} snapshot {} built", self.id, snapshot.meta.index)
            });
            let now = self.local_ms(ctx.now);
            if let Some(replica) = self.replica.as_mut() {
                let index = snapshot.meta.index;
                if replica.lockspace().applied_index() > index {
                    ctx.check.counters.late_builds += 1;
                }
                if replica
                    .node()
                    .snapshot_meta()
                    .is_some_and(|meta| meta.index >= index)
                {
                    ctx.check.counters.overtaken_builds += 1;
                }
                replica.handle(now, Input::SnapshotBuilt(snapshot));
            }
            return self.drive(ctx);
        }
        if self.next_tick <= ctx.now {
            self.next_tick += self.tick_us();
            self.tick(ctx)?;
            self.drive(ctx)?;
            if self.leading().is_some_and(|t| self.lead_term == Some(t)) {
                self.deadlines
                    .late(self.id, self.space(), self.local_ms(ctx.now))?;
            }
        }
        Ok(())
    }

    /// The transport's crash hint: `peer`'s connection ended and the redial was refused.
    /// Only a host that is up sees it.
    pub fn peer_down(&mut self, ctx: &mut Ctx<'_>, peer: NodeId) -> Result<(), String> {
        if self.life != Life::Up {
            return Ok(());
        }
        self.input(ctx, Input::PeerDown(peer));
        self.drive(ctx)
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

    /// Asks this node (if up) to hand its leadership over, as `raftlock cluster
    /// transfer-leader` does.
    pub fn transfer_leadership(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        self.admin_request(ctx, AdminAsk::Transfer, |id| {
            protocol::Request::TransferLeader { id, node_id: None }
        })
    }

    /// Asks this node to add [`GHOST`], a node that never answers, as `raftlock cluster add`
    /// of a dead address does; or to remove it if it is a member already.
    pub fn ghost_membership(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let member = self.node().is_some_and(|n| n.membership().contains(GHOST));
        if member {
            self.admin_request(ctx, AdminAsk::RemoveGhost, |id| {
                protocol::Request::RemoveMember { id, node_id: GHOST }
            })
        } else {
            self.admin_request(ctx, AdminAsk::AddGhost, |id| protocol::Request::AddMember {
                id,
                node_id: GHOST,
                addr: "ghost".into(),
            })
        }
    }

    fn admin_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        ask: AdminAsk,
        request: impl FnOnce(u64) -> protocol::Request,
    ) -> Result<(), String> {
        if self.life != Life::Up {
            return Ok(());
        }
        let ticket = self.take_ticket();
        let request = request(ticket);
        ctx.trace
            .log(ctx.now, || format!("n{} <- admin: {request:?}", self.id));
        self.admin.insert(ticket, ask);
        self.input(
            ctx,
            Input::Request {
                ticket,
                request,
                principal: None,
            },
        );
        self.drive(ctx)
    }

    fn take_ticket(&mut self) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    fn input(&mut self, ctx: &mut Ctx<'_>, input: Input) {
        let now = self.local_ms(ctx.now);
        if let Some(replica) = self.replica.as_mut() {
            replica.handle(now, input);
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
        if self.replica.is_none() {
            return Ok(());
        }
        match p.payload {
            Payload::Raft(env) => {
                ctx.trace
                    .log(ctx.now, || format!("n{} <- {:?}", self.id, env));
                self.input(ctx, Input::Peer(env));
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

    /// A client request, as the wire request a real client would send.
    fn request(&mut self, ctx: &mut Ctx<'_>, client: u64, op: u64, req: Request) {
        let ticket = self.take_ticket();
        // The simulated clients do not model tokens: the host presents the one its lock space
        // holds for the session. For a session it does not know the token does not matter:
        // the replica refuses the request for the unknown session either way.
        let token = |session: SessionId| self.space().session(session).map_or(0, |info| info.token);
        let id = ticket;
        let session = match &req {
            Request::Open { .. } => None,
            Request::KeepAlive { session } => Some(*session),
            Request::Cmd(command) => command_session(command),
        };
        let keep_alive = matches!(req, Request::KeepAlive { .. });
        let request = match req {
            Request::Open { nonce, ttl_ms } => protocol::Request::OpenSession {
                id,
                nonce,
                ttl_ms,
                owner: None,
            },
            Request::KeepAlive { session } => protocol::Request::KeepAlive {
                id,
                session,
                token: token(session),
            },
            Request::Cmd(Command::CloseSession { session, seq }) => {
                protocol::Request::CloseSession {
                    id,
                    session,
                    token: token(session),
                    seq,
                }
            }
            Request::Cmd(Command::Acquire {
                session,
                seq,
                lock,
                mode,
                wait_ms,
                hold_ms,
            }) => protocol::Request::Acquire {
                id,
                session,
                token: token(session),
                seq,
                lock,
                mode: mode.into(),
                wait_ms,
                hold_ms,
            },
            Request::Cmd(Command::Release { session, seq, lock }) => protocol::Request::Release {
                id,
                session,
                token: token(session),
                seq,
                lock,
            },
            Request::Cmd(Command::Extend {
                session,
                seq,
                lock,
                fence,
                hold_ms,
            }) => protocol::Request::Extend {
                id,
                session,
                token: token(session),
                seq,
                lock,
                fence,
                hold_ms,
            },
            Request::Cmd(Command::Append {
                session,
                seq,
                file,
                lock,
                fence,
                data,
                // The replica stamps its own limits on the command it proposes.
                quota: _,
            }) => protocol::Request::Append {
                id,
                session,
                token: token(session),
                seq,
                file,
                lock,
                fence,
                data,
            },
            Request::Cmd(Command::Truncate {
                session,
                seq,
                file,
                lock,
                fence,
                size,
            }) => protocol::Request::Truncate {
                id,
                session,
                token: token(session),
                seq,
                file,
                lock,
                fence,
                size,
            },
            Request::Cmd(Command::Delete {
                session,
                seq,
                file,
                lock,
                fence,
            }) => protocol::Request::Delete {
                id,
                session,
                token: token(session),
                seq,
                file,
                lock,
                fence,
            },
            Request::Cmd(other) => {
                panic!("simulated clients never send {other:?}");
            }
        };
        ctx.trace.log(ctx.now, || {
            format!(
                "n{} <- c{client} op {op} (ticket {ticket}): {request:?}",
                self.id
            )
        });
        self.tickets.insert(
            ticket,
            Asked {
                client,
                op,
                session,
                keep_alive,
            },
        );
        self.input(
            ctx,
            Input::Request {
                ticket,
                request,
                principal: None,
            },
        );
    }

    /// Runs the replica until it has nothing more to do: advance, carry out its effects, and
    /// make its writes durable (with the armed crash point, if any); then notes role changes.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        self.drive_from(ctx, false)
    }

    /// [`Host::drive`], crashing once the first effects are carried out if
    /// `crash_after_sends`.
    fn drive_from(&mut self, ctx: &mut Ctx<'_>, mut crash_after_sends: bool) -> Result<(), String> {
        loop {
            let now = self.local_ms(ctx.now);
            let Some(replica) = self.replica.as_mut() else {
                return Ok(());
            };
            let node = replica.node();
            let leading = (node.role() == Role::Leader).then(|| node.term());
            let kept_lead = leading.filter(|t| self.lead_term == Some(*t));
            let mut probe = Probe {
                id: self.id,
                now: ctx.now,
                check: ctx.check,
                trace: ctx.trace,
                shadow: &mut self.shadow,
                highest_applied: &mut self.highest_applied,
                kept_lead,
                applying: None,
                error: None,
                deadlines: &mut self.deadlines,
                now_ms: now,
            };
            let advanced = replica.advance_observed(now, &mut probe);
            if let Some(error) = probe.error {
                return Err(error);
            }
            advanced.map_err(|e| format!("n{}: {}", self.id, raftlock::error_chain(&e)))?;
            // Observe the commit index now: a crash below must not hide it. (While the pipeline
            // is full the node may count entries committed that it has not handed out yet: the
            // check waits until it has.)
            let node = replica.node();
            let (term, commit) = (node.term(), node.commit_index());
            if !replica.pipeline_full() {
                ctx.check
                    .observe_commit(self.id, term, &self.shadow, self.seen_commit, commit)?;
                self.seen_commit = self.seen_commit.max(commit);
            }
            if node.role() == Role::Leader && commit > self.disk.durable().last_index() {
                // Committed by the followers' acknowledgements while the leader's own write of
                // the entry is still in flight (Raft thesis §10.2.1).
                ctx.check.counters.commit_before_own_fsync += 1;
            }
            let effects = replica.take_effects();
            if effects.is_empty() {
                break;
            }
            let writes = self.carry_out(ctx, effects)?;
            if crash_after_sends {
                return self.crash_now(ctx);
            }
            if writes.is_empty() {
                continue;
            }
            if let Some((lo, hi)) = self.params.fsync_us {
                // The writer thread: this fsync (or the one running) takes them.
                self.unsynced.extend(writes);
                if self.fsync_at.is_none() {
                    self.fsync_at = Some(ctx.now + self.rng.gen_range(lo..hi));
                }
                continue;
            }
            crash_after_sends = self.sync(ctx, writes)?;
            if self.replica.is_none() {
                return Ok(());
            }
        }
        self.observe_role(ctx)
    }

    /// Carries out the replica's effects in order; returns the writes to make durable.
    fn carry_out(
        &mut self,
        ctx: &mut Ctx<'_>,
        effects: Vec<Effect>,
    ) -> Result<Vec<(WriteId, Write)>, String> {
        let mut writes = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send(m) => self.send(ctx, m)?,
                Effect::Persist { id, write } => {
                    if let Write::Persist {
                        snapshot,
                        truncate_from,
                        append,
                        hard_state,
                    } = &write
                    {
                        ctx.trace.log(ctx.now, || {
                            format!(
                                "n{} write {id}: snapshot {:?}, truncate {truncate_from:?}, append {:?}, {hard_state:?}",
                                self.id,
                                snapshot.as_ref().map(|s| s.meta.index),
                                append.first().zip(append.last()).map(|(a, b)| (a.index, b.index)),
                            )
                        });
                    }
                    writes.push((id, write));
                }
                Effect::Answer {
                    ticket,
                    response,
                    last,
                } => self.answer(ctx, ticket, response, last)?,
                Effect::BuildSnapshot(build) => {
                    // Up to 30 ms on the blocking thread.
                    let at = ctx.now + self.rng.gen_range(0..30_000);
                    self.build = Some((at, build.build()));
                }
                // The simulated network routes by node id; nobody reads the published leader.
                Effect::Peers(_)
                | Effect::Leader(_)
                | Effect::Push { .. }
                | Effect::StreamSnapshot { .. } => {}
            }
        }
        Ok(writes)
    }

    /// Does `writes` in order on the disk (as the daemon's writer thread does), fsyncs, and
    /// tells the replica; or crashes at the armed point. Returns true if the host must crash
    /// once the messages the writes released are sent.
    fn sync(&mut self, ctx: &mut Ctx<'_>, writes: Vec<(WriteId, Write)>) -> Result<bool, String> {
        let durable = self.disk.durable().hard_state;
        let mut grants_vote = false;
        let mut has_writes = false;
        let mut last = 0;
        for (id, write) in writes {
            last = id;
            match write {
                Write::Persist {
                    snapshot,
                    truncate_from,
                    append,
                    hard_state,
                } => {
                    has_writes |= snapshot.is_some()
                        || truncate_from.is_some()
                        || !append.is_empty()
                        || hard_state.is_some();
                    grants_vote |= hard_state.is_some_and(|hs| {
                        hs.vote.is_some_and(|v| v != self.id)
                            && (hs.term, hs.vote) != (durable.term, durable.vote)
                    });
                    self.disk
                        .write(snapshot.as_ref(), truncate_from, &append, hard_state);
                }
                // Written to a temporary file, fsynced and renamed: durable at once, after
                // everything before it.
                Write::SaveSnapshot(s) => self.disk.save_own_snapshot(s)?,
                Write::Sync => {}
            }
        }
        if has_writes && self.armed(CrashPoint::BeforeFsync) {
            self.crash_now(ctx)?;
            return Ok(false);
        }
        if grants_vote && self.armed(CrashPoint::VoteBeforeFsync) {
            let down = self.rng.gen_range(1..30) * US;
            self.crash(ctx, down)?;
            return Ok(false);
        }
        self.disk.fsync()?;
        // A received snapshot is committed state: once durable, the node is at least there.
        self.highest_applied = self.highest_applied.max(self.disk.durable().snap_index());
        ctx.trace.log(ctx.now, || {
            format!("n{} fsync done up to write {last}", self.id)
        });
        if has_writes && self.armed(CrashPoint::AfterFsync) {
            self.crash_now(ctx)?;
            return Ok(false);
        }
        let now = self.local_ms(ctx.now);
        if let Some(replica) = self.replica.as_mut() {
            replica.durable(now, last);
        }
        Ok(has_writes && self.armed(CrashPoint::AfterDurable))
    }

    /// Maps a wire answer back to the simulated client's response and sends it.
    fn answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        ticket: Ticket,
        response: protocol::Response,
        last: bool,
    ) -> Result<(), String> {
        if let Some(ask) = self.admin.remove(&ticket) {
            ctx.trace.log(ctx.now, || {
                format!("n{} -> admin {ask:?}: {response:?}", self.id)
            });
            let refused = matches!(
                &response,
                protocol::Response::Error { code: ErrorCode::Timeout, message, .. }
                    if message.contains("did not answer")
            );
            if ask == AdminAsk::AddGhost && refused {
                ctx.check.counters.promotion_refused += 1;
            }
            return Ok(());
        }
        let Some(asked) = self.tickets.get(&ticket).copied() else {
            return Ok(());
        };
        if let (protocol::Response::KeptAlive { .. }, Some(session)) = (&response, asked.session) {
            self.deadlines.kept_alive(session, self.local_ms(ctx.now));
        }
        if last {
            self.tickets.remove(&ticket);
        }
        if let (
            protocol::Response::Error {
                code: ErrorCode::SessionExpired,
                ..
            },
            Some(session),
        ) = (&response, asked.session)
        {
            ctx.check.session_gone(self.id, session)?;
        }
        let Some(resp) = sim_response(asked, response) else {
            return Ok(());
        };
        self.respond(ctx, asked.client, asked.op, resp);
        Ok(())
    }

    fn observe_role(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let leading = self.leading();
        if leading == self.lead_term {
            return Ok(());
        }
        self.deadlines.led(leading.map(|_| self.local_ms(ctx.now)));
        if let Some(old) = self.lead_term.take() {
            ctx.trace.log(ctx.now, || {
                format!("n{} steps down from term {old}", self.id)
            });
        }
        if let Some(term) = leading {
            ctx.trace.log(ctx.now, || {
                format!("n{} becomes LEADER of term {term}", self.id)
            });
            if ctx.check.election_safety(self.id, term)?
                && self
                    .space()
                    .locks(None)
                    .iter()
                    .any(|l| !l.holders.is_empty())
            {
                ctx.check.counters.leader_change_holding += 1;
            }
            self.lead_term = Some(term);
        }
        Ok(())
    }

    /// Ticks the replica, then checks the deadline invariants (see `deadlines.rs`) on every
    /// expiry the tick made it propose, against its clock and applied state at that moment.
    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let now = self.local_ms(ctx.now);
        let Some(replica) = self.replica.as_mut() else {
            return Ok(());
        };
        let before = replica.node().last_index();
        replica.handle(now, Input::Tick);
        let node = replica.node();
        if node.role() != Role::Leader || self.lead_term != Some(node.term()) {
            return Ok(());
        }
        for index in before + 1..=node.last_index() {
            let Some(EntryData::Command(bytes)) = node.entry(index).map(|e| &e.data) else {
                continue;
            };
            let Ok(command) = rmp_serde::from_slice::<Command>(bytes) else {
                continue;
            };
            self.deadlines
                .proposed(self.id, &command, replica.lockspace(), now)?;
        }
        Ok(())
    }

    fn send(&self, ctx: &mut Ctx<'_>, m: raftlock::raft::Envelope) -> Result<(), String> {
        ctx.trace
            .log(ctx.now, || format!("n{} -> {:?}", self.id, m));
        if let raftlock::raft::Message::Append { entries, .. } = &m.message {
            let bytes: usize = entries.iter().map(Entry::payload_len).sum();
            if entries.len() > 1 && bytes > self.params.max_append_bytes {
                return Err(format!(
                    "n{}: an append of {} entries carries {bytes} payload bytes, over the \
                     {}-byte limit",
                    self.id,
                    entries.len(),
                    self.params.max_append_bytes
                ));
            }
        }
        ctx.net.send(
            ctx.now,
            Packet {
                from: Addr::Node(self.id),
                to: Addr::Node(m.to),
                payload: Payload::Raft(m),
            },
        );
        Ok(())
    }

    fn armed(&self, point: CrashPoint) -> bool {
        matches!(self.crash_armed, Some((p, _)) if p == point)
    }

    fn crash_now(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        let down = self.rng.gen_range(100..2_000) * US;
        self.crash(ctx, down)
    }
}

/// The session a client command acts on.
fn command_session(command: &Command) -> Option<SessionId> {
    match command {
        Command::CloseSession { session, .. }
        | Command::Acquire { session, .. }
        | Command::Release { session, .. }
        | Command::Extend { session, .. }
        | Command::Append { session, .. }
        | Command::Truncate { session, .. }
        | Command::Delete { session, .. } => Some(*session),
        _ => None,
    }
}

/// The simulated client's view of a wire answer (`None` for an interim `Queued`).
fn sim_response(asked: Asked, response: protocol::Response) -> Option<Response> {
    use protocol::Response as W;
    let outcome = match response {
        W::Queued { .. } => return None,
        W::KeptAlive { .. } => {
            let session = asked.session.filter(|_| asked.keep_alive)?;
            return Some(Response::KeepAlive {
                session,
                alive: true,
            });
        }
        W::SessionOpened {
            session,
            token,
            ttl_ms,
            ..
        } => Outcome::SessionOpened {
            session,
            token,
            ttl_ms,
        },
        W::SessionClosed { .. } => Outcome::SessionClosed,
        W::Granted { fence, .. } => Outcome::Granted { fence },
        W::Released { .. } => Outcome::Released,
        W::Extended { hold_ms, .. } => Outcome::Extended { hold_ms },
        W::Appended { offset, size, .. } => Outcome::Appended { offset, size },
        W::Truncated { size, .. } => Outcome::Truncated { size },
        W::Deleted { size, .. } => Outcome::Deleted { size },
        W::Error { code, leader, .. } => match code {
            ErrorCode::NotLeader | ErrorCode::ShuttingDown => {
                return Some(Response::NotLeader(leader))
            }
            ErrorCode::Timeout => return Some(Response::Timeout),
            ErrorCode::NotReady => return Some(Response::NotReady),
            ErrorCode::SessionExpired => match asked.session.filter(|_| asked.keep_alive) {
                Some(session) => {
                    return Some(Response::KeepAlive {
                        session,
                        alive: false,
                    })
                }
                None => Outcome::SessionExpired,
            },
            ErrorCode::Busy => Outcome::Busy,
            ErrorCode::WaitTimeout => Outcome::TimedOut,
            ErrorCode::NotHolder => Outcome::NotHolder,
            ErrorCode::Conflict => Outcome::Conflict,
            ErrorCode::StaleFence => Outcome::StaleFence,
            ErrorCode::NotFound => Outcome::NotFound,
            ErrorCode::SequenceTooOld => Outcome::SequenceTooOld,
            ErrorCode::Internal => Outcome::Ignored,
            other => panic!("a session request answered {other:?}"),
        },
        other => panic!("a session request answered {other:?}"),
    };
    Some(Response::Outcome(outcome))
}

/// The invariant checks, hooked into the replica's writes and applies.
struct Probe<'a> {
    id: NodeId,
    now: u64,
    check: &'a mut Checker,
    trace: &'a mut Trace,
    shadow: &'a mut Shadow,
    highest_applied: &'a mut Index,
    /// The term this node leads in, if it led in it before this step too.
    kept_lead: Option<Term>,
    /// What `applying` saw, for `applied`.
    applying: Option<Before>,
    /// The first violation.
    error: Option<String>,
    /// The host's deadline watch, told of every applied command.
    deadlines: &'a mut Deadlines,
    /// The host's clock (ms) for this step.
    now_ms: u64,
}

/// The state just before an entry is applied, as the checks need it.
struct Before {
    entry_chain: u64,
    first: bool,
    holders: Option<std::collections::BTreeSet<raftlock::lockspace::Fence>>,
    last_fence: raftlock::lockspace::Fence,
    append_current: bool,
    file_before: u64,
}

fn file_size(space: &LockSpace, file: &str) -> u64 {
    space.read(file, 0, 0).map_or(0, |(_, size)| size)
}

impl Probe<'_> {
    fn record(&mut self, result: Result<(), String>) {
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }

    fn before(
        &mut self,
        space: &LockSpace,
        entry: &Entry,
        command: Option<&Command>,
    ) -> Result<Before, String> {
        let index = entry.index;
        let (_, entry_chain) = self.shadow.at(index).ok_or_else(|| {
            format!(
                "n{}: applies {index}, which it never handed out (base {}, last {})",
                self.id,
                self.shadow.base,
                self.shadow.last()
            )
        })?;
        let expected_chain = chain(self.shadow.at(index - 1).map_or(0, |x| x.1), entry);
        if self.shadow.at(index - 1).is_some() && expected_chain != entry_chain {
            return Err(format!(
                "n{}: committed entry {index} differs from the one it persisted",
                self.id
            ));
        }
        if index != space.applied_index() + 1 {
            return Err(format!(
                "n{}: applies {index} after {} (a gap or a repeat)",
                self.id,
                space.applied_index()
            ));
        }
        let first = index > self.check.applied_len();
        let (append_current, file_before) = match command {
            Some(Command::Append {
                session,
                file,
                lock,
                fence,
                ..
            }) => {
                let current = space.session(*session).is_some()
                    && space.lock(lock).is_some_and(|l| {
                        l.mode == Some(LockMode::Exclusive) && l.holders == vec![(*session, *fence)]
                    });
                (current, file_size(space, file))
            }
            _ => (false, 0),
        };
        Ok(Before {
            entry_chain,
            first,
            holders: (first && command.is_some()).then(|| holder_fences(space)),
            last_fence: space.last_fence(),
            append_current,
            file_before,
        })
    }

    fn after(
        &mut self,
        space: &LockSpace,
        entry: &Entry,
        command: Option<&Command>,
        applied: Option<&Applied>,
    ) -> Result<(), String> {
        let index = entry.index;
        let before = self
            .applying
            .take()
            .ok_or_else(|| format!("n{}: applied {index} without applying it", self.id))?;
        if let (Some(cmd), Some(applied)) = (command, applied) {
            let file_after = match cmd {
                Command::Append { file, .. } => file_size(space, file),
                _ => 0,
            };
            let id = self.id;
            self.trace.log(self.now, || {
                format!("n{id} apply {index}: {cmd:?} -> {applied:?}")
            });
            let a = ApplyCtx {
                host: self.id,
                index,
                command: cmd,
                applied,
                last_fence_before: before.last_fence,
                append_current: before.append_current,
                file_before: before.file_before,
                file_after,
            };
            self.deadlines
                .applied(self.id, self.now_ms, index, cmd, applied, space)?;
            if let (
                Command::ExpireHold {
                    session,
                    lock,
                    fence,
                    ..
                },
                Outcome::Ignored,
            ) = (cmd, &applied.outcome)
            {
                let still_held = space
                    .limited_hold(lock, *session)
                    .is_some_and(|hold| hold.fence == *fence);
                if still_held && before.first {
                    self.check.counters.extend_beat_expiry += 1;
                }
            }
            self.check.fencing(&a, space)?;
            self.check.fenced_append(&a, before.first)?;
            self.check.mutual_exclusion(self.id, space)?;
            if let Some(holders) = &before.holders {
                let after = holder_fences(space);
                self.check
                    .record_first_apply(index, cmd, applied, holders, &after);
            }
        }
        if let EntryData::Config(membership) = &entry.data {
            if before.first && index > 1 {
                self.check.counters.membership_committed += 1;
            }
            if membership.voters.contains_key(&GHOST) {
                return Err(format!(
                    "n{}: entry {index} makes node {GHOST} a voter, but it never answered",
                    self.id
                ));
            }
        }
        let state = fnv(&space.snapshot());
        self.check
            .state_machine_safety(self.id, index, before.entry_chain, state)?;
        *self.highest_applied = (*self.highest_applied).max(index);
        Ok(())
    }
}

impl Observer for Probe<'_> {
    fn persist(&mut self, _id: WriteId, write: &Write) {
        let Write::Persist {
            snapshot,
            truncate_from,
            append,
            ..
        } = write
        else {
            return;
        };
        let result = self
            .check
            .leader_append_only(
                self.id,
                self.kept_lead,
                self.shadow,
                truncate_from.is_some(),
            )
            .and_then(|()| {
                self.check.log_matching(
                    self.id,
                    self.shadow,
                    snapshot.as_ref(),
                    *truncate_from,
                    append,
                )
            });
        self.record(result);
        if truncate_from.is_some() {
            self.check.counters.truncations += 1;
            let id = self.id;
            self.trace.log(self.now, || {
                format!("n{id} truncates from {truncate_from:?}")
            });
        }
        if let Some(s) = snapshot {
            self.check.counters.snapshot_installs += 1;
            let id = self.id;
            self.trace.log(self.now, || {
                format!(
                    "n{id} installs snapshot ({}, {})",
                    s.meta.index, s.meta.term
                )
            });
        }
    }

    fn installed(&mut self, snapshot: &Snapshot, space: &LockSpace) {
        // Committed state: the node is at least there from now on.
        *self.highest_applied = (*self.highest_applied).max(snapshot.meta.index);
        if space.applied_index() != snapshot.meta.index {
            let e = format!(
                "n{}: snapshot at {} holds a state at {}",
                self.id,
                snapshot.meta.index,
                space.applied_index()
            );
            self.record(Err(e));
        }
    }

    fn applying(&mut self, space: &LockSpace, entry: &Entry, command: Option<&Command>) {
        match self.before(space, entry, command) {
            Ok(before) => self.applying = Some(before),
            Err(e) => self.record(Err(e)),
        }
    }

    fn applied(
        &mut self,
        space: &LockSpace,
        entry: &Entry,
        command: Option<&Command>,
        applied: Option<&Applied>,
    ) {
        if self.error.is_some() {
            return;
        }
        let result = self.after(space, entry, command, applied);
        self.record(result);
    }
}
