//! The nemesis: a schedule of faults drawn from a seed ([`plan`]), and its execution against the
//! [`Cluster`] ([`run`]). The plan fixes each step's fault, how long it lasts, the quiet time
//! after it and which node it picks among the candidates (the candidates themselves, e.g. "the
//! leader", depend on the run), so a seed reproduces the schedule.

use std::collections::BTreeSet;
use std::time::Duration;

use raftlock::client::{Client, ClientOptions};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::damage;
use crate::history::{Fault, FaultKind, History};

/// One step of the schedule.
#[derive(Clone, Debug)]
pub struct Step {
    pub kind: FaultKind,
    /// How long the fault lasts (downtime, pause or partition).
    pub hold: Duration,
    /// Calm time after healing it.
    pub quiet: Duration,
    /// Picks among candidate nodes and shapes (partition groups, damage offsets).
    pub pick: u64,
    /// Partitions stall connections instead of dropping them.
    pub stall: bool,
}

/// The faults of each nemesis family.
pub fn family(name: &str) -> Vec<FaultKind> {
    use FaultKind::*;
    match name {
        "kill" => vec![KillLeader, KillLeader, KillLeader, KillTwo, KillFollower],
        "pause" => vec![PauseLeaderElection, PauseLeaderTtl],
        "partition" => vec![
            PartitionMajority,
            IsolateLeader,
            Bridge,
            Ring,
            LeaderCannotReceive,
            LeaderCannotSend,
        ],
        "member" => vec![RemoveReAdd, DropClientConns],
        "disk" => vec![
            TruncateAtRecord,
            TruncateMidRecord,
            ZeroTail,
            FlipBit,
            AppendGarbage,
        ],
        "all" => ["kill", "pause", "partition", "member", "disk"]
            .iter()
            .flat_map(|f| family(f))
            .collect(),
        other => panic!("unknown nemesis family {other}"),
    }
}

/// Draws steps from `kinds` for at least `span`.
pub fn plan(seed: u64, kinds: &[FaultKind], span: Duration) -> Vec<Step> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut total = Duration::ZERO;
    while total < span {
        let kind = *kinds.choose(&mut rng).expect("some fault kinds");
        let ms =
            |rng: &mut SmallRng, lo: u64, hi: u64| Duration::from_millis(rng.gen_range(lo..hi));
        let hold = match kind {
            FaultKind::PauseLeaderElection => ms(&mut rng, 900, 1_600),
            FaultKind::PauseLeaderTtl => ms(&mut rng, 2_600, 4_000),
            FaultKind::DropClientConns => Duration::ZERO,
            FaultKind::KillLeader | FaultKind::KillTwo | FaultKind::KillFollower => {
                ms(&mut rng, 300, 2_500)
            }
            _ => ms(&mut rng, 1_500, 5_000),
        };
        let quiet = ms(&mut rng, 1_500, 3_500);
        total += hold + quiet + Duration::from_millis(500);
        steps.push(Step {
            kind,
            hold,
            quiet,
            pick: rng.gen(),
            stall: rng.gen_bool(0.4),
        });
    }
    steps
}

