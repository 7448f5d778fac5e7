//! How a running task is stopped: the one type the daemon, `exec`, the runner and each step
//! share, so the three ways to stop keep one name from the signal to the process.
//!
//! - `graceful`: the control plane's cancel (or `exec`'s first Ctrl-C): SIGINT the running
//!   step, then kill its tree after the cancel grace period;
//! - `terminate`: the agent is shutting down: SIGTERM the running step and set no timer; the
//!   daemon's stop sequence cancels `kill` when its own grace period is over;
//! - `kill`: kill the running step's whole tree now (and send nothing before it).
//!
//! Whoever cancels `kill` together with another token cancels `kill` first: a step woken by
//! either then sees the kill and sends no SIGINT or SIGTERM before the SIGKILL.

use tokio_util::sync::CancellationToken;

/// The three ways to stop a task. Cloning shares the tokens. Any of them makes the task
/// `canceled`.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    /// SIGINT the running step, then kill its tree after the cancel grace period.
    pub graceful: CancellationToken,
    /// SIGTERM the running step; whoever cancels this cancels `kill` when its own grace
    /// period is over (no timer here).
    pub terminate: CancellationToken,
    /// Kill the running step's whole tree now.
    pub kill: CancellationToken,
}

impl Cancel {
    /// Whether any kind of cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.graceful.is_cancelled() || self.terminate.is_cancelled() || self.kill.is_cancelled()
    }

    /// Resolves when any kind of cancellation is asked for.
    pub async fn cancelled(&self) {
        tokio::select! {
            () = self.graceful.cancelled() => {}
            () = self.terminate.cancelled() => {}
            () = self.kill.cancelled() => {}
        }
    }

    /// A forced cancel: kills now, and marks the task canceled (`kill` first).
    pub fn force(&self) {
        self.kill.cancel();
        self.graceful.cancel();
    }

    /// The shutdown's last step: kills now (`kill` first, then `terminate`, so a step that
    /// was not terminated yet sends no SIGTERM before the SIGKILL).
    pub fn kill_for_shutdown(&self) {
        self.kill.cancel();
        self.terminate.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_and_shutdown_kill_cancel_the_kill_and_their_reason() {
        let c = Cancel::default();
        assert!(!c.is_cancelled());
        c.force();
        assert!(c.kill.is_cancelled() && c.graceful.is_cancelled());
        assert!(!c.terminate.is_cancelled());
        let c = Cancel::default();
        c.kill_for_shutdown();
        assert!(c.kill.is_cancelled() && c.terminate.is_cancelled());
        assert!(!c.graceful.is_cancelled());
    }

    #[tokio::test]
    async fn cancelled_resolves_on_any_token() {
        for pick in 0..3 {
            let c = Cancel::default();
            let token = [&c.graceful, &c.terminate, &c.kill][pick].clone();
            token.cancel();
            c.cancelled().await;
            assert!(c.is_cancelled());
        }
    }
}
