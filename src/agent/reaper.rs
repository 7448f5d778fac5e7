//! Reaping orphans when the agent is PID 1 of its container.
//!
//! Stage processes are reaped by their helpers (each is a child subreaper), so the only orphans
//! that can reach PID 1 are processes whose helper died. The reaper must not steal the exit
//! status of a helper that tokio is waiting for: it peeks at the next exited child with
//! `waitid(WNOWAIT)` and reaps it only when it is not a live helper (see
//! `sandbox::stage::is_helper`).

use std::time::Duration;

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use tokio_util::sync::CancellationToken;

/// Starts the reaper when this process is PID 1; otherwise does nothing.
pub fn spawn_if_pid1(shutdown: CancellationToken) {
    if std::process::id() != 1 {
        return;
    }
    tracing::info!("running as PID 1: reaping orphaned processes");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    reap_orphans();
                }
                () = shutdown.cancelled() => return,
            }
        }
    });
}

/// Reaps exited children that are not stage helpers; returns how many.
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    loop {
        let peek = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let pid = match peek {
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return reaped,
            },
        };
        if crate::sandbox::stage::is_helper(pid.as_raw()) {
            return reaped; // tokio will collect it
        }
        if waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        }
    }
}
