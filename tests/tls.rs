//! TLS through the real daemon: client connections (library, CLI and raw frames), client
//! certificates, peer mutual TLS instead of a cluster key, SIGHUP reload of the files, and
//! connections that stall in the TLS handshake. Every certificate is made here, by rcgen, under
//! a throwaway CA in a temporary directory.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_addrs, Daemon, DEADLINE};
use futures::{SinkExt, StreamExt};
use raftlock::client::{Client, ClientOptions, LockMode, Wait};
use raftlock::protocol::{ClientCodec, Request, Response, Role, StatusInfo, VERSION};
use raftlock::tls::{ClientTls, Stream};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A certificate authority and the certificates it issued, as PEM files in one directory.
struct Pki {
    dir: tempfile::TempDir,
    name: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, as files.
#[derive(Clone)]
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    /// A new CA called `name`.
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir for the CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).expect("self-signed CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write the CA");
        Pki {
            dir,
            name: name.to_string(),
            ca,
            ca_key,
        }
    }

    /// The CA certificate file.
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues `file` for `names` (DNS names or IP addresses), usable as a server and a client
    /// certificate; `expired` makes one whose validity ended in the past.
    fn issue_with(&self, file: &str, names: &[&str], expired: bool) -> Issued {
        self.issue_named(file, names, expired, &format!("{file} of {}", self.name))
    }

    /// [`Pki::issue_with`] with the subject common name `common_name`.
    fn issue_named(&self, file: &str, names: &[&str], expired: bool, common_name: &str) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign the leaf");
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write the key");
        issued
    }

    /// [`Pki::issue_with`] for 127.0.0.1 and localhost, valid now.
    fn issue(&self, file: &str) -> Issued {
        self.issue_with(file, &["127.0.0.1", "localhost"], false)
    }
}

fn arg(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_string()
}

/// The daemon flags of a TLS listener with `server`'s certificate.
fn tls_args(server: &Issued) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        arg(&server.cert),
        "--tls-key".into(),
        arg(&server.key),
    ]
}

fn start(args: &[String]) -> Daemon {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args)
}

/// The client library's TLS settings trusting `pki`, presenting `identity` if given.
fn client_tls(pki: &Pki, identity: Option<&Issued>) -> ClientTls {
    ClientTls::from_files(
        &pki.ca(),
        identity.map(|i| (i.cert.as_path(), i.key.as_path())),
    )
    .expect("client TLS settings")
}

/// Library options that fail fast.
fn options(tls: Option<ClientTls>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        retry_timeout: Duration::from_secs(3),
        tls,
        ..ClientOptions::default()
    }
}

/// A raw-frame client over TLS (or plain TCP), every wait bounded by [`DEADLINE`].
struct Raw {
    framed: Framed<Stream, ClientCodec>,
    next_id: u64,
}

impl Raw {
    /// Connects and runs the TLS handshake (with `tls`), then `Hello`; `Err` says why not.
    async fn hello(addr: SocketAddr, tls: Option<&ClientTls>) -> Result<Raw, String> {
        Raw::hello_with(addr, tls, None).await
    }

    /// [`Raw::hello`] with an authentication token in `Hello`.
    async fn hello_with(
        addr: SocketAddr,
        tls: Option<&ClientTls>,
        token: Option<&str>,
    ) -> Result<Raw, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let stream = match tls {
            Some(tls) => tokio::time::timeout(DEADLINE, tls.connect(&addr.to_string(), tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| e.to_string())?,
            None => Stream::Plain(tcp),
        };
        let mut raw = Raw {
            framed: Framed::new(stream, ClientCodec::default()),
            next_id: 1,
        };
        let hello = Request::Hello {
            version: VERSION,
            role: Role::Client,
            token: token.map(str::to_owned),
        };
        raw.framed.send(hello).await.map_err(|e| e.to_string())?;
        match raw.next().await {
            Some(Response::Welcome { .. }) => Ok(raw),
            other => Err(format!("no Welcome: {other:?}")),
        }
    }

    async fn next(&mut self) -> Option<Response> {
        match tokio::time::timeout(DEADLINE, self.framed.next()).await {
            Ok(Some(Ok(Ok(response)))) => Some(response),
            Ok(_) => None,
            Err(_) => panic!("no frame within {DEADLINE:?}"),
        }
    }

