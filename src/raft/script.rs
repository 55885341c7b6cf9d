//! A goldenscript runner for scenario tests of the Raft core (in the style of toydb's).
//!
//! Each file in `src/raft/testscripts/` is a list of blocks: `#` comment lines, then one or
//! more commands, then `---` and the expected output, then a blank line. The runner drives a
//! simulated cluster (network queue, disks that lose unsynced writes on a crash, a tiny state
//! machine that records applied commands), prints every message sent, every state change, every
//! write made durable and every entry applied, and checks Raft's safety properties after each
//! command. `UPDATE_GOLDENFILES=1 cargo test --lib raft` rewrites the expected outputs.
//!
//! Commands (node ids are numbers; `[x]` is optional):
//! - `cluster nodes=N [seed=S] [prevote=false] [checkquorum=false] [heartbeat=H]
//!   [election=MIN-MAX] [inflight=I] [batch=B] [eagercommit=false]`: a new bootstrapped cluster.
//! - `tick [n] [node]`: advances time on every live node (or one).
//! - `campaign N`: N campaigns at once, as after a `TimeoutNow`.
//! - `down N M`: N's runtime reports that M's process is gone (`Node::peer_down`).
//! - `deliver [from->to | N]`: delivers the queued messages (matching, or to N), once.
//! - `stabilize`: delivers until no message is left.
//! - `drop [from->to | N]`, `duplicate [from->to | N]`, `reorder [from->to | N]`: act on the
//!   queued messages (reorder reverses the matching ones).
//! - `partition 1 | 2 3` (or `partition 1`: isolate), `heal`.
//! - `hold N`: N's writes stay unsynced until `persist N`; `release N` goes back to automatic.
//! - `crash N` (unsynced writes are lost), `restart N`, `wipe N` (empty disk, no bootstrap).
//! - `lose N K`: crashed N's disk loses its last K durable entries (a damaged disk).
//! - `propose N data...` (several proposals before one Ready), `read N id`, `transfer N [to]`, `snapshot N`.
//! - `add N [learner]`, `remove N`, `promote N`: a membership change proposed by the leader.
//! - `status [N]`, `log N`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

use super::*;

/// What a node has made durable.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl Disk {
    fn last(&self) -> (Index, Term) {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => (e.index, e.term),
            (None, Some(s)) => (s.meta.index, s.meta.term),
            (None, None) => (0, 0),
        }
    }
}

/// A simulated node: the core, its disk, its unsynced writes and its state machine.
struct SimNode {
    node: Node,
    config: Config,
    disk: Disk,
    unsynced: VecDeque<Ready>,
    hold: bool,
    up: bool,
    /// Applied commands, index → data (the state machine).
    machine: Vec<(Index, String)>,
    applied: Index,
    /// (role, term, leader) last printed.
    shown: (Role, Term, Option<NodeId>),
}

/// The cluster under test.
struct Sim {
    seed: u64,
    base: Config,
    nodes: BTreeMap<NodeId, SimNode>,
    queue: Vec<Envelope>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Every term's leader, for election safety.
    leaders: BTreeMap<Term, NodeId>,
    /// Every applied index's entry, for state machine safety.
    applied: BTreeMap<Index, (Term, String)>,
    restarts: u64,
}

fn members(ids: &[NodeId]) -> Membership {
    Membership {
        voters: ids.iter().map(|&i| (i, format!("n{i}"))).collect(),
        learners: BTreeMap::new(),
    }
}

fn fmt_members(m: &Membership) -> String {
    let v: Vec<String> = m.voters.keys().map(|i| i.to_string()).collect();
    let mut s = format!("voters={}", v.join(","));
    if !m.learners.is_empty() {
        let l: Vec<String> = m.learners.keys().map(|i| i.to_string()).collect();
        write!(s, " learners={}", l.join(",")).unwrap();
    }
    s
}

fn fmt_data(data: &EntryData) -> String {
    match data {
        EntryData::Noop => "noop".into(),
        EntryData::Command(c) => format!("{:?}", String::from_utf8_lossy(c)),
        EntryData::Config(m) => format!("config({})", fmt_members(m)),
    }
}

fn fmt_entry(e: &Entry) -> String {
    format!("{}@{} {}", e.index, e.term, fmt_data(&e.data))
}

