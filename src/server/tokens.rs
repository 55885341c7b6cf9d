//! The daemon's token file (`--auth-tokens`): read at start, swapped on SIGHUP.
//!
//! The table itself ([`TokenTable`]: digests, principals, grants) and the policy live in
//! [`crate::auth`]; this is the daemon's handle on the file. Connections look a token (or
//! their client certificate's name) up at `Hello` and keep the principal they found for the connection's life, so a reload applies
//! to new connections: an existing connection keeps its principal until it closes (remove a
//! principal's access at once by restarting the node, or by revoking its sessions). A file
//! that does not parse on reload is refused and the table in force stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::auth::{Principal, TokenError, TokenTable};

/// A token file that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read the token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("the token file {path} is not valid")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong with it.
        #[source]
        source: TokenError,
    },
}

/// The token file and the table read from it last.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    table: RwLock<Arc<TokenTable>>,
}

impl TokenFile {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        Ok(TokenFile {
            path: path.to_path_buf(),
            table: RwLock::new(Arc::new(read(path)?)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many principals the table in force holds.
    pub fn principals(&self) -> usize {
        self.current().len()
    }

    /// Who a new client connection speaks for: the principal of its `Hello` token when it
    /// sent one (an unknown token is `None`, whatever certificate came with it), otherwise the
    /// principal listed for the subject common name of its verified TLS client certificate;
    /// `None` when neither proves a principal.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        certificate_name: Option<&str>,
    ) -> Option<Principal> {
        let table = self.current();
        match token {
            Some(token) => table.principal(token),
            None => table.certificate_principal(certificate_name?),
        }
    }

    /// Reads the file again; on success the new table is in force (for new connections) and
    /// its size is returned; on failure the old one stays.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let table = read(&self.path)?;
        let principals = table.len();
        *self
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(table);
        Ok(principals)
    }

    fn current(&self) -> Arc<TokenTable> {
        // A writer that panicked left a whole table behind (the swap is one assignment).
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

fn read(path: &Path) -> Result<TokenTable, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    TokenTable::parse(&text).map_err(|source| TokenFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Reloads the token file on every SIGHUP, logging one line each time, until `closing` is
/// cancelled. (The log filter's reload listens to the same signal on its own.)
pub async fn reload_on_hangup(tokens: Arc<TokenFile>, closing: CancellationToken) {
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP; the token file will not be reloaded");
        return;
    };
    loop {
        tokio::select! {
            _ = closing.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        match tokens.reload() {
            Ok(principals) => tracing::info!(
                file = %tokens.path().display(),
                principals,
                "SIGHUP: reloaded the token file (new connections use it)"
            ),
            Err(error) => tracing::warn!(
                error = %crate::error_chain(&error),
                principals = tokens.principals(),
                "SIGHUP: cannot reload the token file; keeping the one in force"
            ),
        }
    }
}
