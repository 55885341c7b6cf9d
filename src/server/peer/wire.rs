//! The boundary between the Raft core's messages and the peer protocol's wire types.
//!
//! `raft::Envelope` is what the core emits and consumes; `protocol::WireEnvelope` is what a
//! `Raft` frame carries (protocol.md §16.4). They have the same shape today, but they are
//! separate types so that a change inside the core (a renamed field, a new variant, a serde
//! attribute) cannot change the bytes other nodes read. The conversions below are the only place
//! the two meet. Every `match` names every variant, with no wildcard: a message added to the
//! core does not compile until it has a wire form (and that form has a pinned encoding in
//! `protocol::peer`'s tests).
//!
//! The conversions move their data (entries, addresses); nothing is copied but the bytes of a
//! single-frame `InstallSnapshot`, a form this node only reads (from nodes of an earlier
//! version): its own snapshots travel in chunks (`snapshot_out.rs`), straight from the core's
//! shared bytes.

use crate::protocol::{
    WireEntry, WireEntryData, WireEnvelope, WireMembership, WireMessage, WireSnapshot,
    WireSnapshotMeta,
};
use crate::raft::{Entry, EntryData, Envelope, Membership, Message, Snapshot, SnapshotMeta};

impl From<Envelope> for WireEnvelope {
    fn from(envelope: Envelope) -> WireEnvelope {
        let Envelope {
            from,
            to,
            term,
            message,
        } = envelope;
        WireEnvelope {
            from,
            to,
            term,
            message: message.into(),
        }
    }
}

impl From<WireEnvelope> for Envelope {
    fn from(envelope: WireEnvelope) -> Envelope {
        let WireEnvelope {
            from,
            to,
            term,
            message,
        } = envelope;
        Envelope {
            from,
            to,
            term,
            message: message.into(),
        }
    }
}

impl From<Message> for WireMessage {
    fn from(message: Message) -> WireMessage {
        match message {
            Message::PreVote {
                last_index,
                last_term,
            } => WireMessage::PreVote {
                last_index,
                last_term,
            },
            Message::PreVoteResponse { granted } => WireMessage::PreVoteResponse { granted },
            Message::Vote {
                last_index,
                last_term,
                transfer,
            } => WireMessage::Vote {
                last_index,
                last_term,
                transfer,
            },
            Message::VoteResponse { granted } => WireMessage::VoteResponse { granted },
            Message::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => WireMessage::Append {
                prev_index,
                prev_term,
                entries: entries.into_iter().map(WireEntry::from).collect(),
                commit,
            },
            Message::AppendResponse { index } => WireMessage::AppendResponse { index },
            Message::AppendReject {
                rejected,
                conflict_index,
                conflict_term,
            } => WireMessage::AppendReject {
                rejected,
                conflict_index,
                conflict_term,
            },
            Message::Heartbeat { commit, read_seq } => WireMessage::Heartbeat { commit, read_seq },
            Message::HeartbeatResponse { read_seq } => WireMessage::HeartbeatResponse { read_seq },
            Message::InstallSnapshot { snapshot } => WireMessage::InstallSnapshot {
                snapshot: snapshot.into(),
            },
            Message::TimeoutNow => WireMessage::TimeoutNow,
        }
    }
}

impl From<WireMessage> for Message {
    fn from(message: WireMessage) -> Message {
        match message {
            WireMessage::PreVote {
                last_index,
                last_term,
            } => Message::PreVote {
                last_index,
                last_term,
            },
            WireMessage::PreVoteResponse { granted } => Message::PreVoteResponse { granted },
            WireMessage::Vote {
                last_index,
                last_term,
                transfer,
            } => Message::Vote {
                last_index,
                last_term,
                transfer,
            },
            WireMessage::VoteResponse { granted } => Message::VoteResponse { granted },
            WireMessage::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => Message::Append {
                prev_index,
                prev_term,
                entries: entries.into_iter().map(Entry::from).collect(),
                commit,
            },
            WireMessage::AppendResponse { index } => Message::AppendResponse { index },
            WireMessage::AppendReject {
                rejected,
                conflict_index,
                conflict_term,
            } => Message::AppendReject {
                rejected,
                conflict_index,
                conflict_term,
            },
            WireMessage::Heartbeat { commit, read_seq } => Message::Heartbeat { commit, read_seq },
            WireMessage::HeartbeatResponse { read_seq } => Message::HeartbeatResponse { read_seq },
            WireMessage::InstallSnapshot { snapshot } => Message::InstallSnapshot {
                snapshot: snapshot.into(),
            },
            WireMessage::TimeoutNow => Message::TimeoutNow,
        }
    }
}

