//! The daemon's [`Executor`] backed by the task runner: the same runner and sandbox as `exec`.
//!
//! The daemon has already downloaded the task's inputs into `inputs_dir`
//! (`configuration.tar.gz`, and the [`Artifact::INPUTS`] the task names); the task is pointed
//! at those local files before it runs. The runner's result goes back typed, its artifacts
//! by [`Artifact`].

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use super::executor::{Artifact, CONFIGURATION_FILE, Executor, Job, JobOutcome};
use crate::task::model::{Archive, Source, Task};
use crate::task::runner::{Runner, TaskPaths};

/// Runs jobs with the task runner.
pub struct RunnerExecutor {
    runner: Arc<Runner>,
}

impl RunnerExecutor {
    pub fn new(runner: Runner) -> RunnerExecutor {
        RunnerExecutor {
            runner: Arc::new(runner),
        }
    }
}

/// Points the task at the inputs the daemon downloaded.
fn localize(task: &mut Task, inputs: &Path) {
    let config = inputs.join(CONFIGURATION_FILE);
    if let Source::Archive(a) = &task.configuration
        && config.is_file()
    {
        task.configuration = Source::Archive(Archive {
            path: Some(config),
            url: None,
            sha256: a.sha256.clone(),
        });
    }
    if let Some(p) = &mut task.plan_artifacts {
        for artifact in Artifact::INPUTS {
            let local = inputs.join(artifact.name());
            if let Some(field) = artifact.input(p)
                && field.is_some()
                && local.is_file()
            {
                *field = Some(local);
            }
        }
    }
}

impl Executor for RunnerExecutor {
    fn execute(&self, job: Job) -> Pin<Box<dyn Future<Output = JobOutcome> + Send>> {
        let runner = self.runner.clone();
        Box::pin(async move {
            let Job {
                mut task,
                inputs_dir,
                mut log,
                cancel,
                steps,
            } = job;
            localize(&mut task, &inputs_dir);
            let out = inputs_dir.join("out");
            if let Err(e) = std::fs::create_dir_all(&out) {
                return JobOutcome::errored(format!("creating {}: {e}", out.display()));
            }
            let paths = TaskPaths {
                base: &inputs_dir,
                out: &out,
            };
            let result = runner
                .run(&task, paths, &mut log, &cancel, Some(steps))
                .await;
            JobOutcome::ran(result, &out)
        })
    }

    fn isolation(&self) -> serde_json::Value {
        let iso = &self.runner.isolation;
        serde_json::json!({ "verdict": iso.verdict, "probes": iso.probes })
    }

    fn software_cache_stats(&self) -> Option<Arc<crate::software::CacheStats>> {
        Some(self.runner.cache.stats().clone())
    }

    fn provider_cache_stats(&self) -> Option<Arc<crate::providers::ProviderStats>> {
        self.runner.providers.as_ref().map(|p| p.stats().clone())
    }
}
