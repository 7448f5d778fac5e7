//! Acquisition: the loop that takes tasks from the control plane into free slots.
//!
//! It asks only while a slot is free (a long poll), registers each task as running before
//! spawning it (a stop from then on reaches it), retries outages every second, and stops the
//! agent on a fatal answer. It returns when the agent stops, or in single mode after its one
//! task (or once `SCALR_AGENT_SINGLE_WAIT` passed without one).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::slots::Slots;
use super::{Ctx, task};
use crate::control::wire::Acquired;

/// How long to wait after a failed acquisition before asking again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Takes tasks into `slots` until the agent stops (`ctx.stop`), or, in single mode (`single`
/// holds its wait), until one task was taken or the wait is over.
pub(super) async fn acquire(ctx: &Arc<Ctx>, slots: &mut Slots, single: Option<Duration>) {
    let stop = ctx.stop.token.clone();
    let single_deadline = single.map(|wait| Instant::now() + wait);
    loop {
        slots.reap();
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = slots.take() => p,
        };
        let acquired = tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep_until(single_deadline) => {
                tracing::warn!(waited = ?single.unwrap_or_default(), "single mode: no task arrived; exiting");
                return;
            }
            a = ctx.client.acquire(slots.free() + 1) => a,
        };
        match acquired {
            Ok(Some(a)) => {
                start(ctx, slots, a, permit);
                if single.is_some() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) if e.is_fatal() => {
                ctx.stop.fail(e);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "task acquisition failed; trying again");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// Registers the task as running, then runs it in its slot.
fn start(
    ctx: &Arc<Ctx>,
    slots: &mut Slots,
    acquired: Acquired,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    tracing::info!(task = %acquired.task_id, "task acquired");
    // Registered before it is spawned: a stop from now on reaches it.
    let controls = task::Controls::default();
    ctx.add_running(&acquired.task_id, controls.clone());
    slots.spawn(task::run(ctx.clone(), acquired, permit, controls));
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
