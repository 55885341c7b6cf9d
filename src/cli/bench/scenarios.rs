//! The scenarios: setting up sessions, driving workers, and turning what they timed into a
//! [`RunReport`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hdrhistogram::Histogram;

use super::floor::{self, Floor};
use super::local::{self, LocalCluster};
use super::report::{histogram, record, LatencyStats, NodeSample, Report, RunReport, LOAD_NOTE};
use super::{connect_clients, BenchError, Bound, Plan, Scenario};
use crate::client::{error_chain, Client, Error, Session, Wait};
use crate::lockspace::Fence;
use crate::protocol::LockMode;
use crate::tls::ClientTls;

/// How long the cluster may take to elect a leader before a run.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions opened concurrently by the `sessions` scenario.
const OPENERS: u64 = 256;
/// Load before the first kill and after each restart in `failover`.
const STEADY: Duration = Duration::from_secs(2);

type Cluster = Arc<Mutex<LocalCluster>>;

fn lock_cluster(cluster: &Cluster) -> std::sync::MutexGuard<'_, LocalCluster> {
    cluster.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts local nodes if asked, measures the floor, waits for a leader and makes the runs.
pub(super) async fn run(plan: &Plan) -> Result<Report, BenchError> {
    let target = Target::start(plan).await?;
    let floor = measure_floor(plan).await?;
    run_on(plan, &target, floor).await
}

/// What a bench drives: the local cluster it started (if any), and how clients reach it.
pub(super) struct Target {
    cluster: Option<Cluster>,
    servers: Vec<String>,
    tls: Option<ClientTls>,
}

impl Target {
    /// Starts `plan.local` nodes (their data under a fresh directory), or names `plan.servers`.
    /// Dropping the target kills the local nodes and removes their data.
    pub(super) async fn start(plan: &Plan) -> Result<Target, BenchError> {
        let Some(n) = plan.local else {
            return Ok(Target {
                cluster: None,
                servers: plan.servers.clone(),
                tls: plan.tls.clone(),
            });
        };
        let binary = match &plan.raftlockd {
            Some(path) => path.clone(),
            None => local::find_raftlockd()?,
        };
        let root = plan.data_root.clone();
        let tls = plan.local_tls;
        let started =
            tokio::task::spawn_blocking(move || LocalCluster::start(binary, &root, n, tls))
                .await
                .map_err(|e| BenchError::Local(format!("start task failed: {e}")))??;
        Ok(Target {
            servers: started.addrs(),
            tls: started.tls.clone(),
            cluster: Some(Arc::new(Mutex::new(started))),
        })
    }

    /// The local node that is leader now, if this is a local cluster and one is.
    pub(super) async fn leader(&self) -> Option<u64> {
        find_leader(self.cluster.as_ref()?).await
    }
}

/// Waits for a leader on `target` and makes `plan.runs` runs of `plan.scenario`; `floor` is
/// the machine's, measured beforehand (or not at all).
pub(super) async fn run_on(
    plan: &Plan,
    target: &Target,
    floor: Option<Floor>,
) -> Result<Report, BenchError> {
    let (servers, tls, cluster) = (
        &target.servers,
        target.tls.as_ref(),
        target.cluster.as_ref(),
    );
    wait_for_leader(servers, tls).await?;
    let mut runs = Vec::with_capacity(plan.runs);
    for index in 0..plan.runs {
        let ctx = RunContext {
            plan,
            servers,
            tls,
            cluster,
            tag: format!("bench-{}-{index}", std::process::id()),
            label: format!("{} run {}/{}", plan.scenario.name(), index + 1, plan.runs),
        };
        let run = match plan.scenario {
            Scenario::Uncontended => uncontended(&ctx).await?,
            Scenario::Contended => contended(&ctx).await?,
            Scenario::Append => append(&ctx).await?,
            Scenario::Sessions => sessions(&ctx).await?,
            Scenario::Failover => failover(&ctx).await?,
        };
        runs.push(run);
    }
    Ok(Report {
        scenario: plan.scenario,
        workers: plan.workers,
        clients: plan.clients,
        bound: match (plan.scenario, plan.bound) {
            (Scenario::Sessions, _) => {
                format!("{} sessions held {:?}", plan.sessions, plan.hold)
            }
            (Scenario::Failover, _) => format!("{} leader kills", plan.kills),
            (_, Bound::Duration(d)) => format!("{d:?}"),
            (_, Bound::Ops(n)) => format!("{n} ops"),
        },
        target: match plan.local {
            Some(n) => format!("--local {n} ({})", servers.join(",")),
            None => servers.join(","),
        },
        floor,
        runs,
    })
}

