//! The control plane's cancel signals for one running task, relayed to its controls.

use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::task::Controls;
use crate::control::wire::Signal;
use crate::control::{ControlError, TaskApi};

/// Relays cancellation signals from the control plane until the task is done.
pub(super) async fn watch_signals(
    ctx: &Ctx,
    api: &TaskApi,
    controls: &Controls,
    done: &CancellationToken,
) {
    let hold = ctx
        .client
        .session()
        .map_or(std::time::Duration::from_secs(25), |s| s.poll_timeout);
    loop {
        let signal = tokio::select! {
            _ = done.cancelled() => return,
            s = api.signal(hold) => s,
        };
        match signal {
            Ok(None) => {}
            Ok(Some(Signal::Cancel)) => {
                if !controls.graceful.is_cancelled() {
                    tracing::info!(task = %api.task_id(), "cancel requested");
                }
                controls.graceful.cancel();
            }
            Ok(Some(Signal::ForceCancel)) => {
                tracing::info!(task = %api.task_id(), "forced cancel requested");
                controls.force();
            }
            Err(e @ ControlError::TaskGone { .. }) => {
                tracing::warn!(task = %api.task_id(), error = %e, "task withdrawn; killing it");
                controls.force();
                return;
            }
            Err(e) => {
                tracing::debug!(task = %api.task_id(), error = %e, "signal poll failed");
                tokio::select! {
                    _ = done.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