fn fmt_entries(entries: &[Entry]) -> String {
    let v: Vec<String> = entries.iter().map(fmt_entry).collect();
    format!("[{}]", v.join(", "))
}

fn fmt_message(m: &Message) -> String {
    match m {
        Message::PreVote {
            last_index,
            last_term,
        } => format!("PreVote last={last_index}@{last_term}"),
        Message::PreVoteResponse { granted } => format!("PreVoteResponse granted={granted}"),
        Message::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            let t = if *transfer { " transfer" } else { "" };
            format!("Vote last={last_index}@{last_term}{t}")
        }
        Message::VoteResponse { granted } => format!("VoteResponse granted={granted}"),
        Message::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            format!(
                "Append prev={prev_index}@{prev_term} commit={commit} {}",
                fmt_entries(entries)
            )
        }
        Message::AppendResponse { index } => format!("AppendResponse index={index}"),
        Message::AppendReject {
            rejected,
            conflict_index,
            conflict_term,
        } => {
            let t = conflict_term.map(|t| format!("@{t}")).unwrap_or_default();
            format!("AppendReject rejected={rejected} hint={conflict_index}{t}")
        }
        Message::Heartbeat { commit, read_seq } => {
            format!("Heartbeat commit={commit} read_seq={read_seq}")
        }
        Message::HeartbeatResponse { read_seq } => format!("HeartbeatResponse read_seq={read_seq}"),
        Message::InstallSnapshot { snapshot } => format!(
            "InstallSnapshot {}@{} {}",
            snapshot.meta.index,
            snapshot.meta.term,
            fmt_members(&snapshot.meta.membership)
        ),
        Message::TimeoutNow => "TimeoutNow".into(),
    }
}

fn fmt_envelope(e: &Envelope) -> String {
    format!(
        "n{}@{} → n{} {}",
        e.from,
        e.term,
        e.to,
        fmt_message(&e.message)
    )
}

/// A message filter: `from->to`, `N` (to N), or everything.
/// A predicate over queued messages.
type Filter = Box<dyn Fn(&Envelope) -> bool>;

fn filter(arg: Option<&str>) -> Result<Filter, String> {
    match arg {
        None => Ok(Box::new(|_| true)),
        Some(a) if a.contains("->") => {
            let (f, t) = a.split_once("->").unwrap_or_default();
            let f: NodeId = f.parse().map_err(|_| format!("bad filter {a}"))?;
            let t: NodeId = t.parse().map_err(|_| format!("bad filter {a}"))?;
            Ok(Box::new(move |e| e.from == f && e.to == t))
        }
        Some(a) => {
            let t: NodeId = a.parse().map_err(|_| format!("bad filter {a}"))?;
            Ok(Box::new(move |e| e.to == t))
        }
    }
}

impl Sim {
    fn new(args: &BTreeMap<String, String>) -> Result<Sim, String> {
        let get = |k: &str, d: u64| -> Result<u64, String> {
            args.get(k)
                .map_or(Ok(d), |v| v.parse().map_err(|_| format!("bad {k}={v}")))
        };
        let n = get("nodes", 3)?;
        let mut base = Config::new(0);
        base.pre_vote = args.get("prevote").map_or(true, |v| v != "false");
        base.check_quorum = args.get("checkquorum").map_or(true, |v| v != "false");
        base.eager_commit = args.get("eagercommit").map_or(true, |v| v != "false");
        base.heartbeat_ticks = get("heartbeat", 2)? as u32;
        let (lo, hi) = args.get("election").map_or(Ok((10, 20)), |v| {
            let (a, b) = v.split_once('-').ok_or("election=MIN-MAX")?;
            Ok::<_, String>((
                a.parse().map_err(|_| "bad election")?,
                b.parse().map_err(|_| "bad election")?,
            ))
        })?;
        base.election_ticks_min = lo;
        base.election_ticks_max = hi;
        base.max_inflight_appends = get("inflight", 3)? as usize;
        base.max_entries_per_append = get("batch", 8)? as usize;
        let ids: Vec<NodeId> = (1..=n).collect();
        base.bootstrap = Some(members(&ids));
        let mut sim = Sim {
            seed: get("seed", 0)?,
            base,
            nodes: BTreeMap::new(),
            queue: Vec::new(),
            blocked: BTreeSet::new(),
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            restarts: 0,
        };
        for id in ids {
            let config = Config {
                id,
                ..sim.base.clone()
            };
            sim.start(id, config, Disk::default());
        }
        Ok(sim)
    }

