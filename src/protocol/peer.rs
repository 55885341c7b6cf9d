//! The peer wire messages: what two `raftlockd` nodes say to each other on a peer connection.
//!
//! A peer connection is dialed by the node that has Raft messages to send (the *dialer*) to the
//! node that receives them (the *acceptor*); it carries Raft traffic in that one direction only
//! (the answers travel on the acceptor's own connection to the dialer). It opens like a client
//! connection, with the client `Hello` (`role: "peer"`), and then speaks [`PeerMessage`]s with
//! the same framing:
//!
//! ```text
//! dialer                                       acceptor
//!   | -- Hello {version, role: "peer"} --------->  |   client codec (protocol.md §4)
//!   | -- PeerHello {cluster_id, node_id, nonce} -> |   peer codec from here on
//!   | <- PeerWelcome {cluster_id, node_id, nonce, mac}
//!   | -- PeerAuth {mac} ------------------------>  |
//!   | <- PeerAccepted {} ------------------------  |
//!   | -- Raft {envelope} ----------------------->  |   (repeated)
//! ```
//!
//! Both sides state the cluster id and must agree. With a cluster key configured, each side
//! proves it holds the key by answering the other's fresh random nonce with [`mac`]: the dialer
//! sends its nonce in `PeerHello`, the acceptor answers it in `PeerWelcome` and sends its own,
//! which the dialer answers in `PeerAuth`. The two MACs are computed with different labels
//! ([`Side`]), so a MAC one node computes as acceptor can never be replayed as a dialer's
//! answer. Any failure is an [`PeerMessage::Error`] frame (when the other side can be told),
//! then the connection is closed. `protocol.md` §16 is the contract.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::codec::{Message, MsgPackCodec};
use super::message::ErrorCode;
use crate::raft::{Envelope, NodeId};

/// Length in bytes of a handshake nonce (a fresh random challenge).
pub const PEER_NONCE_LEN: usize = 32;
/// Length in bytes of a handshake MAC (HMAC-SHA256).
pub const PEER_MAC_LEN: usize = 32;
/// Longest cluster id, in UTF-8 bytes. Cluster ids must also be non-empty.
pub const MAX_CLUSTER_ID_LEN: usize = 256;
/// Largest frame body during the peer handshake (64 KiB). The handshake messages are tiny, so an
/// unauthenticated dialer cannot make the acceptor reserve a large buffer.
pub const PEER_HANDSHAKE_MAX_FRAME: usize = 64 * 1024;
/// Largest frame body after the handshake (64 MiB): an `InstallSnapshot` carries the whole state
/// machine in one message, so peer frames are allowed to be much larger than client frames.
pub const PEER_MAX_FRAME: usize = 64 * 1024 * 1024;

/// A message on a peer connection, after the opening client `Hello`. Every body is a MessagePack
/// map whose `type` names the variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PeerMessage {
    /// Dialer → acceptor, right after `Hello{role: "peer"}`: who is calling.
    PeerHello {
        /// The cluster the dialer belongs to; must equal the acceptor's.
        cluster_id: String,
        /// The dialer's node id (never 0, never the acceptor's own id).
        node_id: NodeId,
        /// The dialer's challenge for the acceptor ([`PEER_NONCE_LEN`] random bytes), sent when
        /// the dialer has a cluster key; nil otherwise.
        #[serde(default, with = "opt_bytes")]
        nonce: Option<Vec<u8>>,
    },
    /// Acceptor → dialer: the acceptor's identity, its answer to the dialer's nonce and its own
    /// challenge.
    PeerWelcome {
        /// The acceptor's cluster id (equal to the dialer's, or the acceptor would have refused).
        cluster_id: String,
        /// The acceptor's node id; the dialer checks it is the node it meant to reach.
        node_id: NodeId,
        /// The acceptor's challenge for the dialer, when the acceptor has a cluster key.
        #[serde(default, with = "opt_bytes")]
        nonce: Option<Vec<u8>>,
        /// `mac(key, Side::Acceptor, dialer's nonce, cluster_id, acceptor's node_id)`, when the
        /// acceptor has a key and the dialer sent a nonce.
        #[serde(default, with = "opt_bytes")]
        mac: Option<Vec<u8>>,
    },
    /// Dialer → acceptor: the dialer's answer to the acceptor's challenge.
    PeerAuth {
        /// `mac(key, Side::Dialer, acceptor's nonce, cluster_id, dialer's node_id)`, or nil when
        /// the acceptor sent no nonce.
        #[serde(default, with = "opt_bytes")]
        mac: Option<Vec<u8>>,
    },
    /// Acceptor → dialer: the handshake succeeded; `Raft` frames may follow.
    PeerAccepted {},
    /// Dialer → acceptor: one Raft message. `envelope.from` must be the dialer's authenticated
    /// id and `envelope.to` the acceptor's id, or the acceptor drops it.
    Raft {
        /// The Raft message.
        envelope: Envelope,
    },
    /// Either side: the handshake was refused (or the connection is otherwise unusable); the
    /// sender closes the connection after it. Same shape as the client `Error` with id 0, so a
    /// dialer also understands the client-side refusals (`UnsupportedVersion`, ...).
    Error {
        /// Why (`WrongCluster`, `Unauthorized`, `BadRequest`, `HandshakeTimeout`, ...).
        code: ErrorCode,
        /// Human-readable detail, for logs.
        message: String,
    },
}

