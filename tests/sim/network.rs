//! The simulated network: every message (node to node, client to node and back) is in flight
//! until its delivery time, and may be dropped, duplicated, delayed (so reordered) or cut by a
//! partition (symmetric, one-way, or partial). Links are checked at delivery time, so a
//! partition also stops what is already in flight.

use std::collections::{BTreeMap, BTreeSet};

use raftlock::raft::{Envelope, NodeId};
use rand::rngs::SmallRng;
use rand::Rng;

use crate::client::{Request, Response};

/// An endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    /// A cluster node.
    Node(NodeId),
    /// A client.
    Client(u64),
}

/// What a message carries.
#[derive(Clone, Debug)]
pub enum Payload {
    /// A Raft message.
    Raft(Envelope),
    /// A client request for operation `op`.
    Request { op: u64, req: Request },
    /// A node's answer to operation `op`.
    Response { op: u64, resp: Response },
}

/// One message.
#[derive(Clone, Debug)]
pub struct Packet {
    pub from: Addr,
    pub to: Addr,
    pub payload: Payload,
}

/// Fault rates of one seed.
#[derive(Clone, Debug, Default)]
pub struct NetFaults {
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub dup: f64,
    /// Probability a message is delayed by up to `max_delay_us` more.
    pub delay: f64,
    /// The longest extra delay.
    pub max_delay_us: u64,
}

/// The network.
#[derive(Debug)]
pub struct Net {
    pub faults: NetFaults,
    rng: SmallRng,
    /// Directed links that are cut.
    blocked: BTreeSet<(Addr, Addr)>,
    /// Messages in flight by (delivery time, sequence).
    in_flight: BTreeMap<(u64, u64), Packet>,
    seq: u64,
    /// Messages sent, dropped and duplicated (for the report).
    pub sent: u64,
    pub dropped: u64,
}

impl Net {
    /// A network with no faults and no partition.
    pub fn new(rng: SmallRng, faults: NetFaults) -> Net {
        Net {
            faults,
            rng,
            blocked: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            sent: 0,
            dropped: 0,
        }
    }

    fn latency(&mut self) -> u64 {
        let mut d = self.rng.gen_range(500..3_000);
        if self.faults.delay > 0.0 && self.rng.gen_bool(self.faults.delay) {
            d += self.rng.gen_range(0..=self.faults.max_delay_us);
        }
        d
    }

    /// Sends a message at `now` (µs).
    pub fn send(&mut self, now: u64, packet: Packet) {
        self.sent += 1;
        if self.faults.drop > 0.0 && self.rng.gen_bool(self.faults.drop) {
            self.dropped += 1;
            return;
        }
        if self.faults.dup > 0.0 && self.rng.gen_bool(self.faults.dup) {
            let at = now + self.latency();
            self.seq += 1;
            self.in_flight.insert((at, self.seq), packet.clone());
        }
        let at = now + self.latency();
        self.seq += 1;
        self.in_flight.insert((at, self.seq), packet);
    }

    /// The delivery time of the next message.
    pub fn next_time(&self) -> Option<u64> {
        self.in_flight.first_key_value().map(|((t, _), _)| *t)
    }

    /// Takes the next message if it is due at or before `now`; None if cut by a partition
    /// (it is consumed either way).
    pub fn pop(&mut self) -> Option<Packet> {
        let (_, p) = self.in_flight.pop_first()?;
        if self.blocked.contains(&(p.from, p.to)) {
            self.dropped += 1;
            return None;
        }
        Some(p)
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Cuts the directed link `from -> to`.
    pub fn cut(&mut self, from: Addr, to: Addr) {
        self.blocked.insert((from, to));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: Addr, b: Addr) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// A description of the cut links (for traces).
    pub fn describe(&self) -> String {
        let links: Vec<String> = self
            .blocked
            .iter()
            .map(|(a, b)| format!("{}->{}", short(*a), short(*b)))
            .collect();
        links.join(" ")
    }
}

/// A short name of an address.
pub fn short(a: Addr) -> String {
    match a {
        Addr::Node(n) => format!("n{n}"),
        Addr::Client(c) => format!("c{c}"),
    }
}
