//! Sets `RAFTLOCK_VERSION` for `--version`: the package version, followed by the commit
//! (`0.1.0 (1a2b3c4)`) when the crate is built from a git checkout and git is installed.
//! Without either (a crate tarball, a machine without git) it is the bare version: a missing
//! commit never fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    let full = match commit(&dir) {
        Some(commit) => {
            watch_head(&dir);
            format!("{version} ({commit})")
        }
        None => version,
    };
    println!("cargo:rustc-env=RAFTLOCK_VERSION={full}");
}

/// `git rev-parse --short HEAD` in `dir`, if `dir` is a git checkout (`.git` is a directory,
/// or a file in a worktree) and git runs.
fn commit(dir: &Path) -> Option<String> {
    if !dir.join(".git").exists() {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"])?;
    (!commit.is_empty()).then_some(commit)
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout) and the branch it names (a
/// commit), wherever git keeps them (worktrees keep HEAD apart from the branches).
fn watch_head(dir: &Path) {
    let mut files = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    for file in files {
        if let Some(path) = git(dir, &["rev-parse", "--git-path", &file]) {
            let path = dir.join(path);
            // A path that does not exist would make cargo rerun this script on every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// The trimmed stdout of `git ARGS` in `dir`, if it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_string())
}
