//! Step reports: the steps the executor announces (see `task::events`), sent to the control
//! plane in order as they happen, and their durations recorded in the metrics.
//!
//! Best effort, in memory: the queue is unbounded (sending never blocks the runner) and not
//! spooled, because the final result, which is spooled, carries every step. Each report is
//! retried like the other uploads while the task runs; once the task has ended, what is left
//! gets the flush limit ([`flush_limit`]: at most [`FLUSH_LIMIT`], and well inside the report
//! timeout) before it is given up with a warning, so a control plane that keeps failing step
//! reports cannot hold back the task's finish. When the agent is stopping, what is left once
//! the task ended is given up at once: the stop window belongs to the log and the finish. The
//! caller sends the finish only after [`report_steps`] returned: the server sees the steps
//! before the final status.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::deliver::retry;
use super::health::Metrics;
use crate::control::wire::{StepReport, StepState};
use crate::control::{ControlError, TaskApi};
use crate::task::events::StepEvent;

/// The longest time reports still queued when the task ends may take before they are given
/// up.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// The flush limit for this report timeout: a quarter of it, at most [`FLUSH_LIMIT`]. The
/// finish waits for the flush, and the finish must fit in the report timeout.
pub fn flush_limit(report_timeout: Duration) -> Duration {
    (report_timeout / 4).min(FLUSH_LIMIT)
}

/// Reports every event from `events` in order until the executor is done (`done`) and the
/// queue is empty (or given up: `flush` after `done`, or at once after `done` once `stop`
/// fired). A refusal of one report is logged and skipped; a task gone for this agent stops
/// the reports (the log shipper and the signal watcher handle the rest).
pub async fn report_steps(
    api: &TaskApi,
    mut events: UnboundedReceiver<StepEvent>,
    metrics: &Metrics,
    done: &CancellationToken,
    stop: &CancellationToken,
    flush: Duration,
) {
    let give_up = async {
        done.cancelled().await;
        tokio::select! {
            () = tokio::time::sleep(flush) => {}
            () = stop.cancelled() => {}
        }
    };
    tokio::pin!(give_up);
    let mut closed = false;
    let mut sending = true;
    loop {
        let event = tokio::select! {
            biased;
            e = events.recv() => e,
            // Nothing new comes after the executor returned, even if it kept a sender.
            () = done.cancelled(), if !closed => {
                events.close();
                closed = true;
                continue;
            }
        };
        let Some(event) = event else { return };
        if let StepEvent::Finished { record, .. } = &event {
            metrics.step_done(
                record.kind.as_str(),
                record.status.as_str(),
                Duration::from_millis(record.duration_ms),
            );
        }
        if !sending {
            continue;
        }
        let report = report(&event);
        let sent = tokio::select! {
            r = retry(api, metrics, || api.step(&report)) => r,
            () = &mut give_up => {
                tracing::warn!(task = %api.task_id(), stopping = stop.is_cancelled(), "step reports not delivered in time after the task ended; giving them up (the final result carries every step)");
                sending = false;
                continue;
            }
        };
        match sent {
            Ok(()) => {}
            Err(e @ ControlError::TaskGone { .. }) => {
                tracing::warn!(task = %api.task_id(), error = %e, "task gone; no more step reports");
                sending = false;
            }
            Err(e) => {
                tracing::warn!(task = %api.task_id(), step = %report.step, error = %e, "step report refused; skipping it");
            }
        }
    }
}

/// The protocol's body for an event.
pub fn report(event: &StepEvent) -> StepReport {
    match event {
        StepEvent::Started { index, kind, name } => StepReport {
            step: name.clone(),
            status: StepState::Running,
            index: *index as u32,
            kind: *kind,
            command: None,
            exit_code: None,
            signal: None,
            duration_ms: None,
        },
        StepEvent::Finished { index, record } => StepReport {
            step: record.name.clone(),
            status: record.status.into(),
            index: *index as u32,
            kind: record.kind,
            command: Some(record.command.clone()),
            exit_code: record.exit_code,
            signal: record.signal,
            duration_ms: Some(record.duration_ms),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::result::{StepKind, StepRecord, StepStatus};

    #[test]
    fn the_flush_fits_well_inside_the_report_timeout() {
        assert_eq!(
            flush_limit(Duration::from_secs(10)),
            Duration::from_millis(2500)
        );
        assert_eq!(flush_limit(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(flush_limit(Duration::from_secs(600)), FLUSH_LIMIT);
    }

    #[test]
    fn reports_follow_the_protocol_body() {
        let started = StepEvent::Started {
            index: 1,
            kind: StepKind::Plan,
            name: "plan".into(),
        };
        assert_eq!(
            serde_json::to_value(report(&started)).unwrap(),
            serde_json::json!({"step": "plan", "status": "running", "index": 1, "kind": "plan",
                "command": null, "exit_code": null, "signal": null, "duration_ms": null})
        );
        let finished = StepEvent::Finished {
            index: 3,
            record: StepRecord {
                name: "pre-plan hook".into(),
                command: "sh -c echo ***".into(),
                status: StepStatus::TimedOut,
                exit_code: None,
                signal: Some(9),
                duration_ms: 1500,
                leftovers_killed: 0,
                kind: StepKind::Hook,
            },
        };
        assert_eq!(
            serde_json::to_value(report(&finished)).unwrap(),
            serde_json::json!({"step": "pre-plan hook", "status": "timed_out", "index": 3,
                "kind": "hook", "command": "sh -c echo ***", "exit_code": null, "signal": 9,
                "duration_ms": 1500})
        );
    }
}
