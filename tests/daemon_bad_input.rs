//! Hostile and broken clients against a real `raftlockd` process. Each case asserts the
//! documented answer (an error frame, a close, or both), that the daemon is still running, and
//! that a well-behaved client is still served — both one connected before the bad input and a
//! new one after it. Property: nothing a client sends can panic the daemon or stall others.

mod common;

use std::time::Duration;

use common::{assert_served, error_code, raise_fd_limit, Client, Daemon};
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

    // A known type with a field of the wrong type: BadRequest with the id.
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

    // A request that breaks a limit (empty lock name): BadRequest, connection stays.
    let request = Request::Acquire {
        id: 43,
        session: 1,
        token: 1,
        seq: 1,
        lock: String::new(),
        mode: raftlock::client::LockMode::Exclusive,
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
    assert_eq!(response.id(), 0);
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