/// Measures the machine's floor as `plan` asks (`None` with `--fsync-samples 0`).
pub(super) async fn measure_floor(plan: &Plan) -> Result<Option<Floor>, BenchError> {
    if plan.fsync_samples == 0 {
        return Ok(None);
    }
    let dir = plan.data_root.clone();
    let (fsyncs, rtts) = (plan.fsync_samples, plan.rtt_samples);
    let floor = tokio::task::spawn_blocking(move || floor::measure(&dir, fsyncs, rtts))
        .await
        .map_err(|e| BenchError::Local(format!("floor task failed: {e}")))??;
    Ok(Some(floor))
}

/// Waits until some node names a leader (a fresh cluster elects one within a second or so).
async fn wait_for_leader(servers: &[String], tls: Option<&ClientTls>) -> Result<(), BenchError> {
    let client = Client::connect(servers.to_vec(), super::client_options(tls)).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match client.status().await {
            Ok(status) if status.leader.is_some() => return Ok(()),
            Ok(_) => {}
            Err(error) if Instant::now() >= deadline => return Err(error.into()),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Client("no leader elected within 30s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything a scenario's run needs.
struct RunContext<'a> {
    plan: &'a Plan,
    servers: &'a [String],
    /// How the clients reach `servers` over TLS, if they do.
    tls: Option<&'a ClientTls>,
    cluster: Option<&'a Cluster>,
    /// A prefix unique to this run, for lock and file names.
    tag: String,
    /// For the progress line.
    label: String,
}

/// The workers' common state: which operations may start, and what happened.
struct Shared {
    bound: Bound,
    deadline: Instant,
    claimed: AtomicU64,
    /// Operations finished (success or failure).
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    /// The first few distinct error messages, for the report.
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn new(bound: Bound) -> Arc<Shared> {
        let deadline = match bound {
            Bound::Duration(d) => Instant::now() + d,
            // Far enough never to matter.
            Bound::Ops(_) => Instant::now() + Duration::from_secs(86_400 * 365),
        };
        Arc::new(Shared {
            bound,
            deadline,
            claimed: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            first_errors: Mutex::new(Vec::new()),
        })
    }

    /// Claims the next operation; false once the run is over.
    fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.bound {
            Bound::Ops(n) => self.claimed.fetch_add(1, Ordering::Relaxed) < n,
            Bound::Duration(_) => Instant::now() < self.deadline,
        }
    }

    fn succeeded(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed operation; true if the worker must stop (its session is gone).
    fn failed(&self, error: &Error) -> bool {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        let text = error_chain(error);
        let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 5 && !first.contains(&text) {
            first.push(text);
        }
        matches!(error, Error::SessionExpired)
    }

    fn notes(&self) -> Vec<String> {
        let first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        first.iter().map(|e| format!("error: {e}")).collect()
    }
}

/// Prints `label`, elapsed time, operations and the last second's rate on stderr once a
/// second until dropped.
struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    fn start(enabled: bool, label: String, done: impl Fn() -> (u64, u64) + Send + 'static) -> Self {
        if !enabled {
            return Progress(None);
        }
        Progress(Some(tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut last = 0;
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (ops, errors) = done();
                eprintln!(
                    "[{label}] {:>4.0}s  ops {ops:>9}  {:>8}/s  errors {errors}",
                    start.elapsed().as_secs_f64(),
                    ops - last.min(ops),
                );
                last = ops;
            }
        })))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

fn progress(ctx: &RunContext<'_>, shared: &Arc<Shared>) -> Progress {
    let shared = shared.clone();
    Progress::start(ctx.plan.progress, ctx.label.clone(), move || {
        (
            shared.done.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
        )
    })
}

/// CPU time of every running local node.
fn node_cpu(cluster: Option<&Cluster>) -> BTreeMap<u64, (u32, Duration)> {
    let Some(cluster) = cluster else {
        return BTreeMap::new();
    };
    let cluster = lock_cluster(cluster);
    cluster
        .nodes
        .iter()
        .filter_map(|n| {
            let pid = n.pid()?;
            Some((n.id, (pid, local::cpu_time(pid)?)))
        })
        .collect()
}

