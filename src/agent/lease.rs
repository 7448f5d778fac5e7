//! Task leases (protocol v1.1, `docs/protocol.md` "Leases"): the tasks this agent holds, when
//! a heartbeat last renewed each, and the fence that keeps a task from outliving its lease.
//!
//! A task is held from its acquisition until its delivery ended (accepted, or the task gone).
//! Every heartbeat names the held tasks (`running`, `delivering`); its success renews them, and
//! its answer names those the server ended, which are killed at once and marked lost (their
//! [`TaskApi`](crate::control::TaskApi) then sends nothing more). The fence runs on its own
//! clock, not the heartbeat's (a hung heartbeat must not delay it): a running task whose lease
//! was not renewed for `lease − 2 × heartbeat` gets the graceful cancel (SIGINT), and at
//! `lease − heartbeat` it is killed and marked lost, so no tool runs past the moment the server
//! may end the run and hand the workspace to someone else. Without a lease announced (a v1
//! server) nothing is fenced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Ctx;

/// The tasks this agent holds.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Held {
    renewed: Instant,
    interrupted: bool,
    /// Fired when the task is lost for this agent (ended by the server, or fenced).
    lost: CancellationToken,
}

/// A held task; dropping it releases the task.
pub(crate) struct HeldGuard<'a> {
    leases: &'a Leases,
    id: String,
    /// Fired when the task is lost for this agent.
    pub(crate) lost: CancellationToken,
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.leases.release(&self.id);
    }
}

/// What the fence does to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fence {
    /// `lease − 2 × heartbeat` without renewal: the graceful cancel.
    Interrupt,
    /// `lease − heartbeat` without renewal: kill, and send nothing more.
    Kill,
}

/// When the fence interrupts and kills a task, counted from its last renewal.
pub(crate) fn fence_times(lease: Duration, heartbeat: Duration) -> (Duration, Duration) {
    let lease = lease.max(heartbeat * 3);
    (lease - heartbeat * 2, lease - heartbeat)
}

impl Leases {
    /// Holds a task from now (its acquisition); returns the token fired if it is lost.
    pub(crate) fn hold(&self, id: &str) -> CancellationToken {
        let lost = CancellationToken::new();
        self.held.lock().unwrap().insert(
            id.into(),
            Held {
                renewed: Instant::now(),
                interrupted: false,
                lost: lost.clone(),
            },
        );
        lost
    }

    /// Holds a task until the returned guard is dropped (its delivery ended).
    pub(crate) fn guard(&self, id: &str) -> HeldGuard<'_> {
        let lost = self.hold(id);
        HeldGuard {
            leases: self,
            id: id.into(),
            lost,
        }
    }

    /// The task's delivery ended: it is held no more.
    pub(crate) fn release(&self, id: &str) {
        self.held.lock().unwrap().remove(id);
    }

    /// The held tasks.
    pub(crate) fn held(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.held.lock().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A heartbeat sent at `at` and naming `ids` succeeded: their leases run from `at`.
    pub(crate) fn renewed(&self, ids: &[String], at: Instant) {
        let mut held = self.held.lock().unwrap();
        for id in ids {
            if let Some(h) = held.get_mut(id) {
                h.renewed = h.renewed.max(at);
                h.interrupted = false;
            }
        }
    }

    /// Marks a task lost; returns whether it was held.
    pub(crate) fn lose(&self, id: &str) -> bool {
        match self.held.lock().unwrap().get(id) {
            Some(h) => {
                h.lost.cancel();
                true
            }
            None => false,
        }
    }

    /// What the fence must do now, with how long each task has gone without renewal.
    pub(crate) fn due(
        &self,
        now: Instant,
        lease: Duration,
        heartbeat: Duration,
    ) -> Vec<(String, Fence, Duration)> {
        let (interrupt, kill) = fence_times(lease, heartbeat);
        let mut out = Vec::new();
        for (id, h) in self.held.lock().unwrap().iter_mut() {
            let silent = now.saturating_duration_since(h.renewed);
            if h.lost.is_cancelled() {
                continue;
            }
            if silent >= kill {
                out.push((id.clone(), Fence::Kill, silent));
            } else if silent >= interrupt && !h.interrupted {
                h.interrupted = true;
                out.push((id.clone(), Fence::Interrupt, silent));
            }
        }
        out
    }
}

/// A task the server ended: killed at once, nothing more sent for it.
pub(super) fn ended_by_server(ctx: &Ctx, id: &str) {
    if ctx.leases.lose(id) {
        tracing::warn!(task = %id, "the control plane ended this task (its lease expired or it was withdrawn); killing it, nothing more is sent for it");
        if let Some(c) = ctx.running.lock().unwrap().get(id) {
            c.force();
        }
    }
}

/// Fences the running tasks whose lease could not be renewed, on its own clock (a quarter of
/// the heartbeat interval), until `background` fires.
pub(super) async fn fence(ctx: Arc<Ctx>, background: CancellationToken) {
    loop {
        let session = ctx.client.session();
        let heartbeat = session
            .as_ref()
            .map_or(Duration::from_secs(10), |s| s.heartbeat_interval);
        tokio::select! {
            _ = background.cancelled() => return,
            _ = tokio::time::sleep(heartbeat / 4) => {}
        }
        let Some(lease) = session.and_then(|s| s.lease) else {
            continue;
        };
        for (id, fence, silent) in ctx.leases.due(Instant::now(), lease, heartbeat) {
            let running = ctx.running.lock().unwrap().get(&id).cloned();
            // A task whose tool ended only has its report left: the server takes it while
            // the lease lasts, or answers 410.
            let Some(controls) = running else { continue };
            match fence {
                Fence::Interrupt => {
                    tracing::warn!(task = %id, ?silent, ?lease, "the task's lease could not be renewed: interrupting the task (SIGINT) so that it does not outlive its lease");
                    controls.graceful.cancel();
                }
                Fence::Kill => {
                    tracing::warn!(task = %id, ?silent, ?lease, "the task's lease could not be renewed: killing the task before the lease expires; nothing more is sent for it (the control plane ends it)");
                    ctx.leases.lose(&id);
                    controls.force();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_interrupts_then_kills_before_the_lease_ends() {
        let hb = Duration::from_secs(10);
        assert_eq!(
            fence_times(Duration::from_secs(60), hb),
            (Duration::from_secs(40), Duration::from_secs(50))
        );
        // A lease shorter than three beats counts as three.
        assert_eq!(
            fence_times(Duration::from_secs(5), hb),
            (Duration::from_secs(10), Duration::from_secs(20))
        );
    }

    #[test]
    fn renewals_hold_off_the_fence() {
        let leases = Leases::default();
        let t0 = Instant::now();
        let lost = leases.hold("t1");
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (lease, hb) = (Duration::from_secs(60), Duration::from_secs(10));
        assert!(leases.due(at(39), lease, hb).is_empty());
        leases.renewed(&["t1".into()], at(39));
        assert!(leases.due(at(78), lease, hb).is_empty());
        let due = leases.due(at(80), lease, hb);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, Fence::Interrupt);
        assert!(leases.due(at(80), lease, hb).is_empty(), "interrupted once");
        assert_eq!(leases.due(at(90), lease, hb)[0].1, Fence::Kill);
        assert!(leases.lose("t1") && lost.is_cancelled());
        assert!(leases.due(at(95), lease, hb).is_empty());
        leases.release("t1");
        assert!(!leases.lose("t1") && leases.held().is_empty());
    }
}
