//! Reaping orphans when the agent is PID 1 of its container.
//!
//! Stage processes are reaped by their helpers (each is a child subreaper), so the only orphans
//! that can reach PID 1 are processes whose helper died (killed by the OOM killer, say): they
//! are re-parented to the agent, and without a reaper each would stay a zombie once it exits.
//!
//! The reaper must never collect the exit status of a stage helper: tokio waits for each
//! helper by its pid, and a stolen status would turn a stage's real exit into "no child
//! processes". So it never calls `waitpid(-1)`. Each round it lists this process's children
//! (`/proc/self/task/*/children`, every thread's, since orphans are re-parented to whichever
//! thread of PID 1 the kernel picks) and, holding the helper registry's lock
//! (`sandbox::stage::with_helpers_locked`), skips the live helpers and calls
//! `waitpid(pid, WNOHANG)` on every other child: an exited orphan is reaped, a live one is left
//! alone. A helper is registered under that lock as it is spawned and forgotten only after
//! tokio collected it, so no helper is ever seen unregistered: not even a new one that reused
//! the pid of a listed child collected meanwhile (it registers before the check or after the
//! round's `waitpid`). Only `sandbox::stage::Launcher::spawn` starts children while the daemon runs
//! (the sandbox probes fork and wait before it starts), so nothing else waits for them.
#![allow(
    clippy::disallowed_methods,
    reason = "reads /proc to find the agent's children"
)]

use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

/// How often the reaper looks for exited orphans besides on each SIGCHLD.
const INTERVAL: Duration = Duration::from_secs(1);

/// Whether this process is PID 1 of its PID namespace (a container's init).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Reaps exited orphans on every SIGCHLD (tokio shares the signal with its own child
/// handling) and every [`INTERVAL`], until `stop` fires.
pub async fn run(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tracing::info!("running as PID 1: reaping orphaned processes");
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGCHLD stream; reaping every second only");
            None
        }
    };
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = async { sigchld.as_mut()?.recv().await }, if sigchld.is_some() => {}
            () = stop.cancelled() => return,
        }
        let reaped = reap_orphans();
        if reaped > 0 {
            tracing::debug!(reaped, "reaped orphaned processes");
        }
    }
}

/// Reaps this process's exited children that are not stage helpers; returns how many.
pub fn reap_orphans() -> usize {
    reap_among(children())
}

/// Reaps those of `pids` that have exited and are not stage helpers. The helper registry stays
/// locked from each check to its `waitpid` (which does not block): a helper spawned in between
/// could have reused the pid of a listed child collected meanwhile.
fn reap_among(pids: impl IntoIterator<Item = i32>) -> usize {
    crate::sandbox::stage::with_helpers_locked(|is_helper| {
        pids.into_iter()
            .filter(|pid| !is_helper(*pid))
            .filter(|pid| {
                matches!(
                    waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                )
            })
            .count()
    })
}

/// This process's children, zombies included: the `children` file of each of its threads,
/// or, on kernels without those files, every process whose parent is this one.
fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let parse = |text: &str| -> Vec<i32> {
        text.split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    if std::path::Path::new(&format!("/proc/self/task/{me}/children")).exists() {
        return std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|text| parse(&text))
            .collect();
    }
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect()
}

/// The parent pid in `/proc/<pid>/stat` (after the command name, which may hold spaces).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_as_its_parents_child() {
        let me = std::process::id() as i32;
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
    }

    fn state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].chars().next()
    }

    // Only these two children are touched: other tests of this process have children too.
    #[test]
    fn reaps_an_exited_child_but_never_a_helper() {
        let spawn = || {
            std::process::Command::new("/bin/true")
                .spawn()
                .expect("/bin/true starts")
        };
        let orphan = spawn().id() as i32;
        let helper = spawn().id() as i32;
        crate::sandbox::stage::track_helper_for_test(helper);
        let listed = children();
        assert!(
            listed.contains(&orphan) && listed.contains(&helper),
            "{listed:?}"
        );
        // Both have exited and wait as zombies: only the one that is not a helper goes.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ![orphan, helper].iter().all(|p| state(*p) == Some('Z')) {
            assert!(
                std::time::Instant::now() < deadline,
                "the children did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(reap_among([orphan, helper]), 1);
        assert!(waitpid(Pid::from_raw(orphan), Some(WaitPidFlag::WNOHANG)).is_err());
        // The helper's status is still there for its owner.
        let status = waitpid(Pid::from_raw(helper), None).expect("the helper is still ours");
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
        crate::sandbox::stage::forget_helper(helper as u32);
    }
}
