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
    /// Graceful cancel (SIGINT the tool, then kill after a grace period): a cancellation from
    /// the control plane or a grace-shutdown of the agent.
    pub cancel: CancellationToken,
    /// Forced cancel (kill the whole tree now). Always cancelled together with or after
    /// `cancel`.
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
}
