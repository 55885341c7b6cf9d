//! protocol.md cannot drift from the code: every hex example in it is produced here by the real
//! codec and must appear in the document byte for byte, and every message type and error code
//! must have its section or table row. And the Python example client, written from the
//! document, runs against a real daemon.

mod common;

use bytes::BytesMut;
use raftlock::client::LockMode;
use raftlock::protocol::{
    mac, ClientCodec, ErrorCode, PeerCodec, PeerMessage, PushReason, Request, Response, Role,
    ServerCodec, Side, WireEntry, WireEntryData, WireEnvelope, WireMembership, WireMessage,
    WireSnapshotMeta, PEER_MAX_FRAME, PEER_TYPES, REQUEST_TYPES, RESPONSE_TYPES, VERSION,
};
use tokio_util::codec::{Decoder, Encoder};

const DOC: &str = include_str!("../protocol.md");

/// The session token used throughout the worked example.
const TOKEN: u64 = 0x9c1d_4e7a_2b3f_0861;

/// A message of the worked example, framed by the codec its sender uses.
enum Example {
    Request(Request),
    Response(Response),
}

fn examples() -> Vec<(&'static str, Example)> {
    vec![
        (
            "Hello",
            Example::Request(Request::Hello {
                version: VERSION,
                role: Role::Client,
                token: None,
            }),
        ),
        (
            "Hello with a token",
            Example::Request(Request::Hello {
                version: VERSION,
                role: Role::Client,
                token: Some("s3cret".into()),
            }),
        ),
        (
            "Error PermissionDenied",
            Example::Response(Response::error(
                7,
                ErrorCode::PermissionDenied,
                "principal \"ci\" may not use lock \"deploy\" (not under its lock grants)",
            )),
        ),
        (
            "Welcome",
            Example::Response(Response::Welcome {
                version: VERSION,
                node_id: 1,
                leader: Some(1),
                leader_addr: Some("127.0.0.1:7400".into()),
            }),
        ),
        (
            "OpenSession",
            Example::Request(Request::OpenSession {
                id: 1,
                nonce: 0x1f2e_3d4c_5b6a_7988,
                ttl_ms: 10_000,
                owner: None,
            }),
        ),
        (
            "SessionOpened",
            Example::Response(Response::SessionOpened {
                id: 1,
                session: 2,
                token: TOKEN,
                ttl_ms: 10_000,
            }),
        ),
        (
            "Acquire",
            Example::Request(Request::Acquire {
                id: 2,
                session: 2,
                token: TOKEN,
                seq: 1,
                lock: "build-cache".into(),
                mode: LockMode::Exclusive,
                wait_ms: None,
                hold_ms: None,
            }),
        ),
        (
            "Granted",
            Example::Response(Response::Granted { id: 2, fence: 3 }),
        ),
        (
            "Append",
            Example::Request(Request::Append {
                id: 3,
                session: 2,
                token: TOKEN,
                seq: 2,
                file: "build.log".into(),
                lock: "build-cache".into(),
                fence: 3,
                data: b"ok\n".to_vec(),
            }),
        ),
        (
            "Truncate",
            Example::Request(Request::Truncate {
                id: 13,
                session: 2,
                token: TOKEN,
                seq: 6,
                file: "build.log".into(),
                lock: "build-cache".into(),
                fence: 3,
                size: 2,
            }),
        ),
        (
            "Truncated",
            Example::Response(Response::Truncated { id: 13, size: 2 }),
        ),
        (
            "Delete",
            Example::Request(Request::Delete {
                id: 14,
                session: 2,
                token: TOKEN,
                seq: 7,
                file: "build.log".into(),
                lock: "build-cache".into(),
                fence: 3,
            }),
        ),
        (
            "Deleted",
            Example::Response(Response::Deleted { id: 14, size: 2 }),
        ),
        (
            "Files",
            Example::Request(Request::Files {
                id: 15,
                prefix: Some("build".into()),
                stale: false,
            }),
        ),
        (
            "FileList",
            Example::Response(Response::FileList {
                id: 15,
                files: vec![raftlock::protocol::FileEntry {
                    name: "build.log".into(),
                    size: 3,
                    lock: Some("build-cache".into()),
                    fence: Some(3),
                }],
            }),
        ),
        (
            "Error QuotaExceeded",
            Example::Response(Response::error(
                16,
                ErrorCode::QuotaExceeded,
                "the append would make the file 6 bytes, over the per-file limit of 5 bytes \
                 (--max-file-bytes); nothing was written",
            )),
        ),
        (
            "Cancel",
            Example::Request(Request::Cancel {
                id: 6,
                session: 2,
                token: TOKEN,
                seq: 4,
                lock: "deploy".into(),
                acquire_seq: 3,
            }),
        ),
        (
            "Cancelled",
            Example::Response(Response::Cancelled { id: 6 }),
        ),
        (
            "Extend",
            Example::Request(Request::Extend {
                id: 7,
                session: 2,
                token: TOKEN,
                seq: 5,
                lock: "build-cache".into(),
                fence: 3,
                hold_ms: 30_000,
            }),
        ),
        (
            "Extended",
            Example::Response(Response::Extended {
                id: 7,
                hold_ms: 30_000,
            }),
        ),
        (
            "RevokeSession",
            Example::Request(Request::RevokeSession {
                id: 8,
                session_id: 2,
                force: false,
            }),
        ),
        (
            "RevokeSession (force)",
            Example::Request(Request::RevokeSession {
                id: 11,
                session_id: 2,
                force: true,
            }),
        ),
        (
            "Error (Revoked)",
            Example::Response(Response::Error {
                id: 12,
                code: ErrorCode::Revoked,
                message: "revoked".into(),
                leader: None,
                leader_addr: None,
            }),
        ),
        ("Sessions", Example::Request(Request::Sessions { id: 9 })),
        (
            "SessionList",
            Example::Response(Response::SessionList {
                id: 9,
                sessions: vec![raftlock::protocol::SessionSummary {
                    session: 5,
                    owner: Some("ann@build1 4242 make".into()),
                    ttl_ms: 10_000,
                    since_renewal_ms: Some(1_234),
                }],
            }),
        ),
        (
            "OpenSession with an owner",
            Example::Request(Request::OpenSession {
                id: 10,
                nonce: 7,
                ttl_ms: 10_000,
                owner: Some("ann@build1 4242 make".into()),
            }),
        ),
        (
            "AddMember",
            Example::Request(Request::AddMember {
                id: 4,
                node_id: 4,
                addr: "10.0.0.4:7400".into(),
            }),
        ),
        (
            "MembershipChanged",
            Example::Response(Response::MembershipChanged {
                id: 4,
                index: 9,
                members: vec![raftlock::protocol::MemberStatus {
                    node_id: 4,
                    addr: "10.0.0.4:7400".into(),
                    voter: true,
                    match_index: None,
                }],
            }),
        ),
        (
            "TransferLeader",
            Example::Request(Request::TransferLeader {
                id: 5,
                node_id: None,
            }),
        ),
        (
            "SnapshotSave",
            Example::Request(Request::SnapshotSave { id: 6 }),
        ),
        (
            "SnapshotHeader",
            Example::Response(Response::SnapshotHeader {
                id: 6,
                index: 1200,
                term: 3,
                size: 4096,
                checksum: 0x1c29_1ca3,
            }),
        ),
        (
            "SnapshotChunk",
            Example::Response(Response::SnapshotChunk {
                id: 6,
                offset: 0,
                data: vec![0x00, 0x00, 0x0f, 0xf8],
                last: false,
            }),
        ),
        (
            "LockList with the leader's times",
            Example::Response(Response::LockList {
                id: 12,
                locks: vec![raftlock::protocol::LockState {
                    name: "build".into(),
                    mode: Some(LockMode::Exclusive),
                    holders: vec![raftlock::protocol::HolderState {
                        session: 2,
                        fence: 17,
                        owner: None,
                        held_ms: Some(1_500),
                        hold_left_ms: Some(28_500),
                    }],
                    waiters: vec![raftlock::protocol::WaiterState {
                        session: 5,
                        seq: 4,
                        mode: LockMode::Shared,
                        owner: None,
                        waited_ms: None,
                    }],
                }],
            }),
        ),
        (
            "Revoked",
            Example::Response(Response::Revoked {
                id: 0,
                session: 2,
                lock: "build".into(),
                fence: 17,
                reason: PushReason::Hold,
            }),
        ),
        (
            "QueuePosition",
            Example::Response(Response::QueuePosition {
                id: 0,
                session: 5,
                lock: "build".into(),
                seq: 4,
                ahead: 1,
                mode: Some(LockMode::Exclusive),
                holders: 1,
            }),
        ),
        (
            "HoldExpiring",
            Example::Response(Response::HoldExpiring {
                id: 0,
                session: 2,
                lock: "build".into(),
                fence: 17,
                left_ms: 1_000,
            }),
        ),
        (
            "SessionExpiring",
            Example::Response(Response::SessionExpiring {
                id: 0,
                session: 2,
                left_ms: 1_000,
            }),
        ),
        (
            "SessionExpired",
            Example::Response(Response::SessionExpired {
                id: 0,
                session: 2,
                reason: PushReason::Expired,
            }),
        ),
        (
            "SequenceReused",
            Example::Response(Response::error(14, ErrorCode::SequenceReused, "seq reused")),
        ),
        (
            "Error",
            Example::Response(Response::Error {
                id: 3,
                code: ErrorCode::NotLeader,
                message: "not the leader".into(),
                leader: Some(1),
                leader_addr: Some("127.0.0.1:7400".into()),
            }),
        ),
    ]
}

