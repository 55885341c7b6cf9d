//! The cluster key: the shared secret with which peers prove, in the handshake, that they
//! belong to the cluster (protocol.md §16.2).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A shared secret that proves cluster membership in the peer handshake. Its bytes never appear
/// in logs (`Debug` prints its length only).
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

impl ClusterKey {
    /// Shortest accepted key, in bytes. 16 random bytes (or a longer passphrase) resist guessing.
    pub const MIN_LEN: usize = 16;

    /// A key from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<ClusterKey, KeyError> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            });
        }
        Ok(ClusterKey(bytes.into()))
    }

    /// Reads a key file: its whole content, without trailing ASCII whitespace (so a key written
    /// with `echo` or an editor's final newline works), at least [`ClusterKey::MIN_LEN`] bytes.
    /// Every node of the cluster must use the same file content.
    pub fn from_file(path: &Path) -> Result<ClusterKey, KeyError> {
        let mut bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        ClusterKey::new(bytes)
    }

    /// The key's bytes, the HMAC key of the handshake.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({} bytes)", self.0.len())
    }
}

/// Why a cluster key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read the cluster key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The key is too short to be a secret.
    #[error("the cluster key is {len} bytes; at least {min} are required")]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_lose_only_trailing_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b" secret with spaces inside \r\n\n").unwrap();
        let key = ClusterKey::from_file(&path).unwrap();
        assert_eq!(key.bytes(), b" secret with spaces inside");
        std::fs::write(&path, b"short\n").unwrap();
        assert!(matches!(
            ClusterKey::from_file(&path),
            Err(KeyError::TooShort { len: 5, min: 16 })
        ));
    }
}
