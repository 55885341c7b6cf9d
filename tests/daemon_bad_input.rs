//! Hostile and broken clients against a real `raftlockd` process. Each case asserts the
//! documented answer (an error frame, a close, or both), that the daemon is still running, and
//! that a well-behaved client is still served — both one connected before the bad input and a
//! new one after it. Property: nothing a client sends can panic the daemon or stall others.

mod common;

use std::time::Duration;

use common::{assert_served, error_code, raise_fd_limit, Client, Daemon};
use raftlock::client::LockMode;
use raftlock::protocol::{encode_frame, ErrorCode, Request, Response, Role, MAX_FRAME, VERSION};

/// A body as raw MessagePack bytes inside a valid length prefix.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// A connected, handshaken client with an open session, used to prove others stay served.
async fn bystander(daemon: &Daemon) -> (Client, (u64, u64)) {
    let mut client = Client::hello(daemon.addr).await;
    client.wait_leader().await;
    let session = client.open_session(30_000).await;
    (client, session)
}

/// Asserts the bystander still gets answers, the daemon runs, and a new client is served.
async fn still_serving(daemon: &mut Daemon, bystander: &mut (Client, (u64, u64)), lock: &str) {
    let (client, session) = bystander;
    let request = client.acquire(*session, rand::random(), lock, Some(0));
    assert!(matches!(
        client.call(request).await,
        Response::Granted { .. }
    ));
    assert_served(daemon.addr, &format!("{lock}-new")).await;
    daemon.assert_running();
}

#[tokio::test]
async fn truncated_frames_then_silence_or_close() {
    let mut daemon = Daemon::start(&[]);
    let mut other = bystander(&daemon).await;

    // A header promising 100 bytes, 10 of them sent, then silence (the connection stays open).
    let mut silent = Client::hello(daemon.addr).await;
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0x82; 10]);
    silent.write_raw(&partial).await;
    // The same, then the client closes: the daemon just drops the connection.
    let mut closing = Client::hello(daemon.addr).await;
    closing.write_raw(&partial).await;
    drop(closing);
    // Half a header before the handshake, then close.
    let mut early = Client::connect(daemon.addr).await;
    early.write_raw(&[0, 0]).await;
    drop(early);

    still_serving(&mut daemon, &mut other, "truncated").await;
    drop(silent);
}

#[tokio::test]
async fn a_4_gib_length_prefix_gets_frame_too_large_and_a_close() {
    let mut daemon = Daemon::start(&[]);
    let mut other = bystander(&daemon).await;

    let mut client = Client::hello(daemon.addr).await;
    client.write_raw(&[0xff, 0xff, 0xff, 0xff, 0x80]).await;
    let response = client.recv().await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::FrameTooLarge),
        "{response:?}"
    );
    assert_eq!(response.id(), 0);
    client.expect_closed().await;

    // Just over the configured maximum is refused the same way.
    let mut client = Client::hello(daemon.addr).await;
    client
        .write_raw(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .await;
    assert_eq!(
        error_code(&client.recv().await),
        Some(ErrorCode::FrameTooLarge)
    );
    client.expect_closed().await;

    still_serving(&mut daemon, &mut other, "too-large").await;
}

