//! Metrics and health: what an operator's Prometheus, load balancer or Kubernetes probe reads
//! from `--metrics-listen HOST:PORT` (off by default; no authentication, so never on the
//! public internet).
//!
//! **Who writes what.** Every number is a `prometheus-client` metric: an atomic, or a
//! histogram behind a short lock that only its writer and the scrape take. The tasks update
//! them at cheap points and never wait for a scrape:
//! - the driver (`driver.rs`) publishes the node's own state (term, role, leader, indexes,
//!   per-peer lag, lock-space sizes, readiness) once per tick, from values the replica already
//!   holds, and counts answers, leader changes and appended batches as it carries out effects;
//! - [`ApplyCounter`] (this module), the replica's apply observer, counts grants, expiries and
//!   revocations and times each apply, on every node alike (every node applies the same log);
//! - the storage writer thread times its fsyncs and snapshots;
//! - connection tasks count connections, frames and rejected frames.
//!
//! The HTTP side (`http.rs`) is its own task on hyper's HTTP/1 server: `/metrics` encodes the
//! registry (the OpenMetrics text format Prometheus reads), `/healthz` and `/readyz` read
//! [`Health`] (`health.rs`). A slow or stuck scraper holds only its own connection.
//!
//! docs/metrics.md lists every metric with its type and meaning.

mod health;
mod http;

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub(crate) use health::{Health, Readiness, ReadyState, View};
pub(crate) use http::serve;

use crate::lockspace::{Applied, Command, LockSpace, Outcome};
use crate::protocol::{ErrorCode, Response};
use crate::raft::{Entry, Role};
use crate::replica::Observer;
use crate::server::peer::SnapshotMetrics;

/// One label, `name="value"`.
type Label = Vec<(&'static str, String)>;
/// A floating-point gauge (seconds, bytes as measured).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the daemon, registered once at start; cloned handles share the values.
pub(crate) struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Liveness and readiness, for `/healthz` and `/readyz`.
    pub health: Health,
    /// Node state published by the driver.
    pub node: NodeGauges,
    /// Counters the driver bumps as it carries out effects.
    pub driver: DriverCounters,
    /// The apply observer's counters.
    pub apply: ApplyCounter,
    /// The storage writer's timings.
    pub storage: StorageMetrics,
    /// The client connections' counters.
    pub connections: ConnectionMetrics,
    /// The snapshot transfers to peers (the transport counts them).
    pub snapshots: SnapshotMetrics,
}

/// The node's own state, set by the driver once per tick.
#[derive(Clone, Default)]
pub(crate) struct NodeGauges {
    pub term: Gauge,
    /// 1 for the node's current role, 0 for the others (label `role`).
    pub role: Family<Label, Gauge>,
    pub leader_id: Gauge,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub last_log_index: Gauge,
    /// Leader only: entries each peer's match index is behind the leader's last index.
    pub peer_lag: Family<Label, Gauge>,
    pub sessions: Gauge,
    pub locks: Gauge,
    pub waiters: Gauge,
    pub ready: Gauge,
}

/// What the driver counts while it carries out the replica's effects.
#[derive(Clone)]
pub(crate) struct DriverCounters {
    pub leader_changes: Counter,
    /// Entries this node appended to its log as leader: the proposals it made.
    pub proposals: Counter,
    /// Final answers by result: `ok` or the error code.
    pub answers: Family<Label, Counter>,
    answers_ok: Counter,
    /// Entries per log write handed to the storage writer.
    pub append_batch: Histogram,
}

impl DriverCounters {
    /// Counts one final answer by its result (the `ok` counter is a held handle: no lookup).
    pub fn answered(&self, response: &Response) {
        match response {
            Response::Error { code, .. } => {
                self.answers
                    .get_or_create(&label("result", &format!("{code:?}")))
                    .inc();
            }
            _ => {
                self.answers_ok.inc();
            }
        }
    }
}

/// Counts what applying the log did, on every node: the replica's [`Observer`].
#[derive(Clone)]
pub(crate) struct ApplyCounter {
    pub applied: Counter,
    pub grants: Counter,
    /// Label `kind`: `session`, `hold` or `wait`.
    pub expiries: Family<Label, Counter>,
    /// Label `kind`: `forced` (RevokeSession) or `marked` (MarkRevoked).
    pub revocations: Family<Label, Counter>,
    pub apply_seconds: Histogram,
    started: Option<Instant>,
}

