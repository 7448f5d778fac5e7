//! Runs one task: isolation decision, preparation, then the action's steps in order, and the
//! result. The same runner serves `scalr-agent exec` and the daemon.
//!
//! Hook semantics: for each phase, the agent-level hook (`$SCALR_AGENT_HOOKS_DIR/<phase>`) runs
//! first, then the workspace's command line, both with `/bin/sh` in the working directory. A
//! failing pre hook stops the task. A post hook runs whenever its operation was attempted,
//! whatever its outcome, with `SCALR_TERRAFORM_EXIT_CODE`. `KEY=VALUE` lines appended to
//! `$SCALR_AGENT_ENV` reach every later step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::cancel::Cancel;
use super::env::Env;
use super::error::RunError;
use super::events::{StepEvent, StepEvents};
use super::log::TaskLog;
use super::model::{Action, RunMode, Task};
use super::prepare::TaskDirs;
use super::result::{
    Artifacts, CostEstimate, Isolation, PolicyCheck, StepRecord, TaskResult, TaskStatus,
};
use super::step::StepContext;
use crate::sandbox::policy::Policy;
use crate::sandbox::probe::{self, Decision, Probes, Verdict};
use crate::sandbox::stage::Launcher;
use crate::sandbox::uid::UidPool;
use crate::software::{Installed, SoftwareCache};

/// Settings of the runner, from the configuration.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub data_dir: PathBuf,
    pub binaries_dir: PathBuf,
    pub hooks_dir: Option<PathBuf>,
    pub keep_task_dirs: bool,
    /// Between SIGINT and SIGKILL on timeout or cancellation.
    pub grace: Duration,
    pub system_path: String,
    /// Extra paths tasks may read and execute (provider mirrors, tools mounted in the container).
    pub read_paths: Vec<PathBuf>,
    pub http: crate::http::Settings,
    /// CA certificates trusted by stages only (`SCALR_AGENT_CONTAINER_TASK_CA_CERT`).
    pub task_ca_bundle: Option<crate::http::CaBundle>,
    /// Limits of the files read back from tasks (`SCALR_AGENT_TASK_ARTIFACT_LIMIT_MB`).
    pub task_files: crate::taskfs::Limits,
    /// `SCALR_AGENT_TASK_LOG_LIMIT_MB`, in bytes.
    pub log_limit_bytes: u64,
    /// `libnss_wrapper.so`, found at start: stages get a user entry of their own
    /// (`task::users`); `None` when absent.
    pub nss_wrapper: Option<PathBuf>,
    /// `SCALR_AGENT_TASK_MEMORY_LIMIT_MB`, in bytes.
    pub task_memory_limit_bytes: Option<u64>,
    /// The platform's identity variables and token files stages inherit (`task::identity`).
    pub identity: crate::task::identity::Settings,
}

/// What the platform allows, probed once at start.
#[derive(Debug)]
pub struct IsolationContext {
    pub probes: Probes,
    pub verdict: Verdict,
    pub config: crate::sandbox::Settings,
    pub uids: UidPool,
}

impl IsolationContext {
    /// Probes the platform; task uids are leased through `data_dir` (see `sandbox::uid`).
    pub fn probe(config: crate::sandbox::Settings, data_dir: &Path) -> IsolationContext {
        let probes = probe::probe();
        let verdict = probe::verdict(&probes);
        let uids = UidPool::new(config.uid_range.clone(), &[probes.agent_uid], data_dir);
        IsolationContext {
            probes,
            verdict,
            config,
            uids,
        }
    }
}

/// The task runner.
pub struct Runner {
    pub cache: Arc<SoftwareCache>,
    /// The shared provider store (`None`: disabled).
    pub providers: Option<Arc<crate::providers::ProviderStore>>,
    pub launcher: Launcher,
    pub settings: RunnerSettings,
    pub isolation: Arc<IsolationContext>,
}

/// Where the task's inputs and outputs live.
pub struct TaskPaths<'a> {
    /// Relative paths in the task resolve against this directory.
    pub base: &'a Path,
    /// Artifacts and `result.json` are written here.
    pub out: &'a Path,
}

