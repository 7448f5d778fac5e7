//! The `scalr-agent` binary: everything lives in the library; see `cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    scalr_agent::cli::main()
}