    fn start(&mut self, id: NodeId, config: Config, disk: Disk) {
        let recovered = Recovered {
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.clone(),
            entries: disk.entries.clone(),
        };
        let seed = self.seed * 1000 + id + self.restarts * 100;
        let node = Node::new(config.clone(), recovered, seed);
        let (machine, applied) = match &disk.snapshot {
            Some(s) => (decode_machine(&s.data), s.meta.index),
            None => (Vec::new(), 0),
        };
        let shown = (node.role(), node.term(), node.leader());
        self.nodes.insert(
            id,
            SimNode {
                node,
                config,
                disk,
                unsynced: VecDeque::new(),
                hold: false,
                up: true,
                machine,
                applied,
                shown,
            },
        );
    }

    fn node(&mut self, id: NodeId) -> Result<&mut SimNode, String> {
        match self.nodes.get_mut(&id) {
            Some(n) if n.up => Ok(n),
            Some(_) => Err(format!("n{id} is down")),
            None => Err(format!("no node n{id}")),
        }
    }

    fn leader(&self) -> Result<NodeId, String> {
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up && n.node.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        match leaders.as_slice() {
            [] => Err("no leader".into()),
            [one] => Ok(*one),
            many => {
                // Several nodes may believe they lead (different terms): the highest term wins.
                Ok(*many
                    .iter()
                    .max_by_key(|id| self.nodes[id].node.term())
                    .unwrap_or(&many[0]))
            }
        }
    }

    /// Queues a message, or drops it if its link is cut.
    fn send(&mut self, e: Envelope, out: &mut String) {
        if self.blocked.contains(&(e.from, e.to)) {
            writeln!(out, "{} (dropped: partition)", fmt_envelope(&e)).unwrap();
        } else {
            writeln!(out, "{}", fmt_envelope(&e)).unwrap();
            self.queue.push(e);
        }
    }

