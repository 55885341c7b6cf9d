//! The handshake that opens every peer connection (protocol.md §16.2), both halves side by
//! side: `dial_handshake` is what the dialer runs once connected, `accept_handshake` what the
//! acceptor runs once it has read the peer `Hello`. Each step of one half is answered by a step
//! of the other:
//!
//! ```text
//! dial_handshake                              accept_handshake
//!   Hello {role: "peer"}, PeerHello {Nd} ---->  same cluster? dialer id valid? Nd 32 bytes?
//!   right cluster? right node? acceptor's MAC <-- PeerWelcome {Na, MAC(acceptor, Nd)}
//!   PeerAuth {MAC(dialer, Na)} -------------->  dialer's MAC?
//!   done                                     <-- PeerAccepted
//! ```
//!
//! Without a cluster key both sides send no nonce and no MAC, and ignore those they receive.
//! A check that fails is answered with an `Error` frame (best effort) and ends the connection.
//! Neither half sets a deadline of its own: the caller bounds the whole exchange.

use futures::{SinkExt, StreamExt};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::{PeerError, TransportConfig};
use crate::protocol::{
    self, mac, verify_mac, ClientCodec, ErrorCode, PeerCodec, PeerMessage, Request, Role, Side,
    PEER_HANDSHAKE_MAX_FRAME, PEER_NONCE_LEN,
};
use crate::raft::NodeId;

/// The dialer's half, on a fresh connection to `peer` (plain or TLS): returns the connection
/// ready for `Raft` frames (still with the handshake's frame limit).
pub(super) async fn dial_handshake<T: AsyncRead + AsyncWrite + Unpin>(
    config: &TransportConfig,
    peer: NodeId,
    stream: T,
) -> Result<Framed<T, PeerCodec>, PeerError> {
    let mut hello = Framed::new(stream, ClientCodec::new(PEER_HANDSHAKE_MAX_FRAME));
    hello
        .feed(Request::Hello {
            version: protocol::VERSION,
            role: Role::Peer,
            token: None,
        })
        .await?;
    let mut framed = hello.map_codec(|_| PeerCodec::new(PEER_HANDSHAKE_MAX_FRAME));
    let my_nonce = config.key.as_ref().map(|_| fresh_nonce());
    framed
        .send(PeerMessage::PeerHello {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            nonce: my_nonce.clone(),
        })
        .await?;
    let (cluster_id, node_id, their_nonce, their_mac) = match next_message(&mut framed).await? {
        PeerMessage::PeerWelcome {
            cluster_id,
            node_id,
            nonce,
            mac,
        } => (cluster_id, node_id, nonce, mac),
        other => return Err(unexpected(&mut framed, "PeerWelcome", other).await),
    };
    if cluster_id != config.cluster_id {
        let reason = format!(
            "peer is in cluster {cluster_id:?}, this node in {:?}",
            config.cluster_id
        );
        return Err(refuse(&mut framed, ErrorCode::WrongCluster, reason).await);
    }
    if node_id != peer {
        let reason = format!("reached node {node_id}, expected node {peer}");
        return Err(refuse(&mut framed, ErrorCode::BadRequest, reason).await);
    }
    let auth = match (&config.key, &my_nonce) {
        (Some(key), Some(my_nonce)) => {
            let proven = their_mac.as_deref().is_some_and(|m| {
                verify_mac(key.bytes(), Side::Acceptor, my_nonce, &cluster_id, peer, m)
            });
            if !proven {
                let reason = "the acceptor did not prove it holds the cluster key".to_string();
                return Err(refuse(&mut framed, ErrorCode::Unauthorized, reason).await);
            }
            match their_nonce {
                Some(nonce) if nonce.len() == PEER_NONCE_LEN => Some(mac(
                    key.bytes(),
                    Side::Dialer,
                    &nonce,
                    &config.cluster_id,
                    config.node_id,
                )),
                _ => {
                    let reason = "the acceptor sent no valid challenge".to_string();
                    return Err(refuse(&mut framed, ErrorCode::Unauthorized, reason).await);
                }
            }
        }
        _ => None,
    };
    framed.send(PeerMessage::PeerAuth { mac: auth }).await?;
    match next_message(&mut framed).await? {
        PeerMessage::PeerAccepted {} => Ok(framed),
        other => Err(unexpected(&mut framed, "PeerAccepted", other).await),
    }
}

