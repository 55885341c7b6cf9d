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
//!
//! The Raft messages in `Raft` frames are this module's own types ([`WireEnvelope`] and what
//! it holds), not the Raft core's: the core can rename a field or add a variant without the
//! bytes on the wire changing by accident. The daemon converts between the two at the transport
//! (`server::peer`), with matches that name every variant, so a new core message fails to
//! compile until the wire says how it travels; the tests below pin the bytes of each one.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::codec::{Message, MsgPackCodec};
use super::message::ErrorCode;

/// A node id on the wire: a non-zero uint chosen by the operator.
type NodeId = u64;

/// Length in bytes of a handshake nonce (a fresh random challenge).
pub const PEER_NONCE_LEN: usize = 32;
/// Length in bytes of a handshake MAC (HMAC-SHA256).
pub const PEER_MAC_LEN: usize = 32;
/// Longest cluster id, in UTF-8 bytes. Cluster ids must also be non-empty.
pub const MAX_CLUSTER_ID_LEN: usize = 256;
/// Largest frame body during the peer handshake (64 KiB). The handshake messages are tiny, so an
/// unauthenticated dialer cannot make the acceptor reserve a large buffer.
pub const PEER_HANDSHAKE_MAX_FRAME: usize = 64 * 1024;
/// Largest frame body after the handshake (64 MiB). Snapshots travel in chunks of
/// [`SNAPSHOT_CHUNK_BYTES`], and appends are batched up to 1 MiB, so no frame a node sends comes
/// near it; a single-frame `InstallSnapshot` from an older node still fits up to this size.
pub const PEER_MAX_FRAME: usize = 64 * 1024 * 1024;
/// Most snapshot bytes in one `SnapshotChunk` (1 MiB): a chunk never holds a heartbeat back
/// for long, and a resumed transfer repeats at most this much per cut.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

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
        #[serde(default, with = "super::bin::option")]
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
        #[serde(default, with = "super::bin::option")]
        nonce: Option<Vec<u8>>,
        /// `mac(key, Side::Acceptor, dialer's nonce, cluster_id, acceptor's node_id)`, when the
        /// acceptor has a key and the dialer sent a nonce.
        #[serde(default, with = "super::bin::option")]
        mac: Option<Vec<u8>>,
    },
    /// Dialer → acceptor: the dialer's answer to the acceptor's challenge.
    PeerAuth {
        /// `mac(key, Side::Dialer, acceptor's nonce, cluster_id, dialer's node_id)`, or nil when
        /// the acceptor sent no nonce.
        #[serde(default, with = "super::bin::option")]
        mac: Option<Vec<u8>>,
    },
    /// Acceptor → dialer: the handshake succeeded; `Raft` frames may follow.
    PeerAccepted {},
    /// Dialer → acceptor: one Raft message. `envelope.from` must be the dialer's authenticated
    /// id and `envelope.to` the acceptor's id, or the acceptor drops it.
    Raft {
        /// The Raft message.
        envelope: WireEnvelope,
    },
    /// Dialer → acceptor, on a connection of its own: the dialer (the leader) offers to stream
    /// its snapshot in chunks (protocol.md §16.5). `term` is the leader's term, `meta` what the
    /// snapshot covers, `size` its length in bytes and `crc32` the CRC-32 (IEEE) of all of them.
    /// The acceptor answers with a `SnapshotAck` saying how much of this very snapshot it
    /// already holds (0 for a new one), and the dialer resumes from there.
    SnapshotOffer {
        /// The leader's term (the term of the `InstallSnapshot` this transfer carries).
        term: u64,
        /// The log prefix the snapshot replaces.
        meta: WireSnapshotMeta,
        /// The snapshot's length in bytes.
        size: u64,
        /// CRC-32 (IEEE) of the whole snapshot.
        crc32: u32,
    },
    /// Dialer → acceptor, after the offer was acknowledged: bytes `offset..offset + len(data)`
    /// of the offered snapshot. `offset` must equal what the acceptor holds (its last
    /// `SnapshotAck`, plus the chunks sent since), and `crc32` is the CRC-32 of `data`.
    SnapshotChunk {
        /// Where `data` starts in the snapshot.
        offset: u64,
        /// At most [`SNAPSHOT_CHUNK_BYTES`] bytes of the snapshot.
        #[serde(with = "super::bin")]
        data: Vec<u8>,
        /// CRC-32 (IEEE) of `data`.
        crc32: u32,
    },
    /// Acceptor → dialer, on the snapshot connection: the acceptor holds bytes `0..received`
    /// of the offered snapshot durably (answer to the offer, then one per chunk). When
    /// `received` is the snapshot's size, the acceptor has checked the whole CRC and handed
    /// the snapshot to its Raft core.
    SnapshotAck {
        /// Bytes of the snapshot held, from its start.
        received: u64,
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

/// One Raft message in a `Raft` frame (protocol.md §16.4): `{from, to, term, message}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEnvelope {
    /// The sender's node id.
    pub from: NodeId,
    /// The receiver's node id.
    pub to: NodeId,
    /// The sender's term (for `PreVote`, the term it would campaign in).
    pub term: u64,
    /// What is said.
    pub message: WireMessage,
}

