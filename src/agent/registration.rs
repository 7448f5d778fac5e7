//! Joining the pool: what the agent says about itself, and registering with retries.

use std::time::Duration;

use futures_util::TryFutureExt;

use super::Executor;
use super::Settings;
use crate::control::wire::RegisterRequest;
use crate::control::{ControlClient, ControlError};
use crate::retry;

/// The first wait after a failed registration (then doubling, jittered, up to
/// [`retry::MAX_BACKOFF`]).
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Registers, retrying outages without end on the crate's one retry loop (the caller races
/// it against the shutdown); other refusals end the agent.
pub(super) async fn register(
    client: &ControlClient,
) -> Result<crate::control::Session, ControlError> {
    retry::Policy::unbounded(FIRST_PAUSE)
        .run(
            |_| {
                client.register().map_err(|e| {
                    if e.is_retryable() {
                        retry::Attempt::retry(e)
                    } else {
                        retry::Attempt::Fatal(e)
                    }
                })
            },
            |e, attempt, wait| tracing::warn!(error = %e, attempt, ?wait, "registration failed; retrying"),
        )
        .await
}

/// What the agent says about itself at registration.
pub(super) fn registration(settings: &Settings, executor: &dyn Executor) -> RegisterRequest {
    let runtime = crate::platform::detect(&settings.runtime).platform;
    let runtime = serde_json::to_value(runtime)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "vm".into());
    RegisterRequest {
        name: settings.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: crate::control::wire::PROTOCOL_V1_1.into(),
        os: std::env::consts::OS.into(),
        cpu_platform: crate::software::catalog::Platform::host()
            .map_or("unsupported", |p| p.name())
            .into(),
        driver: "local".into(),
        runtime,
        concurrency: settings.concurrency.get(),
        isolation: executor.isolation(),
        previous_agent_id: None,
        reclaim_secret: None,
    }
}