/// Frames the example with the real codec and checks it decodes back on the other side.
fn frame(example: &Example) -> Vec<u8> {
    let mut buf = BytesMut::new();
    match example {
        Example::Request(r) => {
            ClientCodec::default()
                .encode(r.clone(), &mut buf)
                .expect("encode request");
            let back = ServerCodec::default()
                .decode(&mut buf.clone())
                .expect("decode");
            assert_eq!(back, Some(Ok(r.clone())));
        }
        Example::Response(r) => {
            ServerCodec::default()
                .encode(r.clone(), &mut buf)
                .expect("encode response");
            let back = ClientCodec::default()
                .decode(&mut buf.clone())
                .expect("decode");
            assert_eq!(back, Some(Ok(r.clone())));
        }
    }
    buf.to_vec()
}

/// The document's hex style: lowercase byte pairs, 16 per line.
fn hex_block(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each worked example's frame appears in protocol.md exactly as the codec writes it.
#[test]
fn worked_example_hex_matches_the_codec() {
    let mut missing = Vec::new();
    for (name, example) in examples() {
        let block = format!("```text\n{}\n```", hex_block(&frame(&example)));
        if !DOC.contains(&block) {
            missing.push(format!("{name}:\n{block}"));
        }
    }
    assert!(
        missing.is_empty(),
        "protocol.md lacks these frames:\n{}",
        missing.join("\n")
    );
}

/// The Hello frame starts with its big-endian length, as the framing diagram says.
#[test]
fn hello_frame_header_is_the_body_length() {
    let hello = frame(&Example::Request(Request::Hello {
        version: 1,
        role: Role::Client,
        token: None,
    }));
    let len = u32::from_be_bytes([hello[0], hello[1], hello[2], hello[3]]) as usize;
    assert_eq!(len, hello.len() - 4);
}

/// Every message type has a section headed with its name.
#[test]
fn every_message_type_has_a_section() {
    for name in REQUEST_TYPES.iter().chain(RESPONSE_TYPES) {
        let heading = format!("### `{name}`");
        assert!(
            DOC.contains(&heading),
            "protocol.md lacks a `{heading}` section"
        );
    }
}

fn all_error_codes() -> Vec<ErrorCode> {
    use ErrorCode::*;
    // An exhaustive match: adding a variant breaks the build here until it is listed.
    fn listed(code: ErrorCode) {
        match code {
            BadRequest | UnknownType | FrameTooLarge | HandshakeRequired | HandshakeTimeout
            | UnsupportedVersion | TooManyConnections | TooManyRequests | NotLeader
            | SessionExpired | Busy | WaitTimeout | NotHolder | Conflict | NotWaiting
            | StaleFence | SequenceTooOld | SequenceReused | NotFound | QuotaExceeded | Timeout
            | ShuttingDown | NotReady | Revoked | Internal | WrongCluster | Unauthorized
            | Unauthenticated | PermissionDenied => {}
        }
    }
    let all = vec![
        BadRequest,
        UnknownType,
        FrameTooLarge,
        HandshakeRequired,
        HandshakeTimeout,
        UnsupportedVersion,
        TooManyConnections,
        TooManyRequests,
        NotLeader,
        SessionExpired,
        Busy,
        WaitTimeout,
        NotHolder,
        Conflict,
        NotWaiting,
        StaleFence,
        SequenceTooOld,
        SequenceReused,
        NotFound,
        QuotaExceeded,
        Timeout,
        ShuttingDown,
        NotReady,
        Revoked,
        Internal,
        WrongCluster,
        Unauthorized,
        Unauthenticated,
        PermissionDenied,
    ];
    all.iter().copied().for_each(listed);
    all
}

/// Every error code has a row in the error table, written as it travels on the wire, and the
/// table says which codes close the connection.
#[test]
fn every_error_code_has_a_table_row() {
    for code in all_error_codes() {
        let wire: String = rmp_serde::from_slice(&rmp_serde::to_vec_named(&code).unwrap()).unwrap();
        assert_eq!(wire, format!("{code:?}"), "codes travel as their names");
        let row_start = format!("| `{wire}` |");
        let row = DOC
            .lines()
            .find(|l| l.starts_with(&row_start))
            .unwrap_or_else(|| panic!("protocol.md lacks an error table row for {wire}"));
        assert_eq!(
            row.contains("**closes**"),
            code.closes_connection(),
            "row for {wire} must mark **closes** iff the server closes the connection"
        );
    }
}

/// The limits table quotes the constants the daemon enforces by default.
#[test]
fn limits_table_matches_the_constants() {
    use raftlock::protocol::*;
    let rows = [
        ("max frame body", MAX_FRAME.to_string()),
        ("max name length", MAX_NAME_LEN.to_string()),
        ("max append data", MAX_APPEND.to_string()),
        ("max read length", MAX_READ.to_string()),
        ("max connections", MAX_CONNECTIONS.to_string()),
        ("max requests in flight", MAX_IN_FLIGHT.to_string()),
        (
            "handshake deadline",
            HANDSHAKE_TIMEOUT.as_millis().to_string(),
        ),
        ("min session ttl", MIN_TTL_MS.to_string()),
        ("max session ttl", MAX_TTL_MS.to_string()),
        ("max wait_ms / hold_ms", MAX_WAIT_MS.to_string()),
        ("max file size", MAX_FILE_BYTES.to_string()),
        ("max total file size", MAX_TOTAL_FILE_BYTES.to_string()),
        (
            "results remembered per session",
            SESSION_RESULTS_REMEMBERED.to_string(),
        ),
    ];
    for (name, value) in rows {
        let row = DOC
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("protocol.md lacks the limits row `{name}`"));
        let cell = row.split('|').nth(2).unwrap_or("").replace(['_', ','], "");
        assert!(
            cell.contains(&value),
            "limits row `{name}` should say {value}: {row}"
        );
    }
}

