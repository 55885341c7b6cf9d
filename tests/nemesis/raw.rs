//! A raw-frame client for what the library deliberately hides: re-sending one request with the
//! same sequence number to a node of the harness's choice, dropping the connection right after
//! sending, and sending an append with an old fence from a session whose keep-alives stopped.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use raftlock::protocol::{ClientCodec, ErrorCode, Request, Response, Role, MAX_FRAME, VERSION};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;

/// One attempt's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawError {
    /// Could not connect or the connection broke: outcome unknown.
    Lost(String),
    /// No answer in time: outcome unknown.
    Timeout,
}

type Conn = Framed<TcpStream, ClientCodec>;

/// Connects to `addr` and completes the handshake.
async fn dial(addr: &str) -> Result<Conn, RawError> {
    let connect = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| RawError::Lost(format!("connect {addr}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| RawError::Lost(e.to_string()))?;
        let mut conn = Framed::new(stream, ClientCodec::new(MAX_FRAME));
        conn.send(Request::Hello {
            version: VERSION,
            role: Role::Client,
            token: None,
        })
        .await
        .map_err(|e| RawError::Lost(e.to_string()))?;
        match conn.next().await {
            Some(Ok(Ok(Response::Welcome { .. }))) => Ok(conn),
            other => Err(RawError::Lost(format!("no welcome from {addr}: {other:?}"))),
        }
    };
    tokio::time::timeout(Duration::from_secs(1), connect)
        .await
        .map_err(|_| RawError::Timeout)?
}

/// A raw client over the cluster's public addresses, one connection at a time.
pub struct Raw {
    pub addrs: Vec<String>,
    conn: Option<(String, Conn)>,
    next_id: u64,
}

impl Raw {
    /// A client that will dial among `addrs`.
    pub fn new(addrs: Vec<String>) -> Raw {
        Raw {
            addrs,
            conn: None,
            next_id: 1,
        }
    }

    /// A fresh request id.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn conn_to(&mut self, addr: &str) -> Result<&mut Conn, RawError> {
        if self.conn.as_ref().map_or(true, |(a, _)| a != addr) {
            self.conn = None;
            let conn = dial(addr).await?;
            self.conn = Some((addr.to_string(), conn));
        }
        Ok(&mut self.conn.as_mut().expect("just set").1)
    }

    /// Sends `request` to `addr` and closes the connection at once, without reading: the
    /// request may or may not arrive and be applied.
    pub async fn send_and_drop(&mut self, addr: &str, request: Request) {
        if let Ok(conn) = self.conn_to(addr).await {
            let _ = conn.send(request).await;
        }
        self.conn = None;
    }

    /// Sends `request` to `addr` and waits up to `patience` for its final answer (skipping
    /// `Queued`).
    pub async fn send(
        &mut self,
        addr: &str,
        request: Request,
        patience: Duration,
    ) -> Result<Response, RawError> {
        let id = request.id();
        let result = async {
            let conn = self.conn_to(addr).await?;
            conn.send(request)
                .await
                .map_err(|e| RawError::Lost(e.to_string()))?;
            let until = Instant::now() + patience;
            loop {
                match tokio::time::timeout_at(until, conn.next()).await {
                    Err(_) => return Err(RawError::Timeout),
                    Ok(Some(Ok(Ok(response)))) => {
                        if response.id() == id && !matches!(response, Response::Queued { .. }) {
                            return Ok(response);
                        }
                    }
                    Ok(other) => return Err(RawError::Lost(format!("{other:?}"))),
                }
            }
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Sends `make(id)` starting at `first` (or a member), following redirects and re-sending
    /// the same request (new id, same seq) after retryable answers, lost connections and
    /// timeouts, until `deadline`. Returns the final answer and every answer seen on the way.
    pub async fn call(
        &mut self,
        first: Option<String>,
        make: impl Fn(u64) -> Request,
        patience: Duration,
        deadline: Instant,
    ) -> (Result<Response, RawError>, Vec<Response>) {
        let mut seen = Vec::new();
        let mut next = first;
        let mut turn = rand::random::<usize>();
        let mut last = RawError::Timeout;
        while Instant::now() < deadline {
            let addr = next.take().unwrap_or_else(|| {
                turn += 1;
                self.addrs[turn % self.addrs.len()].clone()
            });
            let id = self.id();
            match self.send(&addr, make(id), patience).await {
                Ok(Response::Error {
                    code: ErrorCode::NotLeader,
                    leader_addr,
                    ..
                }) => {
                    next = leader_addr.filter(|a| *a != addr);
                    if next.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(
                    response @ Response::Error {
                        code:
                            ErrorCode::Timeout
                            | ErrorCode::NotReady
                            | ErrorCode::Internal
                            | ErrorCode::ShuttingDown
                            | ErrorCode::TooManyRequests,
                        ..
                    },
                ) => {
                    seen.push(response);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(response) => {
                    seen.push(response.clone());
                    return (Ok(response), seen);
                }
                Err(error) => {
                    last = error;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        (Err(last), seen)
    }
}
