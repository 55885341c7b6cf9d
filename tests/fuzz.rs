//! Hostile input, fuzzed on the stable toolchain: mutated frames against the three decoders
//! in-process, and mutated streams against a real daemon's client and peer doors.
//!
//! The seed corpus is every frame printed in protocol.md (the worked examples and the peer
//! handshake, so it grows with the document), plus the empty input. Each case takes one or two
//! corpus frames and applies one to four mutations: bit flips, "interesting" bytes (MessagePack
//! markers of other types and lengths, 0x00, 0xff), inserted, deleted or duplicated ranges,
//! truncation, splicing with another frame, and rewritten length headers.
//!
//! - `decoders_survive_mutated_frames` feeds each case, cut into random chunks as a socket
//!   would deliver it, to the client, server and peer codecs. It checks that no call panics,
//!   that decoding ends within a bound of calls (each item consumes at least a header: more
//!   calls than that is a hang), that the buffer never grows past the frame limit plus what
//!   arrived, and that whatever decodes re-encodes to bytes that decode to the same value.
//! - `daemon_survives_mutated_streams` opens connections to a real `raftlockd` and writes
//!   mutated streams: after a valid `Hello` (client door), and as a peer handshake (peer door).
//!   Between batches a healthy client must still open a session, lock and release, and at the
//!   end the node's term is unchanged (no forged peer message moved it).
//!
//! Both run for a few seconds in CI. For longer runs:
//!
//! ```text
//! FUZZ_SECS=600 FUZZ_SEED=7 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! Each prints its seed, executions per second and corpus size; a failure names the seed and
//! the case number, and the case replays with the same `FUZZ_SEED`.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{Client, Daemon};
use raftlock::protocol::{ClientCodec, PeerCodec, Request, ServerCodec, HEADER_LEN};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

const DOC: &str = include_str!("../protocol.md");

/// The frame limit of the in-process codecs: small, so that length headers near it are common.
const FUZZ_MAX_FRAME: usize = 16 * 1024;

/// The run's length and seed, from the environment (`FUZZ_SECS`, `FUZZ_SEED`).
fn budget(default_secs: u64) -> (Duration, u64) {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    (Duration::from_secs(secs), seed)
}

/// Every hex block of protocol.md (lines of lowercase byte pairs) that is a whole frame.
fn corpus() -> Vec<Vec<u8>> {
    let mut frames = vec![Vec::new()];
    for block in DOC.split("```text\n").skip(1) {
        let Some((body, _)) = block.split_once("```") else {
            continue;
        };
        let bytes: Option<Vec<u8>> = body
            .split_whitespace()
            .map(|pair| {
                (pair.len() == 2)
                    .then(|| u8::from_str_radix(pair, 16).ok())
                    .flatten()
            })
            .collect();
        let Some(bytes) = bytes.filter(|b| b.len() > HEADER_LEN) else {
            continue;
        };
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len + HEADER_LEN == bytes.len() {
            frames.push(bytes);
        }
    }
    frames
}

/// Bytes that mean something to MessagePack or to a length: other types' markers, lengths at
/// the edges of their encodings, and the extremes.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6,
    0xca, 0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
];

/// One fuzz case: a corpus frame (or two, spliced or concatenated) with 1-4 mutations.
fn mutate(rng: &mut SmallRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut case = corpus[rng.gen_range(0..corpus.len())].clone();
    for _ in 0..rng.gen_range(1..=4) {
        let len = case.len();
        match rng.gen_range(0..10) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                case[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                case[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                case.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let from = rng.gen_range(0..len);
                let to = rng.gen_range(from..=len.min(from + 16));
                case.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.gen_range(0..len);
                let to = rng.gen_range(from..=len.min(from + 32));
                let copy = case[from..to].to_vec();
                case.splice(to..to, copy);
            }
            5 if len > 0 => case.truncate(rng.gen_range(0..len)),
            6 => {
                // Splice the body of another frame in at a random point.
                let other = &corpus[rng.gen_range(0..corpus.len())];
                let tail = other.get(HEADER_LEN..).unwrap_or(&[]).to_vec();
                let at = rng.gen_range(0..=len);
                case.splice(at..at, tail);
            }
            7 => case.extend_from_slice(&corpus[rng.gen_range(0..corpus.len())]),
            8 if len >= HEADER_LEN => {
                // Rewrite the length header: slightly off, at the limit, or anything.
                let real = (len - HEADER_LEN) as u32;
                let lie = match rng.gen_range(0..4) {
                    0 => real.wrapping_add(rng.gen_range(1..4)),
                    1 => real.wrapping_sub(rng.gen_range(1..4)),
                    2 => FUZZ_MAX_FRAME as u32 + rng.gen_range(0..2),
                    _ => rng.gen(),
                };
                case[..HEADER_LEN].copy_from_slice(&lie.to_be_bytes());
            }
            _ => {
                // A valid header in front of whatever the case is now.
                let body = case.get(HEADER_LEN..).unwrap_or(&[]).to_vec();
                case = (body.len() as u32).to_be_bytes().to_vec();
                case.extend_from_slice(&body);
            }
        }
    }
    case
}