    async fn status(&mut self) -> StatusInfo {
        let id = self.next_id;
        self.next_id += 1;
        self.framed
            .send(Request::Status { id })
            .await
            .expect("send Status");
        match self.next().await {
            Some(Response::Status(status)) => *status,
            other => panic!("expected Status, got {other:?}"),
        }
    }
}

/// Waits (bounded) until `log()` contains `needle`.
async fn wait_log(what: &str, log: impl Fn() -> String, needle: &str) {
    let start = Instant::now();
    while !log().contains(needle) {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: no {needle:?} in the log within {DEADLINE:?}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session, a lock, an append and a read through `client`.
async fn lock_append_read(client: &Client, lock: &str) {
    let session = client
        .open_session(Duration::from_secs(10))
        .await
        .expect("open a session");
    let guard = session
        .lock(lock, LockMode::Exclusive, Wait::Forever)
        .await
        .expect("lock");
    let file = format!("{lock}.log");
    session
        .append(&file, &guard, b"over tls".to_vec())
        .await
        .expect("append");
    let (data, size) = client.read(&file, 0, 100, false).await.expect("read");
    assert_eq!((data.as_slice(), size), (&b"over tls"[..], 8));
    guard.release().await.expect("release");
    session.close().await.expect("close");
}

#[tokio::test]
async fn a_tls_client_is_served_end_to_end_by_the_library_and_the_cli() {
    let pki = Pki::new("ca");
    let server = pki.issue("server");
    let mut daemon = start(&tls_args(&server));

    let client = Client::connect(
        vec![daemon.addr.to_string()],
        options(Some(client_tls(&pki, None))),
    )
    .await
    .expect("connect over TLS");
    lock_append_read(&client, "library").await;

    let raftlock = |args: &[&str]| {
        // RAFTLOCK_CA (the variable of --ca) reaches the commands run under `lock` too.
        let out = Command::new(env!("CARGO_BIN_EXE_raftlock"))
            .arg("--servers")
            .arg(daemon.addr.to_string())
            .args(args)
            .env("RAFTLOCK_CA", pki.ca())
            .env("RAFTLOCK_BIN", env!("CARGO_BIN_EXE_raftlock"))
            .env_remove("RAFTLOCK_SESSION")
            .env_remove("RAFTLOCK_TOKEN")
            .output()
            .expect("run raftlock");
        assert!(
            out.status.success(),
            "raftlock {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    };
    let script = r#"echo locked && "$RAFTLOCK_BIN" append cli.log 'from the cli' >/dev/null"#;
    assert_eq!(
        raftlock(&["lock", "cli", "--", "sh", "-c", script]),
        "locked\n"
    );
    assert_eq!(raftlock(&["read", "cli.log"]), "from the cli");
    // --ca as a flag works the same, and reaches the command run under the lock.
    let flag = Command::new(env!("CARGO_BIN_EXE_raftlock"))
        .arg("--servers")
        .arg(daemon.addr.to_string())
        .arg("--ca")
        .arg(pki.ca())
        .args([
            "lock",
            "cli",
            "--",
            "sh",
            "-c",
            r#""$RAFTLOCK_BIN" read cli.log"#,
        ])
        .env("RAFTLOCK_BIN", env!("CARGO_BIN_EXE_raftlock"))
        .env_remove("RAFTLOCK_CA")
        .output()
        .expect("run raftlock");
    assert_eq!(
        String::from_utf8_lossy(&flag.stdout),
        "from the cli",
        "{}",
        String::from_utf8_lossy(&flag.stderr)
    );
    let status = raftlock(&["--json", "status"]);
    assert!(status.contains("\"role\""), "{status}");
    daemon.assert_running();
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_fails_cleanly_and_others_are_served() {
    let pki = Pki::new("ca");
    let server = pki.issue("server");
    let mut daemon = start(&tls_args(&server));
    let tls = client_tls(&pki, None);
    let mut good = Raw::hello(daemon.addr, Some(&tls))
        .await
        .expect("TLS client");

    // Raw frames: the daemon answers the plaintext Hello with a TLS alert and closes.
    let refused = Raw::hello(daemon.addr, None).await;
    assert!(refused.is_err(), "a plaintext Hello was welcomed");

    // The library names the problem.
    let error = Client::connect(vec![daemon.addr.to_string()], options(None))
        .await
        .expect_err("plaintext client on a TLS port");
    let text = raftlock::error_chain(&error);
    assert!(text.contains("speaks TLS"), "{text}");

    // A client that trusts another CA is refused by its own verification.
    let other = Pki::new("other");
    let error = Raw::hello(daemon.addr, Some(&client_tls(&other, None)))
        .await
        .err()
        .expect("a client that does not trust the server's CA");
    assert!(error.contains("certificate"), "{error}");

    assert_eq!(good.status().await.role, "leader");
    daemon.assert_running();
    wait_log("plaintext", || daemon.log(), "TLS handshake failed").await;
}

#[tokio::test]
async fn tls_client_ca_requires_a_certificate_from_that_ca() {
    let pki = Pki::new("ca");
    let server = pki.issue("server");
    let alice = pki.issue("alice");
    let expired = pki.issue_with("old", &["127.0.0.1"], true);
    let other = Pki::new("other");
    let mallory = other.issue("mallory");
    let mut args = tls_args(&server);
    args.extend(["--tls-client-ca".into(), arg(&pki.ca())]);
    let mut daemon = start(&args);

    let mut served = Raw::hello(daemon.addr, Some(&client_tls(&pki, Some(&alice))))
        .await
        .expect("a client certificate from the client CA is accepted");
    for (who, identity) in [
        ("no certificate", None),
        ("a certificate from another CA", Some(&mallory)),
        ("an expired certificate", Some(&expired)),
    ] {
        let tls = ClientTls::from_files(
            &pki.ca(),
            identity.map(|i| (i.cert.as_path(), i.key.as_path())),
        )
        .expect("client TLS settings");
        // With TLS 1.3 the client learns of the refusal at its first read, not at connect.
        let result = Raw::hello(daemon.addr, Some(&tls)).await;
        assert!(result.is_err(), "a client with {who} was served");
    }
    assert_eq!(served.status().await.role, "leader");
    daemon.assert_running();
}

/// A 3-node cluster whose nodes authenticate each other by mutual TLS alone (no key).
struct TlsCluster {
    nodes: Vec<Daemon>,
}

/// Node arguments for peer mTLS with `cert` (issued by a CA whose file is `ca`).
fn peer_args(id: usize, peers: &str, cert: &Issued, ca: &Path) -> Vec<String> {
    vec![
        "--id".into(),
        id.to_string(),
        "--peer".into(),
        peers.to_string(),
        "--bootstrap".into(),
        "--peer-tls-cert".into(),
        arg(&cert.cert),
        "--peer-tls-key".into(),
        arg(&cert.key),
        "--peer-tls-ca".into(),
        arg(ca),
    ]
}

impl TlsCluster {
    /// Starts nodes 1..=3; node `i` uses `certs[i - 1]` and trusts `cas[i - 1]`.
    fn start(certs: &[Issued], cas: &[PathBuf]) -> TlsCluster {
        let addrs = free_addrs(certs.len());
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let peers = peers.join(",");
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                Daemon::start_at(
                    &addr.to_string(),
                    &peer_args(i + 1, &peers, &certs[i], &cas[i]),
                )
            })
            .collect();
        TlsCluster { nodes }
    }

    /// Node statuses over TLS trusting `tls`, for the nodes that answer.
    async fn statuses(&self, tls: &ClientTls, ids: &[usize]) -> Vec<(usize, StatusInfo)> {
        let mut out = Vec::new();
        for &id in ids {
            let addr = self.nodes[id - 1].addr;
            let asked = tokio::time::timeout(Duration::from_millis(500), async {
                let mut raw = Raw::hello(addr, Some(tls)).await.ok()?;
                Some(raw.status().await)
            })
            .await;
            if let Ok(Some(status)) = asked {
                out.push((id, status));
            }
        }
        out
    }

    /// Waits for a leader that every node in `ids` agrees on; returns its id and term.
    async fn wait_leader(&self, tls: &ClientTls, ids: &[usize]) -> (u64, u64) {
        let start = Instant::now();
        loop {
            let statuses = self.statuses(tls, ids).await;
            if statuses.len() == ids.len() {
                let (leader, term) = (statuses[0].1.leader, statuses[0].1.term);
                if leader.is_some()
                    && statuses
                        .iter()
                        .all(|(_, s)| s.leader == leader && s.term == term)
                {
                    return (leader.unwrap_or_default(), term);
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no agreed leader among {ids:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_cluster_with_peer_mtls_and_no_key_elects_and_replicates() {
    let pki = Pki::new("cluster");
    let certs: Vec<Issued> = (1..=3).map(|i| pki.issue(&format!("node{i}"))).collect();
    let cluster = TlsCluster::start(&certs, &vec![pki.ca(); 3]);
    let tls = client_tls(&pki, None);
    let (leader, _term) = cluster.wait_leader(&tls, &[1, 2, 3]).await;
    assert!((1..=3).contains(&leader));

    let servers = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let client = Client::connect(servers, options(Some(tls.clone())))
        .await
        .expect("connect to the cluster over TLS");
    lock_append_read(&client, "replicated").await;
    let commit = client.status().await.expect("status").commit_index;
    // Every node applies the entries: replication ran over the TLS peer links.
    let start = Instant::now();
    loop {
        let statuses = cluster.statuses(&tls, &[1, 2, 3]).await;
        if statuses.len() == 3 && statuses.iter().all(|(_, s)| s.applied_index >= commit) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not replicated: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A plaintext peer Hello is refused: without a key, only a peer certificate admits.
    assert!(Raw::hello(cluster.nodes[0].addr, None).await.is_err());
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let pki = Pki::new("cluster");
    let intruder_ca = Pki::new("intruder");
    let certs = vec![
        pki.issue("node1"),
        pki.issue("node2"),
        intruder_ca.issue("node3"),
    ];
    let cluster = TlsCluster::start(&certs, &[pki.ca(), pki.ca(), intruder_ca.ca()]);
    let tls = client_tls(&pki, None);
    let (_, term) = cluster.wait_leader(&tls, &[1, 2]).await;

    // Node 3 tries to reach the others, and its links are refused on both sides.
    wait_log(
        "node 3",
        || cluster.nodes[2].log(),
        "peer handshake refused",
    )
    .await;
    wait_log("node 1", || cluster.nodes[0].log(), "TLS handshake failed").await;
    let statuses = cluster.statuses(&tls, &[1, 2]).await;
    assert!(
        statuses.iter().all(|(_, s)| s.term == term),
        "the term moved: {statuses:?}"
    );
    // Node 3 never heard from a leader: it has no leader and nothing committed.
    let intruder = cluster
        .statuses(&client_tls(&intruder_ca, None), &[3])
        .await;
    assert_eq!(intruder.len(), 1, "node 3 does not answer");
    assert_eq!(intruder[0].1.leader, None, "{intruder:?}");
    assert_eq!(intruder[0].1.commit_index, 0, "{intruder:?}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_and_keeps_old_ones() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let server = first.issue("server");
    let mut daemon = start(&tls_args(&server));
    let mut old = Raw::hello(daemon.addr, Some(&client_tls(&first, None)))
        .await
        .expect("a client of the first certificate");

    // A broken file on reload keeps the certificate in force.
    std::fs::write(&server.cert, "not a certificate").expect("break the certificate file");
    daemon.signal(libc::SIGHUP);
    wait_log("bad reload", || daemon.log(), "cannot reload the TLS files").await;
    Raw::hello(daemon.addr, Some(&client_tls(&first, None)))
        .await
        .expect("the old certificate is still in force");

    // A new certificate from another CA, in the same files.
    let renewed = second.issue("server");
    std::fs::copy(&renewed.cert, &server.cert).expect("install the new certificate");
    std::fs::copy(&renewed.key, &server.key).expect("install the new key");
    daemon.signal(libc::SIGHUP);
    wait_log("reload", || daemon.log(), "SIGHUP: reloaded the TLS").await;

    Raw::hello(daemon.addr, Some(&client_tls(&second, None)))
        .await
        .expect("a new connection sees the new certificate");
    let error = Raw::hello(daemon.addr, Some(&client_tls(&first, None)))
        .await
        .err()
        .expect("the old CA no longer verifies the server");
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(
        old.status().await.role,
        "leader",
        "the old connection broke"
    );
    daemon.assert_running();
}

#[tokio::test]
async fn stalled_tls_handshakes_are_dropped_at_the_deadline_while_a_client_is_served() {
    const SILENT: usize = 100;
    const PARTIAL: usize = 100;
    common::raise_fd_limit();
    let pki = Pki::new("ca");
    let server = pki.issue("server");
    let mut args = tls_args(&server);
    args.extend(["--handshake-timeout-ms".into(), "500".into()]);
    let mut daemon = start(&args);
    let tls = client_tls(&pki, None);

    let started = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..SILENT + PARTIAL {
        let mut stream = TcpStream::connect(daemon.addr).await.expect("connect");
        if i >= SILENT {
            // The start of a ClientHello record that promises 512 bytes and sends 4.
            stream
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
                .await
                .expect("partial ClientHello");
        }
        stalled.push(stream);
    }
    // Served while the stalled connections hold their slots.
    let client = Client::connect(vec![daemon.addr.to_string()], options(Some(tls)))
        .await
        .expect("a good client is served during the flood");
    lock_append_read(&client, "flood").await;

    // Every stalled connection is closed by the daemon (EOF or reset), none left open.
    for mut stream in stalled {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(DEADLINE, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a stalled TLS handshake was never closed");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed before the handshake deadline"
    );
    wait_log(
        "flood",
        || daemon.log(),
        "TLS handshake not completed in time",
    )
    .await;
    daemon.assert_running();
}

#[test]
fn a_multi_node_tls_port_without_peer_tls_refuses_to_start() {
    let pki = Pki::new("ca");
    let server = pki.issue("server");
    let (_key_dir, key_args) = common::cluster_key();
    let out = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--peer",
            "1=127.0.0.1:1,2=127.0.0.1:2",
        ])
        .args(tls_args(&server))
        .args(key_args)
        .arg("--data-dir")
        .arg(pki.dir.path().join("data"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run raftlockd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--peer-tls-cert"), "{stderr}");
}

/// With `--auth-tokens`, a `NAME ROLE cert` line makes a verified client certificate whose
/// subject CN is NAME that principal when `Hello` carries no token: its role and grants apply
/// and its sessions are its own. A certificate not listed is refused; a token always decides.
#[tokio::test]
async fn a_client_certificate_proves_its_principal_when_hello_has_no_token() {
    use sha2::{Digest, Sha256};
    let hex = |token: &str| -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let pki = Pki::new("ca");
    let server = pki.issue("server");
    let alice = pki.issue_named("alice", &["localhost"], false, "alice");
    let bob = pki.issue_named("bob", &["localhost"], false, "bob");
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "alice client cert lock:jobs/\nops admin {}\n",
            hex("ops-token")
        ),
    )
    .expect("write the token file");
    let mut args = tls_args(&server);
    args.extend([
        "--tls-client-ca".into(),
        arg(&pki.ca()),
        "--auth-tokens".into(),
        arg(&tokens),
    ]);
    let mut daemon = start(&args);

    let as_alice = Client::connect(
        vec![daemon.addr.to_string()],
        options(Some(client_tls(&pki, Some(&alice)))),
    )
    .await
    .expect("alice's certificate is a principal");
    lock_append_read(&as_alice, "jobs/nightly").await;
    let session = as_alice
        .open_session(Duration::from_secs(10))
        .await
        .expect("alice opens a session");
    let denied = session
        .lock("deploy", LockMode::Exclusive, Wait::TryOnce)
        .await
        .expect_err("a lock outside alice's grants");
    assert!(
        matches!(
            denied,
            raftlock::client::Error::Server {
                code: raftlock::protocol::ErrorCode::PermissionDenied,
                ..
            }
        ),
        "{denied:?}"
    );

    let refused = |result: Result<Raw, String>| match result {
        Ok(_) => panic!("served"),
        Err(why) => why,
    };
    let why = refused(Raw::hello(daemon.addr, Some(&client_tls(&pki, Some(&bob)))).await);
    assert!(
        why.contains("Unauthenticated") && why.contains("bob"),
        "a certificate that names no principal: {why}"
    );
    let why = refused(
        Raw::hello_with(
            daemon.addr,
            Some(&client_tls(&pki, Some(&alice))),
            Some("not-a-token"),
        )
        .await,
    );
    assert!(
        why.contains("Unauthenticated"),
        "a token decides, even beside a listed certificate: {why}"
    );
    let mut ops = Raw::hello_with(
        daemon.addr,
        Some(&client_tls(&pki, Some(&bob))),
        Some("ops-token"),
    )
    .await
    .expect("a known token is served whatever the certificate");
    assert_eq!(ops.status().await.role, "leader");
    daemon.assert_running();
}
