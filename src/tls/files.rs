//! Reading the PEM files TLS is configured with: certificate chains, private keys (PKCS#8,
//! PKCS#1 or SEC1) and CA bundles. Every error names the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

use super::TlsError;

/// The certificates of a PEM file, leaf first (the order a chain is presented in).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate";
    let pem = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "private key",
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            what: "private key",
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The trust anchors of a CA bundle (one or more PEM certificates).
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = read_certs(path).map_err(|error| match error {
        TlsError::Pem { path, source, .. } => TlsError::Pem {
            what: "CA",
            path,
            source,
        },
        TlsError::Empty { path, .. } => TlsError::Empty { what: "CA", path },
        other => other,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::BadRoot {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}