/// The Raft message kinds, as an externally tagged enum: `"TimeoutNow"`, or a map with one key,
/// the kind, whose value is the map of its fields. Indexes and terms are uint; index 0 means
/// "before the first entry". The meaning of each is the Raft core's (`raft::Message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireMessage {
    /// Would you vote for me in the envelope's term? (Changes no state.)
    PreVote {
        /// The index of the candidate's last entry.
        last_index: u64,
        /// The term of the candidate's last entry.
        last_term: u64,
    },
    /// Answer to a `PreVote`.
    PreVoteResponse {
        /// True if the receiver would vote.
        granted: bool,
    },
    /// RequestVote in the envelope's term.
    Vote {
        /// The index of the candidate's last entry.
        last_index: u64,
        /// The term of the candidate's last entry.
        last_term: u64,
        /// Set after a `TimeoutNow` (leadership transfer).
        transfer: bool,
    },
    /// Answer to a `Vote`, sent once the vote is durable.
    VoteResponse {
        /// True if the receiver voted for the candidate.
        granted: bool,
    },
    /// AppendEntries.
    Append {
        /// The index of the entry just before `entries`.
        prev_index: u64,
        /// The term of that entry.
        prev_term: u64,
        /// Entries contiguous from `prev_index + 1` (empty for a commit update).
        entries: Vec<WireEntry>,
        /// The leader's commit index.
        commit: u64,
    },
    /// The follower's log matches the leader's up to `index` (durable).
    AppendResponse {
        /// The highest index known to match.
        index: u64,
    },
    /// Log mismatch at `rejected`, with a back-off hint.
    AppendReject {
        /// The `prev_index` of the rejected `Append`.
        rejected: u64,
        /// The first index the leader should consider.
        conflict_index: u64,
        /// The follower's term at `rejected`, nil if its log is shorter.
        conflict_term: Option<u64>,
    },
    /// Leadership assertion with a safe commit index and the read round.
    Heartbeat {
        /// The leader's commit index, capped at what the follower holds.
        commit: u64,
        /// The leader's latest read-index round.
        read_seq: u64,
    },
    /// Confirms the read round `read_seq`.
    HeartbeatResponse {
        /// The round answered.
        read_seq: u64,
    },
    /// The leader's snapshot, data included.
    InstallSnapshot {
        /// The snapshot.
        snapshot: WireSnapshot,
    },
    /// Campaign at once (leadership transfer).
    TimeoutNow,
}

/// A log entry: `{index, term, data}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Its position in the log.
    pub index: u64,
    /// The term of the leader that created it.
    pub term: u64,
    /// What it carries.
    pub data: WireEntryData,
}

/// What a log entry carries: `"Noop"`, `{"Command": bin}` or `{"Config": membership}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireEntryData {
    /// A new leader's first entry of its term; applies nothing.
    Noop,
    /// A MessagePack-encoded lock command, opaque to Raft.
    Command(#[serde(with = "super::bin")] Vec<u8>),
    /// A membership change.
    Config(WireMembership),
}

/// A membership: `{voters: {id: addr}, learners: {id: addr}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMembership {
    /// Members that vote, by node id, with their addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Members that replicate without voting, by node id, with their addresses.
    pub learners: BTreeMap<NodeId, String>,
}

/// A snapshot: `{meta: {index, term, membership}, data: bin}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshot {
    /// What it covers.
    pub meta: WireSnapshotMeta,
    /// The serialized lock space.
    #[serde(with = "super::bin")]
    pub data: Vec<u8>,
}

/// The log prefix a snapshot replaces: `{index, term, membership}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshotMeta {
    /// The index of the last entry it includes.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The membership in force at `index`.
    pub membership: WireMembership,
}

