//! The CLI overlap check: `raftlock lock` never lets two commands run at once under one lock,
//! while the test pauses the CLIs, the cluster's leader and the commands themselves.
//!
//! Four workers loop `raftlock lock overlap --ttl 2s --hold 3s --extend -- CMD` against a real
//! 3-node cluster. CMD writes the wall-clock time (`date +%s%N`) to a file of its own every
//! 50 ms while it runs, so each run leaves the interval [first stamp, last stamp], which lies
//! inside the command's true lifetime. Meanwhile a fault loop, drawn from a seed, SIGSTOPs one
//! of: a running `raftlock` (for up to twice the TTL, so its session expires and the cluster
//! grants the lock to someone else), the leader (its followers elect another), or a running
//! CMD (its `raftlock` goes on holding and extending the lock). At the end no two intervals
//! may overlap: an overlap means a command still ran after another had been started under the
//! same lock.
//!
//! It runs for 120 s by default. A longer run, and a fixed fault schedule:
//!
//! ```sh
//! RAFTLOCK_OVERLAP_SECS=600 RAFTLOCK_OVERLAP_SEED=7 \
//!     cargo test --release --test cli_overlap -- --nocapture
//! ```

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::Cluster;

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");
const WORKERS: usize = 4;
/// The longest one `raftlock lock` run may take before the test calls it hung.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// CMD: record its pid, then stamp the time 60 times, 50 ms apart (about 3 s of work, longer
/// than the TTL, so most pauses catch a command running).
const CMD: &str = r#"echo $$ > "$1"; i=0; while [ $i -lt 60 ]; do date +%s%N >> "$2"; sleep 0.05; i=$((i+1)); done"#;

/// One worker's current `raftlock` process and the files of its current run.
#[derive(Default)]
struct Slot {
    cli: Option<u32>,
    pid_file: Option<PathBuf>,
    run_file: Option<PathBuf>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; a stale pid at worst gets a harmless signal.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The pid in `pid_file`, if that process is alive and still the CMD of `run_file`.
fn live_cmd(pid_file: &Path, run_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let marker = run_file.to_string_lossy();
    String::from_utf8_lossy(&cmdline)
        .contains(marker.as_ref())
        .then_some(pid)
}

/// Loops `raftlock lock` until `stop`; returns how often each exit status was seen.
fn worker(
    worker: usize,
    servers: String,
    dir: PathBuf,
    slot: Arc<Mutex<Slot>>,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, u32> {
    let mut statuses = BTreeMap::new();
    let mut run = 0;
    while !stop.load(Ordering::SeqCst) {
        run += 1;
        let pid_file = dir.join(format!("pid-{worker}-{run}"));
        let run_file = dir.join(format!("run-{worker}-{run}"));
        let mut child: Child = Command::new(RAFTLOCK)
            .args([
                "lock", "overlap", "--ttl", "2s", "--hold", "3s", "--extend", "--", "sh", "-c",
                CMD, "cmd",
            ])
            .arg(&pid_file)
            .arg(&run_file)
            .env("RAFTLOCK_SERVERS", &servers)
            .env("RAFTLOCK_BIN", RAFTLOCK)
            .env_remove("RAFTLOCK_SESSION")
            .env_remove("RAFTLOCK_TOKEN")
            .env_remove("RAFTLOCK_LOCK")
            .env_remove("RAFTLOCK_FENCE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn raftlock");
        *slot.lock().expect("slot") = Slot {
            cli: Some(child.id()),
            pid_file: Some(pid_file),
            run_file: Some(run_file),
        };
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for raftlock") {
                break status;
            }
            if started.elapsed() > RUN_DEADLINE {
                signal(child.id(), libc::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
                panic!("worker {worker} run {run}: raftlock did not exit within {RUN_DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        slot.lock().expect("slot").cli = None;
        let name = match status.code() {
            Some(code) => format!("exit {code}"),
            None => "killed".to_string(),
        };
        *statuses.entry(name).or_insert(0) += 1;
    }
    statuses
}

/// Every run's [first stamp, last stamp] in ns, with its file name.
fn intervals(dir: &Path) -> Vec<(u128, u128, String)> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read run dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if !name.starts_with("run-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read run file");
        // A line cut by SIGKILL mid-write is not a stamp.
        let stamps: Vec<u128> = text
            .lines()
            .filter(|l| l.len() >= 19)
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if let (Some(first), Some(last)) = (stamps.iter().min(), stamps.iter().max()) {
            runs.push((*first, *last, name));
        }
    }
    runs.sort();
    runs
}

#[test]
fn no_two_commands_ever_run_at_once_under_pauses() {
    let secs = env_u64("RAFTLOCK_OVERLAP_SECS", 120);
    let seed = env_u64(
        "RAFTLOCK_OVERLAP_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    );
    eprintln!("cli_overlap: seed {seed}, {secs} s (RAFTLOCK_OVERLAP_SEED={seed} reproduces the fault schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let cluster = Cluster::start(3, &[]);
    runtime.block_on(cluster.wait_leader());
    let servers = cluster.servers().join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));
    let slots: Vec<Arc<Mutex<Slot>>> = (0..WORKERS).map(|_| Arc::default()).collect();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (servers, dir) = (servers.clone(), dir.path().to_path_buf());
            let (slot, stop) = (slots[w].clone(), stop.clone());
            thread::spawn(move || worker(w, servers, dir, slot, stop))
        })
        .collect();

