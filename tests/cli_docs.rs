//! What `raftlock` says about itself: shell completions and the man page are generated from
//! its flags, and `--version` names the commit it was built from.

use std::process::{Command, Output};

const RAFTLOCK: &str = env!("CARGO_BIN_EXE_raftlock");

fn raftlock(args: &[&str]) -> String {
    let output: Output = Command::new(RAFTLOCK)
        .args(args)
        .env_remove("RAFTLOCK_SERVERS")
        .output()
        .expect("run raftlock");
    assert!(
        output.status.success(),
        "{args:?}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

#[test]
fn completions_cover_the_commands_and_flags_for_each_shell() {
    // The flag names come from the clap definitions, so each script knows e.g. connect-timeout.
    for (shell, marker) in [
        ("bash", "complete -F _raftlock"),
        ("zsh", "#compdef raftlock"),
        ("fish", "complete -c raftlock"),
    ] {
        let script = raftlock(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for word in ["acquire", "connect-timeout", "data-file"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = Command::new(RAFTLOCK)
        .args(["completions", "tcsh"])
        .output()
        .expect("run raftlock");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_prints_a_roff_page_of_the_commands() {
    let page = raftlock(&["man"]);
    assert!(page.contains(".TH raftlock 1"), "{page}");
    for word in ["acquire", "completions", "connect\\-timeout", "Exit status"] {
        assert!(page.contains(word), "no {word:?} in the man page");
    }
}

#[test]
fn version_shows_the_commit_when_built_from_git() {
    let version = raftlock(&["--version"]);
    let expected = format!("raftlock {}", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    // The test is built with the binary, from the same checkout: its commit must be shown.
    let dir = env!("CARGO_MANIFEST_DIR");
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success() && std::path::Path::new(dir).join(".git").exists());
    match head {
        Some(head) => {
            let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
            assert_eq!(version.trim(), format!("{expected} ({head})"));
        }
        None => assert_eq!(version.trim(), expected, "no git: the bare version"),
    }
}
