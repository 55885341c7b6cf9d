//! Deterministic whole-cluster simulation: 3 or 5 hosts running the real Raft core and the real
//! LockSpace over a simulated network, disk and clock, with clients, all driven by one seed.
//!
//! - `cargo test --release --test sim` runs the CI batch (`SIM_SEEDS`, default 2000, split over
//!   two threads; each seed is single-threaded and deterministic), the regression seeds of
//!   `tests/sim_regressions.txt`, and a determinism check.
//! - `SIM_SEEDS=N` runs N seeds (from `SIM_FIRST`, default 0).
//! - `SIM_SEED=N` runs one seed and prints its full trace.
//!
//! A failure prints the seed and the command that reproduces it.

mod client;
mod deadlines;
mod disk;
mod host;
mod invariants;
mod network;
mod trace;
mod world;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use invariants::Counters;
use trace::Mode;

/// The default CI batch size.
const CI_SEEDS: u64 = 2_000;
/// How many coverage counters are required non-zero.
const REQUIRED: usize = Counters::REQUIRED;
/// Threads for a batch (each seed stays on one).
const THREADS: u64 = 2;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs a seed, turning a panic (a core assertion) into a failure.
fn run_one(seed: u64, mode: Mode) -> Result<world::Outcome, String> {
    match catch_unwind(AssertUnwindSafe(|| world::run(seed, mode))) {
        Ok(o) => match &o.error {
            Some(e) => Err(e.clone()),
            None => Ok(o),
        },
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(format!("panic: {msg}"))
        }
    }
}

fn repro(seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test --release --test sim -- --nocapture")
}

/// What a batch found.
#[derive(Default)]
struct Batch {
    seeds: u64,
    counters: Counters,
    /// Seeds where each required counter was non-zero.
    seeds_with: [u64; REQUIRED],
    failures: Vec<(u64, String)>,
    events: u64,
    sim_ms: u64,
}

fn run_batch(seeds: &[u64]) -> Batch {
    let chunks: Vec<Vec<u64>> = (0..THREADS)
        .map(|t| seeds.iter().copied().filter(|s| s % THREADS == t).collect())
        .collect();
    let parts: Vec<Batch> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut b = Batch::default();
                    for &seed in chunk {
                        b.seeds += 1;
                        match run_one(seed, Mode::Off) {
                            Ok(o) => {
                                b.counters.add(&o.counters);
                                for (k, (_, v)) in o.counters.required().iter().enumerate() {
                                    if *v > 0 {
                                        b.seeds_with[k] += 1;
                                    }
                                }
                                b.events += o.events;
                                b.sim_ms += o.sim_ms;
                            }
                            Err(e) => {
                                eprintln!("seed {seed} FAILED: {e}\n  reproduce: {}", repro(seed));
                                b.failures.push((seed, e));
                            }
                        }
                    }
                    b
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("batch thread"))
            .collect()
    });
    let mut all = Batch::default();
    for p in parts {
        all.seeds += p.seeds;
        all.counters.add(&p.counters);
        for k in 0..REQUIRED {
            all.seeds_with[k] += p.seeds_with[k];
        }
        all.failures.extend(p.failures);
        all.events += p.events;
        all.sim_ms += p.sim_ms;
    }
    all.failures.sort();
    all
}

/// The CI batch (or `SIM_SEEDS` seeds), or one traced seed with `SIM_SEED`.
#[test]
fn simulation() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let o = run_one(seed, Mode::Print);
        match o {
            Ok(o) => println!(
                "seed {seed} passed: {} events, {} simulated ms, counters {:?}, trace hash {:016x}\nparams {:?}",
                o.events, o.sim_ms, o.counters, o.trace_hash, o.params
            ),
            Err(e) => panic!("seed {seed} FAILED: {e}\n  reproduce: {}", repro(seed)),
        }
        return;
    }
    let n = env_u64("SIM_SEEDS").unwrap_or(CI_SEEDS);
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let seeds: Vec<u64> = (first..first + n).collect();
    let start = Instant::now();
    let b = run_batch(&seeds);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "simulation: {} seeds in {secs:.1} s ({} events, {} simulated s), {} failures",
        b.seeds,
        b.events,
        b.sim_ms / 1_000,
        b.failures.len()
    );
    println!("counters: {:?}", b.counters);
    for (k, (name, v)) in b.counters.required().iter().enumerate() {
        println!("  {name}: {v} times, in {} seeds", b.seeds_with[k]);
    }
    if let Some((seed, e)) = b.failures.first() {
        panic!(
            "{} of {} seeds failed; first: seed {seed}: {e}\n  reproduce: {}",
            b.failures.len(),
            b.seeds,
            repro(*seed)
        );
    }
    let empty: Vec<&str> = b
        .counters
        .required()
        .iter()
        .filter(|(_, v)| *v == 0)
        .map(|(name, _)| *name)
        .collect();
    assert!(
        empty.is_empty(),
        "vacuous batch: never saw {empty:?} in {} seeds",
        b.seeds
    );
}

/// Seeds that once failed, replayed on every run.
#[test]
fn regressions() {
    if env_u64("SIM_SEED").is_some() {
        return;
    }
    let text = include_str!("../sim_regressions.txt");
    let mut failures = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let seed: u64 = line.parse().expect("a seed per line");
        if let Err(e) = run_one(seed, Mode::Off) {
            failures.push(format!("seed {seed}: {e}\n  reproduce: {}", repro(seed)));
        }
    }
    assert!(failures.is_empty(), "regressions:\n{}", failures.join("\n"));
}

/// The same seed gives the same trace, line for line.
#[test]
fn determinism() {
    if env_u64("SIM_SEED").is_some() {
        return;
    }
    for seed in [1, 7, 42, 1_000_003] {
        let a = world::run(seed, Mode::Hash);
        let b = world::run(seed, Mode::Hash);
        assert_ne!(a.trace_hash, 0);
        assert_eq!(
            (a.trace_hash, a.events, &a.error),
            (b.trace_hash, b.events, &b.error),
            "seed {seed} is not deterministic"
        );
    }
}