    let end = Instant::now() + Duration::from_secs(secs);
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(rng.gen_range(300..2_000)));
        let pause = Duration::from_millis(rng.gen_range(300..4_000));
        let slot = slots[rng.gen_range(0..WORKERS)].lock().expect("slot");
        let target = match rng.gen_range(0..3) {
            0 => slot.cli.map(|pid| ("raftlock", pid)),
            1 => match (&slot.pid_file, &slot.run_file) {
                (Some(pid_file), Some(run_file)) => {
                    live_cmd(pid_file, run_file).map(|pid| ("cmd", pid))
                }
                _ => None,
            },
            _ => {
                drop(slot);
                let statuses = runtime.block_on(cluster.statuses());
                statuses
                    .iter()
                    .filter(|(_, s)| s.role == "leader")
                    .max_by_key(|(_, s)| s.term)
                    .map(|(id, _)| ("leader", cluster.nodes[*id as usize - 1].pid()))
            }
        };
        let Some((kind, pid)) = target else {
            continue;
        };
        *faults.entry(kind).or_insert(0) += 1;
        signal(pid, libc::SIGSTOP);
        thread::sleep(pause);
        signal(pid, libc::SIGCONT);
    }
    stop.store(true, Ordering::SeqCst);
    let mut statuses: BTreeMap<String, u32> = BTreeMap::new();
    for worker in workers {
        for (status, n) in worker.join().expect("worker panicked") {
            *statuses.entry(status).or_insert(0) += n;
        }
    }

    let runs = intervals(dir.path());
    eprintln!(
        "cli_overlap: faults {faults:?}; raftlock exits {statuses:?}; {} runs of CMD started",
        runs.len()
    );
    let mut latest: Option<&(u128, u128, String)> = None;
    for run in &runs {
        if let Some(prev) = latest {
            assert!(
                run.0 > prev.1,
                "seed {seed}: {} started at {} while {} still ran until {} ({} ms overlap)",
                run.2,
                run.0,
                prev.2,
                prev.1,
                (prev.1 - run.0) / 1_000_000
            );
        }
        if latest.map_or(true, |prev| run.1 > prev.1) {
            latest = Some(run);
        }
    }
    // Not vacuous: commands ran (killed ones count: they are what the check is about), some
    // to completion.
    let completed = statuses.get("exit 0").copied().unwrap_or(0);
    assert!(
        runs.len() as u64 >= secs / 15 && completed >= 1,
        "seed {seed}: {} commands started, {completed} ran to completion; the check saw too little: {statuses:?}",
        runs.len()
    );
    assert!(
        faults.values().sum::<u32>() >= 3,
        "seed {seed}: too few faults were injected: {faults:?}"
    );
}