impl Observer for ApplyCounter {
    fn applying(&mut self, _space: &LockSpace, _entry: &Entry, _command: Option<&Command>) {
        self.started = Some(Instant::now());
    }

    fn applied(
        &mut self,
        _space: &LockSpace,
        _entry: &Entry,
        command: Option<&Command>,
        applied: Option<&Applied>,
    ) {
        if let Some(started) = self.started.take() {
            self.apply_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.applied.inc();
        let (Some(command), Some(applied)) = (command, applied) else {
            return;
        };
        let grants = std::iter::once(&applied.outcome)
            .chain(applied.notifications.iter().map(|n| &n.outcome))
            .filter(|outcome| matches!(outcome, Outcome::Granted { .. }))
            .count();
        if grants > 0 {
            self.grants.inc_by(grants as u64);
        }
        let done = !matches!(
            applied.outcome,
            Outcome::Ignored | Outcome::SessionExpired | Outcome::NotHolder
        );
        let expiry = match command {
            Command::ExpireSession { .. } => Some("session"),
            Command::ExpireHold { .. } => Some("hold"),
            Command::ExpireWait { .. } => Some("wait"),
            _ => None,
        };
        if let (Some(kind), true) = (expiry, done) {
            self.expiries.get_or_create(&label("kind", kind)).inc();
        }
        let revocation = match command {
            Command::RevokeSession { .. } => Some("forced"),
            Command::MarkRevoked { .. } => Some("marked"),
            _ => None,
        };
        if let (Some(kind), true) = (revocation, done) {
            self.revocations.get_or_create(&label("kind", kind)).inc();
        }
    }
}

/// The storage writer's measurements.
#[derive(Clone)]
pub(crate) struct StorageMetrics {
    pub fsync_seconds: Histogram,
    /// Label `kind`: `taken` (this node's own) or `installed` (received from the leader).
    pub snapshots: Family<Label, Counter>,
    pub snapshot_bytes: FloatGauge,
    pub snapshot_seconds: Histogram,
}

/// The client connections' counters.
#[derive(Clone, Default)]
pub(crate) struct ConnectionMetrics {
    /// Connections open now (clients and peers, before the first frame tells them apart).
    pub open: Gauge,
    pub accepted: Counter,
    pub frames_in: Counter,
    pub frames_out: Counter,
    /// Frames refused before they reached the driver, by error code.
    pub rejected: Family<Label, Counter>,
}

impl ConnectionMetrics {
    /// Counts a frame refused with `response` (an `Error`).
    pub fn rejected(&self, response: &Response) {
        if let Response::Error { code, .. } = response {
            self.rejected.get_or_create(&code_label(*code)).inc();
        }
    }
}

fn label(name: &'static str, value: &str) -> Label {
    vec![(name, value.to_string())]
}

fn code_label(code: ErrorCode) -> Label {
    label("code", &format!("{code:?}"))
}

/// The label value of a role.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "precandidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Learner => "learner",
    }
}

/// Every role, for the `raftlock_role` gauges.
pub(crate) const ROLES: [Role; 5] = [
    Role::Follower,
    Role::PreCandidate,
    Role::Candidate,
    Role::Leader,
    Role::Learner,
];

/// Seconds buckets from 50 µs to about 6.5 s, doubling.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 18)
}

impl Metrics {
    /// Registers every metric (all zero) under the `raftlock_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("raftlock");
        let node = NodeGauges::default();
        for role in ROLES {
            let _created = node.role.get_or_create(&label("role", role_name(role)));
        }
        let r = &mut registry;
        r.register("term", "The node's current Raft term", node.term.clone());
        r.register(
            "role",
            "1 for the node's current Raft role, 0 for the others",
            node.role.clone(),
        );
        r.register(
            "leader_id",
            "The leader's node id as this node knows it (0: none known)",
            node.leader_id.clone(),
        );
        r.register(
            "commit_index",
            "The highest log index known committed",
            node.commit_index.clone(),
        );
        r.register(
            "applied_index",
            "The highest log index applied to the lock space",
            node.applied_index.clone(),
        );
        r.register(
            "last_log_index",
            "The index of the last entry in this node's log",
            node.last_log_index.clone(),
        );
        r.register(
            "peer_replication_lag_entries",
            "Leader only: entries a peer's match index is behind the leader's last index",
            node.peer_lag.clone(),
        );
        r.register("sessions", "Live sessions", node.sessions.clone());
        r.register("locks", "Locks held or waited for", node.locks.clone());
        r.register(
            "waiters",
            "Queued acquires over all locks",
            node.waiters.clone(),
        );
        r.register(
            "ready",
            "1 when /readyz answers 200 (a leader is known and this node caught up)",
            node.ready.clone(),
        );