/// The state of one task while it runs.
pub(super) struct Run<'a> {
    pub runner: &'a Runner,
    pub task: &'a Task,
    pub log: &'a mut TaskLog,
    pub steps: Vec<StepRecord>,
    pub errors: Vec<String>,
    pub artifacts: Artifacts,
    pub isolation: Option<Isolation>,
    pub cost: Option<CostEstimate>,
    pub policy_check: Option<PolicyCheck>,
    /// Variables added by hooks through `SCALR_AGENT_ENV`, and how many of its lines were read.
    pub hook_env: Vec<(String, String)>,
    pub agent_env_lines: usize,
    /// Files of the task the agent refused to read (each fails the task).
    pub refusals: usize,
    /// Where steps are announced as they start and end (`None`: nobody listens).
    pub step_events: Option<StepEvents>,
    /// Leases on the provider store entries linked into this run, held until it ends.
    pub provider_leases: Vec<crate::providers::Lease>,
    /// A variable the provider seeding needs in the steps' environment.
    pub provider_env: Option<(String, String)>,
}

impl Runner {
    /// Runs the task and returns its result (also written to `<out>/result.json` by the caller).
    /// Each step is announced to `step_events` when it starts and when it ends.
    pub async fn run(
        &self,
        task: &Task,
        paths: TaskPaths<'_>,
        log: &mut TaskLog,
        cancel: &Cancel,
        step_events: Option<StepEvents>,
    ) -> TaskResult {
        let started = Instant::now();
        let started_at = SystemTime::now();
        log.set_limit(self.settings.log_limit_bytes);
        let mut run = Run {
            runner: self,
            task,
            log,
            steps: Vec::new(),
            errors: Vec::new(),
            artifacts: Artifacts::default(),
            isolation: None,
            cost: None,
            policy_check: None,
            hook_env: Vec::new(),
            agent_env_lines: 0,
            refusals: 0,
            step_events,
            provider_leases: Vec::new(),
            provider_env: None,
        };
        run.warn_short_secrets();
        let status = match run.execute(&paths, cancel).await {
            Ok(status) => status,
            Err(e) => {
                run.fail(e.to_string());
                TaskStatus::Errored
            }
        };
        let status = if status != TaskStatus::Errored && cancel.is_cancelled() {
            TaskStatus::Canceled
        } else {
            status
        };
        TaskResult {
            task_id: task.id.clone(),
            action: task.action,
            status,
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            duration_ms: started.elapsed().as_millis() as u64,
            isolation: run.isolation,
            steps: run.steps,
            artifacts: run.artifacts,
            cost_estimate: run.cost,
            policy_check: run.policy_check,
            errors: run.errors,
            log_truncated: run.log.truncated(),
        }
    }
}

/// Everything prepared for the steps.
pub(super) struct Prepared {
    pub dirs: TaskDirs,
    /// The task root, expecting the task's uid as owner: how every task file is read back.
    pub fs: crate::taskfs::TaskRoot,
    pub workdir: PathBuf,
    pub env: Env,
    pub policy: Policy,
    pub tool: Installed,
    pub opa: Option<Installed>,
    pub infracost: Option<Installed>,
    pub uid: Option<crate::sandbox::uid::UidLease>,
}

