//! The machine's floor: what one durable, acknowledged operation cannot beat on this disk and
//! interface. One fdatasync of a 4 KiB write in the data directory plus one loopback TCP round
//! trip of a small message, each the median of many samples.
//!
//! The floor's write overwrites the same, already allocated 4 KiB block, so its fdatasync
//! flushes data only: the device's cost. Appending (the log's pattern) also makes the file
//! system journal the new size and, per new block, the allocation; that is measured too
//! ([`Floor::fsync_append`]) and shown beside it, because it is a cost the daemon chooses (a
//! preallocated segment avoids it), not one the machine imposes.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::json::{num, object, Json};
use crate::cli::duration::ms;

/// The floor figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Floor {
    /// Median fdatasync latency of a 4 KiB overwrite of an allocated block.
    pub fsync: Duration,
    /// Median fdatasync latency of a 4 KiB append (growing the file), for comparison.
    pub fsync_append: Duration,
    /// Samples behind `fsync`.
    pub fsync_samples: usize,
    /// Median loopback round trip.
    pub rtt: Duration,
    /// Samples behind `rtt`.
    pub rtt_samples: usize,
    /// Where the fsyncs were made.
    pub dir: PathBuf,
}

impl Floor {
    /// fsync + RTT.
    pub fn total(&self) -> Duration {
        self.fsync + self.rtt
    }

    /// `d` as a multiple of the floor.
    pub fn multiple(&self, d: Duration) -> f64 {
        let floor = self.total().as_secs_f64();
        if floor > 0.0 {
            d.as_secs_f64() / floor
        } else {
            0.0
        }
    }

    /// The floor as JSON.
    pub fn to_json(&self) -> Json {
        object([
            ("fsync_ms", num(ms(self.fsync))),
            ("fsync_append_ms", num(ms(self.fsync_append))),
            ("fsync_samples", Json::from(self.fsync_samples as u64)),
            ("rtt_ms", num(ms(self.rtt))),
            ("rtt_samples", Json::from(self.rtt_samples as u64)),
            ("floor_ms", num(ms(self.total()))),
        ])
    }
}

impl fmt::Display for Floor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fdatasync of a 4 KiB write {:.3} ms (median of {}) + loopback RTT {:.3} ms (median of {}) = {:.3} ms; a 4 KiB append's fdatasync: {:.3} ms",
            ms(self.fsync),
            self.fsync_samples,
            ms(self.rtt),
            self.rtt_samples,
            ms(self.total()),
            ms(self.fsync_append),
        )
    }
}

/// Measures the floor: `fsync_samples` appends in `dir` (a scratch file, removed after) and
/// `rtt_samples` round trips to an echo thread. Blocking; run it off the async runtime.
pub fn measure(dir: &Path, fsync_samples: usize, rtt_samples: usize) -> std::io::Result<Floor> {
    Ok(Floor {
        fsync: fsync_median(dir, fsync_samples, false)?,
        fsync_append: fsync_median(dir, fsync_samples, true)?,
        fsync_samples,
        rtt: rtt_median(rtt_samples)?,
        rtt_samples,
        dir: dir.to_path_buf(),
    })
}

/// The median of `samples` (zero for none).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Median time of a 4 KiB write followed by `fdatasync`, in a scratch file in `dir`: each
/// write overwrites the file's first block, or (`append`) extends the file.
pub fn fsync_median(dir: &Path, samples: usize, append: bool) -> std::io::Result<Duration> {
    let path = dir.join(format!(".raftlock-bench-fsync-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let block = [0x5a_u8; 4096];
        // One untimed round so the file exists on disk before timing starts.
        file.write_all(&block)?;
        file.sync_all()?;
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let start = Instant::now();
            if append {
                file.write_all(&block)?;
            } else {
                file.write_all_at(&block, 0)?;
            }
            file.sync_data()?;
            times.push(start.elapsed());
        }
        Ok(median(times))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Median round trip of an 8-byte ping-pong over loopback TCP (Nagle off) to an echo thread.
pub fn rtt_median(samples: usize) -> std::io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = [0u8; 8];
        loop {
            match stream.read_exact(&mut buf) {
                Ok(()) => stream.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let result = (|| {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut buf = [0u8; 8];
        // Warm the path (first packets take the slow path through the stack).
        for _ in 0..10 {
            stream.write_all(&buf)?;
            stream.read_exact(&mut buf)?;
        }
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples {
            buf = (i as u64).to_be_bytes();
            let start = Instant::now();
            stream.write_all(&buf)?;
            stream.read_exact(&mut buf)?;
            times.push(start.elapsed());
        }
        Ok(median(times))
    })();
    if result.is_err() {
        // The echo thread may still wait in accept: a connection that closes at once ends it.
        let _ = TcpStream::connect(addr);
    }
    // Dropping the stream (inside the closure) ends the echo loop with EOF.
    match echo.join() {
        Ok(echoed) => echoed?,
        Err(_) => return Err(std::io::Error::other("the echo thread panicked")),
    }
    result
}
