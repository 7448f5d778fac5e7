//! The control plane's cancel signals for one running task, relayed to its controls, within
//! the signal budget of `docs/protocol.md` ("Cancellation").

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::control::wire::Signal;
use crate::control::{ControlError, TaskApi};
use crate::retry;
use crate::task::cancel::Cancel as Controls;

/// The shortest time between the starts of two signal polls of one task: at most 9 polls in
/// any 5 s window, under the protocol's budget of 2 a second per task.
const SIGNAL_SPACING: Duration = Duration::from_millis(600);
/// The pause after a v1 server (no cursor) repeated a signal already acted on.
const SIGNAL_REPEAT_PAUSE: Duration = Duration::from_secs(2);
/// The backoff after failed signal polls: about 1 s, doubling (jittered) up to 30 s; never
/// shorter than [`SIGNAL_SPACING`].
const SIGNAL_ERRORS: retry::Policy = retry::Policy {
    initial: Duration::from_secs(1),
    max_delay: retry::MAX_BACKOFF,
    max_retries: None,
    deadline: None,
};

/// Relays cancellation signals from the control plane until the task is done, within the
/// signal budget (`docs/protocol.md`, "Cancellation"): polls held on a cursor by a v1.1
/// server, at most one poll started per [`SIGNAL_SPACING`] in every state, a backoff after
/// errors. A `force-cancel` is the last signal: polling stops there.
pub(super) async fn watch_signals(
    ctx: &Ctx,
    api: &TaskApi,
    controls: &Controls,
    done: &CancellationToken,
) {
    let hold = ctx
        .client
        .session()
        .map_or(Duration::from_secs(25), |s| s.poll_timeout);
    let mut cursor = api.v1_1().then_some(0u64);
    let mut seen = None;
    let mut errors = 0u32;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let started = tokio::time::Instant::now();
        next = started + SIGNAL_SPACING;
        let signal = tokio::select! {
            _ = done.cancelled() => return,
            s = api.signal(hold, cursor) => s,
        };
        let answer = match signal {
            Ok(answer) => answer,
            Err(e @ ControlError::TaskGone { .. }) => {
                tracing::warn!(task = %api.task_id(), error = %e, "task withdrawn; killing it");
                controls.force();
                return;
            }
            Err(e) => {
                errors += 1;
                let pause = SIGNAL_ERRORS.delay(errors).max(SIGNAL_SPACING);
                tracing::debug!(task = %api.task_id(), error = %e, ?pause, "signal poll failed");
                next = started.max(tokio::time::Instant::now()) + pause;
                continue;
            }
        };
        errors = 0;
        let Some(answer) = answer else { continue };
        if let (Some(_), Some(c)) = (cursor, answer.cursor) {
            cursor = Some(c);
        } else if seen == Some(answer.signal) {
            // A v1 server answers the current signal at once: do not spin on it.
            next = started + SIGNAL_REPEAT_PAUSE;
        }
        seen = Some(answer.signal);
        match answer.signal {
            Signal::Cancel => {
                if !controls.graceful.is_cancelled() {
                    tracing::info!(task = %api.task_id(), "cancel requested");
                }
                controls.graceful.cancel();
            }
            Signal::ForceCancel => {
                tracing::info!(task = %api.task_id(), "forced cancel requested");
                controls.force();
                return;
            }
        }
    }
}
