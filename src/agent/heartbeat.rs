//! The heartbeat: tells the control plane every interval that this agent lives, how many
//! slots are free (none while draining) and which tasks it holds (running, or delivering their
//! reports), which renews their leases (v1.1, see `lease`); the tasks the answer says the
//! server ended are killed at once. A fatal answer stops the agent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::control::ControlError;
use crate::control::wire::{AgentStatus, Heartbeat};

/// Beats every interval until stopped; a fatal answer stops the agent.
pub(super) async fn heartbeat(
    ctx: Arc<Ctx>,
    slots: u32,
    draining: CancellationToken,
    fatal: Arc<Mutex<Option<ControlError>>>,
    stop: CancellationToken,
    background: CancellationToken,
) {
    loop {
        let interval = ctx
            .client
            .session()
            .map_or(Duration::from_secs(10), |s| s.heartbeat_interval);
        tokio::select! {
            _ = background.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let mut running: Vec<String> = ctx.running.lock().unwrap().keys().cloned().collect();
        running.sort();
        let delivering: Vec<String> = ctx
            .leases
            .held()
            .into_iter()
            .filter(|id| running.binary_search(id).is_err())
            .collect();
        let beat = Heartbeat {
            status: if draining.is_cancelled() {
                AgentStatus::Draining
            } else if running.is_empty() {
                AgentStatus::Idle
            } else {
                AgentStatus::Busy
            },
            free_slots: if draining.is_cancelled() {
                0
            } else {
                slots.saturating_sub(running.len() as u32)
            },
            running,
            delivering,
        };
        let sent_at = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = background.cancelled() => return,
            r = ctx.client.heartbeat(&beat) => r,
        };
        match result {
            Ok(ended) => {
                ctx.metrics.heartbeat_ok();
                let named: Vec<String> = beat.running.into_iter().chain(beat.delivering).collect();
                ctx.leases.renewed(&named, sent_at);
                for id in ended {
                    super::lease::ended_by_server(&ctx, &id);
                }
            }
            Err(e) if e.is_fatal() => {
                tracing::error!(error = %e, "heartbeat refused; stopping");
                ctx.metrics.heartbeat_failure();
                *fatal.lock().unwrap() = Some(e);
                stop.cancel();
            }
            Err(e) => {
                ctx.metrics.heartbeat_failure();
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}
