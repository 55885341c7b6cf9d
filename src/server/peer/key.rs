//! The cluster key: the shared secret with which peers prove, in the handshake, that they
//! belong to the cluster (protocol.md §16.2).
//!
//! A key is whatever bytes its file holds (minus trailing whitespace), so an operator can make
//! one with any tool (`openssl rand -hex 32 > cluster.key`). [`ClusterKey::create_file`] makes
//! one the same way for `raftlockd dev-cluster` and the local benchmark: 32 random bytes from
//! the operating system, written as 64 hex digits to a new file only its owner can read.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;

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

    /// Random bytes in a generated key (written as twice as many hex digits).
    pub const GENERATED_LEN: usize = 32;

    /// Creates a new key file at `path` (which must not exist yet) holding a fresh random key
    /// as hex digits and a newline, readable and writable by its owner only (mode 0600), and
    /// returns the key as [`ClusterKey::from_file`] will read it back.
    pub fn create_file(path: &Path) -> Result<ClusterKey, KeyError> {
        let mut secret = [0u8; Self::GENERATED_LEN];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let write = || -> io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(hex.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        };
        write().map_err(|source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterKey::new(hex.into_bytes())
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
    /// A new key file cannot be created (it exists already, or the directory is not writable).
    #[error("cannot create the cluster key file {path}")]
    Create {
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

    #[test]
    fn created_keys_are_private_random_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let key_a = ClusterKey::create_file(&a).unwrap();
        let key_b = ClusterKey::create_file(&b).unwrap();
        assert_eq!(key_a.bytes().len(), 2 * ClusterKey::GENERATED_LEN);
        assert!(key_a.bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(key_a.bytes(), key_b.bytes(), "two keys are never the same");
        assert_eq!(ClusterKey::from_file(&a).unwrap().bytes(), key_a.bytes());
        let mode = std::fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            matches!(ClusterKey::create_file(&a), Err(KeyError::Create { .. })),
            "an existing key is never overwritten"
        );
        assert_eq!(ClusterKey::from_file(&a).unwrap().bytes(), key_a.bytes());
    }
}