/// The peer protocol section (§16), where the peer messages are documented.
fn peer_section() -> &'static str {
    let start = DOC
        .find("## 16. Peer protocol")
        .expect("protocol.md has a `## 16. Peer protocol` section");
    &DOC[start..]
}

/// The cluster key, nonces and ids of the peer worked example.
const PEER_KEY: &[u8] = b"0123456789abcdef";
const PEER_CLUSTER: &str = "prod";

/// The snapshot of the §16.5 transfer example.
const SNAPSHOT_EXAMPLE: &[u8] = &[0xde, 0xad, 0xbe, 0xef];

fn dialer_nonce() -> Vec<u8> {
    (0x00..0x20).collect()
}

fn acceptor_nonce() -> Vec<u8> {
    (0x20..0x40).collect()
}

fn peer_examples() -> Vec<(&'static str, PeerMessage)> {
    vec![
        (
            "PeerHello",
            PeerMessage::PeerHello {
                cluster_id: PEER_CLUSTER.into(),
                node_id: 2,
                nonce: Some(dialer_nonce()),
            },
        ),
        (
            "PeerWelcome",
            PeerMessage::PeerWelcome {
                cluster_id: PEER_CLUSTER.into(),
                node_id: 1,
                nonce: Some(acceptor_nonce()),
                mac: Some(mac(
                    PEER_KEY,
                    Side::Acceptor,
                    &dialer_nonce(),
                    PEER_CLUSTER,
                    1,
                )),
            },
        ),
        (
            "PeerAuth",
            PeerMessage::PeerAuth {
                mac: Some(mac(
                    PEER_KEY,
                    Side::Dialer,
                    &acceptor_nonce(),
                    PEER_CLUSTER,
                    2,
                )),
            },
        ),
        ("PeerAccepted", PeerMessage::PeerAccepted {}),
        (
            "Raft (Heartbeat)",
            PeerMessage::Raft {
                envelope: WireEnvelope {
                    from: 2,
                    to: 1,
                    term: 5,
                    message: WireMessage::Heartbeat {
                        commit: 7,
                        read_seq: 3,
                    },
                },
            },
        ),
        (
            "Raft (Append)",
            PeerMessage::Raft {
                envelope: WireEnvelope {
                    from: 2,
                    to: 1,
                    term: 5,
                    message: WireMessage::Append {
                        prev_index: 7,
                        prev_term: 5,
                        entries: vec![WireEntry {
                            index: 8,
                            term: 5,
                            data: WireEntryData::Command(vec![0x81, 0xa1, 0x78, 0x01]),
                        }],
                        commit: 7,
                    },
                },
            },
        ),
        (
            "Error (peer)",
            PeerMessage::error(ErrorCode::WrongCluster, "cluster mismatch"),
        ),
        (
            "SnapshotOffer",
            PeerMessage::SnapshotOffer {
                term: 5,
                meta: WireSnapshotMeta {
                    index: 7,
                    term: 5,
                    membership: WireMembership {
                        voters: [(1, "n1:7000".to_string()), (2, "n2:7000".to_string())].into(),
                        learners: Default::default(),
                    },
                },
                size: SNAPSHOT_EXAMPLE.len() as u64,
                crc32: crc32fast::hash(SNAPSHOT_EXAMPLE),
            },
        ),
        (
            "SnapshotAck (none held)",
            PeerMessage::SnapshotAck { received: 0 },
        ),
        (
            "SnapshotChunk",
            PeerMessage::SnapshotChunk {
                offset: 0,
                data: SNAPSHOT_EXAMPLE.to_vec(),
                crc32: crc32fast::hash(SNAPSHOT_EXAMPLE),
            },
        ),
        (
            "SnapshotAck (all held)",
            PeerMessage::SnapshotAck { received: 4 },
        ),
    ]
}

