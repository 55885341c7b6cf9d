//! Client authentication and access control: who a connection speaks for, and what it may do.
//!
//! A **principal** is a name with a [`Role`] and optional name-prefix grants. A client proves
//! which principal it is by presenting a secret token in `Hello`, or over TLS by a client
//! certificate whose subject common name the file lists; the daemon keeps only the tokens'
//! SHA-256 digests, in a file it reads at start and again on SIGHUP ([`TokenTable::parse`]). With no token file, authentication is off and every connection may
//! do everything, as before.
//!
//! The roles nest: `read` ⊂ `client` ⊂ `admin`.
//! - `read`: `Status`, `Locks`, `Sessions`, `Read` and `Files`;
//! - `client`: the above, and sessions, locks and appends;
//! - `admin`: the above, and membership, leader transfer and session revocation; an admin may
//!   also use or close any session.
//!
//! Grants narrow a `read` or `client` principal to lock names and file names that start with
//! one of its prefixes (`lock:build/`, `file:logs/`); a principal with no grant of a kind may
//! use every name of that kind. [`Principal::authorize`] is the whole policy for one request,
//! a pure function checked on the connection before the request reaches the driver, so a
//! denied request changes nothing. Which principal owns a *session* is the one thing a request
//! cannot show by itself: the replica records the opener's name in the replicated
//! `OpenSession` and refuses the session to any other non-admin principal.

mod policy;
mod tokens;

pub use policy::Denied;
pub use tokens::{TokenError, TokenTable};

use std::sync::Arc;

/// What a principal may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Status, listings and reads.
    Read,
    /// Sessions, locks and appends, and everything `Read` may.
    Client,
    /// Membership, leader transfer, session revocation, any session, and everything else.
    Admin,
}

impl Role {
    /// The role's name as the token file and error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated identity: its name, role and grants. Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(Arc<Grant>);

#[derive(Debug, PartialEq, Eq)]
struct Grant {
    name: String,
    role: Role,
    /// Lock-name prefixes it may use; empty for every lock.
    locks: Vec<String>,
    /// File-name prefixes it may use; empty for every file.
    files: Vec<String>,
}

impl Principal {
    /// A principal named `name` with `role`, limited to the given lock and file name prefixes
    /// (empty: no limit of that kind).
    pub fn new(name: &str, role: Role, locks: Vec<String>, files: Vec<String>) -> Principal {
        Principal(Arc::new(Grant {
            name: name.to_string(),
            role,
            locks,
            files,
        }))
    }

    /// Its name, recorded with the sessions it opens.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Whether it is an administrator (who may use any session).
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// Whether it may use the lock `name`.
    pub fn may_use_lock(&self, name: &str) -> bool {
        self.is_admin() || covered(&self.0.locks, name)
    }

    /// Whether it may use the file `name`.
    pub fn may_use_file(&self, name: &str) -> bool {
        self.is_admin() || covered(&self.0.files, name)
    }

    /// Whether it may use a session opened by `owner` (the principal name recorded with the
    /// session; `None` for a session opened while authentication was off, which only an
    /// admin may use).
    pub fn may_use_session(&self, owner: Option<&str>) -> bool {
        self.is_admin() || owner == Some(self.name())
    }
}

/// True when `prefixes` is empty or `name` starts with one of them.
fn covered(prefixes: &[String], name: &str) -> bool {
    prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()))
}