/// The admin client (through the proxies, patient).
async fn admin(cluster: &Cluster) -> Option<Client> {
    let options = ClientOptions {
        retry_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    Client::connect(cluster.public_addrs(), options).await.ok()
}

/// Every directed edge between different groups.
fn split(groups: &[Vec<u64>]) -> BTreeSet<(u64, u64)> {
    let mut edges = BTreeSet::new();
    for (i, a) in groups.iter().enumerate() {
        for (j, b) in groups.iter().enumerate() {
            if i != j {
                for &x in a {
                    for &y in b {
                        edges.insert((x, y));
                    }
                }
            }
        }
    }
    edges
}

/// The blocked edges of a partition fault, with a description.
fn partition_edges(
    kind: FaultKind,
    leader: u64,
    ids: &[u64],
    rng: &mut SmallRng,
) -> (BTreeSet<(u64, u64)>, String) {
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(rng);
    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
    match kind {
        FaultKind::PartitionMajority => {
            let (minority, majority) = shuffled.split_at(2);
            (
                split(&[minority.to_vec(), majority.to_vec()]),
                format!("{minority:?} | {majority:?}"),
            )
        }
        FaultKind::IsolateLeader => (
            split(&[vec![leader], others.clone()]),
            format!("[{leader}] | {others:?}"),
        ),
        FaultKind::Bridge => {
            let (a, rest) = shuffled.split_at(2);
            let (bridge, b) = rest.split_at(1);
            let edges = split(&[a.to_vec(), b.to_vec()]);
            (edges, format!("{a:?} - {bridge:?} - {b:?}"))
        }
        FaultKind::Ring => {
            let n = shuffled.len();
            let mut edges = BTreeSet::new();
            for i in 0..n {
                for j in 0..n {
                    let d = (i + n - j) % n;
                    if i != j && d != 1 && d != n - 1 {
                        edges.insert((shuffled[i], shuffled[j]));
                    }
                }
            }
            (edges, format!("ring {shuffled:?}"))
        }
        FaultKind::LeaderCannotReceive => (
            others.iter().map(|&x| (x, leader)).collect(),
            format!("nothing reaches leader {leader}"),
        ),
        FaultKind::LeaderCannotSend => (
            others.iter().map(|&x| (leader, x)).collect(),
            format!("leader {leader} reaches no one"),
        ),
        other => panic!("{other:?} is not a partition"),
    }
}

/// Runs the plan until `until` (the step in progress finishes and is healed).
pub async fn run(cluster: &mut Cluster, hist: &History, plan: &[Step], until: Instant) {
    for step in plan {
        if Instant::now() >= until {
            break;
        }
        let start = hist.now();
        let (nodes, note) = apply(cluster, step).await;
        let end = hist.now();
        hist.fault(Fault {
            kind: step.kind,
            start,
            end,
            nodes,
            note,
        });
        heal(cluster).await;
        tokio::time::sleep(step.quiet).await;
    }
}

/// Applies one step and heals it; returns the nodes hit and what happened.
async fn apply(cluster: &mut Cluster, step: &Step) -> (Vec<u64>, String) {
    let mut rng = SmallRng::seed_from_u64(step.pick);
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let Some((leader, _)) = cluster.wait_leader(Duration::from_secs(10)).await else {
        return (Vec::new(), "skipped: no leader".into());
    };
    let followers: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
    let follower = followers[(step.pick % followers.len() as u64) as usize];
    match step.kind {
        FaultKind::KillLeader | FaultKind::KillTwo | FaultKind::KillFollower => {
            let victims = match step.kind {
                FaultKind::KillLeader => vec![leader],
                FaultKind::KillTwo => vec![leader, follower],
                _ => vec![follower],
            };
            for &v in &victims {
                cluster.node(v).kill();
            }
            tokio::time::sleep(step.hold).await;
            let mut note = String::new();
            for &v in &victims {
                if let Err(log) = cluster.node(v).start() {
                    note.push_str(&format!("node {v} did not restart: {log}; "));
                }
            }
            (victims, note)
        }
        FaultKind::PauseLeaderElection | FaultKind::PauseLeaderTtl => {
            cluster.node(leader).signal(libc::SIGSTOP);
            tokio::time::sleep(step.hold).await;
            cluster.node(leader).signal(libc::SIGCONT);
            (vec![leader], format!("SIGSTOP for {:?}", step.hold))
        }
        FaultKind::PartitionMajority
        | FaultKind::IsolateLeader
        | FaultKind::Bridge
        | FaultKind::Ring
        | FaultKind::LeaderCannotReceive
        | FaultKind::LeaderCannotSend => {
            let (edges, shape) = partition_edges(step.kind, leader, &ids, &mut rng);
            cluster.partition(edges, step.stall);
            tokio::time::sleep(step.hold).await;
            cluster.heal_net();
            let how = if step.stall { "stall" } else { "drop" };
            (vec![leader], format!("{shape} ({how})"))
        }
        FaultKind::DropClientConns => {
            cluster.drop_client_conns();
            (ids, "closed every client connection".into())
        }
        FaultKind::RemoveReAdd => {
            let note = remove_wipe_readd(cluster, follower, step.hold).await;
            (vec![follower], note)
        }
        FaultKind::TruncateAtRecord
        | FaultKind::TruncateMidRecord
        | FaultKind::ZeroTail
        | FaultKind::FlipBit
        | FaultKind::AppendGarbage => {
            cluster.node(follower).kill();
            let dir = cluster.node(follower).data_dir().to_path_buf();
            let mut note = match damage::last_segment(&dir) {
                Some(path) => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    let (damaged, what) = damage::damage(step.kind, &bytes, &mut rng);
                    let _ = std::fs::write(&path, damaged);
                    what
                }
                None => "no segment".into(),
            };
            tokio::time::sleep(step.hold).await;
            if let Err(log) = cluster.node(follower).start() {
                let last = log.lines().last().unwrap_or_default().to_string();
                note.push_str(&format!("; restart refused ({last})"));
                let again = remove_wipe_readd(cluster, follower, Duration::ZERO).await;
                note.push_str(&format!("; {again}"));
            } else {
                note.push_str("; restarted");
            }
            (vec![follower], note)
        }
    }
}

/// Removes `id`, stops and wipes it, and adds it back empty (`--join`).
async fn remove_wipe_readd(cluster: &mut Cluster, id: u64, down: Duration) -> String {
    let Some(admin) = admin(cluster).await else {
        return "no admin connection".into();
    };
    let mut note = match admin.remove_member(id).await {
        Ok((index, _)) => format!("removed {id} at {index}"),
        Err(error) => format!("remove {id} failed: {error}"),
    };
    cluster.node(id).kill();
    cluster.node(id).wipe();
    cluster.set_joiner(id);
    tokio::time::sleep(down).await;
    if let Err(log) = cluster.node(id).start() {
        note.push_str(&format!("; joiner did not start: {log}"));
        return note;
    }
    let public = cluster.node(id).public.to_string();
    match admin.add_member(id, &public).await {
        Ok((index, _)) => note.push_str(&format!("; re-added at {index}")),
        Err(error) => note.push_str(&format!("; re-add failed: {error}")),
    }
    note
}

/// Heals everything: the network, paused and stopped nodes, and membership (every node a
/// voter again). Bounded; what it could not heal it leaves for the final check to report.
pub async fn heal(cluster: &mut Cluster) {
    cluster.heal_net();
    for node in &mut cluster.nodes {
        if node.paused {
            node.signal(libc::SIGCONT);
        }
    }
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    for &id in &ids {
        if !cluster.node(id).running() && cluster.node(id).start().is_err() {
            remove_wipe_readd(cluster, id, Duration::ZERO).await;
        }
    }
    let Some((_, status)) = cluster.wait_leader(Duration::from_secs(15)).await else {
        return;
    };
    let voters: BTreeSet<u64> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.node_id)
        .collect();
    for &id in &ids {
        if !voters.contains(&id) {
            if let Some(admin) = admin(cluster).await {
                let public = cluster.node(id).public.to_string();
                let _ = admin.add_member(id, &public).await;
            }
        }
    }
}
