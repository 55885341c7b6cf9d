//! Output helpers: stdout lines (text or JSON) that never panic, and padded tables.

use std::io::{self, Write as _};
use std::sync::Mutex;

use crate::protocol::LockMode;
use crate::protocol::MemberStatus;

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

/// Prints `value` as one line of JSON on stdout (a `--json` answer, see [`super::shapes`]).
pub(super) fn say_json(value: &impl serde::Serialize) {
    // The shapes are structs with string keys: serializing them cannot fail.
    say(serde_json::to_string(value).expect("a --json shape serializes"));
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
