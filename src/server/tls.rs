//! The daemon's TLS: the listener's certificate, client-certificate verification, peer mutual
//! TLS, and SIGHUP reload of every file.
//!
//! # One port, one certificate
//!
//! Clients and peers share the listening port (the first frame decides which a connection
//! is), and the TLS handshake comes before that frame. So a port is either plain or TLS for
//! everyone, and the settings combine like this:
//!
//! - the listener presents `--tls-cert`/`--tls-key`; a node with only peer TLS presents its
//!   `--peer-tls-cert`/`--peer-tls-key` instead (its port is then TLS for clients too);
//! - client certificates are *required* when `--tls-client-ca` is set, and verified against it
//!   (or the peer CA, so that nodes still get in); without it they are optional, and a
//!   presented one must verify against the peer CA;
//! - a connection that says it is a peer is admitted only if its certificate verifies against
//!   `--peer-tls-ca` alone (a client certificate from another CA does not make a peer);
//! - a node dials its peers over TLS, presenting `--peer-tls-cert` as its client certificate
//!   and verifying the other node's listener certificate against `--peer-tls-ca` (for the host
//!   part of the peer's address). So the peer CA must also trust the listener certificates:
//!   the simplest is one CA for the cluster, or `--tls-cert` equal to `--peer-tls-cert`.
//!
//! # Reload
//!
//! [`ServerTls::reload`] reads every file again and swaps the whole set at once. A connection
//! keeps the configuration it was accepted (or dialed) with; new ones get the new set. A file
//! that does not load leaves the old set in force.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls_pki_types::UnixTime;
use tokio::net::TcpStream;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::tls::{provider, read_certs, read_key, read_roots, ClientTls, Stream, TlsError};

/// The files a node's TLS is configured with (each path as given on the command line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--tls-cert` and `--tls-key`: the listener's certificate chain and private key.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// `--tls-client-ca`: clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
    /// `--peer-tls-*`: mutual TLS between nodes.
    pub peer: Option<PeerTlsFiles>,
}

/// The files of peer mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsFiles {
    /// `--peer-tls-cert`: the certificate chain this node presents to other nodes.
    pub cert: PathBuf,
    /// `--peer-tls-key`: its private key.
    pub key: PathBuf,
    /// `--peer-tls-ca`: the CA every node's certificate must chain to.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// True when any TLS is configured (the port then speaks TLS).
    pub fn any(&self) -> bool {
        self.cert.is_some() || self.peer.is_some()
    }
}

/// One consistent set of configurations built from the files.
struct Loaded {
    acceptor: TlsAcceptor,
    peer: Option<PeerLoaded>,
}

struct PeerLoaded {
    /// How this node dials its peers.
    dial: ClientTls,
    /// Verifies that a connection claiming to be a peer presented a peer-CA certificate.
    verifier: Arc<dyn ClientCertVerifier>,
}

/// A node's TLS state, shared by the listener, the peer transport and the SIGHUP handler.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads every file; `None` when `files` configures no TLS.
    pub fn load(files: TlsFiles) -> Result<Option<Arc<ServerTls>>, TlsError> {
        if !files.any() {
            return Ok(None);
        }
        let loaded = build(&files)?;
        Ok(Some(Arc::new(ServerTls {
            files,
            current: RwLock::new(Arc::new(loaded)),
        })))
    }

    /// Reads every file again and puts the new set in force for new connections; on an error
    /// the old set stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(build(&self.files)?);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded;
        Ok(())
    }

    /// The files, as configured.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// True when peers are authenticated by their TLS certificates.
    pub fn peer_tls(&self) -> bool {
        self.files.peer.is_some()
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs the server side of the TLS handshake on an accepted connection, with the
    /// configuration in force now. The caller bounds it with the handshake deadline.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let acceptor = self.current().acceptor.clone();
        let tls = acceptor.accept(tcp).await?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }

    /// How this node dials its peers, if peer TLS is configured.
    pub fn peer_dialer(&self) -> Option<ClientTls> {
        self.current().peer.as_ref().map(|peer| peer.dial.clone())
    }

    /// Checks that `stream` is a TLS connection whose client certificate chains to the peer
    /// CA. `Err` says why not (also when peer TLS is not configured).
    pub fn verify_peer(&self, stream: &Stream) -> Result<(), String> {
        let current = self.current();
        let Some(peer) = &current.peer else {
            return Err("peer TLS is not configured".into());
        };
        let Some((leaf, chain)) = stream.peer_certificates().and_then(|c| c.split_first()) else {
            return Err("the dialer presented no TLS certificate".into());
        };
        peer.verifier
            .verify_client_cert(leaf, chain, UnixTime::now())
            .map(|_| ())
            .map_err(|error| format!("the dialer's certificate is not from --peer-tls-ca: {error}"))
    }
}

/// The subject common name (CN) of the client certificate a TLS connection presented, which
/// the handshake has verified (rustls keeps only verified chains); `None` on a plain
/// connection, without a certificate, or when the leaf has no UTF-8 CN. This is the name a
/// `NAME ROLE cert` line of the token file matches.
pub fn client_common_name(stream: &Stream) -> Option<String> {
    let leaf = stream.peer_certificates()?.first()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let name = certificate.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_string)
}

/// Builds the whole set from the files.
fn build(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let peer_roots = match &files.peer {
        Some(peer) => Some((read_roots(&peer.ca)?, peer.ca.clone())),
        None => None,
    };
    let peer = match (&files.peer, &peer_roots) {
        (Some(peer), Some((roots, ca))) => {
            let dial = ClientTls::from_files(&peer.ca, Some((&peer.cert, &peer.key)))?;
            let verifier = verifier(roots.clone(), ca, false)?;
            Some(PeerLoaded { dial, verifier })
        }
        _ => None,
    };
    let (cert, key) = match (&files.cert, &files.peer) {
        (Some((cert, key)), _) | (None, Some(PeerTlsFiles { cert, key, .. })) => (cert, key),
        (None, None) => unreachable!("ServerTls::load builds only when TLS is configured"),
    };
    let chain = read_certs(cert)?;
    let key = read_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "TLS protocol versions",
            source,
        })?;
    let builder = match (&files.client_ca, peer_roots) {
        (Some(client_ca), peer_roots) => {
            let mut roots = read_roots(client_ca)?;
            if let Some((peer_roots, _)) = peer_roots {
                roots.roots.extend(peer_roots.roots);
            }
            builder.with_client_cert_verifier(verifier(roots, client_ca, false)?)
        }
        (None, Some((peer_roots, ca))) => {
            builder.with_client_cert_verifier(verifier(peer_roots, &ca, true)?)
        }
        (None, None) => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            what: "server certificate and key",
            source,
        })?;
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        peer,
    })
}

/// A client-certificate verifier over `roots` (from the file `path`, for errors); `optional`
/// lets clients without a certificate in.
fn verifier(
    roots: RootCertStore,
    path: &std::path::Path,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|source| TlsError::Verifier {
        path: path.to_path_buf(),
        source,
    })
}
