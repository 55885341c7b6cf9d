//! TLS for client connections and peer links, with rustls (the `ring` provider).
//!
//! A raftlock port speaks either plain TCP or TLS 1.2/1.3 from its first byte, then the same
//! length-prefixed MessagePack frames (protocol.md, "Connecting with TLS"). This module is the
//! part both sides share, so the client library has it without the daemon:
//!
//! - `files.rs`: reading PEM certificates, private keys and CA bundles, with errors that name
//!   the file;
//! - `stream.rs`: [`Stream`], a TCP connection that is plain or TLS, which the connection code
//!   runs its frames over (one `match` per read or write: plain TCP costs nothing measurable);
//! - `client.rs`: [`ClientTls`], the dialing side's configuration (trusted CAs, an optional
//!   client certificate, the server name to verify), used by the client library, the CLI and
//!   the daemon's outbound peer links.
//!
//! The daemon's side (the listener's certificate, client-certificate verification, the peer CA
//! and SIGHUP reload) is `server::tls`.

mod client;
mod files;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;

pub use client::{host_of, ClientTls};
pub use files::{read_certs, read_key, read_roots};
pub use stream::Stream;
/// The rustls crate, re-exported for callers that build their own configurations.
pub use tokio_rustls::rustls;

/// The cryptography every configuration here uses: rustls' `ring` provider, chosen explicitly
/// so that no process-wide default has to be installed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS configuration could not be built. Each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or malformed.
    #[error("cannot read the {what} file {path}")]
    Pem {
        /// What the file should hold ("certificate", "private key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file holds none of what it should.
    #[error("the {what} file {path} holds no {what} (expected a PEM file)")]
    Empty {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA file holds a certificate that cannot be a trust anchor.
    #[error("the CA file {path} holds an unusable certificate")]
    BadRoot {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the combination (for example a key that does not match the certificate).
    #[error("the {what} is not usable")]
    Config {
        /// Which configuration ("server certificate and key", "client certificate and key").
        what: &'static str,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA file.
    #[error("cannot verify client certificates with the CA file {path}")]
    Verifier {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The name to verify the server's certificate against is neither a DNS name nor an IP
    /// address.
    #[error("{name:?} is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName {
        /// The name.
        name: String,
    },
}