#[tokio::test]
async fn invalid_messagepack_and_unknown_types_are_answered_and_the_connection_stays() {
    let mut daemon = Daemon::start(&[]);
    let mut other = bystander(&daemon).await;
    let mut client = Client::hello(daemon.addr).await;

    // 0xc1 is never valid MessagePack.
    client.write_raw(&frame(&[0xc1, 0x00, 0x01])).await;
    let response = client.recv().await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::BadRequest),
        "{response:?}"
    );
    assert_eq!(response.id(), 0);

    // A map with an unknown type: answered with its id.
    let body = rmp_serde::to_vec_named(&serde_json_like_map("Frobnicate", 41)).expect("encode");
    client.write_raw(&frame(&body)).await;
    let response = client.recv().await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::UnknownType),
        "{response:?}"
    );
    assert_eq!(response.id(), 41);

    // A known type with a field of the wrong type: BadRequest with the id, naming the field.
    let body = rmp_serde::to_vec_named(&BadAcquire {
        r#type: "Acquire",
        id: 42,
        session: "nope",
    })
    .expect("encode");
    client.write_raw(&frame(&body)).await;
    let response = client.recv().await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::BadRequest),
        "{response:?}"
    );
    assert_eq!(response.id(), 42);
    assert!(
        message(&response).contains("field session: invalid type: string \"nope\""),
        "{response:?}"
    );

    // A request that breaks a limit (empty lock name): BadRequest, connection stays.
    let request = Request::Acquire {
        id: 43,
        session: 1,
        token: 1,
        seq: 1,
        lock: String::new(),
        mode: LockMode::Exclusive,
        wait_ms: Some(0),
        hold_ms: None,
    };
    let response = client.call(request).await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::BadRequest),
        "{response:?}"
    );

    // The same connection still works.
    let id = client.id();
    assert!(matches!(
        client.call(Request::Status { id }).await,
        Response::Status(_)
    ));
    still_serving(&mut daemon, &mut other, "garbage").await;
}

#[derive(serde::Serialize)]
struct TypeAndId {
    r#type: &'static str,
    id: u64,
}

fn serde_json_like_map(type_name: &'static str, id: u64) -> TypeAndId {
    TypeAndId {
        r#type: type_name,
        id,
    }
}

#[derive(serde::Serialize)]
struct BadAcquire {
    r#type: &'static str,
    id: u64,
    session: &'static str,
}

#[tokio::test]
async fn handshake_errors_close_the_connection() {
    let mut daemon = Daemon::start(&[]);
    let mut other = bystander(&daemon).await;

    // A request before Hello.
    let mut client = Client::connect(daemon.addr).await;
    client.send(Request::Status { id: 5 }).await;
    let response = client.recv().await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::HandshakeRequired),
        "{response:?}"
    );
    assert_eq!(response.id(), 5, "the request's id is echoed (§3)");
    client.expect_closed().await;

    // An unsupported version.
    let mut client = Client::connect(daemon.addr).await;
    client
        .send(Request::Hello {
            version: VERSION + 1,
            role: Role::Client,
            token: None,
        })
        .await;
    assert_eq!(
        error_code(&client.recv().await),
        Some(ErrorCode::UnsupportedVersion)
    );
    client.expect_closed().await;

    // A peer Hello followed by a client request instead of the peer handshake.
    let mut client = Client::connect(daemon.addr).await;
    client
        .send(Request::Hello {
            version: VERSION,
            role: Role::Peer,
            token: None,
        })
        .await;
    client.send(Request::Status { id: 6 }).await;
    client.expect_closed_skipping().await;

    still_serving(&mut daemon, &mut other, "handshake").await;
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_timed_out() {
    let mut daemon = Daemon::start(&["--handshake-timeout-ms", "300"]);
    let mut other = bystander(&daemon).await;

    let started = std::time::Instant::now();
    let mut client = Client::connect(daemon.addr).await;
    let response = client.recv().await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::HandshakeTimeout),
        "{response:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "timed out too early"
    );
    client.expect_closed().await;

    still_serving(&mut daemon, &mut other, "silent").await;
}