    /// Takes every live node's Ready: sends its messages and syncs its writes (unless held).
    fn process(&mut self, out: &mut String) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let n = self.nodes.get_mut(&id).expect("node");
            if !n.up {
                continue;
            }
            let mut rd = n.node.ready();
            let messages = std::mem::take(&mut rd.messages);
            let hold = n.hold;
            if !rd.is_empty() {
                n.unsynced.push_back(rd);
            }
            self.show_state(id, out);
            for m in messages {
                self.send(m, out);
            }
            if !hold {
                self.sync(id, out)?;
            }
        }
        self.check()
    }

    fn show_state(&mut self, id: NodeId, out: &mut String) {
        let n = &mut self.nodes.get_mut(&id).expect("node");
        let now = (n.node.role(), n.node.term(), n.node.leader());
        if now != n.shown {
            let leader = now.2.map(|l| format!("n{l}")).unwrap_or("none".into());
            writeln!(
                out,
                "n{id} {:?} → {:?} term={} leader={leader}",
                n.shown.0, now.0, now.1
            )
            .unwrap();
            n.shown = now;
            if now.0 == Role::Leader {
                if let Some(other) = self.leaders.insert(now.1, id) {
                    assert_eq!(other, id, "two leaders in term {}", now.1);
                }
            }
        }
    }

    /// Makes a node's unsynced batches durable, then does steps 3-5 of the Ready contract.
    fn sync(&mut self, id: NodeId, out: &mut String) -> Result<(), String> {
        loop {
            let n = self.nodes.get_mut(&id).expect("node");
            let Some(rd) = n.unsynced.pop_front() else {
                break;
            };
            let mut wrote = Vec::new();
            if let Some(s) = &rd.snapshot {
                n.disk.entries.retain(|e| e.index > s.meta.index);
                n.disk.snapshot = Some(s.clone());
                wrote.push(format!("snapshot={}@{}", s.meta.index, s.meta.term));
            }
            if let Some(t) = rd.truncate_from {
                n.disk.entries.retain(|e| e.index < t);
                wrote.push(format!("truncate_from={t}"));
            }
            if !rd.append.is_empty() {
                let (last, _) = n.disk.last();
                assert_eq!(
                    rd.append[0].index,
                    last + 1,
                    "n{id}: append not contiguous on disk"
                );
                n.disk.entries.extend(rd.append.iter().cloned());
                wrote.push(format!("append={}", fmt_entries(&rd.append)));
            }
            if let Some(hs) = rd.hard_state {
                n.disk.hard_state = hs;
                let vote = hs.vote.map(|v| format!("n{v}")).unwrap_or("none".into());
                wrote.push(format!(
                    "hard_state(term={} vote={vote} commit={})",
                    hs.term, hs.commit
                ));
            }
            if !wrote.is_empty() {
                writeln!(out, "n{id} persist {}", wrote.join(" ")).unwrap();
            }
            for m in rd.persisted_messages {
                self.send(m, out);
            }
            let n = self.nodes.get_mut(&id).expect("node");
            if let Some(last) = rd.append.last() {
                n.node.persisted(last.index, last.term);
            }
            if let Some(s) = &rd.snapshot {
                n.machine = decode_machine(&s.data);
                n.applied = s.meta.index;
                writeln!(
                    out,
                    "n{id} restore snapshot {}@{}",
                    s.meta.index, s.meta.term
                )
                .unwrap();
            }
            for e in &rd.committed {
                assert_eq!(e.index, n.applied + 1, "n{id}: applied out of order");
                n.applied = e.index;
                let data = fmt_data(&e.data);
                if let EntryData::Command(c) = &e.data {
                    n.machine
                        .push((e.index, String::from_utf8_lossy(c).into_owned()));
                }
                writeln!(out, "n{id} apply {}", fmt_entry(e)).unwrap();
                if let Some((t, d)) = self.applied.get(&e.index) {
                    assert_eq!(
                        (t, d),
                        (&e.term, &data),
                        "n{id}: state machine safety at {}",
                        e.index
                    );
                } else {
                    self.applied.insert(e.index, (e.term, data));
                }
            }
            let n = self.nodes.get_mut(&id).expect("node");
            for (rid, index) in rd.reads {
                writeln!(
                    out,
                    "n{id} read {rid} ready at index={index} (applied={})",
                    n.applied
                )
                .unwrap();
            }
        }
        Ok(())
    }

    /// Safety checks after every command.
    fn check(&self) -> Result<(), String> {
        for (id, n) in &self.nodes {
            if !n.up {
                continue;
            }
            let st = n.node.status();
            assert!(
                st.commit_index <= st.last_index,
                "n{id}: commit past last index"
            );
            // Log matching against every other live node on the entries both hold.
            for (oid, o) in &self.nodes {
                if oid <= id || !o.up {
                    continue;
                }
                let upto = st.last_index.min(o.node.last_index());
                let mut i = upto;
                while i > 0 {
                    match (n.node.entry(i), o.node.entry(i)) {
                        (Some(a), Some(b)) if a.term == b.term => {
                            assert_eq!(a, b, "log matching: n{id} and n{oid} at {i}");
                            break;
                        }
                        _ => i -= 1,
                    }
                }
            }
        }
        Ok(())
    }

    fn change(
        &mut self,
        cmd: &str,
        id: NodeId,
        learner: bool,
        out: &mut String,
    ) -> Result<(), String> {
        let leader = self.leader()?;
        let mut m = self.nodes[&leader].node.membership().clone();
        let addr = format!("n{id}");
        match cmd {
            "add" if learner => {
                m.learners.insert(id, addr);
            }
            "add" => {
                m.voters.insert(id, addr);
            }
            "remove" => {
                m.voters.remove(&id);
                m.learners.remove(&id);
            }
            "promote" => {
                m.learners.remove(&id);
                m.voters.insert(id, addr);
            }
            _ => return Err(format!("unknown change {cmd}")),
        }
        if cmd == "add" && !self.nodes.contains_key(&id) {
            let config = Config {
                id,
                bootstrap: None,
                ..self.base.clone()
            };
            self.start(id, config, Disk::default());
            writeln!(out, "n{id} started with an empty disk").unwrap();
        }
        match self
            .nodes
            .get_mut(&leader)
            .expect("leader")
            .node
            .propose_membership(m)
        {
            Ok((i, t)) => writeln!(out, "n{leader} proposed membership change at {i}@{t}").unwrap(),
            Err(e) => writeln!(out, "n{leader} refused: {e}").unwrap(),
        }
        Ok(())
    }

    fn deliver(&mut self, arg: Option<&str>, out: &mut String) -> Result<(), String> {
        let f = filter(arg)?;
        let (take, keep): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|e| f(e));
        self.queue = keep;
        for e in take {
            if self.blocked.contains(&(e.from, e.to)) {
                writeln!(out, "{} (dropped: partition)", fmt_envelope(&e)).unwrap();
                continue;
            }
            match self.nodes.get_mut(&e.to) {
                Some(n) if n.up => n.node.step(e),
                _ => writeln!(out, "{} (dropped: n{} down)", fmt_envelope(&e), e.to).unwrap(),
            }
        }
        self.process(out)
    }

    fn status(&self, id: NodeId, out: &mut String) {
        let n = &self.nodes[&id];
        if !n.up {
            writeln!(out, "n{id} down").unwrap();
            return;
        }
        let s = n.node.status();
        let leader = s.leader.map(|l| format!("n{l}")).unwrap_or("none".into());
        write!(
            out,
            "n{id} {:?} term={} leader={leader} last={} commit={} applied={} {}",
            s.role,
            s.term,
            s.last_index,
            s.commit_index,
            n.applied,
            fmt_members(&s.membership)
        )
        .unwrap();
        if !s.match_index.is_empty() {
            let m: Vec<String> = s
                .match_index
                .iter()
                .map(|(i, x)| format!("n{i}:{x}"))
                .collect();
            write!(out, " match=[{}]", m.join(" ")).unwrap();
        }
        writeln!(out).unwrap();
    }

    fn run(&mut self, line: &str, out: &mut String) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .ok_or(format!("missing argument {i}"))?
                .parse()
                .map_err(|_| format!("bad number in {line}"))
        };
        match words[0] {
            "tick" => {
                let n = if words.len() > 1 { num(1)? } else { 1 };
                let only = if words.len() > 2 { Some(num(2)?) } else { None };
                for _ in 0..n {
                    for (id, node) in self.nodes.iter_mut() {
                        if node.up && only.map_or(true, |o| o == *id) {
                            node.node.tick();
                        }
                    }
                    self.process(out)?;
                }
            }
            "campaign" => {
                self.node(num(1)?)?.node.campaign_now();
                self.process(out)?;
            }
            "down" => {
                // `down N M`: N's runtime saw its link to M end and a redial refused.
                let (id, peer) = (num(1)?, num(2)?);
                writeln!(out, "n{id} hint: n{peer} is down").unwrap();
                self.node(id)?.node.peer_down(peer);
                self.process(out)?;
            }
            "deliver" => self.deliver(words.get(1).copied(), out)?,
            "stabilize" => {
                let mut rounds = 0;
                while !self.queue.is_empty() {
                    rounds += 1;
                    if rounds > 100 {
                        return Err("no quiescence after 100 rounds".into());
                    }
                    self.deliver(None, out)?;
                }
            }
            "drop" | "duplicate" | "reorder" => {
                let f = filter(words.get(1).copied())?;
                let (hit, keep): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.queue)
                    .into_iter()
                    .partition(|e| f(e));
                self.queue = keep;
                match words[0] {
                    "drop" => {
                        for e in hit {
                            writeln!(out, "{} (dropped)", fmt_envelope(&e)).unwrap();
                        }
                    }
                    "duplicate" => {
                        for e in &hit {
                            writeln!(out, "{} (duplicated)", fmt_envelope(e)).unwrap();
                        }
                        self.queue.extend(hit.iter().cloned());
                        self.queue.extend(hit);
                    }
                    _ => {
                        for e in hit.iter().rev() {
                            writeln!(out, "{} (reordered)", fmt_envelope(e)).unwrap();
                        }
                        self.queue.extend(hit.into_iter().rev());
                    }
                }
            }
            "partition" => {
                let groups: Vec<Vec<NodeId>> = line["partition".len()..]
                    .split('|')
                    .map(|g| {
                        g.split_whitespace()
                            .filter_map(|w| w.parse().ok())
                            .collect()
                    })
                    .collect();
                let groups = if groups.len() == 1 {
                    let rest = self
                        .nodes
                        .keys()
                        .copied()
                        .filter(|i| !groups[0].contains(i))
                        .collect();
                    vec![groups[0].clone(), rest]
                } else {
                    groups
                };
                for (gi, g) in groups.iter().enumerate() {
                    for (hi, h) in groups.iter().enumerate() {
                        if gi != hi {
                            for a in g {
                                for b in h {
                                    self.blocked.insert((*a, *b));
                                }
                            }
                        }
                    }
                }
                let g: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|i| format!("n{i}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                writeln!(out, "partitioned {}", g.join(" | ")).unwrap();
            }
            "heal" => {
                self.blocked.clear();
                writeln!(out, "healed").unwrap();
            }
            "hold" => {
                self.node(num(1)?)?.hold = true;
            }
            "release" => {
                let id = num(1)?;
                self.node(id)?.hold = false;
                self.sync(id, out)?;
            }
            "persist" => {
                let id = num(1)?;
                self.node(id)?;
                self.sync(id, out)?;
                self.process(out)?;
            }
            "crash" => {
                let id = num(1)?;
                let n = self.node(id)?;
                n.up = false;
                let lost = n.unsynced.len();
                n.unsynced.clear();
                writeln!(out, "n{id} crashed ({lost} unsynced batches lost)").unwrap();
            }
            "lose" => {
                // `lose N K`: the crashed node N's disk loses its last K durable entries, as
                // a damaged disk or a restored backup would (outside Raft's crash model). The
                // hard state's commit is cut with them, like a cut at a record boundary.
                let (id, count) = (num(1)?, num(2)? as usize);
                let n = self.nodes.get_mut(&id).ok_or(format!("no node n{id}"))?;
                if n.up {
                    return Err(format!("n{id} must be crashed first"));
                }
                let keep = n.disk.entries.len().saturating_sub(count);
                n.disk.entries.truncate(keep);
                let last = n.disk.last().0;
                n.disk.hard_state.commit = n.disk.hard_state.commit.min(last);
                writeln!(out, "n{id} lost durable entries: last={last}").unwrap();
            }
            "restart" | "wipe" => {
                let id = num(1)?;
                let n = self.nodes.get(&id).ok_or(format!("no node n{id}"))?;
                let (mut config, mut disk) = (n.config.clone(), n.disk.clone());
                if words[0] == "wipe" {
                    config.bootstrap = None;
                    disk = Disk::default();
                }
                self.restarts += 1;
                self.start(id, config, disk);
                let d = &self.nodes[&id].disk;
                writeln!(
                    out,
                    "n{id} restarted: term={} vote={:?} commit={} last={}",
                    d.hard_state.term,
                    d.hard_state.vote,
                    d.hard_state.commit,
                    d.last().0
                )
                .unwrap();
                self.process(out)?;
            }
            "propose" => {
                let id = num(1)?;
                if words.len() < 3 {
                    return Err("propose N data...".into());
                }
                for data in &words[2..] {
                    match self.node(id)?.node.propose(data.as_bytes().to_vec()) {
                        Ok((i, t)) => writeln!(out, "n{id} proposed {i}@{t}").unwrap(),
                        Err(e) => writeln!(out, "n{id} refused: {e}").unwrap(),
                    }
                }
                self.process(out)?;
            }
            "read" => {
                let id = num(1)?;
                let rid = num(2)?;
                if let Err(e) = self.node(id)?.node.read_index(rid) {
                    writeln!(out, "n{id} refused read {rid}: {e}").unwrap();
                }
                self.process(out)?;
            }
            "transfer" => {
                let to = num(1)?;
                let leader = self.leader()?;
                if let Err(e) = self.node(leader)?.node.transfer_leadership(Some(to)) {
                    writeln!(out, "n{leader} refused transfer: {e}").unwrap();
                }
                self.process(out)?;
            }
            "snapshot" => {
                let id = num(1)?;
                let n = self.node(id)?;
                let meta = n
                    .node
                    .snapshot_meta_at(n.applied)
                    .ok_or("nothing to snapshot")?;
                let snapshot = Snapshot {
                    data: encode_machine(&n.machine).into(),
                    meta,
                };
                n.disk.entries.retain(|e| e.index > snapshot.meta.index);
                n.disk.snapshot = Some(snapshot.clone());
                writeln!(
                    out,
                    "n{id} snapshot {}@{} {}",
                    snapshot.meta.index,
                    snapshot.meta.term,
                    fmt_members(&snapshot.meta.membership)
                )
                .unwrap();
                n.node.compacted(snapshot);
            }
            "add" | "remove" | "promote" => {
                let learner = words.get(2) == Some(&"learner");
                self.change(words[0], num(1)?, learner, out)?;
                self.process(out)?;
            }
            "status" => {
                let ids: Vec<NodeId> = if words.len() > 1 {
                    vec![num(1)?]
                } else {
                    self.nodes.keys().copied().collect()
                };
                for id in ids {
                    self.status(id, out);
                }
            }
            "log" => {
                let id = num(1)?;
                let n = &self.nodes.get(&id).ok_or("no such node")?;
                let node = &n.node;
                let from = node.snapshot_meta().map_or(0, |m| m.index);
                if let Some(m) = node.snapshot_meta() {
                    writeln!(out, "n{id} snapshot {}@{}", m.index, m.term).unwrap();
                }
                let entries: Vec<Entry> = (from + 1..=node.last_index())
                    .filter_map(|i| node.entry(i).cloned())
                    .collect();
                writeln!(
                    out,
                    "n{id} log {} commit={}",
                    fmt_entries(&entries),
                    node.commit_index()
                )
                .unwrap();
                writeln!(
                    out,
                    "n{id} disk {} {:?}",
                    fmt_entries(&n.disk.entries),
                    n.disk.hard_state
                )
                .unwrap();
                let m: Vec<String> = n.machine.iter().map(|(i, d)| format!("{i}:{d}")).collect();
                writeln!(out, "n{id} machine [{}]", m.join(" ")).unwrap();
            }
            other => return Err(format!("unknown command {other}")),
        }
        Ok(())
    }
}

