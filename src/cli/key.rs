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

    fn bytes(&self) -> &[u8] {
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
