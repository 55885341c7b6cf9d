//! The trace of a run: off, hashed (for the determinism check) or printed (`SIM_SEED=N`).

use crate::invariants::{fnv, mix};

/// What to do with trace lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (the batch).
    Off,
    /// Hash every line (determinism check).
    Hash,
    /// Print and hash every line.
    Print,
}

/// The trace sink.
#[derive(Debug)]
pub struct Trace {
    pub mode: Mode,
    /// The hash of every line so far.
    pub hash: u64,
    pub lines: u64,
}

impl Trace {
    /// A trace in `mode`.
    pub fn new(mode: Mode) -> Trace {
        Trace {
            mode,
            hash: 0,
            lines: 0,
        }
    }

    /// Records a line at simulated time `now` (µs); `line` is only built when needed.
    pub fn log(&mut self, now: u64, line: impl FnOnce() -> String) {
        if self.mode == Mode::Off {
            return;
        }
        let s = line();
        self.hash = mix(mix(self.hash, now), fnv(s.as_bytes()));
        self.lines += 1;
        if self.mode == Mode::Print {
            println!("{:>6}.{:03} {s}", now / 1_000, now % 1_000);
        }
    }
}
