//! A TCP proxy for the real-process tests: it listens on a loopback port of its own and forwards
//! every connection it accepts to one upstream address, both ways, counting the bytes it
//! carries. [`Proxy::cut_all`] resets every open connection at once (a link that drops in the
//! middle of a transfer) and the proxy keeps accepting new ones; [`Proxy::cut_when_carried`]
//! arms cuts that the forwarding threads make themselves as the byte count toward the upstream
//! passes each threshold, so a cut lands at a precise point of a fast transfer.
//!
//! Thread-based (blocking sockets, two threads per connection), so it runs beside any tokio
//! runtime a test uses and never depends on its workers being free.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the proxy waits to connect to the upstream for each accepted connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read and forwarded at a time.
const BUFFER: usize = 64 * 1024;

/// One forwarded connection: both sockets (clones of the ones its two pumps hold).
struct Conn {
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    conns: Mutex<Vec<Conn>>,
    /// Bytes carried from the dialers to the upstream.
    to_upstream: Arc<AtomicU64>,
    /// Bytes carried from the upstream back to the dialers.
    from_upstream: Arc<AtomicU64>,
    /// Armed cuts: byte counts toward the upstream, ascending.
    cut_at: Mutex<VecDeque<u64>>,
    cuts: AtomicU64,
    accepted: AtomicU64,
}

impl Shared {
    /// Resets every open connection: both sockets lose their unsent data (SO_LINGER 0) and are
    /// shut down, which wakes the pumps, which then close them.
    fn cut_all(&self) {
        let conns = self.conns.lock().expect("proxy connections");
        for conn in conns.iter() {
            for stream in [&conn.client, &conn.upstream] {
                let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Makes the armed cuts whose threshold the count toward the upstream has reached.
    fn check_cuts(&self) {
        let carried = self.to_upstream.load(Ordering::SeqCst);
        let due = {
            let mut cut_at = self.cut_at.lock().expect("proxy cut thresholds");
            let mut due = false;
            while cut_at.front().is_some_and(|&at| carried >= at) {
                cut_at.pop_front();
                due = true;
            }
            due
        };
        if due {
            self.cut_all();
        }
    }

    /// A pump ended; the connection is forgotten (and its sockets closed) when both have.
    fn pump_done(&self, id: u64, running: &AtomicUsize) {
        if running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.conns
                .lock()
                .expect("proxy connections")
                .retain(|conn| conn.id != id);
        }
    }
}

/// A running proxy; dropping it cuts every connection and stops accepting.
pub struct Proxy {
    /// The address to dial instead of the upstream.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on a fresh loopback port that forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            to_upstream: Arc::new(AtomicU64::new(0)),
            from_upstream: Arc::new(AtomicU64::new(0)),
            cut_at: Mutex::new(VecDeque::new()),
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared))
        };
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Resets every open connection now; new ones are still accepted.
    pub fn cut_all(&self) {
        self.shared.cut_all();
    }

    /// Arms one cut of every open connection for each of `thresholds`: made by the forwarding
    /// thread as soon as the bytes carried toward the upstream reach it.
    pub fn cut_when_carried(&self, thresholds: &[u64]) {
        let mut cut_at = self.shared.cut_at.lock().expect("proxy cut thresholds");
        cut_at.extend(thresholds.iter().copied());
        cut_at.make_contiguous().sort_unstable();
    }

    /// The counter of bytes carried from the dialers to the upstream.
    pub fn to_upstream_counter(&self) -> Arc<AtomicU64> {
        self.shared.to_upstream.clone()
    }

    /// Bytes carried from the dialers to the upstream so far.
    pub fn carried_to_upstream(&self) -> u64 {
        self.shared.to_upstream.load(Ordering::SeqCst)
    }

    /// Bytes carried from the upstream back to the dialers so far.
    pub fn carried_from_upstream(&self) -> u64 {
        self.shared.from_upstream.load(Ordering::SeqCst)
    }

    /// How many cuts were made (by [`Proxy::cut_all`] or armed thresholds).
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// How many connections were accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many forwarded connections are open now.
    pub fn open(&self) -> usize {
        self.shared.conns.lock().expect("proxy connections").len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cut_all();
        // Wake the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) else {
            // Nobody upstream: the dialer sees its connection close, as if refused.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        );
        let (Ok(client_in), Ok(upstream_out), Ok(client_out), Ok(upstream_in)) = clones else {
            continue;
        };
        next_id += 1;
        let id = next_id;
        let running = Arc::new(AtomicUsize::new(2));
        shared.conns.lock().expect("proxy connections").push(Conn {
            id,
            client,
            upstream,
        });
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        for (from, to, toward_upstream) in [
            (client_in, upstream_out, true),
            (upstream_in, client_out, false),
        ] {
            let shared = shared.clone();
            let running = running.clone();
            std::thread::spawn(move || {
                pump(from, to, &shared, toward_upstream);
                shared.pump_done(id, &running);
            });
        }
    }
}

/// Copies `from` to `to` until either ends, counting what was delivered; passes a clean end
/// of stream on as a half-close.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, toward_upstream: bool) {
    let counter = if toward_upstream {
        &shared.to_upstream
    } else {
        &shared.from_upstream
    };
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        };
        if to.write_all(&buffer[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if toward_upstream {
            shared.check_cuts();
        }
    }
}