/// What the nodes used between `before` and now (nodes restarted in between are left out).
fn node_samples(
    cluster: Option<&Cluster>,
    before: &BTreeMap<u64, (u32, Duration)>,
) -> Vec<NodeSample> {
    node_cpu(cluster)
        .into_iter()
        .filter_map(|(id, (pid, cpu))| {
            let (pid_before, cpu_before) = before.get(&id)?;
            (*pid_before == pid).then(|| NodeSample {
                id,
                pid,
                cpu: cpu.saturating_sub(*cpu_before),
                rss_kib: local::rss_kib(pid).unwrap_or(0),
            })
        })
        .collect()
}

/// Measures the timed phase of a run: node and client CPU before, the workload, then after.
struct Meter {
    start: Instant,
    load: Option<f64>,
    nodes: BTreeMap<u64, (u32, Duration)>,
    client_cpu: Duration,
}

impl Meter {
    fn start(cluster: Option<&Cluster>) -> Meter {
        Meter {
            load: local::load_average(),
            nodes: node_cpu(cluster),
            client_cpu: local::self_cpu_time(),
            start: Instant::now(),
        }
    }

    fn finish(
        self,
        cluster: Option<&Cluster>,
        shared: &Shared,
        latencies: Vec<LatencyStats>,
    ) -> RunReport {
        let elapsed = self.start.elapsed();
        let client_cpu = local::self_cpu_time().saturating_sub(self.client_cpu);
        let mut notes = shared.notes();
        if let (Some(start), Some(end)) = (self.load, local::load_average()) {
            let cores = std::thread::available_parallelism().map_or(0, usize::from);
            notes.push(format!(
                "{LOAD_NOTE} {start:.2} at the start, {end:.2} at the end, {cores} cores"
            ));
        }
        RunReport {
            ops: shared.done.load(Ordering::Relaxed),
            errors: shared.errors.load(Ordering::Relaxed),
            elapsed,
            latencies,
            nodes: node_samples(cluster, &self.nodes),
            client_cpu,
            client_rss_kib: local::self_rss_kib(),
            gaps: Vec::new(),
            counters: Vec::new(),
            notes,
        }
    }
}

/// Opens one session per worker, worker `i` on client `i % clients`.
async fn open_worker_sessions(ctx: &RunContext<'_>) -> Result<Vec<Session>, BenchError> {
    let clients = connect_clients(ctx.servers, ctx.tls, ctx.plan.clients).await?;
    let opened = join_all((0..ctx.plan.workers).map(|i| {
        let client = clients[i % clients.len()].clone();
        let ttl = ctx.plan.ttl;
        async move { client.open_session(ttl).await }
    }))
    .await;
    Ok(opened.into_iter().collect::<Result<Vec<_>, _>>()?)
}

/// Closes sessions (releasing whatever they still hold), ignoring failures: the run is over.
async fn close_all(sessions: Vec<Session>) {
    join_all(sessions.into_iter().map(Session::close)).await;
}

/// Runs each future as its own task (so a multi-threaded runtime spreads them) and collects
/// their outputs in order.
async fn spawn_all<F>(futures: impl IntoIterator<Item = F>) -> Result<Vec<F::Output>, BenchError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outs = Vec::with_capacity(handles.len());
    for handle in handles {
        outs.push(
            handle
                .await
                .map_err(|e| BenchError::Client(format!("a worker task failed: {e}")))?,
        );
    }
    Ok(outs)
}

/// Merges the workers' histograms of one name.
fn merge(name: &str, parts: &[Histogram<u64>]) -> LatencyStats {
    let mut all = histogram();
    for part in parts {
        // Same bounds everywhere: adding cannot fail.
        let _ = all.add(part);
    }
    LatencyStats::from_histogram(name, &all)
}

async fn uncontended(ctx: &RunContext<'_>) -> Result<RunReport, BenchError> {
    let sessions = open_worker_sessions(ctx).await?;
    let shared = Shared::new(ctx.plan.bound);
    let _progress = progress(ctx, &shared);
    let meter = Meter::start(ctx.cluster);
    let outs = spawn_all(sessions.iter().enumerate().map(|(i, session)| {
        let name = format!("{}-u{i}", ctx.tag);
        uncontended_worker(session.clone(), name, shared.clone(), None)
    }))
    .await?;
    let (acquires, pairs): (Vec<_>, Vec<_>) = outs.into_iter().map(|o| (o.0, o.1)).unzip();
    let report = meter.finish(
        ctx.cluster,
        &shared,
        vec![merge("acquire", &acquires), merge("pair", &pairs)],
    );
    close_all(sessions).await;
    Ok(report)
}

