//! One multiplexed connection to a daemon: a writer task, a reader task that routes each
//! response to the request with the same id (and each push event, id 0, to the client's
//! [`PushRouter`]), and the handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

use super::error::{Error, Result};
use super::push::PushRouter;
use crate::protocol::{ClientCodec, Request, Response, Role, VERSION};
use crate::tls::{ClientTls, Stream};

/// What the reader hands a waiting request: a response, or why the frame was unreadable.
pub(crate) type Reply = std::result::Result<Response, String>;

/// How many requests may wait for the writer before `send` waits.
const WRITE_QUEUE: usize = 256;

/// The requests waiting for answers on one connection.
#[derive(Default)]
struct Pending {
    /// Set once the connection is broken; no request may register after that.
    closed: bool,
    routes: HashMap<u64, mpsc::UnboundedSender<Reply>>,
}

/// State shared by a connection's handle and its tasks.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this short lock is a bug; recover the data anyway.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the connection broken and wakes every waiting request (their channels close).
    fn close(&self) {
        let mut pending = self.lock();
        pending.closed = true;
        pending.routes.clear();
    }
}

/// What the daemon said in its `Welcome`.
#[derive(Clone, Debug)]
pub(crate) struct Welcome {
    /// The answering node's id.
    pub node_id: u64,
    /// The leader's client address, if the node knows it.
    pub leader_addr: Option<String>,
}

/// How many bytes of a foreign answer the "not a raftlock server" error quotes.
const PREVIEW_LEN: usize = 40;

/// The start of a foreign answer, quoted for an error message: up to its first line break and
/// at most [`PREVIEW_LEN`] bytes, escaped (`"HTTP/1.1 400 Bad Request"`).
fn preview(bytes: &[u8]) -> String {
    let line = bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let cut = &line[..line.len().min(PREVIEW_LEN)];
    let more = if cut.len() < bytes.len() { "..." } else { "" };
    format!("{:?}{more}", String::from_utf8_lossy(cut))
}

/// True when `bytes` start like a TLS record (handshake or alert, TLS 1.0 to 1.3 framing): what
/// a TLS server answers a plaintext client with.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

/// A live, handshaken connection. Dropping it stops its tasks and closes the socket.
pub(crate) struct Conn {
    /// The address it was dialed at.
    pub addr: String,
    /// Distinguishes successive connections of one client.
    pub generation: u64,
    /// The handshake answer.
    pub welcome: Welcome,
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// The answers to one request, until it is dropped (which forgets the id).
pub(crate) struct PendingReply {
    id: u64,
    rx: mpsc::UnboundedReceiver<Reply>,
    shared: Arc<Shared>,
}

impl PendingReply {
    /// The next answer, or `None` when the connection was lost.
    pub async fn recv(&mut self) -> Option<Reply> {
        self.rx.recv().await
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.shared.lock().routes.remove(&self.id);
    }
}

impl Conn {
    /// Dials `addr` (then the TLS handshake, given `tls`), sends `Hello` and waits for
    /// `Welcome`, all within `timeout`. Push events arriving later go to `pushes`.
    pub async fn connect(
        addr: &str,
        generation: u64,
        timeout: Duration,
        tls: Option<&ClientTls>,
        token: Option<&str>,
        pushes: Arc<PushRouter>,
    ) -> Result<Conn> {
        tokio::time::timeout(
            timeout,
            Self::handshake(addr, generation, tls, token, pushes),
        )
        .await
        .map_err(|_| Error::Timeout)?
    }

