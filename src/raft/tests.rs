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

/// A three-node cluster with an elected leader, quiet (every heartbeat answered).
fn cluster_with_leader() -> (Cluster, NodeId) {
    let mut c = Cluster::new(3);
    c.tick_all(60);
    let leader = c.leader().expect("a leader within the election timeout");
    (c, leader)
}

/// (role, term, leader) of every node, for comparisons.
fn roles(c: &Cluster) -> Vec<(NodeId, Role, Term, Option<NodeId>)> {
    c.nodes
        .iter()
        .map(|(id, s)| (*id, s.node.role(), s.node.term(), s.node.leader()))
        .collect()
}

#[test]
fn crash_hint_elects_a_new_leader_within_a_heartbeat_interval() {
    let (mut c, old) = cluster_with_leader();
    let term = c.nodes[&old].node.term();
    let heartbeat = Config::new(1).heartbeat_ticks;
    // The leader's process dies: messages to it are lost from now on.
    c.nodes.remove(&old);
    let followers: Vec<NodeId> = c.nodes.keys().copied().collect();
    // Without the hint nobody campaigns within a heartbeat interval (the election timeout is
    // far longer).
    c.tick_all(heartbeat - 1);
    assert_eq!(c.leader(), None);
    assert!(roles(&c)
        .iter()
        .all(|r| r.1 == Role::Follower && r.2 == term));
    for id in &followers {
        c.nodes.get_mut(id).unwrap().node.peer_down(old);
        assert_eq!(c.nodes[id].node.leader(), None, "n{id} forgets its leader");
    }
    c.tick_all(heartbeat);
    let new = c
        .leader()
        .expect("a leader within a heartbeat interval of the hint");
    assert_ne!(new, old);
    for (id, role, t, leader) in roles(&c) {
        // One election round: the term moved by exactly one.
        assert_eq!(t, term + 1, "n{id}");
        assert_eq!(leader, Some(new), "n{id}");
        assert_eq!(role == Role::Leader, id == new);
    }
}

#[test]
fn a_spurious_hint_about_a_live_leader_changes_nothing() {
    let (mut c, leader) = cluster_with_leader();
    let before = roles(&c);
    let follower = c.nodes.keys().copied().find(|id| *id != leader).unwrap();
    c.nodes.get_mut(&follower).unwrap().node.peer_down(leader);
    // The follower asks for pre-votes; the leader and the other follower, who still hear the
    // leader, ignore them; the next heartbeat restores the leader.
    c.tick_all(120);
    assert_eq!(roles(&c), before);
}

#[test]
fn a_hint_about_a_non_leader_or_on_a_non_follower_is_ignored() {
    let (mut c, leader) = cluster_with_leader();
    let before = roles(&c);
    let followers: Vec<NodeId> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    let (a, b) = (followers[0], followers[1]);
    // About another follower: the leader stays known and sticky.
    c.nodes.get_mut(&a).unwrap().node.peer_down(b);
    assert_eq!(c.nodes[&a].node.leader(), Some(leader));
    // On the leader, about a follower or itself.
    c.nodes.get_mut(&leader).unwrap().node.peer_down(a);
    c.nodes.get_mut(&leader).unwrap().node.peer_down(leader);
    assert_eq!(roles(&c), before);
    c.tick_all(29);
    assert_eq!(roles(&c), before);
}

#[test]
fn a_hint_is_ignored_on_a_learner_and_on_a_candidate() {
    // A learner of a two-voter cluster, following node 1.
    let mut members = membership(&[1, 2]);
    members.learners.insert(3, "n3".into());
    let mut config = Config::new(3);
    config.bootstrap = Some(members.clone());
    let mut learner = Node::new(config, Recovered::default(), 3);
    learner.step(Envelope {
        from: 1,
        to: 3,
        term: 1,
        message: Message::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    });
    assert_eq!((learner.role(), learner.leader()), (Role::Learner, Some(1)));
    learner.peer_down(1);
    assert_eq!(learner.leader(), Some(1));
    // A pre-candidate has no leader to forget, and its timer is not shortened: it does not
    // campaign again within a heartbeat interval.
    let mut config = Config::new(2);
    config.bootstrap = Some(membership(&[1, 2, 3]));
    let mut node = Node::new(config, Recovered::default(), 2);
    for _ in 0..60 {
        node.tick();
        if node.role() == Role::PreCandidate {
            break;
        }
    }
    assert_eq!(node.role(), Role::PreCandidate);
    let _ = node.ready();
    node.peer_down(1);
    for _ in 0..5 {
        node.tick();
    }
    assert!(node.ready().messages.is_empty(), "no new campaign");
}
