//! The fault-injecting TCP proxy in front of every node, unprivileged: node `n` listens on a
//! private port and advertises its proxy's public port, so every peer and client connection to
//! `n` passes through here.
//!
//! A peer connection carries Raft messages one way, from the dialer to the node it reaches
//! (protocol.md §16.1), so each connection is one directed edge `from → to`. The proxy learns
//! `from` by reading the first two frames (`Hello{role: "peer"}`, then `PeerHello{node_id}`),
//! forwards them, and then pipes bytes both ways while the current [`Net`] map allows the edge.
//! When it blocks the edge, the connection is either dropped (closed at once, and new ones closed
//! on arrival) or stalled (bytes held, nothing read, until the edge heals: a long delay).
//! Client connections are never partitioned, but the nemesis can cut all of a node's client
//! connections at once (a fault for the exactly-once retries).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use raftlock::protocol::{decode_body, PeerMessage, Request, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The network as the nemesis currently wants it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Net {
    /// Directed edges `(from, to)` whose Raft messages do not get through.
    pub blocked: BTreeSet<(u64, u64)>,
    /// Blocked edges stall (hold bytes) instead of closing connections.
    pub stall: bool,
    /// Bumped to close every client connection of node `index + 1` opened before.
    pub client_epoch: Vec<u64>,
}

/// What a connection may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Stall,
    Drop,
}

/// Who opened a connection.
#[derive(Clone, Copy, Debug)]
enum Dialer {
    /// Node `from`, sending Raft messages to the proxied node.
    Peer(u64),
    /// A client, accepted in client epoch `epoch`.
    Client { epoch: u64 },
}

impl Net {
    fn verdict(&self, to: u64, dialer: Dialer) -> Verdict {
        match dialer {
            Dialer::Peer(from) if self.blocked.contains(&(from, to)) => {
                if self.stall {
                    Verdict::Stall
                } else {
                    Verdict::Drop
                }
            }
            Dialer::Peer(_) => Verdict::Pass,
            Dialer::Client { epoch } => {
                if self.client_epoch.get(to as usize - 1).copied().unwrap_or(0) > epoch {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                }
            }
        }
    }
}

/// Runs the proxy of node `to`: accepts on `listener` and forwards to `private`, until the
/// runtime shuts down.
pub fn spawn(to: u64, listener: TcpListener, private: SocketAddr, net: watch::Receiver<Net>) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let net = net.clone();
            tokio::spawn(async move {
                let _ = serve(to, stream, private, net).await;
            });
        }
    });
}

/// Reads one whole frame (length prefix included) from `stream` into `buf`; returns the body.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > raftlock::protocol::PEER_HANDSHAKE_MAX_FRAME {
        return Err(std::io::Error::other("first frames too large"));
    }
    let mut body = vec![0u8; n];
    stream.read_exact(&mut body).await?;
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&body);
    Ok(body)
}

/// Classifies, gates and pipes one accepted connection.
async fn serve(
    to: u64,
    mut inbound: TcpStream,
    private: SocketAddr,
    mut net: watch::Receiver<Net>,
) -> std::io::Result<()> {
    let epoch = net
        .borrow()
        .client_epoch
        .get(to as usize - 1)
        .copied()
        .unwrap_or(0);
    let mut head = Vec::new();
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        read_frame(&mut inbound, &mut head),
    )
    .await
    .map_err(|_| std::io::Error::other("no hello"))??;
    let dialer = match decode_body::<Request>(&first) {
        Ok(Request::Hello {
            role: Role::Peer, ..
        }) => {
            let second = read_frame(&mut inbound, &mut head).await?;
            match decode_body::<PeerMessage>(&second) {
                Ok(PeerMessage::PeerHello { node_id, .. }) => Dialer::Peer(node_id),
                _ => return Ok(()),
            }
        }
        _ => Dialer::Client { epoch },
    };
    // A dropped edge refuses new connections too; a stalled one holds them.
    if !gate(to, dialer, &mut net).await {
        return Ok(());
    }
    let mut outbound = TcpStream::connect(private).await?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    outbound.write_all(&head).await?;
    let (in_r, in_w) = inbound.into_split();
    let (out_r, out_w) = outbound.into_split();
    tokio::select! {
        _ = pump(to, dialer, in_r, out_w, net.clone()) => {}
        _ = pump(to, dialer, out_r, in_w, net) => {}
    }
    Ok(())
}

/// Waits while the connection is stalled; false if it must be dropped.
async fn gate(to: u64, dialer: Dialer, net: &mut watch::Receiver<Net>) -> bool {
    loop {
        let verdict = net.borrow_and_update().verdict(to, dialer);
        match verdict {
            Verdict::Pass => return true,
            Verdict::Drop => return false,
            Verdict::Stall => {
                if net.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Copies `rd` to `wr` while the edge allows it.
async fn pump(
    to: u64,
    dialer: Dialer,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut net: watch::Receiver<Net>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !gate(to, dialer, &mut net).await {
            return;
        }
        tokio::select! {
            read = rd.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // A partition that started while the bytes were in flight holds them too.
                if !gate(to, dialer, &mut net).await {
                    return;
                }
                if wr.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = net.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