    async fn handshake(
        addr: &str,
        generation: u64,
        tls: Option<&ClientTls>,
        token: Option<&str>,
        pushes: Arc<PushRouter>,
    ) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => tls.connect(addr, stream).await?,
        };
        let mut framed = Framed::new(stream, ClientCodec::default());
        framed
            .send(Request::Hello {
                version: VERSION,
                role: Role::Client,
                token: token.map(str::to_owned),
            })
            .await?;
        let welcome = match framed.next().await {
            Some(Ok(Ok(Response::Welcome {
                version,
                node_id,
                leader_addr,
                ..
            }))) => {
                if version != VERSION {
                    return Err(Error::Protocol(format!(
                        "{addr} speaks protocol version {version}, this client {VERSION}"
                    )));
                }
                Welcome {
                    node_id,
                    leader_addr,
                }
            }
            Some(Ok(Ok(Response::Error { code, message, .. }))) => {
                return Err(Error::from_code(code, message))
            }
            Some(Ok(Ok(other))) => {
                return Err(Error::Protocol(format!(
                    "expected Welcome from {addr}, got {other:?}"
                )))
            }
            Some(Ok(Err(bad))) => {
                return Err(Error::Protocol(format!(
                    "this is not a raftlock server ({addr} answered a frame that is not a \
                     raftlock response: {bad})"
                )))
            }
            Some(Err(crate::protocol::Error::FrameTooLarge { .. }))
                if tls.is_none() && looks_like_tls(framed.read_buffer()) =>
            {
                // A TLS record (an alert answering our plaintext Hello): the port speaks TLS.
                return Err(Error::Protocol(format!(
                    "{addr} speaks TLS: connect with TLS (--ca FILE, or ClientOptions::tls)"
                )));
            }
            Some(Err(crate::protocol::Error::FrameTooLarge { .. })) => {
                // The first four bytes were not a plausible frame length: some other service
                // (an HTTP server answers `HTTP/1.1 400 ...` to the Hello) listens there.
                return Err(Error::Protocol(format!(
                    "this is not a raftlock server ({addr} answered {})",
                    preview(framed.read_buffer())
                )));
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{addr} closed the connection during the handshake"),
                )))
            }
        };

        let (mut sink, mut stream) = framed.split();
        let shared = Arc::new(Shared::default());
        let (tx, mut rx) = mpsc::channel::<Request>(WRITE_QUEUE);

        let writer_shared = shared.clone();
        let writer_addr = addr.to_string();
        let writer = tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                if let Err(error) = sink.send(request).await {
                    tracing::debug!(addr = %writer_addr, %error, "write failed");
                    break;
                }
            }
            writer_shared.close();
        });

        let reader_shared = shared.clone();
        let reader_addr = addr.to_string();
        let reader = tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let (id, reply) = match frame {
                    Ok(Ok(response)) if response.push_session().is_some() => {
                        pushes.deliver(response);
                        continue;
                    }
                    Ok(Ok(response)) => (response.id(), Ok(response)),
                    Ok(Err(bad)) => (bad.id(), Err(bad.to_string())),
                    Err(error) => {
                        tracing::debug!(addr = %reader_addr, %error, "read failed");
                        break;
                    }
                };
                if id == 0 {
                    // A connection-level error (the daemon closes the connection next), or a
                    // frame of a newer protocol (a push this build does not know): no request
                    // waits for it.
                    tracing::debug!(addr = %reader_addr, ?reply, "frame with id 0");
                    continue;
                }
                // Answers that more answers to the same request follow: an acquire's `Queued`,
                // and a `SnapshotSave`'s header and every chunk but the last.
                let interim = matches!(
                    reply,
                    Ok(Response::Queued { .. }
                        | Response::SnapshotHeader { .. }
                        | Response::SnapshotChunk { last: false, .. })
                );
                let mut pending = reader_shared.lock();
                let route = if interim {
                    pending.routes.get(&id).cloned()
                } else {
                    pending.routes.remove(&id)
                };
                drop(pending);
                match route {
                    // The requester may have given up (timeout); then nobody listens.
                    Some(route) => {
                        let _ = route.send(reply);
                    }
                    None => tracing::debug!(addr = %reader_addr, id, "answer to no request"),
                }
            }
            reader_shared.close();
        });

        Ok(Conn {
            addr: addr.to_string(),
            generation,
            welcome,
            tx,
            shared,
            reader,
            writer,
        })
    }

    /// True once the connection is broken.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Sends `request` (whose id is `id`) and returns where its answers arrive. `None` if the
    /// connection is already broken.
    pub async fn send(&self, id: u64, request: Request) -> Option<PendingReply> {
        let (route, rx) = mpsc::unbounded_channel();
        {
            let mut pending = self.shared.lock();
            if pending.closed {
                return None;
            }
            pending.routes.insert(id, route);
        }
        let reply = PendingReply {
            id,
            rx,
            shared: self.shared.clone(),
        };
        self.tx.send(request).await.ok()?;
        Some(reply)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::{looks_like_tls, preview};

    #[test]
    fn a_tls_alert_is_recognised() {
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]));
        assert!(!looks_like_tls(b"HTTP/1.1 400 Bad Request"));
    }

    #[test]
    fn previews_quote_the_first_line_of_a_foreign_answer() {
        assert_eq!(
            preview(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            "\"HTTP/1.1 400 Bad Request\"..."
        );
        assert_eq!(preview(b"SSH-2.0"), "\"SSH-2.0\"");
        assert_eq!(preview(&[0xff; 50]).matches('\u{fffd}').count(), 40);
    }
}
