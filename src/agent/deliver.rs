//! Delivery of a task's spool: the log from the committed offset, the artifacts, then the
//! final status, exactly once; retried until the control plane takes it.

use std::time::Duration;

use crate::control::{ControlError, TaskApi};
use crate::spool::TaskSpool;

use super::health::Metrics;

/// Largest log chunk sent at once.
const CHUNK: usize = 1 << 20;
/// Longest wait between two delivery attempts.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Ships the log as it grows until it is closed and fully committed. Outages are waited out.
/// Returns the committed size, or the error that ended the task for good.
pub async fn ship_log(
    api: &TaskApi,
    spool: &TaskSpool,
    metrics: &Metrics,
) -> Result<u64, ControlError> {
    let mut committed = 0u64;
    let mut pause = Duration::from_millis(200);
    loop {
        if committed >= spool.log_len() {
            if spool.log_closed() && committed >= spool.log_len() {
                return Ok(committed);
            }
            spool.changed().await;
            continue;
        }
        let (s, offset) = (spool.clone(), committed);
        let chunk = tokio::task::spawn_blocking(move || s.read_log(offset, CHUNK))
            .await
            .expect("spool reads do not panic");
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(task = %api.task_id(), error = %e, "cannot read the spooled log");
                return Err(ControlError::Malformed {
                    what: "spool".into(),
                    reason: e.to_string(),
                });
            }
        };
        match api.put_log(offset, chunk.into()).await {
            Ok(c) => {
                // The server may be behind (it lost bytes) or ahead (a re-send): both are
                // fine, the next chunk starts where it says. It cannot hold more than exists.
                committed = c.min(spool.log_len());
                pause = Duration::from_millis(200);
            }
            Err(e) if e.is_retryable() || matches!(e, ControlError::Unexpected { .. }) => {
                metrics.upload_failure();
                tracing::warn!(task = %api.task_id(), error = %e, "log upload failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Delivers a task whose final status is in the spool: the rest of the log, the artifacts,
/// then the finish; removes the spool once the control plane accepted it (or refused the
/// task for good). Retries outages without end: the caller bounds it (shutdown deadline).
pub async fn deliver(api: &TaskApi, spool: &TaskSpool, metrics: &Metrics) {
    let result = deliver_inner(api, spool, metrics).await;
    match result {
        Ok(()) => tracing::debug!(task = %api.task_id(), "task delivered"),
        Err(e) => {
            tracing::error!(task = %api.task_id(), error = %e, "the control plane refused the task's report; dropping it")
        }
    }
    spool.remove();
}

async fn deliver_inner(
    api: &TaskApi,
    spool: &TaskSpool,
    metrics: &Metrics,
) -> Result<(), ControlError> {
    spool.close_log();
    let finish = match spool.final_report() {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err(ControlError::Malformed {
                what: "spool".into(),
                reason: "no final status recorded".into(),
            });
        }
        Err(e) => {
            return Err(ControlError::Malformed {
                what: "spool".into(),
                reason: e.to_string(),
            });
        }
    };
    ship_log(api, spool, metrics).await?;
    for (name, path) in spool.artifacts() {
        retry(api, metrics, || api.put_artifact(&name, &path)).await?;
    }
    retry(api, metrics, || api.finish(&finish)).await
}

/// Calls `call` until it succeeds, waiting out retryable failures with backoff (no limit: the
/// caller bounds it); other errors are returned.
pub(super) async fn retry<F, Fut>(
    api: &TaskApi,
    metrics: &Metrics,
    mut call: F,
) -> Result<(), ControlError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ControlError>>,
{
    let mut pause = Duration::from_millis(200);
    loop {
        match call().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => {
                metrics.upload_failure();
                tracing::warn!(task = %api.task_id(), error = %e, "report failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}