/// Acquire then release `name` until the run ends; returns the acquire and pair histograms and
/// (with `successes`) when each pair completed.
async fn uncontended_worker(
    session: Session,
    name: String,
    shared: Arc<Shared>,
    successes: Option<Arc<Mutex<Vec<Instant>>>>,
) -> (Histogram<u64>, Histogram<u64>) {
    let (mut acquires, mut pairs) = (histogram(), histogram());
    while shared.next() {
        let t0 = Instant::now();
        let result = async {
            session
                .acquire(&name, LockMode::Exclusive, Wait::Forever, None)
                .await?;
            let t1 = Instant::now();
            session.release(&name).await?;
            Ok::<_, Error>(t1)
        }
        .await;
        match result {
            Ok(t1) => {
                let t2 = Instant::now();
                record(&mut acquires, t1 - t0);
                record(&mut pairs, t2 - t0);
                shared.succeeded();
                if let Some(successes) = &successes {
                    successes.lock().unwrap_or_else(|p| p.into_inner()).push(t2);
                }
            }
            Err(error) => {
                if shared.failed(&error) {
                    break;
                }
            }
        }
    }
    (acquires, pairs)
}

/// A grant seen by a contended worker.
pub(super) struct Grant {
    /// Its fencing token.
    pub fence: Fence,
    /// When the worker got it.
    pub at: Instant,
}

/// A release made by a contended worker.
pub(super) struct Release {
    /// The fence of the grant released.
    pub fence: Fence,
    /// When the worker sent the release.
    pub sent: Instant,
    /// When the worker got its acknowledgement.
    pub acked: Instant,
}

async fn contended(ctx: &RunContext<'_>) -> Result<RunReport, BenchError> {
    let sessions = open_worker_sessions(ctx).await?;
    let shared = Shared::new(ctx.plan.bound);
    let name = format!("{}-c", ctx.tag);
    let _progress = progress(ctx, &shared);
    let meter = Meter::start(ctx.cluster);
    let outs = spawn_all(
        sessions
            .iter()
            .map(|session| contended_worker(session.clone(), name.clone(), shared.clone())),
    )
    .await?;
    let mut acquires = Vec::new();
    let mut grants = Vec::new();
    let mut releases = Vec::new();
    for (h, g, r) in outs {
        acquires.push(h);
        grants.extend(g);
        releases.extend(r);
    }
    let handoff = handoffs(grants, releases);
    let mut report = meter.finish(
        ctx.cluster,
        &shared,
        vec![
            LatencyStats::from_histogram("handoff", &handoff.from_ack),
            LatencyStats::from_histogram("handoff_from_send", &handoff.from_send),
            merge("acquire", &acquires),
        ],
    );
    report.counters.push((
        "handoffs_granted_before_release_ack".into(),
        handoff.grant_first as f64,
    ));
    close_all(sessions).await;
    Ok(report)
}

async fn contended_worker(
    session: Session,
    name: String,
    shared: Arc<Shared>,
) -> (Histogram<u64>, Vec<Grant>, Vec<Release>) {
    let mut acquires = histogram();
    let mut grants = Vec::new();
    let mut releases = Vec::new();
    while shared.next() {
        let t0 = Instant::now();
        let fence = match session
            .acquire(&name, LockMode::Exclusive, Wait::Forever, None)
            .await
        {
            Ok(fence) => fence,
            Err(error) => {
                if shared.failed(&error) {
                    break;
                }
                continue;
            }
        };
        let at = Instant::now();
        record(&mut acquires, at - t0);
        grants.push(Grant { fence, at });
        let sent = Instant::now();
        // Everyone else waits on this release: retry it (the client already retries
        // transport failures; this covers an error answer).
        let mut released = session.release(&name).await;
        for _ in 0..2 {
            if released.is_ok() {
                break;
            }
            released = session.release(&name).await;
        }
        match released {
            Ok(()) => {
                releases.push(Release {
                    fence,
                    sent,
                    acked: Instant::now(),
                });
                shared.succeeded();
            }
            Err(error) => {
                if shared.failed(&error) {
                    break;
                }
            }
        }
    }
    (acquires, grants, releases)
}