fn encode_machine(m: &[(Index, String)]) -> Vec<u8> {
    rmp_serde::to_vec(m).expect("encode machine")
}

fn decode_machine(data: &[u8]) -> Vec<(Index, String)> {
    rmp_serde::from_slice(data).expect("decode machine")
}

/// Runs one script; returns the file with the actual outputs.
fn run_script(text: &str) -> Result<String, String> {
    let mut sim: Option<Sim> = None;
    let mut result = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            result.push_str(line);
            result.push('\n');
            continue;
        }
        // A block: commands until `---`, then the expected output until a blank line.
        let mut commands = vec![line.to_string()];
        for l in lines.by_ref() {
            if l == "---" {
                break;
            }
            commands.push(l.to_string());
        }
        while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            lines.next();
        }
        let mut out = String::new();
        for cmd in &commands {
            result.push_str(cmd);
            result.push('\n');
            if cmd.starts_with("cluster") {
                let args = cmd
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|w| {
                        w.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect();
                sim = Some(Sim::new(&args)?);
                let sim = sim.as_mut().expect("sim");
                for id in sim.nodes.keys() {
                    writeln!(
                        out,
                        "n{id} started, {}",
                        fmt_members(sim.base.bootstrap.as_ref().expect("bootstrap"))
                    )
                    .unwrap();
                }
                sim.process(&mut out)?;
                continue;
            }
            let sim = sim.as_mut().ok_or("no cluster yet")?;
            sim.run(cmd, &mut out).map_err(|e| format!("{cmd}: {e}"))?;
        }
        result.push_str("---\n");
        if out.is_empty() {
            out.push_str("ok\n");
        }
        result.push_str(&out);
    }
    Ok(result)
}

#[test]
fn testscripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft/testscripts");
    let update = std::env::var("UPDATE_GOLDENFILES").is_ok_and(|v| v == "1");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("testscripts dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scripts in {}", dir.display());
    let mut failed = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read script");
        let actual = match run_script(&text) {
            Ok(a) => a,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        if actual != text {
            if update {
                std::fs::write(&path, &actual).expect("write script");
            } else {
                failed.push(path.display().to_string());
                for (i, (a, b)) in text.lines().zip(actual.lines()).enumerate() {
                    if a != b {
                        eprintln!(
                            "{}:{}: expected {a:?}\n  actual {b:?}",
                            path.display(),
                            i + 1
                        );
                        break;
                    }
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "golden output differs (UPDATE_GOLDENFILES=1 to accept): {failed:?}"
    );
}