/// Every `type` of a [`PeerMessage`], in declaration order.
pub const PEER_TYPES: &[&str] = &[
    "PeerHello",
    "PeerWelcome",
    "PeerAuth",
    "PeerAccepted",
    "Raft",
    "Error",
];

impl Message for PeerMessage {
    const TYPES: &'static [&'static str] = PEER_TYPES;
}

impl PeerMessage {
    /// The wire `type` of this message (one of [`PEER_TYPES`]), e.g. for logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            PeerMessage::PeerHello { .. } => "PeerHello",
            PeerMessage::PeerWelcome { .. } => "PeerWelcome",
            PeerMessage::PeerAuth { .. } => "PeerAuth",
            PeerMessage::PeerAccepted {} => "PeerAccepted",
            PeerMessage::Raft { .. } => "Raft",
            PeerMessage::Error { .. } => "Error",
        }
    }

    /// An `Error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> PeerMessage {
        PeerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

/// The codec of a peer connection after the opening `Hello` (both directions speak
/// [`PeerMessage`]).
pub type PeerCodec = MsgPackCodec<PeerMessage, PeerMessage>;

/// Which side of the handshake computes a MAC. Part of the MAC input, so the answer an
/// acceptor gives to a challenge can never serve as a dialer's answer (no reflection or relay
/// of one role's proof as the other's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The node that opened the connection; label `"raftlock-peer-dialer"`.
    Dialer,
    /// The node that accepted it; label `"raftlock-peer-acceptor"`.
    Acceptor,
}

