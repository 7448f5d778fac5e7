//! Delivery of a task's spool: the log from the committed offset, the artifacts, then the
//! final status, exactly once; retried until the control plane takes it.
//!
//! Acknowledged log bytes are never sent again unless the server says it is behind (a smaller
//! `committed`, a `409 gap`, a `409 log_incomplete` on finish): then the log goes again from
//! the server's offset, out of the spool, and the same finish follows. Only a task gone for
//! this agent (401/403/404/410) ends a delivery without a final status.

use std::time::Duration;

use futures_util::TryFutureExt;

use crate::control::wire::Finish;
use crate::control::{ControlError, TaskApi};
use crate::retry;
use crate::spool::TaskSpool;

use super::health::Metrics;

/// Largest log chunk sent at once.
const CHUNK: usize = 1 << 20;
/// The first wait after a failed delivery attempt (then doubling, jittered, up to 30 s).
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Ships the log as it grows, from `committed` (what the server holds), until it is closed
/// and fully committed. Outages are waited out. Returns the committed size, or the error that
/// ended the task for good.
pub async fn ship_log(
    api: &TaskApi,
    spool: &TaskSpool,
    metrics: &Metrics,
    mut committed: u64,
) -> Result<u64, ControlError> {
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
        let chunk = bytes::Bytes::from(chunk);
        let policy = retry::Policy::unbounded(FIRST_PAUSE);
        let put = policy.run(
            |_| {
                api.put_log(offset, chunk.clone()).map_err(|e| {
                    if e.is_retryable() || matches!(e, ControlError::Unexpected { .. }) {
                        retry::Attempt::retry(e)
                    } else {
                        retry::Attempt::Fatal(e)
                    }
                })
            },
            |e, _, _| {
                metrics.upload_failure();
                tracing::warn!(task = %api.task_id(), error = %e, "log upload failed; retrying");
            },
        );
        // The server may be behind (it lost bytes) or ahead (a re-send): both are fine, the
        // next chunk starts where it says. It cannot hold more than exists.
        committed = put.await?.min(spool.log_len());
    }
}

/// Delivers a task whose final status is in the spool: the rest of the log (from `committed`,
/// the server's offset when known; otherwise the server is asked), the artifacts, then the
/// finish; removes the spool once the control plane accepted it (or refused the task for
/// good). Retries outages without end: the caller bounds it (shutdown deadline).
pub async fn deliver(api: &TaskApi, spool: &TaskSpool, metrics: &Metrics, committed: Option<u64>) {
    let result = deliver_inner(api, spool, metrics, committed).await;
    match result {
        Ok(()) => tracing::debug!(task = %api.task_id(), "task delivered"),
        Err(e) => {
            tracing::error!(task = %api.task_id(), error = %e, "the control plane refused the task's report; dropping it")
        }
    }
    let spool = spool.clone();
    let _ = tokio::task::spawn_blocking(move || spool.remove()).await;
}

async fn deliver_inner(
    api: &TaskApi,
    spool: &TaskSpool,
    metrics: &Metrics,
    committed: Option<u64>,
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
    let committed = match committed {
        Some(c) => c,
        None => server_offset(api, spool, metrics).await?,
    };
    ship_log(api, spool, metrics, committed).await?;
    let finish = upload_artifacts(api, spool, metrics, finish).await?;
    // A lost log tail goes again at once from the server's offset; the same finish follows
    // after the one retry loop's wait (200 ms, doubling, jittered, up to 30 s).
    retry::Policy::unbounded(FIRST_PAUSE)
        .run(
            |_| async {
                match retry(api, metrics, || api.finish(&finish)).await {
                    Err(e @ ControlError::LogIncomplete { committed, .. }) => {
                        resend_lost(api, spool, metrics, committed).await?;
                        Err(retry::Attempt::retry(e))
                    }
                    r => r.map_err(retry::Attempt::Fatal),
                }
            },
            |_, _, _| {},
        )
        .await
}

/// After a `409 log_incomplete`: sends the log again from the server's `committed` offset.
async fn resend_lost(
    api: &TaskApi,
    spool: &TaskSpool,
    metrics: &Metrics,
    committed: u64,
) -> Result<(), retry::Attempt<ControlError>> {
    let size = spool.log_len();
    if committed > size {
        return Err(retry::Attempt::Fatal(ControlError::Malformed {
            what: format!("task {} finish", api.task_id()),
            reason: format!(
                "409 log_incomplete says {committed} bytes are committed, but the log has {size}"
            ),
        }));
    }
    tracing::warn!(task = %api.task_id(), committed, log_size = size, "the control plane lost part of the log; sending it again from its offset, then the finish");
    metrics.upload_failure();
    ship_log(api, spool, metrics, committed)
        .await
        .map(drop)
        .map_err(retry::Attempt::Fatal)
}

/// Asks the server how much of the log it holds (after a restart the agent does not know): an
/// empty chunk at offset 0, whose answer is the committed offset.
async fn server_offset(
    api: &TaskApi,
    spool: &TaskSpool,
    metrics: &Metrics,
) -> Result<u64, ControlError> {
    let committed = retry(api, metrics, || api.put_log(0, bytes::Bytes::new())).await?;
    Ok(committed.min(spool.log_len()))
}

/// Uploads the spooled artifacts one by one. An artifact the control plane refuses (a `413`,
/// another `4xx`, a file that cannot be read) is not a reason to lose the finish: the refusal
/// is noted in the finish's `error` (`artifact NAME not uploaded: ...`), the amended finish
/// replaces the spooled one and the artifact is dropped from the spool, so a delivery resumed
/// after a restart sends the same finish. Only a task gone for this agent stops the delivery.
async fn upload_artifacts(
    api: &TaskApi,
    spool: &TaskSpool,
    metrics: &Metrics,
    mut finish: Finish,
) -> Result<Finish, ControlError> {
    for (name, path) in spool.artifacts() {
        match retry(api, metrics, || api.put_artifact(&name, &path)).await {
            Ok(()) => {}
            Err(e @ ControlError::TaskGone { .. }) => return Err(e),
            Err(e) => {
                tracing::error!(task = %api.task_id(), artifact = %name, error = %e, "artifact not uploaded; reporting the task without it");
                append_error(
                    &mut finish.error,
                    format!("artifact {name} not uploaded: {e}"),
                );
                if let Err(e) = spool.write_final(&finish) {
                    tracing::warn!(task = %api.task_id(), error = %e, "cannot record the amended final status in the spool");
                }
                spool.drop_artifact(&name);
            }
        }
    }
    Ok(finish)
}

/// Appends `note` to a final status's error (`"; "` between notes).
pub(super) fn append_error(error: &mut Option<String>, note: String) {
    *error = Some(match error.take() {
        Some(prev) => format!("{prev}; {note}"),
        None => note,
    });
}

/// Calls `call` until it succeeds, waiting out retryable failures with backoff (no limit: the
/// caller bounds it); other errors are returned.
pub(super) async fn retry<T, F, Fut>(
    api: &TaskApi,
    metrics: &Metrics,
    mut call: F,
) -> Result<T, ControlError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ControlError>>,
{
    retry::Policy::unbounded(FIRST_PAUSE)
        .run(
            |_| {
                call().map_err(|e| {
                    if e.is_retryable() {
                        retry::Attempt::retry(e)
                    } else {
                        retry::Attempt::Fatal(e)
                    }
                })
            },
            |e, _, _| {
                metrics.upload_failure();
                tracing::warn!(task = %api.task_id(), error = %e, "report failed; retrying");
            },
        )
        .await
}
