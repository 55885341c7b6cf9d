//! One task per client connection: the handshake, a reader loop that forwards requests to the
//! driver, and a writer task fed by a bounded queue.
//!
//! Nothing a client sends can stall the daemon: the driver only `try_send`s into the writer
//! queue, and a client that lets it fill is disconnected; every wait here has a deadline. A bad
//! frame costs one error answer; a fatal one (oversized length prefix) an error frame and the
//! connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::inbox::{ConnHandle, Event, LeaderInfo, Outgoing, Reply};
use super::metrics::ConnectionMetrics;
use super::peer::PeerAcceptor;
use super::tls::ServerTls;
use super::tokens::TokenFile;
use crate::auth::Principal;
use crate::protocol::{
    self, ErrorCode, FrameError, Limits, Request, Response, Role, ServerCodec, PEER_TYPES,
};
use crate::raft::NodeId;
use crate::tls::Stream;

/// How long one write to a client may block before the client is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection closed with an error frame keeps reading (and discarding) so that the
/// kernel sends FIN rather than RST, letting the client read that frame.
const LINGER: Duration = Duration::from_secs(1);
/// Capacity of the reader's own answer queue.
const LOCAL_QUEUE: usize = 16;

type FrameSink = SplitSink<Framed<Stream, ServerCodec>, Response>;
type FrameStream = SplitStream<Framed<Stream, ServerCodec>>;

/// What every connection task shares with the server.
pub(crate) struct Shared {
    /// Frame, in-flight and handshake limits.
    pub limits: Limits,
    /// This node's id, for `Welcome`.
    pub node_id: NodeId,
    /// The driver's inbox.
    pub inbox: mpsc::Sender<Event>,
    /// The leader as the driver last saw it, for `Welcome`.
    pub leader: watch::Receiver<LeaderInfo>,
    /// Cancelled when the daemon has finished its work and closes every connection.
    pub closing: CancellationToken,
    /// Serves connections that open with a peer `Hello` (Raft traffic from another node).
    pub acceptor: PeerAcceptor<Event>,
    /// When set, every connection starts with a TLS handshake (`server::tls`).
    pub tls: Option<Arc<ServerTls>>,
    /// Connection, frame and rejection counters.
    pub metrics: ConnectionMetrics,
    /// The client token file; `None`: clients are not authenticated.
    pub tokens: Option<Arc<TokenFile>>,
}

/// How the reader loop ended.
enum Exit {
    /// The client closed, the socket failed, or the connection was cancelled.
    Drop,
    /// Send this error frame, then close.
    CloseWith(Response),
}