#[tokio::test]
async fn ten_thousand_connections_at_once_hit_the_connection_limit() {
    const MAX: usize = 1000;
    const ATTEMPTS: usize = 10_000;
    raise_fd_limit();
    let mut daemon = Daemon::start(&["--max-connections", "1000"]);
    let mut other = bystander(&daemon).await;

    // Open every connection at once and say Hello on each.
    let hello = encode_frame(
        &Request::Hello {
            version: VERSION,
            role: Role::Client,
            token: None,
        },
        MAX_FRAME,
    )
    .expect("encode hello");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..ATTEMPTS {
        let addr = daemon.addr;
        let hello = hello.clone();
        tasks.spawn(async move {
            let mut client = Client::connect(addr).await;
            client.write_raw(&hello).await;
            let first = client.next().await;
            (client, first)
        });
    }
    let mut welcomed = Vec::new();
    let (mut refused, mut closed) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (client, first) = joined.expect("connection task");
        match first {
            Some(Response::Welcome { .. }) => welcomed.push(client),
            Some(response) => {
                assert_eq!(
                    error_code(&response),
                    Some(ErrorCode::TooManyConnections),
                    "{response:?}"
                );
                assert_eq!(response.id(), 0);
                refused += 1;
            }
            // Beyond the bound on concurrent refusals the daemon closes without a frame.
            None => closed += 1,
        }
    }
    // The bystander holds one slot.
    assert_eq!(
        welcomed.len(),
        MAX - 1,
        "refused {refused}, closed {closed}"
    );
    assert_eq!(refused + closed, ATTEMPTS - (MAX - 1));
    assert!(
        refused > 0,
        "no connection got the TooManyConnections frame"
    );

    // The admitted connections are really served.
    for client in welcomed.iter_mut().take(20) {
        let id = client.id();
        assert!(matches!(
            client.call(Request::Status { id }).await,
            Response::Status(_)
        ));
    }
    // Closing them frees the slots for new clients.
    drop(welcomed);
    let start = std::time::Instant::now();
    loop {
        let mut client = Client::connect(daemon.addr).await;
        client
            .send(Request::Hello {
                version: VERSION,
                role: Role::Client,
                token: None,
            })
            .await;
        match client.next().await {
            Some(Response::Welcome { .. }) => break,
            _ => assert!(start.elapsed() < common::DEADLINE, "slots never freed"),
        }
        tokio::task::yield_now().await;
    }
    still_serving(&mut daemon, &mut other, "flood").await;
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_get_too_many_requests() {
    let mut daemon = Daemon::start(&["--max-inflight", "4"]);
    let mut other = bystander(&daemon).await;

    // Someone holds the lock, so our acquires queue and stay in flight.
    let mut holder = Client::hello(daemon.addr).await;
    let held = holder.open_session(30_000).await;
    let request = holder.acquire(held, 1, "busy", Some(0));
    assert!(matches!(
        holder.call(request).await,
        Response::Granted { .. }
    ));

    let mut client = Client::hello(daemon.addr).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(client.open_session(30_000).await);
    }
    for (n, session) in sessions.iter().enumerate() {
        let request = client.acquire(*session, 1, "busy", None);
        let id = request.id();
        client.send(request).await;
        assert_eq!(
            client.recv().await,
            Response::Queued {
                id,
                position: n as u64
            }
        );
    }
    // Four in flight: the fifth request is refused, the connection stays.
    let id = client.id();
    let response = client.call(Request::Status { id }).await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::TooManyRequests),
        "{response:?}"
    );

    // A flood of pipelined requests: every one is answered, the excess with TooManyRequests.
    let ids: Vec<u64> = (0..500).map(|_| client.id()).collect();
    for &id in &ids {
        client.send(Request::Status { id }).await;
    }
    for &id in &ids {
        let response = client.recv().await;
        assert_eq!(response.id(), id);
        assert_eq!(error_code(&response), Some(ErrorCode::TooManyRequests));
    }

    // Releasing the lock grants the first waiter and frees one slot.
    let id = holder.id();
    let release = Request::Release {
        id,
        session: held.0,
        token: held.1,
        seq: 2,
        lock: "busy".into(),
    };
    assert_eq!(holder.call(release).await, Response::Released { id });
    assert!(matches!(client.recv().await, Response::Granted { .. }));
    let id = client.id();
    assert!(matches!(
        client.call(Request::Status { id }).await,
        Response::Status(_)
    ));

    still_serving(&mut daemon, &mut other, "inflight").await;
}

/// The message of an error response.
fn message(response: &Response) -> &str {
    match response {
        Response::Error { message, .. } => message,
        other => panic!("expected an Error, got {other:?}"),
    }
}

/// A map body from (key, value) pairs, each value already MessagePack (to write wrong types).
fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = vec![0x80 | entries.len() as u8];
    for (key, value) in entries {
        body.extend_from_slice(&rmp_serde::to_vec(key).expect("encode key"));
        body.extend_from_slice(value);
    }
    body
}