/// Hand-off latencies of a contended run.
pub(super) struct Handoffs {
    /// From the release's acknowledgement at the releaser to the next grant's arrival.
    pub from_ack: Histogram<u64>,
    /// From the release's sending to the next grant's arrival.
    pub from_send: Histogram<u64>,
    /// Hand-offs whose grant arrived before the releaser saw its acknowledgement (recorded
    /// as 0 in `from_ack`: both answers leave the daemon together).
    pub grant_first: u64,
}

/// Pairs each release with the grant that followed it. Grants of one lock are totally
/// ordered by fence (the log index that granted them), and each is released before the next,
/// so the grant after release `f` is the grant with the next fence.
pub(super) fn handoffs(mut grants: Vec<Grant>, releases: Vec<Release>) -> Handoffs {
    grants.sort_by_key(|g| g.fence);
    let releases: BTreeMap<Fence, Release> = releases.into_iter().map(|r| (r.fence, r)).collect();
    let mut out = Handoffs {
        from_ack: histogram(),
        from_send: histogram(),
        grant_first: 0,
    };
    for pair in grants.windows(2) {
        let Some(release) = releases.get(&pair[0].fence) else {
            continue;
        };
        let next = &pair[1];
        match next.at.checked_duration_since(release.acked) {
            Some(d) => record(&mut out.from_ack, d),
            None => {
                out.grant_first += 1;
                record(&mut out.from_ack, Duration::ZERO);
            }
        }
        record(
            &mut out.from_send,
            next.at.saturating_duration_since(release.sent),
        );
    }
    out
}

async fn append(ctx: &RunContext<'_>) -> Result<RunReport, BenchError> {
    let sessions = open_worker_sessions(ctx).await?;
    let shared = Shared::new(ctx.plan.bound);
    let data = vec![b'x'; ctx.plan.append_size];
    let _progress = progress(ctx, &shared);
    let meter = Meter::start(ctx.cluster);
    let outs = spawn_all(sessions.iter().enumerate().map(|(i, session)| {
        let lock = format!("{}-a{i}", ctx.tag);
        let file = format!("{}-a{i}.log", ctx.tag);
        append_worker(session.clone(), lock, file, data.clone(), shared.clone())
    }))
    .await?;
    let (cycles, appends): (Vec<_>, Vec<_>) = outs.into_iter().unzip();
    let report = meter.finish(
        ctx.cluster,
        &shared,
        vec![merge("cycle", &cycles), merge("append", &appends)],
    );
    close_all(sessions).await;
    Ok(report)
}

async fn append_worker(
    session: Session,
    lock: String,
    file: String,
    data: Vec<u8>,
    shared: Arc<Shared>,
) -> (Histogram<u64>, Histogram<u64>) {
    let (mut cycles, mut appends) = (histogram(), histogram());
    while shared.next() {
        let t0 = Instant::now();
        let result = async {
            let fence = session
                .acquire(&lock, LockMode::Exclusive, Wait::Forever, None)
                .await?;
            let t1 = Instant::now();
            session
                .append(&file, (lock.as_str(), fence), data.clone())
                .await?;
            let t2 = Instant::now();
            session.release(&lock).await?;
            Ok::<_, Error>(t2 - t1)
        }
        .await;
        match result {
            Ok(append) => {
                record(&mut cycles, t0.elapsed());
                record(&mut appends, append);
                shared.succeeded();
            }
            Err(error) => {
                if shared.failed(&error) {
                    break;
                }
            }
        }
    }
    (cycles, appends)
}

fn node_rss(cluster: Option<&Cluster>) -> BTreeMap<u64, u64> {
    let Some(cluster) = cluster else {
        return BTreeMap::new();
    };
    let cluster = lock_cluster(cluster);
    cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.id, local::rss_kib(n.pid()?)?)))
        .collect()
}

