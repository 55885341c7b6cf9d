//! The access policy: the role each request needs, and the names it touches.
//!
//! One `match` over every request type, so a new request cannot be added without deciding who
//! may send it. The answer to a denied request is `PermissionDenied` with this module's
//! message; nothing else happens (the request never reaches the driver).

use super::{Principal, Role};
use crate::protocol::Request;

/// Why a principal may not make a request (the text of the `PermissionDenied` answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(String);

/// What a request needs: a role, and the lock and file names it touches.
struct Needs<'a> {
    role: Role,
    lock: Option<&'a str>,
    file: Option<&'a str>,
}

/// The role a request needs and the names it touches.
fn needs(request: &Request) -> Needs<'_> {
    let (role, lock, file) = match request {
        // The handshake itself is authenticated by its token, not authorized.
        Request::Hello { .. } => (Role::Read, None, None),
        Request::Status { .. } | Request::Sessions { .. } => (Role::Read, None, None),
        Request::Locks { prefix, .. } => (Role::Read, Some(prefix.as_deref().unwrap_or("")), None),
        Request::Read { file, .. } => (Role::Read, None, Some(file.as_str())),
        // A listing is a request for every file under its prefix, as `Locks` is for locks.
        Request::Files { prefix, .. } => (Role::Read, None, Some(prefix.as_deref().unwrap_or(""))),
        Request::OpenSession { .. } | Request::KeepAlive { .. } | Request::CloseSession { .. } => {
            (Role::Client, None, None)
        }
        Request::Acquire { lock, .. }
        | Request::Release { lock, .. }
        | Request::Cancel { lock, .. }
        | Request::Extend { lock, .. } => (Role::Client, Some(lock.as_str()), None),
        Request::Append { lock, file, .. }
        | Request::Truncate { lock, file, .. }
        | Request::Delete { lock, file, .. } => {
            (Role::Client, Some(lock.as_str()), Some(file.as_str()))
        }
        Request::RevokeSession { .. }
        | Request::AddMember { .. }
        | Request::RemoveMember { .. }
        | Request::TransferLeader { .. }
        | Request::SnapshotSave { .. } => (Role::Admin, None, None),
    };
    Needs { role, lock, file }
}