/// A MessagePack str.
fn str_value(text: &str) -> Vec<u8> {
    rmp_serde::to_vec(text).expect("encode str")
}

/// Before `Hello`, every bad first frame gets its error and the connection closes at once: not
/// at the handshake deadline (a minute here, far beyond the test's bounded wait), and a `Hello`
/// sent right behind the bad frame is never welcomed. Ids are echoed when the frame had one.
#[tokio::test]
async fn a_bad_first_frame_is_answered_and_closes_before_the_handshake_deadline() {
    let mut daemon = Daemon::start(&["--handshake-timeout-ms", "60000"]);
    let mut other = bystander(&daemon).await;
    let hello_type = str_value("Hello");
    let client_role = str_value("client");
    let cases: Vec<(&str, Vec<u8>, ErrorCode, u64)> = vec![
        ("undecodable", vec![0xc1, 0x00], ErrorCode::BadRequest, 0),
        ("empty", vec![], ErrorCode::BadRequest, 0),
        (
            "unknown type",
            map(&[("type", &str_value("Frobnicate")), ("id", &[41])]),
            ErrorCode::UnknownType,
            41,
        ),
        (
            "Hello without version",
            map(&[("type", &hello_type), ("role", &client_role)]),
            ErrorCode::BadRequest,
            0,
        ),
        (
            "Hello without role",
            map(&[("type", &hello_type), ("version", &[1])]),
            ErrorCode::BadRequest,
            0,
        ),
        (
            "Hello with role admin",
            map(&[
                ("type", &hello_type),
                ("version", &[1]),
                ("role", &str_value("admin")),
            ]),
            ErrorCode::BadRequest,
            0,
        ),
        (
            "Hello with version as a string",
            map(&[
                ("type", &hello_type),
                ("version", &str_value("1")),
                ("role", &client_role),
            ]),
            ErrorCode::BadRequest,
            0,
        ),
        (
            "a request before Hello",
            map(&[("type", &str_value("Status")), ("id", &[7])]),
            ErrorCode::HandshakeRequired,
            7,
        ),
    ];
    let hello = encode_frame(
        &Request::Hello {
            version: VERSION,
            role: Role::Client,
            token: None,
        },
        MAX_FRAME,
    )
    .expect("encode hello");
    for (case, body, code, id) in cases {
        let mut client = Client::connect(daemon.addr).await;
        let mut bytes = frame(&body);
        bytes.extend_from_slice(&hello);
        client.write_raw(&bytes).await;
        let response = client.recv().await;
        assert_eq!(error_code(&response), Some(code), "{case}: {response:?}");
        assert_eq!(response.id(), id, "{case}: {response:?}");
        // Bounded by DEADLINE (20 s), a third of the handshake deadline.
        client.expect_closed().await;
    }
    still_serving(&mut daemon, &mut other, "first-frame").await;
}

/// A peer message type on a client connection is an unknown type (§3): `UnknownType` with the
/// id echoed, and the connection goes on.
#[tokio::test]
async fn a_peer_message_on_a_client_connection_is_an_unknown_type() {
    let mut daemon = Daemon::start(&[]);
    let mut client = Client::hello(daemon.addr).await;
    for peer_type in ["PeerHello", "Raft"] {
        let body = map(&[("type", &str_value(peer_type)), ("id", &[9])]);
        client.write_raw(&frame(&body)).await;
        let response = client.recv().await;
        assert_eq!(
            error_code(&response),
            Some(ErrorCode::UnknownType),
            "{response:?}"
        );
        assert_eq!(response.id(), 9);
    }
    let id = client.id();
    assert!(matches!(
        client.call(Request::Status { id }).await,
        Response::Status(_)
    ));
    daemon.assert_running();
}

