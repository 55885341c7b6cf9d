//! One seeded run: draws the cluster and its fault rates from the seed (swarm testing), runs a
//! chaos phase, then a healing phase (faults off, every node up) until quiet, checking the
//! invariants after every step and the end-of-run properties at the end.

use raftlock::raft::{Membership, NodeId, Role};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::{Client, ClientParams};
use crate::disk::Durable;
use crate::host::{CrashPoint, Ctx, Host, HostParams, Life};
use crate::invariants::{Checker, Counters};
use crate::network::{short, Addr, Net, NetFaults, Packet, Payload};
use crate::trace::{Mode, Trace};

const US: u64 = 1_000;
const MS: u64 = 1_000;
/// The longest election timeout (60 ticks of 10 ms).
const ELECTION_MAX_MS: u64 = 600;

/// The fault plan of a seed.
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub clients: usize,
    pub chaos_ms: u64,
    pub net: NetFaults,
    pub rates: Vec<u64>,
    pub host: HostParams,
    pub client: ClientParams,
    /// Mean time between faults (None: a calm seed).
    pub fault_every_ms: Option<u64>,
    pub crash: bool,
    pub crash_in_ready: f64,
    pub pause: bool,
    pub partition: bool,
    pub transfer: bool,
    /// Faults include `AddMember` of a node that never answers (and its removal).
    pub ghost: bool,
    /// Faults include a crash that loses durable entries (see `World::lose_tail`).
    pub lose_tail: bool,
    /// Crash hints (`Input::PeerDown`, see `World::hint_crashes`): truthful ones after a crash,
    /// and spurious ones about live nodes, mostly the leader.
    pub hints: Option<HintParams>,
}

/// How a seed injects crash hints: what a node's transport reports when a peer's connection
/// ends and its redial is refused.
#[derive(Clone, Debug)]
pub struct HintParams {
    /// Chance that each surviving node is told of a crash (its link may have been idle).
    pub told: f64,
    /// Latest delivery after the crash, µs (the reset and the refused redial take a while).
    pub delay_us: u64,
    /// Mean time between spurious hints about a live node, ms (None: no spurious hints).
    pub spurious_every_ms: Option<u64>,
}

impl Params {
    /// Draws a plan from the seed: some seeds calm, some brutal.
    pub fn draw(rng: &mut SmallRng) -> Params {
        let nodes = if rng.gen_bool(0.5) { 3 } else { 5 };
        let calm = rng.gen_bool(0.1);
        let mut p = |x: f64| !calm && rng.gen_bool(x);
        let (drop, dup, delay) = (p(0.6), p(0.5), p(0.6));
        let (crash, pause, partition, transfer) = (p(0.75), p(0.5), p(0.7), p(0.3));
        let skew = rng.gen_bool(0.7);
        let ttl_ms = rng.gen_range(600..=2_000);
        let mut params = Params {
            nodes,
            clients: rng.gen_range(2..=6),
            chaos_ms: rng.gen_range(10_000..=25_000),
            net: NetFaults {
                drop: if drop { rng.gen_range(0.0..0.3) } else { 0.0 },
                dup: if dup { rng.gen_range(0.0..0.1) } else { 0.0 },
                delay: if delay { rng.gen_range(0.0..0.3) } else { 0.0 },
                max_delay_us: rng.gen_range(0..=2 * ELECTION_MAX_MS) * US,
            },
            rates: (0..nodes)
                .map(|_| {
                    if skew {
                        rng.gen_range(900..=1_100)
                    } else {
                        1_000
                    }
                })
                .collect(),
            host: HostParams {
                snapshot_every: rng.gen_range(4..=40),
                max_entries: if rng.gen_bool(0.5) {
                    rng.gen_range(1..=4)
                } else {
                    64
                },
                torn_writes: rng.gen_bool(0.5),
                max_append_bytes: raftlock::raft::Config::new(1).max_append_bytes,
                max_inflight_bytes: raftlock::raft::Config::new(1).max_inflight_bytes,
                eager_commit: true,
                fsync_us: None,
            },
            client: ClientParams {
                ttl_ms,
                locks: rng.gen_range(1..=3),
                pause_holder: if rng.gen_bool(0.6) {
                    rng.gen_range(0.02..0.2)
                } else {
                    0.0
                },
                stale_fence: rng.gen_range(0.0..0.15),
                hold_limit: if rng.gen_bool(0.4) {
                    rng.gen_range(0.0..0.3)
                } else {
                    0.0
                },
                extend: 0.0,
            },
            fault_every_ms: (!calm && (crash || pause || partition || transfer))
                .then(|| rng.gen_range(150..=2_000)),
            crash,
            crash_in_ready: rng.gen_range(0.0..1.0),
            pause,
            partition,
            transfer,
            ghost: false,
            lose_tail: false,
            hints: None,
        };
        // Drawn last, so the draws above (and the seeds kept for them) are unchanged.
        params.host.eager_commit = rng.gen_bool(0.25);
        params.host.fsync_us = rng.gen_bool(0.6).then(|| {
            let lo = rng.gen_range(50..2_000);
            (lo, lo + rng.gen_range(1..8_000))
        });
        params.ghost = params.fault_every_ms.is_some() && rng.gen_bool(0.3);
        params
    }