/// The acceptor's side of the handshake, after `Hello`: returns the authenticated dialer's id.
pub(super) async fn accept_handshake<T: AsyncRead + AsyncWrite + Unpin>(
    config: &TransportConfig,
    framed: &mut Framed<T, PeerCodec>,
) -> Result<NodeId, PeerError> {
    let (cluster_id, dialer, dialer_nonce) = match next_message(framed).await? {
        PeerMessage::PeerHello {
            cluster_id,
            node_id,
            nonce,
        } => (cluster_id, node_id, nonce),
        other => return Err(unexpected(framed, "PeerHello", other).await),
    };
    if cluster_id != config.cluster_id {
        let reason = format!(
            "this node is in cluster {:?}, the dialer in {cluster_id:?}",
            config.cluster_id
        );
        return Err(refuse(framed, ErrorCode::WrongCluster, reason).await);
    }
    if dialer == 0 || dialer == config.node_id {
        let reason = format!("node id {dialer} cannot dial node {}", config.node_id);
        return Err(refuse(framed, ErrorCode::BadRequest, reason).await);
    }
    let (my_nonce, my_mac) = match &config.key {
        None => (None, None),
        Some(key) => match dialer_nonce {
            None => {
                let reason = "this cluster requires a cluster key: PeerHello has no nonce";
                return Err(refuse(framed, ErrorCode::Unauthorized, reason.to_string()).await);
            }
            Some(nonce) if nonce.len() != PEER_NONCE_LEN => {
                let reason = format!("nonce must be {PEER_NONCE_LEN} bytes, got {}", nonce.len());
                return Err(refuse(framed, ErrorCode::BadRequest, reason).await);
            }
            Some(nonce) => {
                let answer = mac(
                    key.bytes(),
                    Side::Acceptor,
                    &nonce,
                    &config.cluster_id,
                    config.node_id,
                );
                (Some(fresh_nonce()), Some(answer))
            }
        },
    };
    framed
        .send(PeerMessage::PeerWelcome {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            nonce: my_nonce.clone(),
            mac: my_mac,
        })
        .await?;
    let dialer_mac = match next_message(framed).await? {
        PeerMessage::PeerAuth { mac } => mac,
        other => return Err(unexpected(framed, "PeerAuth", other).await),
    };
    if let (Some(key), Some(my_nonce)) = (&config.key, &my_nonce) {
        let proven = dialer_mac.as_deref().is_some_and(|m| {
            verify_mac(
                key.bytes(),
                Side::Dialer,
                my_nonce,
                &config.cluster_id,
                dialer,
                m,
            )
        });
        if !proven {
            let reason = format!("node {dialer} did not prove it holds the cluster key");
            return Err(refuse(framed, ErrorCode::Unauthorized, reason).await);
        }
    }
    framed.send(PeerMessage::PeerAccepted {}).await?;
    Ok(dialer)
}

/// Reads the next handshake message; a bad frame is refused with `BadRequest`.
async fn next_message<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
) -> Result<PeerMessage, PeerError> {
    match framed.next().await {
        None => Err(PeerError::Closed),
        Some(Err(error)) => Err(PeerError::Codec(error)),
        Some(Ok(Err(bad_frame))) => {
            Err(refuse(framed, ErrorCode::BadRequest, bad_frame.to_string()).await)
        }
        Some(Ok(Ok(message))) => Ok(message),
    }
}

/// The error for a handshake message of the wrong type (an `Error` frame is the other side's
/// refusal).
async fn unexpected<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    expected: &str,
    got: PeerMessage,
) -> PeerError {
    match got {
        PeerMessage::Error { code, message } => PeerError::RefusedByPeer { code, message },
        other => {
            let reason = format!("expected {expected}, got {}", other.type_name());
            refuse(framed, ErrorCode::BadRequest, reason).await
        }
    }
}

/// Tells the other side why it is refused (best effort; the caller's deadline bounds it) and
/// returns the matching error.
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    code: ErrorCode,
    reason: String,
) -> PeerError {
    let _ = framed.send(PeerMessage::error(code, reason.clone())).await;
    PeerError::Refused { code, reason }
}

/// A fresh random challenge from the operating system's generator.
fn fresh_nonce() -> Vec<u8> {
    let mut nonce = vec![0u8; PEER_NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}