/// A `type` sent as MessagePack bin is refused naming `type`; `Append.data` as a str or an
/// array of integers is refused naming `data`, and nothing is appended.
#[tokio::test]
async fn a_bin_type_and_non_bin_data_are_refused() {
    let mut daemon = Daemon::start(&[]);
    let mut client = Client::hello(daemon.addr).await;
    client.wait_leader().await;

    let mut bin_type = vec![0xc4, 6];
    bin_type.extend_from_slice(b"Status");
    client
        .write_raw(&frame(&map(&[("type", &bin_type), ("id", &[11])])))
        .await;
    let response = client.recv().await;
    assert_eq!(error_code(&response), Some(ErrorCode::BadRequest));
    assert_eq!(response.id(), 11);
    assert!(message(&response).contains("field type: "), "{response:?}");

    let session = client.open_session(30_000).await;
    let request = client.acquire(session, 1, "guard", Some(0));
    let fence = match client.call(request).await {
        Response::Granted { fence, .. } => fence,
        other => panic!("expected Granted, got {other:?}"),
    };
    let append = |data: &[u8], id: u8, seq: u8| -> Vec<u8> {
        let fence = rmp_serde::to_vec(&fence).expect("encode fence");
        let session_id = rmp_serde::to_vec(&session.0).expect("encode session");
        let token = rmp_serde::to_vec(&session.1).expect("encode token");
        frame(&map(&[
            ("type", &str_value("Append")),
            ("id", &[id]),
            ("session", &session_id),
            ("token", &token),
            ("seq", &[seq]),
            ("file", &str_value("log")),
            ("lock", &str_value("guard")),
            ("fence", &fence),
            ("data", data),
        ]))
    };
    let as_str = str_value("ok\n");
    let as_array = [0x93, b'o', b'k', b'\n'];
    for (id, data) in [(21u8, &as_str[..]), (22, &as_array[..])] {
        client.write_raw(&append(data, id, 2)).await;
        let response = client.recv().await;
        assert_eq!(
            error_code(&response),
            Some(ErrorCode::BadRequest),
            "{response:?}"
        );
        assert_eq!(response.id(), u64::from(id));
        assert!(message(&response).contains("field data: "), "{response:?}");
    }
    let id = client.id();
    let read = Request::Read {
        id,
        file: "log".into(),
        offset: 0,
        len: 100,
        stale: false,
    };
    assert_eq!(
        error_code(&client.call(read).await),
        Some(ErrorCode::NotFound),
        "a refused append was applied"
    );
    // The same append with bin data is applied.
    client.write_raw(&append(b"\xc4\x03ok\n", 23, 2)).await;
    assert!(matches!(
        client.recv().await,
        Response::Appended {
            id: 23,
            offset: 0,
            size: 3
        }
    ));
    daemon.assert_running();
}

/// A seq reused by a different request is `SequenceReused` and changes nothing; the identical
/// request still gets its original answer (§10).
#[tokio::test]
async fn a_seq_reused_with_another_request_is_sequence_reused() {
    let mut daemon = Daemon::start(&[]);
    let mut client = Client::hello(daemon.addr).await;
    client.wait_leader().await;
    let session = client.open_session(30_000).await;
    let first = client.acquire(session, 1, "first", Some(0));
    let fence = match client.call(first).await {
        Response::Granted { fence, .. } => fence,
        other => panic!("expected Granted, got {other:?}"),
    };
    let other = client.acquire(session, 1, "other", Some(0));
    let response = client.call(other).await;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::SequenceReused),
        "{response:?}"
    );
    let id = client.id();
    let locks = Request::Locks {
        id,
        prefix: Some("other".into()),
        stale: false,
    };
    match client.call(locks).await {
        Response::LockList { locks, .. } => assert!(locks.is_empty(), "{locks:?}"),
        other => panic!("expected LockList, got {other:?}"),
    }
    let again = client.acquire(session, 1, "first", Some(0));
    let id = again.id();
    assert_eq!(client.call(again).await, Response::Granted { id, fence });
    daemon.assert_running();
}

