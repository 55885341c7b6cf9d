//! Output helpers: stdout lines, padded tables, and the `--json` shapes of server answers.

use super::json::Json;
use crate::lockspace::LockMode;
use crate::protocol::{LockState, MemberStatus, SessionSummary, StatusInfo};

/// Prints one line (JSON or text) on stdout.
pub(super) fn say(text: impl std::fmt::Display) {
    println!("{text}");
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
                            ("held_ms", Json::opt_uint(h.held_ms)),
                            ("hold_left_ms", Json::opt_uint(h.hold_left_ms)),
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
                            ("waited_ms", Json::opt_uint(w.waited_ms)),
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