    /// Draws the faults added after the seeds above were kept, from their own stream, so that
    /// every seed that does not enable them replays exactly as before.
    fn draw_late(&mut self, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x6c6f_7374_7461_696c);
        self.lose_tail = self.crash && rng.gen_bool(0.3);
        self.client.extend = if self.client.hold_limit > 0.0 && rng.gen_bool(0.5) {
            rng.gen_range(0.3..1.0)
        } else {
            0.0
        };
    }
}

impl Params {
    /// Draws the crash hints, added after `draw_late`, from a stream of their own, so every
    /// seed that does not enable them replays exactly as before.
    fn draw_hints(&mut self, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x7065_6572_646f_776e);
        if self.fault_every_ms.is_none() || !rng.gen_bool(0.5) {
            return;
        }
        self.hints = Some(HintParams {
            told: rng.gen_range(0.5..=1.0),
            delay_us: rng.gen_range(0..=5_000),
            spurious_every_ms: rng.gen_bool(0.7).then(|| rng.gen_range(100..=3_000)),
        });
    }
}

impl Params {
    /// Draws the byte limits on appends, added after the crash hints, from a stream of their
    /// own, so every seed that keeps the defaults replays exactly as before. Small budgets (a
    /// few commands) make leaders split batches and pause followers on bytes in flight.
    fn draw_byte_limits(&mut self, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x6279_7465_7321);
        if rng.gen_bool(0.5) {
            self.host.max_append_bytes = rng.gen_range(1..=300);
            self.host.max_inflight_bytes = rng.gen_range(1..=1_000);
        }
    }
}

/// What a run yields.
#[derive(Debug)]
pub struct Outcome {
    pub error: Option<String>,
    pub counters: Counters,
    pub trace_hash: u64,
    pub events: u64,
    pub sim_ms: u64,
    pub params: Params,
}

/// The simulated world.
pub struct World {
    pub now: u64,
    rng: SmallRng,
    pub params: Params,
    hosts: Vec<Host>,
    clients: Vec<Client>,
    net: Net,
    pub check: Checker,
    pub trace: Trace,
    next_fault: u64,
    heal_at: u64,
    healing: bool,
    leader_at: Option<u64>,
    pub events: u64,
    /// Committed indexes checked durable on a quorum.
    durable_checked: usize,
    out: Vec<(Addr, Addr, Payload)>,
    /// Crash hints to deliver: (time, host index, the node they say is down).
    hints: Vec<(u64, usize, NodeId)>,
    /// Each host's crash count last seen, to tell its survivors.
    restarts_seen: Vec<u32>,
    /// When the next spurious hint is due.
    next_spurious: u64,
    /// The hints' own randomness, so they perturb no other draw.
    hint_rng: SmallRng,
}

/// Runs one seed.
pub fn run(seed: u64, mode: Mode) -> Outcome {
    let mut w = World::new(seed, mode);
    let error = w.run().err();
    Outcome {
        error,
        counters: w.check.counters.clone(),
        trace_hash: w.trace.hash,
        events: w.events,
        sim_ms: w.now / US,
        params: w.params.clone(),
    }
}