/// What protocol.md §5, §7, §9 and §10 now say explicitly, checked on a real daemon:
/// every `Error` carries `leader`/`leader_addr` (nil but for `NotLeader`); `Append` on a lock
/// the session does not hold is `StaleFence`; seq 0, gaps and a seq lower than the last are all
/// new requests; a nonce reused after its session closed opens a new session.
#[tokio::test]
async fn the_documented_edge_cases_behave_as_documented() {
    let mut daemon = Daemon::start(&[]);
    let mut client = Client::hello(daemon.addr).await;
    client.wait_leader().await;
    let session = client.open_session(30_000).await;

    // Append on a lock never acquired.
    let id = client.id();
    let append = Request::Append {
        id,
        session: session.0,
        token: session.1,
        seq: 0,
        file: "f".into(),
        lock: "not-held".into(),
        fence: 1,
        data: b"x".to_vec(),
    };
    assert_eq!(
        error_code(&client.call(append).await),
        Some(ErrorCode::StaleFence)
    );

    // Seq 0 was just used; 10 (a gap), then 5 (lower than the last) are new requests.
    for (seq, lock) in [(10, "ten"), (5, "five")] {
        let request = client.acquire(session, seq, lock, Some(0));
        assert!(
            matches!(client.call(request).await, Response::Granted { .. }),
            "seq {seq}"
        );
    }

    // The raw Error frame has all five fields, leader and leader_addr nil.
    let id = client.id();
    let bogus = Request::KeepAlive {
        id,
        session: session.0,
        token: session.1 ^ 1,
    };
    let raw = raw_answer(daemon.addr, &bogus).await;
    let fields: std::collections::BTreeMap<String, rmpv_like::Value> =
        rmp_serde::from_slice(&raw).expect("an error map");
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["code", "id", "leader", "leader_addr", "message", "type"]
    );
    assert!(fields["leader"].is_nil() && fields["leader_addr"].is_nil());

    // A nonce reused after its session closed opens a new session.
    let open = |id| Request::OpenSession {
        id,
        nonce: 0x5eed,
        ttl_ms: 30_000,
        owner: None,
    };
    let id = client.id();
    let Response::SessionOpened {
        session: s1, token, ..
    } = client.call(open(id)).await
    else {
        panic!("expected SessionOpened");
    };
    let id = client.id();
    let close = Request::CloseSession {
        id,
        session: s1,
        token,
        seq: 1,
    };
    assert_eq!(client.call(close).await, Response::SessionClosed { id });
    let id = client.id();
    let Response::SessionOpened { session: s2, .. } = client.call(open(id)).await else {
        panic!("expected SessionOpened");
    };
    assert_ne!(s1, s2, "the reused nonce returned the closed session");
    daemon.assert_running();
}

/// Sends `request` on a new handshaken connection and returns the raw body of its answer.
async fn raw_answer(addr: std::net::SocketAddr, request: &Request) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let hello = Request::Hello {
        version: VERSION,
        role: Role::Client,
        token: None,
    };
    let mut bytes = encode_frame(&hello, MAX_FRAME).expect("encode");
    bytes.extend_from_slice(&encode_frame(request, MAX_FRAME).expect("encode"));
    stream.write_all(&bytes).await.expect("write");
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let read = async {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            let mut body = vec![0; u32::from_be_bytes(len) as usize];
            stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(common::DEADLINE, read)
            .await
            .expect("an answer in time")
            .expect("read");
        bodies.push(body);
    }
    bodies.pop().expect("two frames")
}

/// Just enough of a dynamic MessagePack value to see which fields a map has and which are nil.
mod rmpv_like {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, Visitor};

    /// Nil, or anything else (ignored).
    pub enum Value {
        Nil,
        Other,
    }

    impl Value {
        pub fn is_nil(&self) -> bool {
            matches!(self, Value::Nil)
        }
    }

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Value;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("any value")
                }
                fn visit_unit<E>(self) -> Result<Value, E> {
                    Ok(Value::Nil)
                }
                fn visit_none<E>(self) -> Result<Value, E> {
                    Ok(Value::Nil)
                }
                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                    IgnoredAny::deserialize(d).map(|_| Value::Other)
                }
                fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
                    Ok(Value::Other)
                }
                fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
                    Ok(Value::Other)
                }
                fn visit_str<E>(self, _: &str) -> Result<Value, E> {
                    Ok(Value::Other)
                }
            }
            d.deserialize_any(V)
        }
    }
}
