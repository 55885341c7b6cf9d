//! The token file: which secret token stands for which principal.
//!
//! One principal per line, fields separated by whitespace, `#` starts a comment line:
//!
//! ```text
//! # name   role    sha256 of the token, hex                                           grants
//! ops      admin   5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! ci       client  a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3  lock:build/ file:build/
//! grafana  read    b3a8e0e1f9ab1bfe3a36f231f676f78bb30a519d2b21e6c530c0eee8ebb4a5d0
//! ```
//!
//! Only digests are stored, so the file reveals no token; make one with
//! `printf %s "$TOKEN" | sha256sum`. A client presents the token itself in `Hello`, and the
//! daemon looks up its digest. Names and digests must be unique; any error in the file names
//! its line, and the daemon refuses to start (or, on SIGHUP, keeps the table it has).
//!
//! A principal may instead be proved by a TLS client certificate: the word `cert` in place of
//! the digest says that a verified client certificate whose subject common name (CN) is NAME
//! stands for this principal, as etcd does with `--client-cert-auth`:
//!
//! ```text
//! alice    client  cert  lock:jobs/
//! ```
//!
//! (so a certificate name with white space in it cannot be listed).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{Principal, Role};

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A line does not parse.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The principals of a token file, by their token's digest or their certificate's name.
#[derive(Debug, Default)]
pub struct TokenTable {
    by_digest: HashMap<[u8; 32], Principal>,
    by_certificate: HashMap<String, Principal>,
}

impl TokenTable {
    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<TokenTable, TokenError> {
        let mut by_digest = HashMap::new();
        let mut by_certificate = HashMap::new();
        let mut names = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let fail = |reason: String| TokenError::Line { line, reason };
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            let mut fields = raw.split_whitespace();
            let (Some(name), Some(role), Some(digest)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(fail(
                    "expected NAME ROLE SHA256|cert [lock:PREFIX|file:PREFIX ...]".into(),
                ));
            };
            let role = match role {
                "admin" => Role::Admin,
                "client" => Role::Client,
                "read" => Role::Read,
                other => {
                    return Err(fail(format!(
                        "unknown role {other:?} (admin, client or read)"
                    )))
                }
            };
            let digest = match digest {
                "cert" => None,
                hex => Some(parse_digest(hex).ok_or_else(|| {
                    fail(
                        "the digest is not 64 hex digits (printf %s \"$TOKEN\" | sha256sum) \
                         or the word cert"
                            .into(),
                    )
                })?),
            };
            let (mut locks, mut files) = (Vec::new(), Vec::new());
            for grant in fields {
                match grant.split_once(':') {
                    Some(("lock", prefix)) if !prefix.is_empty() => locks.push(prefix.to_string()),
                    Some(("file", prefix)) if !prefix.is_empty() => files.push(prefix.to_string()),
                    _ => {
                        return Err(fail(format!(
                            "grant {grant:?} is not lock:PREFIX or file:PREFIX"
                        )))
                    }
                }
            }
            if let Some(first) = names.insert(name.to_string(), line) {
                return Err(fail(format!(
                    "principal {name:?} is already on line {first}"
                )));
            }
            let principal = Principal::new(name, role, locks, files);
            match digest {
                // Names are unique (above), so a certificate name is never listed twice.
                None => {
                    by_certificate.insert(name.to_string(), principal);
                }
                Some(digest) => {
                    if by_digest.insert(digest, principal).is_some() {
                        return Err(fail("the same token digest is on an earlier line".into()));
                    }
                }
            }
        }
        Ok(TokenTable {
            by_digest,
            by_certificate,
        })
    }

    /// The principal whose token this is, if any.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_digest.get(&digest).cloned()
    }

    /// The principal a verified client certificate with this subject common name stands for,
    /// if a `NAME ROLE cert` line lists it.
    pub fn certificate_principal(&self, common_name: &str) -> Option<Principal> {
        self.by_certificate.get(common_name).cloned()
    }

    /// How many principals it holds.
    pub fn len(&self) -> usize {
        self.by_digest.len() + self.by_certificate.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 64 hex digits as 32 bytes.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_token_finds_its_principal_by_digest() {
        let text = format!(
            "# comment\n\nops admin {}\nci client {} lock:build/ file:build/ lock:ci/\n",
            digest("s3cret"),
            digest("ci-token")
        );
        let table = TokenTable::parse(&text).expect("parse");
        assert_eq!(table.len(), 2);
        let ops = table.principal("s3cret").expect("ops");
        assert_eq!((ops.name(), ops.role()), ("ops", Role::Admin));
        let ci = table.principal("ci-token").expect("ci");
        assert_eq!(ci.role(), Role::Client);
        assert!(ci.may_use_lock("ci/x") && ci.may_use_lock("build/y") && !ci.may_use_lock("x"));
        assert!(ci.may_use_file("build/log") && !ci.may_use_file("other"));
        assert!(table.principal("wrong").is_none());
        assert!(table.principal("").is_none());
        // The file holds digests: the digest itself is not a token.
        assert!(table.principal(&digest("s3cret")).is_none());
    }

    /// A `cert` line names a certificate's CN; it is never a token, and names stay unique
    /// across both kinds.
    #[test]
    fn a_cert_line_finds_its_principal_by_certificate_name() {
        let text = format!(
            "alice client cert lock:jobs/\nops admin {}\n",
            digest("s3cret")
        );
        let table = TokenTable::parse(&text).expect("parse");
        assert_eq!(table.len(), 2);
        let alice = table.certificate_principal("alice").expect("alice");
        assert_eq!((alice.name(), alice.role()), ("alice", Role::Client));
        assert!(alice.may_use_lock("jobs/1") && !alice.may_use_lock("other"));
        assert!(
            table.certificate_principal("ops").is_none(),
            "ops has a token, not a cert"
        );
        assert!(table.principal("cert").is_none() && table.principal("alice").is_none());
        assert!(
            table.certificate_principal("Alice").is_none(),
            "names match exactly"
        );
        let twice = TokenTable::parse("alice client cert\nalice read cert\n").expect_err("dup");
        assert!(twice.to_string().contains("already on line 1"), "{twice}");
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let d = digest("t");
        let cases = [
            ("ops admin\n".to_string(), "expected NAME ROLE"),
            (format!("ops root {d}\n"), "unknown role"),
            (format!("ops admin {}\n", &d[..63]), "64 hex digits"),
            (format!("ops admin {}zz\n", &d[..62]), "64 hex digits"),
            (format!("ops admin {d} locks:x\n"), "is not lock:PREFIX"),
            (format!("ops admin {d} lock:\n"), "is not lock:PREFIX"),
            (
                format!("a admin {d}\na read {}\n", digest("u")),
                "already on line 1",
            ),
            (format!("a admin {d}\nb read {d}\n"), "same token digest"),
        ];
        for (text, expected) in cases {
            let error = TokenTable::parse(&text).expect_err(&text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.starts_with("line "), "{error}");
        }
    }
}