async fn sessions(ctx: &RunContext<'_>) -> Result<RunReport, BenchError> {
    let plan = ctx.plan;
    let total = plan.sessions;
    let clients = connect_clients(ctx.servers, ctx.tls, plan.clients).await?;
    let rss_before = node_rss(ctx.cluster);
    let shared = Shared::new(Bound::Ops(total));
    let held: Arc<Mutex<Vec<Session>>> = Arc::new(Mutex::new(Vec::new()));
    let progress_held = held.clone();
    let meter = Meter::start(ctx.cluster);
    let outs = {
        let _progress = Progress::start(plan.progress, ctx.label.clone(), {
            let shared = shared.clone();
            move || {
                (
                    shared.done.load(Ordering::Relaxed),
                    shared.errors.load(Ordering::Relaxed),
                )
            }
        });
        spawn_all((0..OPENERS.min(total)).map(|_| {
            opener(
                clients.clone(),
                plan.ttl,
                ctx.tag.clone(),
                shared.clone(),
                held.clone(),
            )
        }))
        .await?
    };
    let mut report = {
        let (opens, acquires): (Vec<_>, Vec<_>) = outs.into_iter().unzip();
        meter.finish(
            ctx.cluster,
            &shared,
            vec![merge("open+acquire", &opens), merge("acquire", &acquires)],
        )
    };
    // Hold the sessions (their keep-alives running) and watch for losses.
    let hold_until = Instant::now() + plan.hold;
    {
        let _progress =
            Progress::start(plan.progress, format!("{} holding", ctx.label), move || {
                let held = progress_held.lock().unwrap_or_else(|p| p.into_inner());
                let lost = held.iter().filter(|s| s.is_lost()).count() as u64;
                (held.len() as u64 - lost, lost)
            });
        tokio::time::sleep_until(hold_until.into()).await;
    }
    let held = std::mem::take(&mut *held.lock().unwrap_or_else(|p| p.into_inner()));
    let lost = held.iter().filter(|s| s.is_lost()).count() as u64;
    report.errors += lost;
    if lost > 0 {
        report
            .notes
            .push(format!("{lost} sessions lost while held"));
    }
    let rss_after = node_rss(ctx.cluster);
    for (id, after) in &rss_after {
        report
            .counters
            .push((format!("node{id}_rss_mib"), *after as f64 / 1024.0));
        if let Some(before) = rss_before.get(id) {
            let per = after.saturating_sub(*before) as f64 * 1024.0 / held.len().max(1) as f64;
            report
                .counters
                .push((format!("node{id}_rss_bytes_per_session"), per));
        }
    }
    report.counters.push((
        "client_rss_bytes_per_session".into(),
        local::self_rss_kib() as f64 * 1024.0 / held.len().max(1) as f64,
    ));
    for sample in &mut report.nodes {
        if let Some(rss) = rss_after.get(&sample.id) {
            sample.rss_kib = *rss;
        }
    }
    if ctx.cluster.is_none() {
        report
            .notes
            .push("node memory not measured: not a --local cluster".into());
        // Be polite to a shared cluster: close what we opened.
        let mut rest = held;
        while !rest.is_empty() {
            let batch: Vec<Session> = rest.drain(..rest.len().min(OPENERS as usize)).collect();
            close_all(batch).await;
        }
    }
    // Local nodes die with the bench: no need to close 100,000 sessions one by one.
    Ok(report)
}

/// Opens sessions, each acquiring its own lock, while any are left to open.
async fn opener(
    clients: Vec<Client>,
    ttl: Duration,
    tag: String,
    shared: Arc<Shared>,
    held: Arc<Mutex<Vec<Session>>>,
) -> (Histogram<u64>, Histogram<u64>) {
    let (mut opens, mut acquires) = (histogram(), histogram());
    loop {
        let index = shared.claimed.fetch_add(1, Ordering::Relaxed);
        let Bound::Ops(total) = shared.bound else {
            break;
        };
        if index >= total {
            break;
        }
        let client = &clients[index as usize % clients.len()];
        let t0 = Instant::now();
        let session = match client.open_session(ttl).await {
            Ok(session) => session,
            Err(error) => {
                shared.failed(&error);
                continue;
            }
        };
        let t1 = Instant::now();
        let name = format!("{tag}-s{index}");
        match session
            .acquire(&name, LockMode::Exclusive, Wait::TryOnce, None)
            .await
        {
            Ok(_) => {
                let t2 = Instant::now();
                record(&mut opens, t2 - t0);
                record(&mut acquires, t2 - t1);
                shared.succeeded();
            }
            Err(error) => {
                shared.failed(&error);
            }
        }
        held.lock().unwrap_or_else(|p| p.into_inner()).push(session);
    }
    (opens, acquires)
}

