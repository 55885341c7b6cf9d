//! `raftlock`: the command line client (see `raftlock --help`). The logic lives in
//! `raftlock::cli`.

fn main() -> std::process::ExitCode {
    // Like other Unix tools, end quietly when stdout is a closed pipe (`raftlock locks | head`)
    // instead of panicking inside println!. Rust ignores SIGPIPE by default.
    // SAFETY: setting a disposition is unsafe in nix (and in every wrapper) because a handler
    // function must be async-signal-safe; SIG_DFL runs no code of ours, and this is called
    // first in main, before any other thread exists. Failure (it cannot fail for SIGPIPE and
    // SIG_DFL) would only leave Rust's default.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    raftlock::cli::main()
}