/// Each peer example's frame appears in §16 exactly as the peer codec writes it, and decodes
/// back.
#[test]
fn peer_example_hex_matches_the_codec() {
    let mut missing = Vec::new();
    for (name, message) in peer_examples() {
        let mut buf = BytesMut::new();
        PeerCodec::new(PEER_MAX_FRAME)
            .encode(message.clone(), &mut buf)
            .expect("encode peer message");
        let back = PeerCodec::new(PEER_MAX_FRAME)
            .decode(&mut buf.clone())
            .expect("decode");
        assert_eq!(back, Some(Ok(message)));
        let block = format!("```text\n{}\n```", hex_block(&buf));
        if !peer_section().contains(&block) {
            missing.push(format!("{name}:\n{block}"));
        }
    }
    assert!(
        missing.is_empty(),
        "protocol.md §16 lacks these frames:\n{}",
        missing.join("\n")
    );
}

/// The MAC values quoted in §16 are the ones the documented construction gives.
#[test]
fn peer_mac_examples_match() {
    let acceptor = mac(PEER_KEY, Side::Acceptor, &dialer_nonce(), PEER_CLUSTER, 1);
    let dialer = mac(PEER_KEY, Side::Dialer, &acceptor_nonce(), PEER_CLUSTER, 2);
    for (name, value) in [("acceptor", acceptor), ("dialer", dialer)] {
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            peer_section().contains(&hex),
            "protocol.md §16 lacks the {name} MAC {hex}"
        );
    }
}

