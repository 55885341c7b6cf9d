//! `raftlock`: the command line client (see `raftlock --help`). The logic lives in
//! `raftlock::client::cli`.

fn main() -> std::process::ExitCode {
    raftlock::client::cli::main()
}