/// Feeds `case` to `codec` in random chunks, as a socket delivers it, until the stream ends or
/// the codec fails. Panics (failing the test) on a hang, on a buffer larger than the frame
/// limit plus the input, or on an item that does not survive a re-encode.
fn feed<C, T>(
    codec: &mut C,
    case: &[u8],
    rng: &mut SmallRng,
    reencode: impl Fn(&T) -> Vec<u8>,
    seen: &mut Seen,
) where
    C: Decoder<Item = Result<T, raftlock::protocol::FrameError>>,
    C::Error: std::fmt::Debug,
    T: PartialEq + std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    let mut rest = case;
    // Each item consumes a header or more, each chunk may add one empty call: beyond this, a
    // decoder that keeps answering without consuming has hung.
    let bound = case.len() / HEADER_LEN + case.len() + 2;
    let mut calls = 0;
    loop {
        let eof = rest.is_empty();
        if !eof {
            let n = rng.gen_range(1..=rest.len().min(64));
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        loop {
            calls += 1;
            assert!(
                calls <= bound,
                "the decoder hung: {calls} calls on {} bytes",
                case.len()
            );
            let result = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            assert!(
                buf.capacity() <= FUZZ_MAX_FRAME + HEADER_LEN + case.len() + 64,
                "the decoder's buffer grew to {} bytes on a {}-byte input",
                buf.capacity(),
                case.len()
            );
            match result {
                Ok(Some(Ok(item))) => {
                    seen.messages += 1;
                    let again = reencode(&item);
                    let mut back = BytesMut::from(&again[..]);
                    match codec.decode(&mut back) {
                        Ok(Some(Ok(same))) => assert_eq!(same, item, "re-encoded item differs"),
                        other => panic!("{item:?} re-encoded does not decode: {other:?}"),
                    }
                }
                Ok(Some(Err(_))) => seen.bad_frames += 1,
                Ok(None) => break,
                // A fatal error: the connection would be closed here.
                Err(_) => {
                    seen.fatal += 1;
                    return;
                }
            }
        }
        if eof {
            return;
        }
    }
}

/// What the decoders made of the cases: proof that the mutations reach every outcome.
#[derive(Debug, Default)]
struct Seen {
    /// Frames that decoded as a message (and re-encoded to the same).
    messages: u64,
    /// Complete frames answered with an error (bad body, unknown type, bad field).
    bad_frames: u64,
    /// Streams ended by a fatal error (length over the limit, EOF inside a frame).
    fatal: u64,
}

/// Encodes `item` as a frame with `encoder`.
fn encoded<E: Encoder<I>, I>(mut encoder: E, item: I) -> Vec<u8>
where
    E::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    encoder
        .encode(item, &mut buf)
        .expect("a decoded item encodes");
    buf.to_vec()
}