impl World {
    fn new(seed: u64, mode: Mode) -> World {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut params = Params::draw(&mut rng);
        params.draw_late(seed);
        params.draw_hints(seed);
        params.draw_byte_limits(seed);
        let mut hint_rng = SmallRng::seed_from_u64(seed ^ 0x6869_6e74_7321);
        let next_spurious = match params.hints.as_ref().and_then(|h| h.spurious_every_ms) {
            Some(every) => hint_rng.gen_range(0..=every) * MS,
            None => u64::MAX,
        };
        let restarts_seen = vec![0; params.nodes];
        let ids: Vec<NodeId> = (1..=params.nodes as NodeId).collect();
        let membership = Membership {
            voters: ids.iter().map(|i| (*i, format!("n{i}"))).collect(),
            learners: Default::default(),
        };
        let hosts = ids
            .iter()
            .map(|id| {
                Host::new(
                    *id,
                    params.rates[*id as usize - 1],
                    membership.clone(),
                    params.host.clone(),
                    rng.gen(),
                )
            })
            .collect();
        let clients = (1..=params.clients as u64)
            .map(|c| {
                Client::new(
                    c,
                    SmallRng::seed_from_u64(rng.gen()),
                    params.client.clone(),
                    ids.clone(),
                )
            })
            .collect();
        let net = Net::new(SmallRng::seed_from_u64(rng.gen()), params.net.clone());
        let next_fault = params
            .fault_every_ms
            .map_or(u64::MAX, |f| rng.gen_range(0..=f) * MS);
        let mut trace = Trace::new(mode);
        trace.log(0, || format!("seed {seed}: {params:?}"));
        World {
            now: 0,
            rng,
            heal_at: params.chaos_ms * MS,
            params,
            hosts,
            clients,
            net,
            check: Checker::default(),
            trace,
            next_fault,
            healing: false,
            leader_at: None,
            events: 0,
            durable_checked: 0,
            out: Vec::new(),
            hints: Vec::new(),
            restarts_seen,
            next_spurious,
            hint_rng,
        }
    }

    fn ctx_parts(&mut self) -> (&mut Vec<Host>, Ctx<'_>) {
        (
            &mut self.hosts,
            Ctx {
                now: self.now,
                net: &mut self.net,
                check: &mut self.check,
                trace: &mut self.trace,
            },
        )
    }

    fn run(&mut self) -> Result<(), String> {
        loop {
            if !self.healing && self.now >= self.heal_at {
                self.heal();
            }
            if self.healing && self.heal_done()? {
                return self.final_checks();
            }
            // The next step: (time, rank, index); ties go to the network, hosts, clients,
            // then faults, each in id order.
            let mut next = (u64::MAX, 9usize, 0usize);
            if let Some(t) = self.net.next_time() {
                next = next.min((t, 0, 0));
            }
            for (i, h) in self.hosts.iter().enumerate() {
                next = next.min((h.next_time(), 1, i));
            }
            for (i, c) in self.clients.iter().enumerate() {
                next = next.min((c.next_time(), 2, i));
            }
            next = next.min((self.next_fault, 3, 0));
            if !self.healing {
                next = next.min((self.heal_at, 4, 0));
            }
            if let Some(t) = self.hints.iter().map(|h| h.0).min() {
                next = next.min((t, 5, 0));
            }
            if !self.healing {
                next = next.min((self.next_spurious, 6, 0));
            }
            let (t, rank, i) = next;
            self.now = self.now.max(t);
            self.events += 1;
            match rank {
                0 => self.deliver()?,
                1 => {
                    let (hosts, mut ctx) = self.ctx_parts();
                    hosts[i].wake(&mut ctx)?;
                }
                2 => {
                    let mut out = std::mem::take(&mut self.out);
                    self.clients[i].wake(self.now, &mut out);
                    self.flush(&mut out);
                    self.out = out;
                }
                3 => self.fault()?,
                5 => self.deliver_hints()?,
                6 => self.spurious_hint(),
                _ => continue,
            }
            self.after_step()?;
            self.hint_crashes();
        }
    }

    fn flush(&mut self, out: &mut Vec<(Addr, Addr, Payload)>) {
        for (from, to, payload) in out.drain(..) {
            let now = self.now;
            self.trace.log(now, || {
                format!("{} -> {}: {payload:?}", short(from), short(to))
            });
            self.net.send(now, Packet { from, to, payload });
        }
    }

