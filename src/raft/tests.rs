//! Unit tests of the node through a minimal in-memory cluster.

use std::collections::{BTreeMap, VecDeque};

use super::*;

/// A node with its simulated disk and applied entries.
struct Sim {
    node: Node,
    applied: Vec<Entry>,
    reads: Vec<(u64, Index)>,
}

/// A tiny cluster that delivers every message in order.
struct Cluster {
    nodes: BTreeMap<NodeId, Sim>,
    queue: VecDeque<Envelope>,
}

fn membership(ids: &[NodeId]) -> Membership {
    Membership {
        voters: ids.iter().map(|&i| (i, format!("n{i}"))).collect(),
        learners: BTreeMap::new(),
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut config = Config::new(id);
                config.bootstrap = Some(membership(&ids));
                let node = Node::new(config, Recovered::default(), id);
                (
                    id,
                    Sim {
                        node,
                        applied: Vec::new(),
                        reads: Vec::new(),
                    },
                )
            })
            .collect();
        Cluster {
            nodes,
            queue: VecDeque::new(),
        }
    }

    /// Processes every node's Ready and delivers messages until quiet.
    fn stabilize(&mut self) {
        for _ in 0..1000 {
            let mut busy = false;
            for sim in self.nodes.values_mut() {
                let rd = sim.node.ready();
                busy |= !rd.is_empty();
                self.queue.extend(rd.messages);
                self.queue.extend(rd.persisted_messages);
                if let Some(last) = rd.append.last() {
                    sim.node.persisted(last.index, last.term);
                }
                sim.applied.extend(rd.committed);
                sim.reads.extend(rd.reads);
            }
            while let Some(env) = self.queue.pop_front() {
                busy = true;
                if let Some(sim) = self.nodes.get_mut(&env.to) {
                    sim.node.step(env);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    fn tick_all(&mut self, n: u32) {
        for _ in 0..n {
            for sim in self.nodes.values_mut() {
                sim.node.tick();
            }
            self.stabilize();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, s)| s.node.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
        leaders.first().copied()
    }
}

#[test]
fn single_node_elects_itself_and_commits() {
    let mut c = Cluster::new(1);
    c.tick_all(1);
    assert_eq!(c.leader(), Some(1));
    let (index, term) = c
        .nodes
        .get_mut(&1)
        .unwrap()
        .node
        .propose(b"x".to_vec())
        .unwrap();
    assert_eq!((index, term), (3, 1));
    c.stabilize();
    let sim = &c.nodes[&1];
    assert_eq!(sim.node.status().commit_index, 3);
    assert_eq!(sim.applied.len(), 3);
    assert_eq!(sim.applied[2].data, EntryData::Command(b"x".to_vec()));
}

#[test]
fn three_nodes_elect_and_replicate() {
    let mut c = Cluster::new(3);
    c.tick_all(60);
    let leader = c.leader().expect("a leader within the election timeout");
    let (index, _) = c
        .nodes
        .get_mut(&leader)
        .unwrap()
        .node
        .propose(b"a".to_vec())
        .unwrap();
    c.stabilize();
    c.tick_all(5); // a heartbeat carries the commit index
    for sim in c.nodes.values() {
        assert_eq!(sim.node.status().commit_index, index);
        assert_eq!(
            sim.applied.last().unwrap().data,
            EntryData::Command(b"a".to_vec())
        );
        assert_eq!(sim.node.leader(), Some(leader));
    }
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let err = c
        .nodes
        .get_mut(&follower)
        .unwrap()
        .node
        .propose(vec![])
        .unwrap_err();
    assert_eq!(
        err,
        NotLeader {
            leader: Some(leader)
        }
    );
}

#[test]
fn leader_commit_waits_for_its_own_persist() {
    let mut config = Config::new(1);
    config.bootstrap = Some(membership(&[1]));
    let mut node = Node::new(config, Recovered::default(), 7);
    node.tick();
    assert_eq!(node.role(), Role::Leader);
    let rd = node.ready();
    assert_eq!(rd.append.len(), 2, "bootstrap config and the noop");
    assert!(
        rd.committed.is_empty(),
        "nothing commits before the write is durable"
    );
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, Some(1))));
    node.persisted(2, 1);
    let rd = node.ready();
    assert_eq!(rd.committed.len(), 2);
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(2));
}

#[test]
fn read_index_on_single_node() {
    let mut c = Cluster::new(1);
    c.tick_all(1);
    c.nodes.get_mut(&1).unwrap().node.read_index(42).unwrap();
    c.stabilize();
    assert_eq!(c.nodes[&1].reads, vec![(42, 2)]);
}