#[test]
fn decoders_survive_mutated_frames() {
    let (budget, seed) = budget(5);
    let corpus = corpus();
    assert!(
        corpus.len() > 20,
        "protocol.md should give a corpus of frames, found {}",
        corpus.len()
    );
    println!(
        "decoders: seed {seed} (replay: FUZZ_SEED={seed}), corpus {} frames",
        corpus.len()
    );
    let mut rng = SmallRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cases = 0u64;
    let mut seen = Seen::default();
    while started.elapsed() < budget {
        for _ in 0..100 {
            let case = mutate(&mut rng, &corpus);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut chunks = SmallRng::seed_from_u64(seed ^ cases);
                feed(
                    &mut ServerCodec::new(FUZZ_MAX_FRAME),
                    &case,
                    &mut chunks,
                    |r| encoded(ClientCodec::new(FUZZ_MAX_FRAME), r.clone()),
                    &mut seen,
                );
                feed(
                    &mut ClientCodec::new(FUZZ_MAX_FRAME),
                    &case,
                    &mut chunks,
                    |r| encoded(ServerCodec::new(FUZZ_MAX_FRAME), r.clone()),
                    &mut seen,
                );
                feed(
                    &mut PeerCodec::new(FUZZ_MAX_FRAME),
                    &case,
                    &mut chunks,
                    |m| encoded(PeerCodec::new(FUZZ_MAX_FRAME), m.clone()),
                    &mut seen,
                );
            }));
            if run.is_err() {
                panic!("seed {seed}, case {cases}: {}", hex(&case));
            }
            cases += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "decoders: {cases} cases in {secs:.1} s ({:.0} per second, each through 3 decoders): \
         {seen:?}",
        cases as f64 / secs
    );
    // Anti-vacuity: the mutations must reach every outcome, or the fuzzer tests nothing.
    assert!(
        seen.messages > 0 && seen.bad_frames > 0 && seen.fatal > 0,
        "the cases never reached some outcome: {seen:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A frame of `message` (any serializable shape), for hand-made handshakes.
fn frame_of<T: Serialize>(message: &T) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(message).expect("serializes");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Writes `bytes` to a fresh connection and reads whatever comes back until the daemon closes
/// it or stays silent for a moment (bounded either way).
async fn throw(addr: std::net::SocketAddr, bytes: &[u8]) {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
    else {
        panic!("the daemon stopped accepting connections");
    };
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    // Drain the answers until the daemon closes (or the bound passes: a slow close is fine).
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_survives_mutated_streams() {
    let (budget, seed) = budget(5);
    let corpus = corpus();
    println!(
        "daemon: seed {seed} (replay: FUZZ_SEED={seed}), corpus {} frames",
        corpus.len()
    );
    let daemon = Daemon::start(&[]);
    let addr = daemon.addr;
    let mut probe = Client::hello(addr).await;
    let term = probe.wait_leader().await.term;
    let hello = frame_of(&Request::Hello {
        version: raftlock::protocol::VERSION,
        role: raftlock::protocol::Role::Client,
        token: None,
    });
    let mut rng = SmallRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut cases, mut batches) = (0u64, 0u64);
    while started.elapsed() < budget {
        let mut batch = Vec::new();
        for _ in 0..8 {
            let mut stream = Vec::new();
            match rng.gen_range(0..3) {
                // The client door, past the handshake.
                0 => stream.extend_from_slice(&hello),
                // The peer door: a (mutated) peer Hello and handshake.
                1 => {
                    stream.extend_from_slice(&frame_of(&Request::Hello {
                        version: raftlock::protocol::VERSION,
                        role: raftlock::protocol::Role::Peer,
                        token: None,
                    }));
                }
                // Mutated from the first byte.
                _ => {}
            }
            for _ in 0..rng.gen_range(1..=4) {
                stream.extend(mutate(&mut rng, &corpus));
            }
            batch.push(stream);
            cases += 1;
        }
        let throws: Vec<_> = batch
            .into_iter()
            .map(|stream| tokio::spawn(async move { throw(addr, &stream).await }))
            .collect();
        for t in throws {
            t.await.expect("a throw panicked");
        }
        batches += 1;
        // Still serving: a healthy client opens a session, locks and releases.
        common::assert_served(addr, &format!("fuzz-{batches}")).await;
    }
    let status = probe.wait_leader().await;
    assert_eq!(
        status.term, term,
        "seed {seed}: a mutated stream moved the term (a forged peer message was accepted)"
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "daemon: {cases} connections in {batches} batches in {secs:.1} s ({:.0} per second), \
         term unchanged at {term}",
        cases as f64 / secs
    );
    drop(daemon);
}
