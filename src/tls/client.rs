//! [`ClientTls`]: how a dialer (the client library, the CLI, a node's outbound peer link)
//! speaks TLS: the CAs it trusts, the certificate it presents if any, and the name it
//! verifies the server's certificate against.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use super::{provider, read_certs, read_key, read_roots, Stream, TlsError};

/// A dialer's TLS settings. Cheap to clone (the rustls configuration is shared).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field(
                "client_cert",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CAs of the PEM file `ca` and presents `identity` (certificate chain file,
    /// private key file) when the server asks for a client certificate.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let roots = read_roots(ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                what: "TLS protocol versions",
                source,
            })?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|source| TlsError::Config {
                    what: "client certificate and key",
                    source,
                })?,
        };
        Ok(ClientTls::new(Arc::new(config)))
    }

    /// Wraps a rustls configuration built elsewhere.
    pub fn new(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            server_name: None,
        }
    }

    /// Verifies every server's certificate against `name` instead of the host part of the
    /// address dialed (for servers reached by an address their certificate does not name).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Result<ClientTls, TlsError> {
        let name = name.into();
        parse_name(&name)?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The name the certificate of the server at `addr` must carry.
    pub fn server_name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        parse_name(self.server_name.as_deref().unwrap_or_else(|| host_of(addr)))
    }

    /// Runs the TLS handshake on `tcp`, dialed at `addr`. The caller bounds it with its own
    /// deadline. A refused certificate is an `InvalidData` error naming the reason.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<Stream> {
        let name = self
            .server_name_for(addr)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("TLS handshake with {addr} failed: {error}"),
                )
            })?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }
}

fn parse_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName {
        name: name.to_string(),
    })
}

/// The host part of `host:port` (`[::1]:7400` gives `::1`); the whole text when it has no port.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host;
        }
    }
    match addr.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_server_name_is_the_host_part_of_the_address() {
        assert_eq!(host_of("db1.example:7400"), "db1.example");
        assert_eq!(host_of("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7400"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