        let answers_family = Family::<Label, Counter>::default();
        let answers_ok = answers_family.get_or_create(&label("result", "ok")).clone();
        let driver = DriverCounters {
            leader_changes: Counter::default(),
            proposals: Counter::default(),
            answers: answers_family,
            answers_ok,
            append_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        };
        // Counters get their `_total` suffix from the encoder.
        r.register(
            "leader_changes",
            "Times the leader this node knows changed to a new one",
            driver.leader_changes.clone(),
        );
        r.register(
            "proposals",
            "Entries this node appended to its log as leader (commands, expiries, membership)",
            driver.proposals.clone(),
        );
        r.register(
            "answers",
            "Final answers to client requests, by result (ok or the error code)",
            driver.answers.clone(),
        );
        r.register(
            "append_batch_entries",
            "Entries per log write handed to the storage writer",
            driver.append_batch.clone(),
        );

        let apply = ApplyCounter {
            applied: Counter::default(),
            grants: Counter::default(),
            expiries: Family::default(),
            revocations: Family::default(),
            apply_seconds: Histogram::new(seconds_buckets()),
            started: None,
        };
        r.register(
            "applied_entries",
            "Log entries applied to the lock space",
            apply.applied.clone(),
        );
        r.register(
            "grants",
            "Lock grants applied (at once or to a waiter)",
            apply.grants.clone(),
        );
        r.register(
            "expiries",
            "Expiries applied, by kind (session lease, hold limit, wait bound)",
            apply.expiries.clone(),
        );
        r.register(
            "revocations",
            "Administrator revocations applied, by kind (forced, marked)",
            apply.revocations.clone(),
        );
        r.register(
            "apply_duration_seconds",
            "Time to apply one log entry to the lock space",
            apply.apply_seconds.clone(),
        );

        let storage = StorageMetrics {
            fsync_seconds: Histogram::new(seconds_buckets()),
            snapshots: Family::default(),
            snapshot_bytes: FloatGauge::default(),
            snapshot_seconds: Histogram::new(seconds_buckets()),
        };
        r.register(
            "fsync_duration_seconds",
            "Time of one group-commit sync of the log",
            storage.fsync_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots written, by kind (taken here, installed from the leader)",
            storage.snapshots.clone(),
        );
        r.register(
            "snapshot_size_bytes",
            "Size of the last snapshot written",
            storage.snapshot_bytes.clone(),
        );
        r.register(
            "snapshot_duration_seconds",
            "Time to write and sync one snapshot",
            storage.snapshot_seconds.clone(),
        );

        let connections = ConnectionMetrics::default();
        r.register(
            "connections",
            "Connections open now (clients and peers)",
            connections.open.clone(),
        );
        r.register(
            "connections_accepted",
            "Connections accepted",
            connections.accepted.clone(),
        );
        r.register(
            "frames_received",
            "Frames read from client connections",
            connections.frames_in.clone(),
        );
        r.register(
            "frames_sent",
            "Frames written to client connections",
            connections.frames_out.clone(),
        );
        r.register(
            "rejected_frames",
            "Client frames refused before they reached the driver, by error code",
            connections.rejected.clone(),
        );
        let snapshots = SnapshotMetrics::default();
        snapshots.register(r);

        Metrics {
            registry,
            health: Health::new(),
            node,
            driver,
            apply,
            storage,
            connections,
            snapshots,
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Sets `gauge` to an index or count (saturating at `i64::MAX`).
pub(crate) fn set(gauge: &Gauge, value: u64) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_encodes_every_family_with_its_prefix_and_units() {
        let metrics = Metrics::new();
        metrics.apply.grants.inc();
        metrics
            .driver
            .answered(&Response::error(1, ErrorCode::NotHolder, "no"));
        metrics
            .driver
            .answered(&Response::error(1, ErrorCode::NotHolder, "no"));
        let text = metrics.encode();
        for line in [
            "raftlock_grants_total 1",
            "raftlock_answers_total{result=\"ok\"} 0",
            "raftlock_answers_total{result=\"NotHolder\"} 2",
            "raftlock_role{role=\"leader\"} 0",
            "# TYPE raftlock_fsync_duration_seconds histogram",
            "raftlock_term 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