impl Principal {
    /// Whether this principal may make `request`: its role, and its grants for the lock and
    /// file names the request touches. (A `Locks` listing is a request for every lock under
    /// its prefix, so a principal limited to some prefixes must list under one of them.)
    /// Whose session a request uses is checked by the replica, which knows the session.
    pub fn authorize(&self, request: &Request) -> Result<(), Denied> {
        let needs = needs(request);
        if self.role() < needs.role {
            return Err(Denied(format!(
                "{} needs the {} role; principal {:?} has {}",
                request.type_name(),
                needs.role.name(),
                self.name(),
                self.role().name()
            )));
        }
        if let Some(lock) = needs.lock {
            if !self.may_use_lock(lock) {
                return Err(Denied(format!(
                    "principal {:?} may not use lock {lock:?} (not under its lock grants)",
                    self.name()
                )));
            }
        }
        if let Some(file) = needs.file {
            if !self.may_use_file(file) {
                return Err(Denied(format!(
                    "principal {:?} may not use file {file:?} (not under its file grants)",
                    self.name()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LockMode, Role as ConnRole};

    /// One request of every type, touching lock `lock` and file `file`.
    fn every_request(lock: &str, file: &str) -> Vec<Request> {
        let (lock, file) = (lock.to_string(), file.to_string());
        vec![
            Request::Status { id: 1 },
            Request::Sessions { id: 1 },
            Request::Locks {
                id: 1,
                prefix: Some(lock.clone()),
                stale: false,
            },
            Request::Read {
                id: 1,
                file: file.clone(),
                offset: 0,
                len: 1,
                stale: false,
            },
            Request::OpenSession {
                id: 1,
                nonce: 1,
                ttl_ms: 10_000,
                owner: None,
            },
            Request::KeepAlive {
                id: 1,
                session: 1,
                token: 1,
            },
            Request::CloseSession {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
            },
            Request::Acquire {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                lock: lock.clone(),
                mode: LockMode::Exclusive,
                wait_ms: None,
                hold_ms: None,
            },
            Request::Release {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                lock: lock.clone(),
            },
            Request::Cancel {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                lock: lock.clone(),
                acquire_seq: 1,
            },
            Request::Extend {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                lock: lock.clone(),
                fence: 1,
                hold_ms: 1,
            },
            Request::Append {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                file: file.clone(),
                lock: lock.clone(),
                fence: 1,
                data: b"x".to_vec(),
            },
            Request::Files {
                id: 1,
                prefix: Some(file.clone()),
                stale: false,
            },
            Request::Truncate {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                file: file.clone(),
                lock: lock.clone(),
                fence: 1,
                size: 0,
            },
            Request::Delete {
                id: 1,
                session: 1,
                token: 1,
                seq: 1,
                file,
                lock,
                fence: 1,
            },
            Request::RevokeSession {
                id: 1,
                session_id: 1,
                force: false,
            },
            Request::AddMember {
                id: 1,
                node_id: 4,
                addr: "127.0.0.1:1".into(),
            },
            Request::RemoveMember { id: 1, node_id: 4 },
            Request::TransferLeader {
                id: 1,
                node_id: None,
            },
            Request::SnapshotSave { id: 1 },
        ]
    }

    #[test]
    fn each_role_may_make_exactly_its_requests() {
        // (type, least role) for every request type but Hello.
        let table = [
            ("Status", Role::Read),
            ("Sessions", Role::Read),
            ("Locks", Role::Read),
            ("Read", Role::Read),
            ("OpenSession", Role::Client),
            ("KeepAlive", Role::Client),
            ("CloseSession", Role::Client),
            ("Acquire", Role::Client),
            ("Release", Role::Client),
            ("Cancel", Role::Client),
            ("Extend", Role::Client),
            ("Append", Role::Client),
            ("Files", Role::Read),
            ("Truncate", Role::Client),
            ("Delete", Role::Client),
            ("RevokeSession", Role::Admin),
            ("AddMember", Role::Admin),
            ("RemoveMember", Role::Admin),
            ("TransferLeader", Role::Admin),
            ("SnapshotSave", Role::Admin),
        ];
        let requests = every_request("a", "f");
        assert_eq!(requests.len(), table.len());
        for role in [Role::Read, Role::Client, Role::Admin] {
            let principal = Principal::new("p", role, vec![], vec![]);
            for (request, (name, least)) in requests.iter().zip(table) {
                assert_eq!(request.type_name(), name);
                let allowed = principal.authorize(request).is_ok();
                assert_eq!(allowed, role >= least, "{name} by {}", role.name());
            }
        }
    }

    #[test]
    fn grants_limit_lock_and_file_names_but_not_an_admin() {
        let ci = Principal::new(
            "ci",
            Role::Client,
            vec!["build/".into()],
            vec!["logs/".into()],
        );
        for request in every_request("build/cache", "logs/ci") {
            if needs(&request).role <= Role::Client {
                assert!(ci.authorize(&request).is_ok(), "{request:?}");
            }
        }
        let denied: Vec<&str> = every_request("deploy", "logs/ci")
            .iter()
            .filter(|r| needs(r).role <= Role::Client && ci.authorize(r).is_err())
            .map(Request::type_name)
            .collect();
        assert_eq!(
            denied,
            ["Locks", "Acquire", "Release", "Cancel", "Extend", "Append", "Truncate", "Delete"]
        );
        let denied: Vec<&str> = every_request("build/cache", "etc/passwd")
            .iter()
            .filter(|r| needs(r).role <= Role::Client && ci.authorize(r).is_err())
            .map(Request::type_name)
            .collect();
        assert_eq!(denied, ["Read", "Append", "Files", "Truncate", "Delete"]);
        // A listing of every lock is a listing beyond the grant.
        let all = Request::Locks {
            id: 1,
            prefix: None,
            stale: false,
        };
        assert!(ci.authorize(&all).is_err());
        let admin = Principal::new("root", Role::Admin, vec!["x/".into()], vec!["x/".into()]);
        for request in every_request("deploy", "etc/passwd") {
            assert!(admin.authorize(&request).is_ok(), "{request:?}");
        }
        let hello = Request::Hello {
            version: 1,
            role: ConnRole::Client,
            token: None,
        };
        assert!(ci.authorize(&hello).is_ok());
    }

    #[test]
    fn sessions_belong_to_their_opener_or_an_admin() {
        let a = Principal::new("a", Role::Client, vec![], vec![]);
        let admin = Principal::new("root", Role::Admin, vec![], vec![]);
        assert!(a.may_use_session(Some("a")));
        assert!(!a.may_use_session(Some("b")));
        assert!(!a.may_use_session(None));
        assert!(admin.may_use_session(Some("a")));
        assert!(admin.may_use_session(None));
    }
}
