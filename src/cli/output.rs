//! Output helpers: stdout lines, padded tables, and the `--json` shapes of server answers.

use std::io::{self, Write as _};
use std::sync::Mutex;

use super::json::Json;
use crate::lockspace::LockMode;
use crate::protocol::{LockState, MemberStatus, SessionSummary, StatusInfo};

/// The first error writing stdout, if any: once set, nothing more is written (a full disk
/// or a closed pipe will not take the rest), and [`finish`] reports it.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

fn stdout_error() -> std::sync::MutexGuard<'static, Option<io::Error>> {
    // Only this module locks it, never across a panic; recover the value anyway.
    STDOUT_ERROR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Prints one line (JSON or text) on stdout. Unlike `println!` it never panics: a failed
/// write is kept for [`finish`], which turns it into the command's error.
pub(super) fn say(text: impl std::fmt::Display) {
    let mut error = stdout_error();
    if error.is_none() {
        if let Err(e) = writeln!(io::stdout().lock(), "{text}") {
            *error = Some(e);
        }
    }
}

/// Flushes stdout and returns the first error writing it, if any.
pub(super) fn finish() -> io::Result<()> {
    let mut error = stdout_error();
    match error.take() {
        Some(e) => Err(e),
        None => io::stdout().lock().flush(),
    }
}

/// Prints rows under a header, columns padded to their widest cell.
pub(super) fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        say(text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Quotes `s` for a POSIX shell.
pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub(super) fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}

pub(super) fn kind(member: &MemberStatus) -> &'static str {
    if member.voter {
        "voter"
    } else {
        "learner"
    }
}

pub(super) fn lock_json(lock: &LockState) -> Json {
    Json::object([
        ("name", Json::str(&lock.name)),
        ("mode", Json::opt_str(lock.mode.map(mode_name))),
        (
            "holders",
            Json::Array(
                lock.holders
                    .iter()
                    .map(|h| {
                        Json::object([
                            ("session", Json::Uint(h.session)),
                            ("fence", Json::Uint(h.fence)),
                            ("owner", Json::opt_str(h.owner.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "waiters",
            Json::Array(
                lock.waiters
                    .iter()
                    .map(|w| {
                        Json::object([
                            ("session", Json::Uint(w.session)),
                            ("seq", Json::Uint(w.seq)),
                            ("mode", Json::str(mode_name(w.mode))),
                            ("owner", Json::opt_str(w.owner.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

/// `raftlock sessions --json`: one live session.
pub(super) fn session_json(session: &SessionSummary) -> Json {
    Json::object([
        ("session", Json::Uint(session.session)),
        ("owner", Json::opt_str(session.owner.clone())),
        ("ttl_ms", Json::Uint(session.ttl_ms)),
        ("since_renewal_ms", Json::opt_uint(session.since_renewal_ms)),
    ])
}

pub(super) fn member_json(member: &MemberStatus) -> Json {
    Json::object([
        ("node_id", Json::Uint(member.node_id)),
        ("addr", Json::str(&member.addr)),
        ("voter", Json::Bool(member.voter)),
        ("match_index", Json::opt_uint(member.match_index)),
    ])
}

pub(super) fn status_json(status: &StatusInfo) -> Json {
    Json::object([
        ("node_id", Json::Uint(status.node_id)),
        ("role", Json::str(&status.role)),
        ("term", Json::Uint(status.term)),
        ("leader", Json::opt_uint(status.leader)),
        ("leader_addr", Json::opt_str(status.leader_addr.clone())),
        ("commit_index", Json::Uint(status.commit_index)),
        ("applied_index", Json::Uint(status.applied_index)),
        ("last_log_index", Json::Uint(status.last_log_index)),
        ("sessions", Json::Uint(status.sessions)),
        ("locks", Json::Uint(status.locks)),
        (
            "members",
            Json::Array(
                status
                    .members
                    .iter()
                    .map(|m| {
                        Json::object([
                            ("node_id", Json::Uint(m.node_id)),
                            ("addr", Json::str(&m.addr)),
                            ("voter", Json::Bool(m.voter)),
                            ("match_index", Json::opt_uint(m.match_index)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("build-cache"), "build-cache");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