    fn deliver(&mut self) -> Result<(), String> {
        let Some(p) = self.net.pop() else {
            return Ok(());
        };
        match p.to {
            // A node outside the simulation (the ghost member) never answers.
            Addr::Node(n) if n as usize > self.hosts.len() => Ok(()),
            Addr::Node(n) => {
                let (hosts, mut ctx) = self.ctx_parts();
                hosts[n as usize - 1].deliver(&mut ctx, p)
            }
            Addr::Client(c) => {
                if let Payload::Response { op, resp } = p.payload {
                    let mut out = std::mem::take(&mut self.out);
                    self.clients[c as usize - 1].on_response(self.now, op, resp, &mut out);
                    self.flush(&mut out);
                    self.out = out;
                }
                Ok(())
            }
        }
    }

    fn random_up(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..self.hosts.len())
            .filter(|i| self.hosts[*i].life == Life::Up)
            .collect();
        (!up.is_empty()).then(|| up[self.rng.gen_range(0..up.len())])
    }

    fn leader(&self) -> Option<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.life == Life::Up)
            .filter_map(|(i, h)| h.leading().map(|t| (t, i)))
            .max()
            .map(|(_, i)| i)
    }

    /// One fault, drawn among the kinds this seed enables.
    fn fault(&mut self) -> Result<(), String> {
        let every = self.params.fault_every_ms.unwrap_or(1_000);
        self.next_fault = self.now + self.rng.gen_range(every / 2..=every * 3 / 2) * MS;
        let mut kinds = Vec::new();
        if self.params.crash {
            kinds.push(0);
        }
        if self.params.pause {
            kinds.push(1);
        }
        if self.params.partition {
            kinds.extend([2, 2]);
        }
        if self.params.transfer {
            kinds.push(3);
        }
        if self.params.ghost {
            kinds.push(4);
        }
        if self.params.lose_tail {
            kinds.push(5);
        }
        if kinds.is_empty() {
            return Ok(());
        }
        let now = self.now;
        match kinds[self.rng.gen_range(0..kinds.len())] {
            0 => {
                // Crash: often the leader; sometimes inside its next Ready; sometimes the
                // leader now and a voter in the election that follows, before its vote is
                // durable.
                if self.rng.gen_bool(0.25) {
                    if let Some(l) = self.leader() {
                        let down = self.rng.gen_range(100..3_000) * MS;
                        let (hosts, mut ctx) = self.ctx_parts();
                        hosts[l].crash(&mut ctx, down)?;
                        for (i, h) in self.hosts.iter_mut().enumerate() {
                            if i != l && h.life == Life::Up && self.rng.gen_bool(0.5) {
                                h.crash_armed =
                                    Some((CrashPoint::VoteBeforeFsync, now + 2_000 * MS));
                            }
                        }
                        self.trace
                            .log(now, || "voters armed to crash on their vote".into());
                        return Ok(());
                    }
                }
                let target = if self.rng.gen_bool(0.4) {
                    self.leader()
                } else {
                    self.random_up()
                };
                let Some(i) = target else { return Ok(()) };
                let down = self.rng.gen_range(100..3_000) * MS;
                if self.rng.gen_bool(self.params.crash_in_ready) {
                    let point = match self.rng.gen_range(0..4) {
                        0 | 1 => CrashPoint::BeforeFsync,
                        2 => CrashPoint::AfterFsync,
                        _ => CrashPoint::AfterDurable,
                    };
                    self.trace
                        .log(now, || format!("n{} crash armed at {point:?}", i + 1));
                    self.hosts[i].crash_armed = Some((point, now + 300 * MS));
                } else {
                    let (hosts, mut ctx) = self.ctx_parts();
                    hosts[i].crash(&mut ctx, down)?;
                }
            }
            1 => {
                let Some(i) = (if self.rng.gen_bool(0.4) {
                    self.leader()
                } else {
                    self.random_up()
                }) else {
                    return Ok(());
                };
                let ms = self.rng.gen_range(50..=self.params.client.ttl_ms * 5 / 2);
                let (hosts, mut ctx) = self.ctx_parts();
                hosts[i].pause(&mut ctx, now + ms * MS);
            }
            2 => self.partition(),
            5 => self.lose_tail()?,
            4 => {
                // Add a node that never answers (or remove it again).
                if let Some(i) = self.leader() {
                    let (hosts, mut ctx) = self.ctx_parts();
                    hosts[i].ghost_membership(&mut ctx)?;
                }
            }
            _ => {
                if let Some(i) = self.leader() {
                    self.trace
                        .log(now, || format!("n{} transfers leadership", i + 1));
                    let (hosts, mut ctx) = self.ctx_parts();
                    hosts[i].transfer_leadership(&mut ctx)?;
                }
            }
        }
        Ok(())
    }

    /// Crashes a node, mostly a follower, and loses the tail of its durable log: entries it
    /// may have acknowledged, outside Raft's crash model. Raft cannot stay safe if a lost entry
    /// was needed for a quorum, so only entries that a majority of the OTHER nodes hold durably
    /// are lost: every committed entry then stays on a majority, and every invariant must still
    /// hold. What this tests is the repair: the leader must notice that the node's log ends
    /// below its match index and resend, or the node stays behind and the liveness check after
    /// healing (every node applies the leader's log) fails.
    fn lose_tail(&mut self) -> Result<(), String> {
        let leader = self.leader();
        let target = if leader.is_some() && self.rng.gen_bool(0.8) {
            let followers: Vec<usize> = (0..self.hosts.len())
                .filter(|i| Some(*i) != leader && self.hosts[*i].life == Life::Up)
                .collect();
            (!followers.is_empty()).then(|| followers[self.rng.gen_range(0..followers.len())])
        } else {
            self.random_up()
        };
        let Some(i) = target else { return Ok(()) };
        let down = self.rng.gen_range(100..1_500) * MS;
        let (hosts, mut ctx) = self.ctx_parts();
        hosts[i].crash(&mut ctx, down)?;
        let quorum = self.hosts.len() / 2 + 1;
        let disk = self.hosts[i].disk.durable();
        let (snap, last) = (disk.snap_index(), disk.last_index());
        // The lowest index from which every entry up to `last` is held by a quorum of others.
        let mut from = last + 1;
        while from > snap + 1 {
            let index = from - 1;
            let term = disk.term_at(index);
            let holders = (0..self.hosts.len())
                .filter(|j| *j != i && self.hosts[*j].disk.durable().term_at(index) == term)
                .count();
            if holders < quorum {
                break;
            }
            from = index;
        }
        if from > last {
            return Ok(());
        }
        let keep_to = self.rng.gen_range(from - 1..last);
        let lost = self.hosts[i].disk.lose_suffix(keep_to);
        self.check.counters.lost_tails += 1;
        let now = self.now;
        self.trace.log(now, || {
            format!(
                "n{} LOST {lost} durable entries: its log now ends at {keep_to} (was {last})",
                i + 1
            )
        });
        Ok(())
    }

    /// Replaces the partition with a new one (or heals).
    fn partition(&mut self) {
        let n = self.hosts.len() as u64;
        let node = |i: u64| Addr::Node(i);
        self.net.heal();
        match self.rng.gen_range(0..6) {
            0 => {}
            1 => {
                // Symmetric split into two sides.
                let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                for a in 1..=n {
                    for b in 1..=n {
                        if side[a as usize - 1] != side[b as usize - 1] {
                            self.net.cut(node(a), node(b));
                        }
                    }
                }
            }
            2 => {
                // One-way cuts.
                for _ in 0..self.rng.gen_range(1..=n) {
                    let (a, b) = (self.rng.gen_range(1..=n), self.rng.gen_range(1..=n));
                    if a != b {
                        self.net.cut(node(a), node(b));
                    }
                }
            }
            3 => {
                // Partial connectivity: some links down both ways, the graph stays connected
                // through others (Howard's case: a node sees everyone, the others not each other).
                let hub = self.rng.gen_range(1..=n);
                for a in 1..=n {
                    for b in (a + 1)..=n {
                        if a != hub && b != hub && self.rng.gen_bool(0.7) {
                            self.net.cut_both(node(a), node(b));
                        }
                    }
                }
            }
            4 => {
                // Isolate the leader.
                if let Some(l) = self.leader() {
                    for b in 1..=n {
                        if b != l as u64 + 1 {
                            self.net.cut_both(node(l as u64 + 1), node(b));
                        }
                    }
                }
            }
            _ => {
                // Cut a client from some nodes.
                let c = self.rng.gen_range(1..=self.clients.len() as u64);
                for b in 1..=n {
                    if self.rng.gen_bool(0.5) {
                        self.net.cut_both(Addr::Client(c), node(b));
                    }
                }
            }
        }
        let now = self.now;
        let d = self.net.describe();
        self.trace.log(now, || format!("PARTITION [{d}]"));
    }

    /// Schedules the truthful hints of every crash since the last step: each other node is
    /// told (with the seed's chance) a little later, as its transport would be when the
    /// crashed process's connections reset and its port refuses the redial.
    fn hint_crashes(&mut self) {
        let Some(hp) = self.params.hints.clone() else {
            return;
        };
        for i in 0..self.hosts.len() {
            if self.hosts[i].restarts == self.restarts_seen[i] {
                continue;
            }
            self.restarts_seen[i] = self.hosts[i].restarts;
            for j in 0..self.hosts.len() {
                if j != i && self.hint_rng.gen_bool(hp.told) {
                    let at = self.now + self.hint_rng.gen_range(0..=hp.delay_us);
                    self.hints.push((at, j, i as NodeId + 1));
                }
            }
        }
    }

    /// A spurious hint: a node that is up hears that a live node (the leader, mostly) is down,
    /// as if a redial had been refused for another reason.
    fn spurious_hint(&mut self) {
        let every = self
            .params
            .hints
            .as_ref()
            .and_then(|h| h.spurious_every_ms)
            .unwrap_or(1_000);
        self.next_spurious = self.now + self.hint_rng.gen_range(every / 2..=every * 3 / 2) * MS;
        let up: Vec<usize> = (0..self.hosts.len())
            .filter(|i| self.hosts[*i].life == Life::Up)
            .collect();
        if up.len() < 2 {
            return;
        }
        let to = up[self.hint_rng.gen_range(0..up.len())];
        let about = match self.leader() {
            Some(l) if l != to && self.hint_rng.gen_bool(0.8) => l,
            _ => up[self.hint_rng.gen_range(0..up.len())],
        };
        if about != to {
            self.hints.push((self.now, to, about as NodeId + 1));
        }
    }

    /// Delivers the hints that are due (a host that is not up ignores them: a paused or
    /// crashed process sees no reset).
    fn deliver_hints(&mut self) -> Result<(), String> {
        let now = self.now;
        let due: Vec<(u64, usize, NodeId)> =
            self.hints.iter().copied().filter(|h| h.0 <= now).collect();
        self.hints.retain(|h| h.0 > now);
        for (_, to, about) in due {
            let alive = !matches!(self.hosts[about as usize - 1].life, Life::Down { .. });
            let follows = self.hosts[to]
                .node()
                .is_some_and(|n| n.leader() == Some(about));
            if follows && alive {
                self.check.counters.spurious_leader_hints += 1;
            } else if follows {
                self.check.counters.leader_hints += 1;
            }
            self.trace.log(now, || {
                let what = if alive { "spurious" } else { "crash" };
                format!("n{} HINT ({what}): n{about} is down", to + 1)
            });
            let (hosts, mut ctx) = self.ctx_parts();
            hosts[to].peer_down(&mut ctx, about)?;
        }
        Ok(())
    }

    /// Faults off, every node up, clients finish what they do.
    fn heal(&mut self) {
        self.healing = true;
        self.heal_at = self.now;
        self.next_fault = u64::MAX;
        self.net.heal();
        self.net.faults = NetFaults::default();
        for h in &mut self.hosts {
            h.crash_armed = None;
            match h.life {
                Life::Down { .. } => h.life = Life::Down { until: self.now },
                Life::Paused { .. } => h.life = Life::Paused { until: self.now },
                Life::Up => {}
            }
        }
        for c in &mut self.clients {
            c.quiesce = true;
            if c.paused_until.is_some() {
                c.paused_until = Some(self.now);
            }
        }
        let now = self.now;
        self.trace.log(now, || "HEAL".to_string());
    }

    /// Liveness after healing: a leader every node follows within 10 election timeouts;
    /// every client's operation done, and every node applied the leader's whole log, within
    /// 40 s.
    fn heal_done(&mut self) -> Result<bool, String> {
        let since = self.now - self.heal_at;
        let Some(l) = self.leader() else {
            if self.leader_at.is_none() && since > 10 * ELECTION_MAX_MS * MS {
                return Err(format!(
                    "Liveness: no leader {} ms after healing",
                    since / MS
                ));
            }
            return Ok(false);
        };
        let lead = self.hosts[l].node().expect("leader is up");
        let (term, last) = (lead.term(), lead.last_index());
        let all_follow = self.hosts.iter().all(|h| {
            h.node()
                .as_ref()
                .is_some_and(|n| n.term() == term && n.leader() == Some(l as NodeId + 1))
        });
        if self.leader_at.is_none() {
            if all_follow {
                self.leader_at = Some(self.now);
            } else if since > 10 * ELECTION_MAX_MS * MS {
                return Err(format!(
                    "Liveness: no leader followed by all {} ms after healing",
                    since / MS
                ));
            }
        }
        let clients_done = self.clients.iter().all(|c| !c.busy());
        let applied = self.hosts.iter().all(|h| {
            h.node()
                .as_ref()
                .is_some_and(|n| n.applied_index() == last && n.role() != Role::Candidate)
        });
        if all_follow && clients_done && applied {
            return Ok(true);
        }
        if since > 40_000 * MS {
            let pending: Vec<String> = self
                .clients
                .iter()
                .filter(|c| c.busy())
                .map(|c| format!("c{}: {}", c.id, c.pending()))
                .collect();
            return Err(format!(
                "Liveness: {} ms after healing, pending: [{}], applied {:?} of {last}",
                since / MS,
                pending.join("; "),
                self.hosts
                    .iter()
                    .map(|h| h.node().map(|n| n.applied_index()))
                    .collect::<Vec<_>>()
            ));
        }
        Ok(false)
    }

    /// The checks after every step.
    fn after_step(&mut self) -> Result<(), String> {
        for h in &mut self.hosts {
            let Some(node) = h.node() else {
                continue;
            };
            if h.drained() && node.last_index() != h.shadow.last() {
                return Err(format!(
                    "n{}: log ends at {} but {} was handed out",
                    h.id,
                    node.last_index(),
                    h.shadow.last()
                ));
            }
            let (commit, applied, term) = (node.commit_index(), node.applied_index(), node.term());
            if commit < h.seen_commit || applied < h.seen_applied {
                return Err(format!(
                    "Monotonic indexes: n{}: commit {} -> {commit}, applied {} -> {applied}",
                    h.id, h.seen_commit, h.seen_applied
                ));
            }
            if applied > commit || (h.drained() && h.space().applied_index() != applied) {
                return Err(format!(
                    "n{}: applied {applied} (state at {}), commit {commit}",
                    h.id,
                    h.space().applied_index()
                ));
            }
            h.seen_applied = applied;
            let leading = h.leading();
            if let Some(term) = leading {
                self.check.election_safety(h.id, term)?;
            }
            // The log checks compare with what was handed out for writing: while the pipeline
            // is full, the node's log (and what it counts as committed) may be ahead of that,
            // so they wait until the host has taken the node's output again.
            if !h.drained() {
                continue;
            }
            self.check
                .observe_commit(h.id, term, &h.shadow, h.seen_commit, commit)?;
            h.seen_commit = commit;
            if let Some(term) = leading {
                self.check.leader_completeness(h.id, term, &h.shadow)?;
            }
            self.check
                .leader_append_only(h.id, leading, &h.shadow, false)?;
        }
        let after = self.check.committed.len();
        if after > self.durable_checked {
            let disks: Vec<&Durable> = self.hosts.iter().map(|h| h.disk.durable()).collect();
            for i in self.durable_checked + 1..=after {
                self.check.commit_durable(i as u64, &disks)?;
            }
            self.durable_checked = after;
        }
        for s in std::mem::take(&mut self.check.expired_now) {
            if self
                .clients
                .iter()
                .any(|c| c.paused_holder(self.now) == Some(s))
            {
                self.check.counters.expired_paused_holders += 1;
            }
        }
        for c in &self.clients {
            if let Some(v) = c.violations.first() {
                return Err(v.clone());
            }
        }
        Ok(())
    }

    /// End of run: client-visible consistency, files and states identical everywhere.
    fn final_checks(&mut self) -> Result<(), String> {
        self.check.acknowledged_grants(&self.clients)?;
        self.check
            .acknowledged_appends(&self.clients, self.hosts[0].space())?;
        let reference = self.hosts[0].space().snapshot();
        for h in &self.hosts[1..] {
            if h.space().snapshot() != reference {
                return Err(format!(
                    "Replicas differ: n{} and n1 have different states at {} / {}",
                    h.id,
                    h.space().applied_index(),
                    self.hosts[0].space().applied_index()
                ));
            }
        }
        self.check.counters.acked_appends += self
            .clients
            .iter()
            .map(|c| c.acked_appends.len() as u64)
            .sum::<u64>();
        let now = self.now;
        let c = self.check.counters.clone();
        self.trace.log(now, || format!("END {c:?}"));
        Ok(())
    }
}