impl Run<'_> {
    /// Records why the task did not succeed: masked, in the task's log (what users read) and in
    /// `result.json`'s errors, in the same words.
    pub(super) fn fail(&mut self, reason: String) {
        let msg = self.log.masker().mask(&reason);
        self.log.line(&format!("Error: {msg}"));
        self.errors.push(msg);
    }

    /// Names each sensitive variable whose value is too short to be masked (see
    /// `docs/task-spec.md`): its value can appear in clear in this log.
    fn warn_short_secrets(&mut self) {
        let min = super::log::MIN_MASKED_LEN;
        for v in self.task.variables.iter().filter(|v| v.sensitive) {
            let len = v.value.chars().count();
            if len > 0 && v.value.len() < min {
                self.log.line(&format!(
                    "Warning: sensitive variable {:?} is not masked in this log: its value has {len} character(s), fewer than the {min} the masker needs (masking so short a value would hide every such character sequence in the log)",
                    v.key
                ));
            }
        }
    }

    /// Tells the listener, if any, about a step. Never blocks; a listener gone is ignored.
    pub(super) fn announce(&self, event: StepEvent) {
        if let Some(events) = &self.step_events {
            let _ = events.send(event);
        }
    }

    async fn execute(
        &mut self,
        paths: &TaskPaths<'_>,
        cancel: &Cancel,
    ) -> Result<TaskStatus, RunError> {
        let iso = &self.runner.isolation;
        match probe::decide(iso.verdict, iso.config.min_isolation) {
            Decision::Refuse(msg) => return Err(RunError::Refused(msg)),
            Decision::Warn(msg) => self.log.line(&msg),
            Decision::Run => {}
        }
        if self.task.action == Action::Apply && self.task.run.mode == RunMode::Dry {
            return Err(RunError::DryApply);
        }
        // Preparing (downloads included) stops at any cancellation: no step has started, so
        // there is nothing to signal. Whatever was half done is cleaned up on drop (the task
        // directory, the uid lease; a cache install never publishes a partial entry).
        let prepared = tokio::select! {
            p = self.prepare(paths) => Some(p?),
            () = cancel.cancelled() => None,
        };
        let Some(mut prepared) = prepared else {
            self.log
                .line("Canceled while preparing the task: no step was started.");
            return Ok(TaskStatus::Canceled);
        };
        let cgroup = self.memory_cgroup(&mut prepared).await?;
        let cx = StepContext {
            launcher: &self.runner.launcher,
            policy: &prepared.policy,
            cancel,
            grace: self.runner.settings.grace,
        };
        let status = match self.task.action {
            Action::Plan => self.plan(&cx, &prepared).await,
            Action::Apply => Ok(self.apply(&cx, &prepared).await),
            Action::PolicyCheck => self.policy_check(&cx, &prepared).await,
        };
        let status = status.unwrap_or_else(|e| {
            self.fail(e.to_string());
            TaskStatus::Failed
        });
        self.collect(&prepared, paths.out).await;
        self.fill_providers_after(&prepared).await;
        self.release_providers().await;
        let status = match status {
            TaskStatus::Succeeded if self.refusals > 0 => TaskStatus::Failed,
            other => other,
        };
        self.clean_up(prepared, cgroup).await;
        Ok(status)
    }

    /// The task's own memory cgroup, when `SCALR_AGENT_TASK_MEMORY_LIMIT_MB` is set; its
    /// stages join it (through the policy).
    async fn memory_cgroup(
        &mut self,
        prepared: &mut Prepared,
    ) -> Result<Option<crate::sandbox::cgroup::TaskCgroup>, RunError> {
        let Some(limit) = self.runner.settings.task_memory_limit_bytes else {
            return Ok(None);
        };
        let name = prepared
            .dirs
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let created = tokio::task::spawn_blocking(move || {
            crate::sandbox::cgroup::TaskCgroup::create(&name, limit)
        })
        .await??;
        prepared.policy.memory_cgroup = Some(created.procs());
        Ok(Some(created))
    }

    /// Nothing of the task outlives it: its cgroup, its directory (unless kept) and whatever
    /// its uid still owns (IPC objects, temporary files). Blocking work, off the async threads.
    async fn clean_up(
        &mut self,
        prepared: Prepared,
        cgroup: Option<crate::sandbox::cgroup::TaskCgroup>,
    ) {
        let keep = self.runner.settings.keep_task_dirs;
        if keep {
            self.log.line(&format!(
                "Task directory kept: {}",
                prepared.dirs.root.display()
            ));
        }
        let Prepared { dirs, uid, .. } = prepared;
        let ended = tokio::task::spawn_blocking(move || {
            if let Some(cgroup) = cgroup {
                cgroup.remove();
            }
            if !keep {
                dirs.remove();
            }
            uid.map(|lease| (lease.uid(), lease.release()))
        })
        .await;
        if let Ok(Some((uid, removed))) = ended {
            removed.log(uid);
            if removed.ipc + removed.files > 0 {
                self.log.line(&format!(
                    "Removed what the task left under its uid: {} IPC objects, {} temporary files.",
                    removed.ipc, removed.files
                ));
            }
        }
    }
}