/// Every `type` of a [`PeerMessage`], in declaration order.
pub const PEER_TYPES: &[&str] = &[
    "PeerHello",
    "PeerWelcome",
    "PeerAuth",
    "PeerAccepted",
    "Raft",
    "SnapshotOffer",
    "SnapshotChunk",
    "SnapshotAck",
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
            PeerMessage::SnapshotOffer { .. } => "SnapshotOffer",
            PeerMessage::SnapshotChunk { .. } => "SnapshotChunk",
            PeerMessage::SnapshotAck { .. } => "SnapshotAck",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_body, FrameError};
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
                envelope: WireEnvelope {
                    from: 2,
                    to: 1,
                    term: 5,
                    message: WireMessage::Append {
                        prev_index: 3,
                        prev_term: 4,
                        entries: vec![
                            WireEntry {
                                index: 4,
                                term: 5,
                                data: WireEntryData::Command(vec![0, 1, 255]),
                            },
                            WireEntry {
                                index: 5,
                                term: 5,
                                data: WireEntryData::Noop,
                            },
                        ],
                        commit: 3,
                    },
                },
            },
            PeerMessage::Raft {
                envelope: WireEnvelope {
                    from: 1,
                    to: 3,
                    term: 9,
                    message: WireMessage::InstallSnapshot {
                        snapshot: WireSnapshot {
                            data: (0..=255).collect(),
                            ..WireSnapshot::default()
                        },
                    },
                },
            },
            PeerMessage::Raft {
                envelope: WireEnvelope {
                    from: 1,
                    to: 3,
                    term: 9,
                    message: WireMessage::TimeoutNow,
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

    /// The bytes of one `Raft` frame body of every message kind, pinned: a change to the wire
    /// types (or to anything they are converted from) that would alter what other nodes read
    /// fails here. Each body is `{type: "Raft", envelope: {from: 1, to: 2, term: 4, message}}`;
    /// the table gives `message` and its encoding.
    #[test]
    fn raft_frame_bytes_are_pinned() {
        const ENVELOPE: &str = "82a474797065a452616674a8656e76656c6f706584a466726f6d01a2746f02\
                                a47465726d04a76d657373616765";
        let membership = WireMembership {
            voters: [(1, "a:1".to_string()), (2, "b:2".to_string())].into(),
            learners: [(3, "c:3".to_string())].into(),
        };
        let cases = [
            (
                WireMessage::PreVote {
                    last_index: 7,
                    last_term: 3,
                },
                "81a7507265566f746582aa6c6173745f696e64657807a96c6173745f7465726d03",
            ),
            (
                WireMessage::PreVoteResponse { granted: true },
                "81af507265566f7465526573706f6e736581a76772616e746564c3",
            ),
            (
                WireMessage::Vote {
                    last_index: 7,
                    last_term: 3,
                    transfer: true,
                },
                "81a4566f746583aa6c6173745f696e64657807a96c6173745f7465726d03a87472616e73666572c3",
            ),
            (
                WireMessage::VoteResponse { granted: false },
                "81ac566f7465526573706f6e736581a76772616e746564c2",
            ),
            (
                WireMessage::Append {
                    prev_index: 3,
                    prev_term: 4,
                    entries: vec![
                        WireEntry {
                            index: 4,
                            term: 5,
                            data: WireEntryData::Noop,
                        },
                        WireEntry {
                            index: 5,
                            term: 5,
                            data: WireEntryData::Command(vec![0, 1, 255]),
                        },
                        WireEntry {
                            index: 6,
                            term: 5,
                            data: WireEntryData::Config(membership.clone()),
                        },
                    ],
                    commit: 3,
                },
                "81a6417070656e6484aa707265765f696e64657803a9707265765f7465726d04a7656e7472696573\
                 9383a5696e64657804a47465726d05a464617461a44e6f6f7083a5696e64657805a47465726d05\
                 a46461746181a7436f6d6d616e64c4030001ff83a5696e64657806a47465726d05a46461746181\
                 a6436f6e66696782a6766f746572738201a3613a3102a3623a32a86c6561726e6572738103a363\
                 3a33a6636f6d6d697403",
            ),
            (
                WireMessage::AppendResponse { index: 6 },
                "81ae417070656e64526573706f6e736581a5696e64657806",
            ),
            (
                WireMessage::AppendReject {
                    rejected: 9,
                    conflict_index: 5,
                    conflict_term: Some(2),
                },
                "81ac417070656e6452656a65637483a872656a656374656409ae636f6e666c6963745f696e6465\
                 7805ad636f6e666c6963745f7465726d02",
            ),
            (
                WireMessage::AppendReject {
                    rejected: 9,
                    conflict_index: 5,
                    conflict_term: None,
                },
                "81ac417070656e6452656a65637483a872656a656374656409ae636f6e666c6963745f696e6465\
                 7805ad636f6e666c6963745f7465726dc0",
            ),
            (
                WireMessage::Heartbeat {
                    commit: 7,
                    read_seq: 3,
                },
                "81a948656172746265617482a6636f6d6d697407a8726561645f73657103",
            ),
            (
                WireMessage::HeartbeatResponse { read_seq: 3 },
                "81b1486561727462656174526573706f6e736581a8726561645f73657103",
            ),
            (
                WireMessage::InstallSnapshot {
                    snapshot: WireSnapshot {
                        meta: WireSnapshotMeta {
                            index: 9,
                            term: 4,
                            membership,
                        },
                        data: vec![1, 2, 3],
                    },
                },
                "81af496e7374616c6c536e617073686f7481a8736e617073686f7482a46d65746183a5696e6465\
                 7809a47465726d04aa6d656d6265727368697082a6766f746572738201a3613a3102a3623a32a8\
                 6c6561726e6572738103a3633a33a464617461c403010203",
            ),
            (WireMessage::TimeoutNow, "aa54696d656f75744e6f77"),
        ];
        for (message, hex) in cases {
            let frame = PeerMessage::Raft {
                envelope: WireEnvelope {
                    from: 1,
                    to: 2,
                    term: 4,
                    message,
                },
            };
            let body = rmp_serde::to_vec_named(&frame).unwrap();
            let got: String = body.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, format!("{ENVELOPE}{hex}"), "{frame:?}");
            assert_eq!(decode_body::<PeerMessage>(&body), Ok(frame));
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
