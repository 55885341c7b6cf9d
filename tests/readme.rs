//! README.md's shell blocks, run as written, in order, in one shell, against real daemons.
//!
//! Every ```` ```sh ```` block in README.md is preceded by an annotation that says what this
//! test does with it, so that a new block cannot slip past it:
//! - `<!-- readme-test: run -->`: each line runs, in order, in one `bash -euo pipefail` shared
//!   by every `run` block (an `export` or an `eval "$(raftlock acquire ...)"` carries on into
//!   the next block, as it would in a reader's terminal);
//! - `<!-- readme-test: run; the first line serves ADDR,... -->`: the first line is a server a
//!   reader leaves running (`raftlockd dev-cluster`); it is started in the background, and the
//!   rest of the block runs once every ADDR answers `raftlock status` with a leader;
//! - `<!-- readme-test: skip: REASON -->`: not run, for the reason given (root, systemd, other
//!   hosts, or the test suite itself); a skip without a reason fails.
//!
//! The shell's working directory and `HOME` are a fresh temporary directory, and `PATH` starts
//! with the directory of the freshly built `raftlockd` and `raftlock` (`cargo install` would put
//! them on `PATH`). Before the blocks, the Quick start's daemon is started as the Quick start
//! says, `raftlockd` with no flags (127.0.0.1:7400, data in `./raftlockd-data`). The commands
//! that the README wraps in a lock are the reader's own: `make` runs a `Makefile` made here, and
//! `./read-reports.sh` is a script made here; `make` and `man` are the machine's own when it has
//! them, and otherwise stand-ins that check their input and say so.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the whole README may take (it takes seconds).
const DEADLINE: Duration = Duration::from_secs(180);

/// What the annotation says to do with a block.
#[derive(Debug, PartialEq)]
enum Plan {
    Run,
    /// The first line is a server answering at these addresses.
    Serve(String),
    Skip,
}

/// One annotated shell block of the README.
#[derive(Debug)]
struct Block {
    /// The README line of its opening fence.
    line: usize,
    plan: Plan,
    /// Its lines, without the indentation of the fence.
    lines: Vec<String>,
}

/// Every ```` ```sh ```` block with its annotation; an error names a block without one, an
/// unknown annotation or a skip without a reason.
fn parse_blocks(readme: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "```sh" {
            i += 1;
            continue;
        }
        let indent = lines[i].len() - lines[i].trim_start().len();
        let annotation = i
            .checked_sub(1)
            .map(|j| lines[j].trim())
            .and_then(|l| l.strip_prefix("<!-- readme-test: "))
            .and_then(|l| l.strip_suffix(" -->"))
            .ok_or_else(|| {
                format!(
                    "README.md:{}: a sh block without a `<!-- readme-test: ... -->` line before it",
                    i + 1
                )
            })?;
        let plan = if annotation == "run" {
            Plan::Run
        } else if let Some(addrs) = annotation.strip_prefix("run; the first line serves ") {
            Plan::Serve(addrs.to_string())
        } else if let Some(reason) = annotation.strip_prefix("skip:") {
            if reason.trim().is_empty() {
                return Err(format!("README.md:{i}: a skip needs a reason"));
            }
            Plan::Skip
        } else {
            return Err(format!(
                "README.md:{i}: unknown readme-test annotation {annotation:?}"
            ));
        };
        let start = i;
        i += 1;
        let mut body = Vec::new();
        while i < lines.len() && lines[i].trim() != "```" {
            body.push(lines[i].get(indent..).unwrap_or("").to_string());
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("README.md:{}: unclosed block", start + 1));
        }
        blocks.push(Block {
            line: start + 1,
            plan,
            lines: body,
        });
        i += 1;
    }
    Ok(blocks)
}

/// `line` without a trailing `# comment` (for the background server lines, which hold no `#`
/// of their own).
fn without_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(at) => line[..at].trim_end(),
        None => line.trim_end(),
    }
}

