//! The seam between the daemon and the task runner: the daemon hands a [`Job`] to an
//! [`Executor`] and reports the [`JobOutcome`].
//!
//! The daemon owns everything that talks to the control plane (inputs, log shipping,
//! cancellation signals, step reports, artifacts, the final status); the executor owns the
//! child processes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

pub use crate::control::wire::FinalStatus;
pub use crate::task::cancel::Cancel;
pub use crate::task::events::{StepEvent, StepEvents};
pub use crate::task::log::TaskLog;
pub use crate::task::result::{Artifact, CONFIGURATION_FILE, TaskResult};

/// One task handed to the executor.
pub struct Job {
    pub task: crate::task::model::Task,
    /// A private directory for this task's downloaded inputs, already filled by the daemon:
    /// `configuration.tar.gz` ([`CONFIGURATION_FILE`]), and for tasks with `plan_artifacts`
    /// the [`Artifact::INPUTS`] the task names, each under its protocol name. Removed after
    /// the task.
    pub inputs_dir: PathBuf,
    /// The task's log, masked with the task's secrets ([`Masker::for_task`]): everything the
    /// executor writes goes through it. Its sink is the spool on disk (cheap, never blocked
    /// by the network); the daemon ships it from there.
    ///
    /// [`Masker::for_task`]: crate::task::log::Masker::for_task
    pub log: TaskLog,
    /// How the task is stopped (see [`Cancel`]): `graceful` is the control plane's cancel
    /// (SIGINT, then kill after `SCALR_AGENT_CANCEL_GRACE`); `terminate` is the agent's
    /// shutdown (SIGTERM; the daemon cancels `kill` once
    /// `SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT` has passed, so the executor sets no timer
    /// of its own); `kill` kills the whole tree now, alone (a forced cancel, a withdrawn
    /// task, a force-shutdown) or after one of the others.
    pub cancel: Cancel,
    /// Where the executor announces each step as it starts and ends (masked text only); the
    /// daemon reports them to the control plane and records their durations. Sending never
    /// blocks; the job's result must still carry every step.
    pub steps: StepEvents,
}

/// What the executor reports when the job ends (whatever the reason): the final report's
/// status, `result.json` and error, and the files to upload.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub status: FinalStatus,
    /// The task's `result.json`, typed to the wire; `None` for a task that did not run.
    pub result: Option<TaskResult>,
    /// Files to upload, by artifact. The daemon copies them into its spool before the
    /// executor's directories go away.
    pub artifacts: Vec<(Artifact, PathBuf)>,
    pub error: Option<String>,
}

impl JobOutcome {
    /// An outcome for a task that could not run.
    pub fn errored(reason: impl Into<String>) -> JobOutcome {
        JobOutcome {
            status: FinalStatus::Errored,
            result: None,
            artifacts: Vec::new(),
            error: Some(reason.into()),
        }
    }

    /// The outcome of a task the runner ran: its status, its first error and its artifacts
    /// (files under `out`), all read from its result.
    pub fn ran(result: TaskResult, out: &Path) -> JobOutcome {
        JobOutcome {
            status: result.status,
            error: result.errors.first().cloned(),
            artifacts: result.artifacts.files(out),
            result: Some(result),
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
