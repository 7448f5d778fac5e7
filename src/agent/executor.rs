//! The seam between the daemon and the task runner: the daemon hands a [`Job`] to an
//! [`Executor`] and reports the [`JobOutcome`].
//!
//! The daemon owns everything that talks to the control plane (inputs, log shipping,
//! cancellation signals, step reports, artifacts, the final status); the executor owns the
//! child processes.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

pub use crate::control::wire::FinalStatus;
pub use crate::task::events::{StepEvent, StepEvents};

/// One task handed to the executor.
pub struct Job {
    pub task: crate::task::model::Task,
    /// A private directory for this task's downloaded inputs, already filled by the daemon:
    /// `configuration.tar.gz`, and for tasks with `plan_artifacts` the files `plan-file`,
    /// `plan-json` and `lock-file` that the task names. Removed after the task.
    pub inputs_dir: PathBuf,
    /// Where the executor writes its (already masked) log bytes, in order. Writes go to the
    /// spool on disk (cheap, never blocked by the network); they are shipped from there.
    pub log: Box<dyn std::io::Write + Send>,
    /// Graceful cancel from the control plane: SIGINT the tool, then kill it after the
    /// cancel grace period (`SCALR_AGENT_CANCEL_GRACE`).
    pub cancel: CancellationToken,
    /// The agent is shutting down (grace-shutdown, or a drain that ran out of time): SIGTERM
    /// the tool and let it stop; the daemon cancels `kill` once
    /// `SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT` has passed, so the executor sets no timer
    /// of its own.
    pub terminate: CancellationToken,
    /// Forced cancel (kill the whole tree now). May come alone (a forced cancel from the
    /// control plane, a withdrawn task, a force-shutdown) or after `cancel` or `terminate`.
    pub kill: CancellationToken,
    /// Where the executor announces each step as it starts and ends (masked text only); the
    /// daemon reports them to the control plane and records their durations. Sending never
    /// blocks; the job's result must still carry every step.
    pub steps: StepEvents,
}

/// What the executor reports when the job ends (whatever the reason).
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub status: FinalStatus,
    /// The result.json document.
    pub result: serde_json::Value,
    /// Files to upload, by artifact name (`plan-file`, `plan-json`, `lock-file`, ...). The
    /// daemon copies them into its spool before the executor's directories go away.
    pub artifacts: Vec<(String, PathBuf)>,
    pub error: Option<String>,
}

impl JobOutcome {
    /// An outcome for a task that could not run.
    pub fn errored(reason: impl Into<String>) -> JobOutcome {
        JobOutcome {
            status: FinalStatus::Errored,
            result: serde_json::Value::Null,
            artifacts: Vec::new(),
            error: Some(reason.into()),
        }
    }
}

/// Runs jobs. Implemented by the task runner; tests use a fake.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, job: Job) -> Pin<Box<dyn Future<Output = JobOutcome> + Send>>;

    /// The isolation verdict and layers sent at registration (opaque to the protocol).
    fn isolation(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The counters of the software cache this executor installs tools through, for
    /// `/metrics`; `None` when it has none.
    fn software_cache_stats(&self) -> Option<std::sync::Arc<crate::software::CacheStats>> {
        None
    }

    /// The counters of the provider store its runs use, for `/metrics`; `None` when none.
    fn provider_cache_stats(&self) -> Option<std::sync::Arc<crate::providers::ProviderStats>> {
        None
    }
}
