//! Joining the pool: what the agent says about itself, and registering with retries.

use std::time::Duration;

use super::Executor;
use super::Settings;
use crate::control::wire::RegisterRequest;
use crate::control::{ControlClient, ControlError};

/// Registers, retrying outages with backoff; fatal refusals end the agent.
pub(super) async fn register(
    client: &ControlClient,
) -> Result<crate::control::Session, ControlError> {
    let mut pause = Duration::from_millis(500);
    loop {
        match client.register().await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "registration failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the agent says about itself at registration.
pub(super) fn registration(
    settings: &Settings,
    executor: &dyn Executor,
    previous: Option<String>,
) -> RegisterRequest {
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
        previous_agent_id: previous,
    }
}
