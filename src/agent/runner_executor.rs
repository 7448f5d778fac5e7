//! The daemon's [`Executor`] backed by the task runner: the same runner and sandbox as `exec`.
//!
//! The daemon has already downloaded the task's inputs into `inputs_dir`
//! (`configuration.tar.gz`, and `plan-file`, `plan-json`, `lock-file` when the task names plan
//! artifacts); the task is pointed at those local files before it runs. Artifacts go back under
//! the protocol's names: `plan-file`, `plan-json`, `lock-file`, `cost-estimate`,
//! `policy-check`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use super::executor::{Executor, FinalStatus, Job, JobOutcome};
use crate::task::log::TaskLog;
use crate::task::model::{Archive, Source, Task};
use crate::task::result::TaskStatus;
use crate::task::runner::{Cancel, Runner, TaskPaths};

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
    let config = inputs.join("configuration.tar.gz");
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
        for (field, name) in [
            (&mut p.plan_file, "plan-file"),
            (&mut p.plan_json, "plan-json"),
            (&mut p.lock_file, "lock-file"),
        ] {
            let local = inputs.join(name);
            if field.is_some() && local.is_file() {
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
                log,
                cancel,
                terminate,
                kill,
                steps,
            } = job;
            localize(&mut task, &inputs_dir);
            let out = inputs_dir.join("out");
            if let Err(e) = std::fs::create_dir_all(&out) {
                return JobOutcome::errored(format!("creating {}: {e}", out.display()));
            }
            let mut log = TaskLog::new(Arc::new(crate::exec::secrets(&task)), vec![log]);
            let cancel = Cancel {
                graceful: cancel,
                terminate,
                forced: kill,
            };
            let result = runner
                .run(
                    &task,
                    TaskPaths {
                        base: &inputs_dir,
                        out: &out,
                    },
                    &mut log,
                    &cancel,
                    Some(steps),
                )
                .await;
            let status = match result.status {
                TaskStatus::Succeeded => FinalStatus::Succeeded,
                TaskStatus::Failed => FinalStatus::Failed,
                TaskStatus::Errored => FinalStatus::Errored,
                TaskStatus::Canceled => FinalStatus::Canceled,
            };
            let a = &result.artifacts;
            let artifacts = [
                ("plan-file", &a.plan_file),
                ("plan-json", &a.plan_json),
                ("lock-file", &a.lock_file),
                ("cost-estimate", &a.cost_estimate),
                ("policy-check", &a.policy_check),
            ]
            .into_iter()
            .filter_map(|(name, file)| file.as_ref().map(|f| (name.to_string(), out.join(f))))
            .collect();
            JobOutcome {
                status,
                error: result.errors.first().cloned(),
                result: serde_json::to_value(&result).unwrap_or(serde_json::Value::Null),
                artifacts,
            }
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
