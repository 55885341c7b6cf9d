//! `raftlock`: the command line client (see `raftlock --help`). The logic lives in
//! `raftlock::cli`.

fn main() -> std::process::ExitCode {
    // Like other Unix tools, end quietly when stdout is a closed pipe (`raftlock locks | head`)
    // instead of panicking inside println!. Rust ignores SIGPIPE by default.
    // SAFETY: called first in main, before any other thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    raftlock::cli::main()
}