/// Every peer message type has a section in §16.
#[test]
fn every_peer_message_type_has_a_section() {
    for name in PEER_TYPES {
        let heading = format!("### `{name}`");
        assert!(
            peer_section().contains(&heading),
            "protocol.md §16 lacks a `{heading}` section"
        );
    }
}

/// §16 quotes the peer frame limits the code enforces.
#[test]
fn peer_limits_match_the_constants() {
    use raftlock::protocol::{PEER_HANDSHAKE_MAX_FRAME, PEER_NONCE_LEN};
    fn with_commas(n: usize) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
    for (what, n) in [
        ("handshake frame", PEER_HANDSHAKE_MAX_FRAME),
        ("peer frame", PEER_MAX_FRAME),
        ("snapshot chunk", raftlock::protocol::SNAPSHOT_CHUNK_BYTES),
    ] {
        let text = format!("**{} bytes**", with_commas(n));
        assert!(
            peer_section().contains(&text),
            "§16 lacks the {what} limit {text}"
        );
    }
    assert!(peer_section().contains(&format!("**{PEER_NONCE_LEN}-byte**")));
}

/// examples/python/demo.py, a client written from this document alone, runs against a real
/// daemon: session, lock, fenced append, `Cancel`, and the push events (`HoldExpiring`,
/// `Revoked`, `QueuePosition`). Needs python3 with msgpack (CI has both); without them the
/// test says so and checks nothing else.
#[test]
fn the_python_example_runs_against_a_real_daemon() {
    use std::process::{Command, Stdio};
    let has_python = Command::new("python3")
        .args(["-c", "import msgpack"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_python {
        eprintln!("SKIPPED: python3 with msgpack is not available");
        return;
    }
    let daemon = common::Daemon::start(&[]);
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/demo.py");
    let mut child = Command::new("python3")
        .arg(demo)
        .args(["--server", &daemon.addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let start = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("demo.py did not finish within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("demo output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("demo passed"),
        "demo.py failed ({:?}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for step in [
        "ok   cancel",
        "ok   Revoked at the hold limit",
        "ok   the second waiter moves to the front",
    ] {
        assert!(stdout.contains(step), "demo.py skipped {step:?}:\n{stdout}");
    }
}