/// The leader's id among the local nodes, asking each node directly.
async fn find_leader(cluster: &Cluster) -> Option<u64> {
    let (nodes, tls) = {
        let cluster = lock_cluster(cluster);
        let nodes: Vec<(u64, String)> = cluster
            .nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(|n| (n.id, n.addr.to_string()))
            .collect();
        (nodes, cluster.tls.clone())
    };
    let options = crate::client::ClientOptions {
        retry_timeout: Duration::from_millis(500),
        ..super::client_options(tls.as_ref())
    };
    for (id, addr) in nodes {
        let Ok(client) = Client::connect(vec![addr], options.clone()).await else {
            continue;
        };
        if let Ok(status) = client.status().await {
            if status.role == "leader" && status.node_id == id {
                return Some(id);
            }
        }
    }
    None
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; true if it held.
async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

async fn failover(ctx: &RunContext<'_>) -> Result<RunReport, BenchError> {
    let cluster = ctx
        .cluster
        .ok_or_else(|| BenchError::Usage("failover needs --local 3".into()))?;
    let sessions = open_worker_sessions(ctx).await?;
    let shared = Shared::new(Bound::Duration(Duration::from_secs(86_400)));
    let successes: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let _progress = progress(ctx, &shared);
    let meter = Meter::start(None);
    let workers: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, session)| {
            tokio::spawn(uncontended_worker(
                session.clone(),
                format!("{}-f{i}", ctx.tag),
                shared.clone(),
                Some(successes.clone()),
            ))
        })
        .collect();
    let mut kills = Vec::new();
    let mut notes = Vec::new();
    let outcome: Result<(), BenchError> = async {
        for k in 0..ctx.plan.kills {
            tokio::time::sleep(STEADY).await;
            let Some(leader) = find_leader(cluster).await else {
                notes.push(format!("kill {}: no leader found; skipped", k + 1));
                continue;
            };
            let before = shared.done.load(Ordering::Relaxed);
            let killed_at = Instant::now();
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || lock_cluster(&c).kill(leader))
                .await
                .map_err(|e| BenchError::Local(format!("kill task failed: {e}")))?;
            kills.push(killed_at);
            // Wait for the clients to make progress again (a few operations, not one that was
            // already answered when the leader died), then bring the old leader back.
            let recovered = wait_until(Duration::from_secs(30), || {
                shared.done.load(Ordering::Relaxed) >= before + 2 * ctx.plan.workers as u64 + 2
            })
            .await;
            if !recovered {
                notes.push(format!("kill {}: no progress within 30s", k + 1));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || lock_cluster(&c).restart(leader))
                .await
                .map_err(|e| BenchError::Local(format!("restart task failed: {e}")))??;
        }
        tokio::time::sleep(STEADY).await;
        Ok(())
    }
    .await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut acquires = Vec::new();
    let mut pairs = Vec::new();
    for worker in workers {
        if let Ok((a, p)) = worker.await {
            acquires.push(a);
            pairs.push(p);
        }
    }
    outcome?;
    let mut report = meter.finish(
        None,
        &shared,
        vec![merge("acquire", &acquires), merge("pair", &pairs)],
    );
    let mut times = std::mem::take(&mut *successes.lock().unwrap_or_else(|p| p.into_inner()));
    times.sort_unstable();
    report.gaps = gaps(&times, &kills);
    report.notes.extend(notes);
    report.notes.push(
        "gap per kill: the longest interval between consecutive successful pairs (all workers) \
         from 1s before the kill to the next kill"
            .into(),
    );
    close_all(sessions).await;
    Ok(report)
}

/// The clients' unavailability around each kill: the longest interval between consecutive
/// successes (`times`, sorted) from 1 s before the kill until the next kill (or the end).
/// Taking the longest interval, rather than the one that spans the kill instant, ignores
/// answers already on their way when the leader died.
pub(super) fn gaps(times: &[Instant], kills: &[Instant]) -> Vec<Duration> {
    kills
        .iter()
        .enumerate()
        .map(|(k, &kill)| {
            let from = kill.checked_sub(Duration::from_secs(1)).unwrap_or(kill);
            let until = kills.get(k + 1).copied();
            let window: Vec<Instant> = times
                .iter()
                .copied()
                .filter(|&t| t >= from && until.map_or(true, |u| t < u))
                .collect();
            window
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default()
        })
        .collect()
}