impl Side {
    /// The ASCII label that starts the MAC input.
    pub fn label(self) -> &'static [u8] {
        match self {
            Side::Dialer => b"raftlock-peer-dialer",
            Side::Acceptor => b"raftlock-peer-acceptor",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The handshake MAC:
/// `HMAC-SHA256(key, label(side) || challenge || cluster_id (UTF-8) || node_id (u64 BE))`,
/// where `challenge` is the other side's nonce and `node_id` the id of the node computing it.
pub fn mac(key: &[u8], side: Side, challenge: &[u8], cluster_id: &str, node_id: NodeId) -> Vec<u8> {
    mac_state(key, side, challenge, cluster_id, node_id)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Checks a received MAC in constant time (`hmac`'s `verify_slice`). `node_id` is the id the
/// other side claims; a MAC of the wrong length is simply wrong.
pub fn verify_mac(
    key: &[u8],
    side: Side,
    challenge: &[u8],
    cluster_id: &str,
    node_id: NodeId,
    received: &[u8],
) -> bool {
    mac_state(key, side, challenge, cluster_id, node_id)
        .verify_slice(received)
        .is_ok()
}

fn mac_state(
    key: &[u8],
    side: Side,
    challenge: &[u8],
    cluster_id: &str,
    node_id: NodeId,
) -> HmacSha256 {
    let mut state = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    state.update(side.label());
    state.update(challenge);
    state.update(cluster_id.as_bytes());
    state.update(&node_id.to_be_bytes());
    state
}

/// `Option<Vec<u8>>` as MessagePack `bin` or nil (serde_bytes handles the `Option` itself).
mod opt_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(value, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        serde_bytes::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_body, FrameError};
    use crate::raft::{Entry, EntryData, Message as RaftMessage, Snapshot};
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    fn every_message() -> Vec<PeerMessage> {
        vec![
            PeerMessage::PeerHello {
                cluster_id: "prod".into(),
                node_id: 2,
                nonce: Some(vec![7; PEER_NONCE_LEN]),
            },
            PeerMessage::PeerHello {
                cluster_id: "prod".into(),
                node_id: 2,
                nonce: None,
            },
            PeerMessage::PeerWelcome {
                cluster_id: "prod".into(),
                node_id: 1,
                nonce: Some(vec![1; PEER_NONCE_LEN]),
                mac: Some(vec![2; PEER_MAC_LEN]),
            },
            PeerMessage::PeerAuth { mac: None },
            PeerMessage::PeerAccepted {},
            PeerMessage::Raft {
                envelope: Envelope {
                    from: 2,
                    to: 1,
                    term: 5,
                    message: RaftMessage::Append {
                        prev_index: 3,
                        prev_term: 4,
                        entries: vec![
                            Entry {
                                index: 4,
                                term: 5,
                                data: EntryData::Command(vec![0, 1, 255]),
                            },
                            Entry {
                                index: 5,
                                term: 5,
                                data: EntryData::Noop,
                            },
                        ],
                        commit: 3,
                    },
                },
            },
            PeerMessage::Raft {
                envelope: Envelope {
                    from: 1,
                    to: 3,
                    term: 9,
                    message: RaftMessage::InstallSnapshot {
                        snapshot: Snapshot {
                            data: (0..=255).collect(),
                            ..Snapshot::default()
                        },
                    },
                },
            },
            PeerMessage::Raft {
                envelope: Envelope {
                    from: 1,
                    to: 3,
                    term: 9,
                    message: RaftMessage::TimeoutNow,
                },
            },
            PeerMessage::error(ErrorCode::WrongCluster, "cluster id mismatch"),
        ]
    }

    #[test]
    fn every_message_round_trips_through_the_codec() {
        for message in every_message() {
            let mut codec = PeerCodec::new(PEER_MAX_FRAME);
            let mut buf = BytesMut::new();
            codec.encode(message.clone(), &mut buf).unwrap();
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(Ok(message.clone())));
            assert!(buf.is_empty());
            assert!(PEER_TYPES.contains(&message.type_name()));
        }
    }

    #[test]
    fn byte_fields_travel_as_bin_not_arrays() {
        let body = rmp_serde::to_vec_named(&PeerMessage::PeerAuth {
            mac: Some(vec![0xab; 3]),
        })
        .unwrap();
        // ... a3 "mac" c4 03 ab ab ab
        assert!(body.ends_with(&[0xa3, b'm', b'a', b'c', 0xc4, 3, 0xab, 0xab, 0xab]));
    }

    #[test]
    fn absent_optional_fields_mean_nil() {
        #[derive(Serialize)]
        struct Bare<'a> {
            r#type: &'a str,
            cluster_id: &'a str,
            node_id: u64,
        }
        let body = rmp_serde::to_vec_named(&Bare {
            r#type: "PeerHello",
            cluster_id: "c",
            node_id: 4,
        })
        .unwrap();
        assert_eq!(
            decode_body::<PeerMessage>(&body),
            Ok(PeerMessage::PeerHello {
                cluster_id: "c".into(),
                node_id: 4,
                nonce: None
            })
        );
    }

    #[test]
    fn client_error_frames_decode_as_peer_errors() {
        let body = rmp_serde::to_vec_named(&crate::protocol::Response::error(
            0,
            ErrorCode::UnsupportedVersion,
            "no",
        ))
        .unwrap();
        assert_eq!(
            decode_body::<PeerMessage>(&body),
            Ok(PeerMessage::error(ErrorCode::UnsupportedVersion, "no"))
        );
    }

    #[test]
    fn unknown_and_client_types_are_not_peer_messages() {
        let body = rmp_serde::to_vec_named(&crate::protocol::Request::Status { id: 3 }).unwrap();
        assert!(matches!(
            decode_body::<PeerMessage>(&body),
            Err(FrameError::UnknownType { id: 3, .. })
        ));
    }

    #[test]
    fn mac_binds_every_input() {
        let key = b"k".as_slice();
        let base = mac(key, Side::Dialer, &[1; 32], "c", 2);
        assert_eq!(base.len(), PEER_MAC_LEN);
        assert!(verify_mac(key, Side::Dialer, &[1; 32], "c", 2, &base));
        let others = [
            mac(b"K", Side::Dialer, &[1; 32], "c", 2),
            mac(key, Side::Acceptor, &[1; 32], "c", 2),
            mac(key, Side::Dialer, &[2; 32], "c", 2),
            mac(key, Side::Dialer, &[1; 32], "d", 2),
            mac(key, Side::Dialer, &[1; 32], "c", 3),
        ];
        for other in &others {
            assert_ne!(other, &base);
            assert!(!verify_mac(key, Side::Dialer, &[1; 32], "c", 2, other));
        }
        assert!(!verify_mac(
            key,
            Side::Dialer,
            &[1; 32],
            "c",
            2,
            &base[..31]
        ));
        assert!(!verify_mac(key, Side::Dialer, &[1; 32], "c", 2, &[]));
    }

    /// RFC 4231 test case 2, through the same HMAC: our construction is plain HMAC-SHA256 over
    /// the concatenated input, so any language's HMAC library reproduces it.
    #[test]
    fn hmac_is_standard_hmac_sha256() {
        let mut state = HmacSha256::new_from_slice(b"Jefe").unwrap();
        state.update(b"what do ya want for nothing?");
        let out = state.finalize().into_bytes();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