/// Serves one accepted connection until it closes. `_permit` holds one of the connection slots
/// for the connection's life.
///
/// The first frame decides what the connection is: a client `Hello` starts the client protocol
/// (reader loop + writer task); a peer `Hello` hands the connection to the transport's acceptor
/// (peer handshake, then Raft messages into the driver's inbox).
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let span = tracing::debug_span!("connection", %peer);
    shared.metrics.accepted.inc();
    shared.metrics.open.inc();
    async move {
        // The TLS handshake and the Hello share one deadline: a client that stalls in either
        // holds its connection slot no longer than the handshake timeout.
        let deadline = Instant::now() + shared.limits.handshake_timeout;
        let stream = match &shared.tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let accepted = tokio::select! {
                    biased;
                    _ = shared.closing.cancelled() => return,
                    accepted = timeout_at(deadline, tls.accept(stream)) => accepted,
                };
                match accepted {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::info!(%error, "TLS handshake failed; closing the connection");
                        return;
                    }
                    Err(_elapsed) => {
                        tracing::info!(
                            timeout_ms = shared.limits.handshake_timeout.as_millis(),
                            "TLS handshake not completed in time; closing the connection"
                        );
                        return;
                    }
                }
            }
        };
        let codec = ServerCodec::new(shared.limits.max_frame);
        let mut framed = Framed::new(stream, codec);
        match handshake(&mut framed, &shared, deadline).await {
            Handshake::Client(welcome, principal) => {
                serve_client(framed, welcome, principal, peer, &shared).await
            }
            Handshake::Peer => {
                let cancel = shared.closing.child_token();
                let tls_verified = match &shared.tls {
                    Some(tls) if tls.peer_tls() => match tls.verify_peer(framed.get_ref()) {
                        Ok(()) => true,
                        Err(reason) => {
                            tracing::warn!(
                                reason,
                                "peer connection without a valid peer certificate"
                            );
                            false
                        }
                    },
                    _ => false,
                };
                let served = shared
                    .acceptor
                    .serve_peer(framed, peer, tls_verified, &cancel)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "peer connection ended");
                }
            }
            Handshake::Drop => {}
            Handshake::CloseWith(response) => {
                shared.metrics.rejected(&response);
                tracing::debug!(code = ?error_code(&response), "closing connection with an error");
                let told = timeout(WRITE_TIMEOUT, async {
                    framed.send(response).await?;
                    framed.close().await
                })
                .await;
                if matches!(told, Ok(Ok(()))) {
                    drain(framed.into_inner()).await;
                }
            }
        }
        tracing::debug!("connection closed");
        shared.metrics.open.dec();
    }
    .instrument(span)
    .await
}

/// What the first frames of a connection made of it.
enum Handshake {
    /// A client: send it this `Welcome` and serve requests on behalf of this principal
    /// (`None` with authentication off).
    Client(Response, Option<Principal>),
    /// Another node of the cluster.
    Peer,
    /// Gone (closed, cancelled, or a socket error).
    Drop,
    /// Refused: send this error frame, then close.
    CloseWith(Response),
}

/// Reads the first frame, within the handshake deadline. Anything but an acceptable `Hello`
/// (a bad frame, an unknown type, a malformed `Hello`, another request) is answered with its
/// error, echoing the frame's id when it had one, and closes the connection.
async fn handshake(
    framed: &mut Framed<Stream, ServerCodec>,
    shared: &Shared,
    deadline: Instant,
) -> Handshake {
    let item = tokio::select! {
        biased;
        _ = shared.closing.cancelled() => return Handshake::Drop,
        item = timeout_at(deadline, framed.next()) => item,
    };
    let request = match item {
        Err(_elapsed) => {
            return Handshake::CloseWith(Response::error(
                0,
                ErrorCode::HandshakeTimeout,
                format!(
                    "no Hello within {} ms",
                    shared.limits.handshake_timeout.as_millis()
                ),
            ))
        }
        Ok(None) => return Handshake::Drop,
        Ok(Some(Err(error))) => {
            return match fatal(error) {
                Exit::Drop => Handshake::Drop,
                Exit::CloseWith(response) => Handshake::CloseWith(response),
            }
        }
        // Before the handshake every problem is fatal (protocol.md §4): answer the bad frame
        // (with its id when it had one) and close.
        Ok(Some(Ok(Err(bad_frame)))) => return Handshake::CloseWith(bad_frame.to_response()),
        Ok(Some(Ok(Ok(request)))) => request,
    };
    match request {
        Request::Hello { version, .. } if version != protocol::VERSION => {
            Handshake::CloseWith(Response::error(
                0,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {version} is not supported; this server speaks {}",
                    protocol::VERSION
                ),
            ))
        }
        Request::Hello {
            role: Role::Peer, ..
        } => Handshake::Peer,
        Request::Hello { token, .. } => {
            let principal = match &shared.tokens {
                None => None,
                Some(tokens) => {
                    let certificate = super::tls::client_common_name(framed.get_ref());
                    match tokens.authenticate(token.as_deref(), certificate.as_deref()) {
                        Some(principal) => Some(principal),
                        None => {
                            let why = match (&token, &certificate) {
                                (Some(_), _) => {
                                    "the token in Hello is not known to this server".to_string()
                                }
                                (None, Some(name)) => format!(
                                    "the client certificate's name {name:?} is not a principal \
                                     of this server, and Hello has no token"
                                ),
                                (None, None) => {
                                    "this server requires an authentication token in Hello or \
                                     a client certificate"
                                        .to_string()
                                }
                            };
                            return Handshake::CloseWith(Response::error(
                                0,
                                ErrorCode::Unauthenticated,
                                why,
                            ));
                        }
                    }
                }
            };
            if let Some(principal) = &principal {
                tracing::debug!(principal = principal.name(), "client authenticated");
            }
            let leader = shared.leader.borrow().clone();
            Handshake::Client(
                Response::Welcome {
                    version: protocol::VERSION,
                    node_id: shared.node_id,
                    leader: leader.leader,
                    leader_addr: leader.addr,
                },
                principal,
            )
        }
        // A well-formed request has an id: the answer echoes it, like every error that
        // answers a frame whose id could be read (protocol.md §3).
        other => Handshake::CloseWith(Response::error(
            other.id(),
            ErrorCode::HandshakeRequired,
            format!("{} before Hello", other.type_name()),
        )),
    }
}