/// The script that runs every `run` block, with the helper that waits for servers.
fn script(blocks: &[Block]) -> String {
    let mut script = String::from(
        r#"set -euo pipefail
# Waits until every address in $1 (comma-separated) answers with a leader, within 60 s.
wait_serving() {
  local end=$((SECONDS + 60)) addr
  for addr in ${1//,/ }; do
    until raftlock --servers "$addr" --json status 2>/dev/null | grep -q '"leader":[0-9]'; do
      if ((SECONDS >= end)); then echo "readme test: no leader at $addr" >&2; return 1; fi
      sleep 0.1
    done
  done
}
wait_serving 127.0.0.1:7400
"#,
    );
    for (n, block) in blocks.iter().enumerate() {
        let mut lines = block.lines.iter();
        match &block.plan {
            Plan::Skip => continue,
            Plan::Run => {}
            Plan::Serve(addrs) => {
                let first = lines.next().expect("a serving block has a first line");
                script.push_str(&format!(
                    "echo '+ README.md:{}: {} &' >&2\n{} > server{n}.log 2>&1 &\necho $! >> servers.pids\nwait_serving {addrs}\n",
                    block.line,
                    without_comment(first).replace('\'', ""),
                    without_comment(first),
                ));
            }
        }
        script.push_str(&format!("echo '+ README.md:{}' >&2\n", block.line));
        script.push_str("set -x\n");
        for line in lines {
            script.push_str(line);
            script.push('\n');
        }
        script.push_str("set +x\n");
    }
    script.push_str("echo 'readme test: every block ran'\n");
    script
}

/// Writes an executable script.
fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Whether `tool` is on the machine's `PATH`.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// Stops the daemons the test and the README started, on every exit path.
struct Servers {
    daemon: Child,
    pids: PathBuf,
}

impl Drop for Servers {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(&self.pids).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                // The dev-cluster supervisor stops its nodes on SIGTERM.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Wait (bounded) for the supervisors to stop their nodes.
        let start = Instant::now();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            while Path::new(&format!("/proc/{pid}")).exists()
                && start.elapsed() < Duration::from_secs(15)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn every_block_is_annotated_and_a_skip_has_a_reason() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = parse_blocks(&readme).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        blocks.iter().filter(|b| b.plan != Plan::Skip).count() >= 3,
        "the tour, the quick start's CLI line and the dev cluster run: {blocks:?}"
    );
    // The checks themselves catch what they are for.
    let run = "<!-- readme-test: run -->\n```sh\necho hi\n```\n";
    assert_eq!(parse_blocks(run).map(|b| b.len()), Ok(1));
    for bad in [
        "```sh\necho unannotated\n```\n",
        "<!-- readme-test: skip: -->\n```sh\necho no reason\n```\n",
        "<!-- readme-test: maybe -->\n```sh\necho unknown\n```\n",
        "<!-- readme-test: run -->\n```sh\necho unclosed\n",
    ] {
        assert!(parse_blocks(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn readme_commands_work_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = parse_blocks(&readme).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let bin = Path::new(env!("CARGO_BIN_EXE_raftlockd"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let stubs = work.join(".stubs");
    std::fs::create_dir(&stubs).expect("stubs dir");
    std::fs::write(work.join("Makefile"), "all:\n\t@echo built by make\n").expect("Makefile");
    executable(
        &work.join("read-reports.sh"),
        "#!/bin/sh\necho \"reading reports under $RAFTLOCK_LOCK fence $RAFTLOCK_FENCE\"\n",
    );
    if !on_path("make") {
        executable(
            &stubs.join("make"),
            "#!/bin/sh\n# stand-in for make(1), absent here: runs the Makefile's one recipe\n\
             test -f Makefile || { echo 'make: no Makefile' >&2; exit 2; }\necho built by make\n",
        );
    }
    if !on_path("man") {
        executable(
            &stubs.join("man"),
            "#!/bin/sh\n# stand-in for man(1), absent here: checks that it was given a roff page\n\
             test \"$1\" = -l || exit 2\ngrep -q '^\\.TH' \"${2:--}\" && echo 'man: a roff page'\n",
        );
    }
    let path = std::env::join_paths(
        [stubs.clone(), bin]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .expect("PATH");

    // The Quick start's daemon, started as it says (no flags), in the fresh directory.
    let daemon = Command::new(env!("CARGO_BIN_EXE_raftlockd"))
        .current_dir(work)
        .env_clear()
        .env("PATH", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(work.join("raftlockd.log")).expect("log"),
        ))
        .spawn()
        .expect("start raftlockd");
    let _servers = Servers {
        daemon,
        pids: work.join("servers.pids"),
    };

    let script_path = work.join("readme.sh");
    std::fs::write(&script_path, script(&blocks)).expect("write script");
    let mut shell = Command::new("bash")
        .arg(&script_path)
        .current_dir(work)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", work)
        .env("USER", "readme")
        .env("TERM", "dumb")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    let mut stdout = shell.stdout.take().expect("stdout");
    let mut stderr = shell.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = shell.try_wait().expect("try_wait") {
            break Some(status);
        }
        if start.elapsed() > DEADLINE {
            let _ = shell.kill();
            let _ = shell.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    );
    let ok = status.is_some_and(|s| s.success());
    if !ok {
        let log = std::fs::read_to_string(work.join("raftlockd.log")).unwrap_or_default();
        panic!(
            "a README command failed ({status:?}, within {DEADLINE:?})\n--- stdout ---\n{out}\n\
             --- stderr ---\n{err}\n--- raftlockd.log (last 40 lines) ---\n{}",
            log.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // What the README says the commands print, printed.
    assert!(
        out.lines().any(|l| l == "hi"),
        "`raftlock lock demo -- echo hi`:\n{out}"
    );
    assert!(out.contains("built by make"), "make under the lock:\n{out}");
    assert!(out.contains("reading reports under reports"), "{out}");
    assert!(
        out.contains("deployed v42"),
        "`raftlock read journal.log`:\n{out}"
    );
    assert!(out.ends_with("readme test: every block ran\n"), "{out}");
    let completions = work.join(".local/share/bash-completion/completions/raftlock");
    let completions = std::fs::read_to_string(&completions).expect("the completions file");
    assert!(completions.contains("raftlock"), "{completions}");
}
