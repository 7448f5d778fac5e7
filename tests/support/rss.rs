//! Peak RSS of the agent for benchmarks: the benchmark re-executes itself as
//! `--measure-rss CMD...`, which runs CMD and prints `getrusage(RUSAGE_CHILDREN)`'s peak in KiB,
//! so that no other child of the benchmark counts.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use super::agent::AgentBuilder;

const FLAG: &str = "--measure-rss";

/// In a process started as `--measure-rss CMD...` (`args` as from `std::env::args`): runs CMD
/// to its end, prints its peak RSS in KiB and returns true. Otherwise returns false.
pub fn measure_if_asked(args: &[String]) -> bool {
    if args.get(1).map(String::as_str) != Some(FLAG) {
        return false;
    }
    let status = Command::new(&args[2])
        .args(&args[3..])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    println!("{}", usage.max_rss());
    true
}

/// Runs `agent` with `args` to its end under a fresh copy of this benchmark (see
/// [`measure_if_asked`]) and returns its peak RSS in KiB; panics if it fails.
pub fn peak_kib<S: AsRef<OsStr>>(agent: AgentBuilder, args: &[S]) -> u64 {
    let measure = std::env::current_exe().unwrap();
    let out = agent
        .wrapped(measure.to_str().unwrap(), &[FLAG])
        .output_blocking(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