/// Serves a handshaken client connection: the reader loop here, a writer task for answers.
async fn serve_client(
    mut framed: Framed<Stream, ServerCodec>,
    welcome: Response,
    principal: Option<Principal>,
    peer: SocketAddr,
    shared: &Shared,
) {
    if !matches!(
        timeout(WRITE_TIMEOUT, framed.send(welcome)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let (sink, mut frames) = framed.split();
    // Room for an interim and a final answer per request in flight, plus reader errors.
    let capacity = shared
        .limits
        .max_in_flight
        .saturating_mul(2)
        .saturating_add(16);
    let (outgoing, queue) = mpsc::channel(capacity);
    let conn = ConnHandle {
        outgoing,
        close: shared.closing.child_token(),
        in_flight: Arc::new(AtomicUsize::new(0)),
        peer,
    };
    // The reader's own answers (bad frames, limits) use a second, small queue that the reader
    // waits on: a client that sends faster than it reads slows down its own reader instead of
    // filling the driver's queue.
    let (local, local_queue) = mpsc::channel(LOCAL_QUEUE);
    let writer = tokio::spawn(write_loop(
        sink,
        queue,
        local_queue,
        conn.close.clone(),
        shared.metrics.clone(),
    ));
    let exit = read_loop(&mut frames, &conn, principal.as_ref(), &local, shared).await;
    let linger = match exit {
        Exit::Drop => {
            conn.close.cancel();
            false
        }
        Exit::CloseWith(response) => {
            shared.metrics.rejected(&response);
            tracing::debug!(code = ?error_code(&response), "closing connection with an error");
            let told =
                say(&local, &conn.close, response).await && say_close(&local, &conn.close).await;
            if !told {
                conn.close.cancel();
            }
            told
        }
    };
    let sink = writer.await;
    if let (true, Ok(sink)) = (linger, sink) {
        if let Ok(framed) = sink.reunite(frames) {
            drain(framed.into_inner()).await;
        }
    }
}

/// Queues one of the reader's own answers, waiting (bounded) for room. False if the
/// connection is going away.
async fn say(
    local: &mpsc::Sender<Outgoing>,
    close: &CancellationToken,
    response: Response,
) -> bool {
    matches!(
        bounded(close, local.send(Outgoing::Frame(response))).await,
        Some(Ok(()))
    )
}

/// Asks the writer to flush and close.
async fn say_close(local: &mpsc::Sender<Outgoing>, close: &CancellationToken) -> bool {
    matches!(
        bounded(close, local.send(Outgoing::Close)).await,
        Some(Ok(()))
    )
}

/// Reads until EOF for at most [`LINGER`], discarding, so the client gets our last frame.
async fn drain(mut stream: impl AsyncRead + Unpin) {
    let mut buffer = [0u8; 8192];
    let _ = timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// Reads requests until the connection ends (after the handshake).
async fn read_loop(
    frames: &mut FrameStream,
    conn: &ConnHandle,
    principal: Option<&Principal>,
    local: &mpsc::Sender<Outgoing>,
    shared: &Shared,
) -> Exit {
    loop {
        // A frame already in the read buffer is taken without arming the cancellation wait
        // (registering and dropping a waiter per frame); only an empty buffer waits on both.
        if conn.close.is_cancelled() {
            return Exit::Drop;
        }
        let item = match frames.next().now_or_never() {
            Some(item) => item,
            None => tokio::select! {
                biased;
                _ = conn.close.cancelled() => return Exit::Drop,
                item = frames.next() => item,
            },
        };
        if matches!(item, Some(Ok(_))) {
            shared.metrics.frames_in.inc();
        }
        let request = match item {
            None => return Exit::Drop,
            Some(Err(error)) => return fatal(error),
            Some(Ok(Err(FrameError::UnknownType { id, type_name })))
                if PEER_TYPES.contains(&type_name.as_str()) =>
            {
                // Raft traffic on a client connection never decodes as a request, so it cannot
                // reach the core: it is an unknown type here, answered as §3 says.
                tracing::warn!(peer = %conn.peer, type_name, "peer message on a client connection");
                let response = Response::error(
                    id,
                    ErrorCode::UnknownType,
                    format!("{type_name} is a peer message; this is a client connection"),
                );
                if !say(local, &conn.close, response).await {
                    return Exit::Drop;
                }
                continue;
            }
            Some(Ok(Err(bad_frame))) => {
                let response = bad_frame.to_response();
                shared.metrics.rejected(&response);
                if !say(local, &conn.close, response).await {
                    return Exit::Drop;
                }
                continue;
            }
            Some(Ok(Ok(request))) => request,
        };
        let id = request.id();
        let refusal = if let Request::Hello { .. } = request {
            Some(Response::error(
                0,
                ErrorCode::BadRequest,
                "Hello was already received",
            ))
        } else if let Err(invalid) = shared.limits.validate(&request) {
            Some(Response::error(
                id,
                ErrorCode::BadRequest,
                invalid.to_string(),
            ))
        } else if let Some(denied) = principal.and_then(|p| p.authorize(&request).err()) {
            // Before the driver: a denied request changes nothing.
            Some(Response::error(
                id,
                ErrorCode::PermissionDenied,
                denied.to_string(),
            ))
        } else if conn.in_flight.load(Ordering::Relaxed) >= shared.limits.max_in_flight {
            Some(Response::error(
                id,
                ErrorCode::TooManyRequests,
                format!(
                    "{} requests already in flight on this connection",
                    shared.limits.max_in_flight
                ),
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            shared.metrics.rejected(&refusal);
            if !say(local, &conn.close, refusal).await {
                return Exit::Drop;
            }
            continue;
        }
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        let reply = Reply { conn: conn.clone() };
        let event = Event::Client {
            request,
            reply,
            principal: principal.cloned(),
        };
        // Room in the inbox (the usual case): no wait to arm. The driver, woken by the first
        // event, drains every later one in the same turn (`Driver::run`).
        let event = match shared.inbox.try_send(event) {
            Ok(()) => continue,
            Err(mpsc::error::TrySendError::Full(event)) => event,
            Err(mpsc::error::TrySendError::Closed(event)) => {
                shutting_down(event, id);
                continue;
            }
        };
        let sent = tokio::select! {
            biased;
            _ = conn.close.cancelled() => return Exit::Drop,
            sent = shared.inbox.send(event) => sent,
        };
        if let Err(mpsc::error::SendError(event)) = sent {
            shutting_down(event, id);
        }
    }
}

/// Answers a request the stopped driver did not take: the daemon is going down.
fn shutting_down(event: Event, id: u64) {
    if let Event::Client { reply, .. } = event {
        reply.finish(Response::error(
            id,
            ErrorCode::ShuttingDown,
            "the node is shutting down",
        ));
    }
}

/// The answer to a fatal codec error: an error frame when the client can still be told.
fn fatal(error: protocol::Error) -> Exit {
    match error.code() {
        Some(code) => Exit::CloseWith(Response::error(0, code, error.to_string())),
        None => {
            tracing::debug!(%error, "connection ended");
            Exit::Drop
        }
    }
}

/// Sends queued responses until told to close or cancelled; returns the sink so the connection
/// can linger. Writes are batched: the socket is flushed when the queue runs empty.
///
/// The common case costs no timer and no cancellation waiter per answer: an answer already
/// queued is taken with `try_recv`, and one the sink can take at once is handed over without
/// [`bounded`]; only a wait (an empty queue, a sink that must first write) is bounded.
async fn write_loop(
    mut sink: FrameSink,
    mut queue: mpsc::Receiver<Outgoing>,
    mut local: mpsc::Receiver<Outgoing>,
    close: CancellationToken,
    metrics: ConnectionMetrics,
) -> FrameSink {
    loop {
        if close.is_cancelled() {
            break;
        }
        let ready = match queue.try_recv() {
            Ok(next) => Some(Some(next)),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::error::TryRecvError::Empty) => local.try_recv().ok().map(Some),
        };
        let next = match ready {
            Some(next) => next,
            None => tokio::select! {
                biased;
                _ = close.cancelled() => break,
                next = queue.recv() => next,
                next = local.recv() => next,
            },
        };
        match next {
            Some(Outgoing::Frame(response)) => {
                metrics.frames_out.inc();
                let id = response.id();
                let ready = futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never();
                let fed = match ready {
                    Some(Ok(())) => sink.start_send_unpin(response),
                    Some(Err(error)) => Err(error),
                    None => match bounded(&close, sink.feed(response)).await {
                        Some(result) => result,
                        None => break,
                    },
                };
                if let Err(error) = fed {
                    match error {
                        // Too big to send (a huge lock list, a small --max-frame-bytes): say so
                        // instead of dropping the answer.
                        protocol::Error::FrameTooLarge { len, max } => {
                            let response = Response::error(
                                id,
                                ErrorCode::Internal,
                                format!("the answer ({len} bytes) exceeds the frame limit ({max} bytes)"),
                            );
                            if !matches!(bounded(&close, sink.feed(response)).await, Some(Ok(()))) {
                                break;
                            }
                        }
                        error => {
                            tracing::debug!(%error, "write failed");
                            break;
                        }
                    }
                }
                if queue.is_empty() && !matches!(bounded(&close, sink.flush()).await, Some(Ok(())))
                {
                    break;
                }
            }
            Some(Outgoing::Close) | None => {
                let _ = bounded(&close, sink.close()).await;
                break;
            }
        }
    }
    sink
}

/// Runs a write with the write timeout; `None` if it timed out or the connection was cancelled.
async fn bounded<F: std::future::Future>(close: &CancellationToken, write: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = close.cancelled() => None,
        result = timeout(WRITE_TIMEOUT, write) => result.ok(),
    }
}

/// Answers a connection over the limit with `TooManyConnections` and closes it, without ever
/// blocking the accept loop (this runs in its own short task, bounded by [`LINGER`]).
pub(crate) async fn reject(mut stream: TcpStream, max_frame: usize) {
    use tokio::io::AsyncWriteExt;
    let response = Response::error(
        0,
        ErrorCode::TooManyConnections,
        "the server is at its connection limit",
    );
    let Ok(frame) = protocol::encode_frame(&response, max_frame) else {
        return;
    };
    let written = timeout(LINGER, async {
        stream.write_all(&frame).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        drain(stream).await;
    }
}