impl From<Entry> for WireEntry {
    fn from(entry: Entry) -> WireEntry {
        let Entry { index, term, data } = entry;
        let data = match data {
            EntryData::Noop => WireEntryData::Noop,
            EntryData::Command(command) => WireEntryData::Command(command),
            EntryData::Config(membership) => WireEntryData::Config(membership.into()),
        };
        WireEntry { index, term, data }
    }
}

impl From<WireEntry> for Entry {
    fn from(entry: WireEntry) -> Entry {
        let WireEntry { index, term, data } = entry;
        let data = match data {
            WireEntryData::Noop => EntryData::Noop,
            WireEntryData::Command(command) => EntryData::Command(command),
            WireEntryData::Config(membership) => EntryData::Config(membership.into()),
        };
        Entry { index, term, data }
    }
}

impl From<Membership> for WireMembership {
    fn from(membership: Membership) -> WireMembership {
        let Membership { voters, learners } = membership;
        WireMembership { voters, learners }
    }
}

impl From<WireMembership> for Membership {
    fn from(membership: WireMembership) -> Membership {
        let WireMembership { voters, learners } = membership;
        Membership { voters, learners }
    }
}

impl From<Snapshot> for WireSnapshot {
    fn from(snapshot: Snapshot) -> WireSnapshot {
        let Snapshot { meta, data } = snapshot;
        let SnapshotMeta {
            index,
            term,
            membership,
        } = meta;
        WireSnapshot {
            meta: WireSnapshotMeta {
                index,
                term,
                membership: membership.into(),
            },
            data: data.to_vec(),
        }
    }
}

impl From<WireSnapshot> for Snapshot {
    fn from(snapshot: WireSnapshot) -> Snapshot {
        let WireSnapshot { meta, data } = snapshot;
        Snapshot {
            meta: meta.into(),
            data: data.into(),
        }
    }
}

impl From<WireSnapshotMeta> for SnapshotMeta {
    fn from(meta: WireSnapshotMeta) -> SnapshotMeta {
        let WireSnapshotMeta {
            index,
            term,
            membership,
        } = meta;
        SnapshotMeta {
            index,
            term,
            membership: membership.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_body, PeerMessage};

    /// One envelope of every message kind, with every entry kind and an optional field both set
    /// and unset.
    fn every_kind() -> Vec<Envelope> {
        let membership = Membership {
            voters: [(1, "a:1".to_string()), (2, "b:2".to_string())].into(),
            learners: [(3, "c:3".to_string())].into(),
        };
        let messages = vec![
            Message::PreVote {
                last_index: 7,
                last_term: 3,
            },
            Message::PreVoteResponse { granted: true },
            Message::Vote {
                last_index: 7,
                last_term: 3,
                transfer: true,
            },
            Message::VoteResponse { granted: false },
            Message::Append {
                prev_index: 3,
                prev_term: 4,
                entries: vec![
                    Entry {
                        index: 4,
                        term: 5,
                        data: EntryData::Noop,
                    },
                    Entry {
                        index: 5,
                        term: 5,
                        data: EntryData::Command(vec![0, 1, 255]),
                    },
                    Entry {
                        index: 6,
                        term: 5,
                        data: EntryData::Config(membership.clone()),
                    },
                ],
                commit: 3,
            },
            Message::AppendResponse { index: 6 },
            Message::AppendReject {
                rejected: 9,
                conflict_index: 5,
                conflict_term: Some(2),
            },
            Message::AppendReject {
                rejected: 9,
                conflict_index: 5,
                conflict_term: None,
            },
            Message::Heartbeat {
                commit: 7,
                read_seq: 3,
            },
            Message::HeartbeatResponse { read_seq: 3 },
            Message::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 9,
                        term: 4,
                        membership,
                    },
                    data: vec![1, 2, 3].into(),
                },
            },
            Message::TimeoutNow,
        ];
        messages
            .into_iter()
            .map(|message| Envelope {
                from: 1,
                to: 2,
                term: 4,
                message,
            })
            .collect()
    }

    #[test]
    fn every_message_survives_the_wire_unchanged() {
        for envelope in every_kind() {
            let wire = WireEnvelope::from(envelope.clone());
            let body = rmp_serde::to_vec_named(&PeerMessage::Raft { envelope: wire }).unwrap();
            let Ok(PeerMessage::Raft { envelope: back }) = decode_body::<PeerMessage>(&body) else {
                panic!("{envelope:?} did not decode as a Raft frame");
            };
            assert_eq!(Envelope::from(back), envelope);
        }
    }
}
