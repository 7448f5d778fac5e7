//! Stopping: why the agent stops ([`Stop`]), and the stop sequence, written once.
//!
//! The sequence applies a stop action to the running tasks: drain (wait up to the drain
//! timeout), then terminate (SIGTERM to the tools) and wait up to the grace timeout, then kill
//! the whole trees. Each phase starts only if the one before ran out of time; the action
//! says where it starts. A signal in single mode, or a fatal refusal, starts at terminate.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::StopAction;
use super::slots::Slots;
use crate::control::ControlError;

/// Why the agent stops, shared by its parts: the caller's shutdown (this token is its child)
/// or a fatal refusal from the control plane, which is kept to be returned.
#[derive(Clone)]
pub(crate) struct Stop {
    /// Fired when the agent starts stopping.
    pub(crate) token: CancellationToken,
    /// The refusal that stops the agent, if one did.
    pub(crate) fatal: Arc<Mutex<Option<ControlError>>>,
}

impl Stop {
    pub(super) fn new(shutdown: &CancellationToken) -> Stop {
        Stop {
            token: shutdown.child_token(),
            fatal: Arc::default(),
        }
    }

    /// Stops the agent for this refusal.
    pub(super) fn fail(&self, e: ControlError) {
        *self.fatal.lock().unwrap() = Some(e);
        self.token.cancel();
    }

    pub(super) fn is_fatal(&self) -> bool {
        self.fatal.lock().unwrap().is_some()
    }

    /// The refusal that stopped the agent, once.
    pub(super) fn take_fatal(&self) -> Option<ControlError> {
        self.fatal.lock().unwrap().take()
    }
}

/// Ends the tasks once acquisition stopped, and returns the deadline of the reports: one
/// report timeout from when the tools stopped covers the reports and the deregistration.
///
/// Stopping (a signal or a fatal refusal): the stop sequence from `on_stop` (from terminate
/// after a refusal). Single mode: the task runs to its end and is delivered; a signal
/// meanwhile stops it as a grace-shutdown.
pub(super) async fn wind_down(
    ctx: &Ctx,
    slots: &mut Slots,
    shutdown: &CancellationToken,
    on_stop: StopAction,
) -> Instant {
    let report_timeout = ctx.timeouts.report;
    if shutdown.is_cancelled() || ctx.stop.is_fatal() {
        // A fatal acquire answer stops the agent without the signal: tell the tasks too.
        ctx.stop.token.cancel();
        let action = if ctx.stop.is_fatal() {
            StopAction::GraceShutdown
        } else {
            on_stop
        };
        tracing::info!(?action, running = ctx.running_now(), "stopping");
        stop_sequence(ctx, action).await;
    } else {
        let stopped = tokio::select! {
            () = slots.join_all() => false,
            _ = shutdown.cancelled() => true,
        };
        if !stopped {
            return Instant::now() + report_timeout;
        }
        stop_sequence(ctx, StopAction::GraceShutdown).await;
    }
    // The tools stopped (or are being killed: executors return soon after a kill).
    let deadline = Instant::now() + report_timeout;
    if tokio::time::timeout_at(deadline, slots.join_all())
        .await
        .is_err()
    {
        tracing::warn!("report timeout: undelivered reports stay in the spool for the next start");
    }
    deadline
}

/// The stop sequence from `action`: returns once no task runs (their executors returned) or
/// the running ones were told to die.
pub(super) async fn stop_sequence(ctx: &Ctx, action: StopAction) {
    let t = &ctx.timeouts;
    let mut phase = action;
    if phase == StopAction::Drain
        && tokio::time::timeout(t.drain, ctx.none_running())
            .await
            .is_err()
    {
        tracing::warn!("drain timeout: cancelling the running tasks");
        phase = StopAction::GraceShutdown;
    }
    if phase == StopAction::GraceShutdown {
        ctx.each_running(|c| c.terminate.cancel());
        if tokio::time::timeout(t.grace, ctx.none_running())
            .await
            .is_err()
        {
            tracing::warn!("grace timeout: killing the running tasks");
            phase = StopAction::ForceShutdown;
        }
    }
    if phase == StopAction::ForceShutdown {
        ctx.each_running(|c| c.kill_for_shutdown());
    }
}
