//! The steps of each action, and the preparation before them.
//!
//! - plan: pre-init hooks, `init`, pre-plan hooks, `plan -out` (with `-destroy`,
//!   `-refresh=false` or `-refresh-only` by mode), `show -json`, post-plan hooks, then the cost
//!   estimate when configured;
//! - apply: pre-init hooks, `init`, pre-apply hooks, `apply` of the plan's saved plan file,
//!   post-apply hooks;
//! - policy-check: `opa eval` of each policy (see `checks`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checks::CheckError;
use super::env;
use super::events::StepEvent;
use super::model::{Action, HookPhase, RunMode};
use super::prepare::in_artifacts;
use super::result::{Artifact, Isolation, StepKind, StepStatus, TaskStatus};
use super::runner::{Prepared, Run};
use super::step::{self, Command, StepContext};
use crate::taskfs::{self, Kind};

const DEFAULT_OPERATION_TIMEOUT: u64 = 3600;
pub(super) const DEFAULT_HOOK_TIMEOUT: u64 = 600;

/// A failed step: stop here, with this task status.
pub(super) type Flow = Result<(), TaskStatus>;

impl Run<'_> {
    fn record_layers(&mut self, p: &Prepared, layers: Vec<crate::sandbox::policy::LayerReport>) {
        if self.isolation.is_none() && !layers.is_empty() {
            let iso = &self.runner.isolation;
            let warning = match crate::sandbox::probe::decide(iso.verdict, iso.config.min_isolation)
            {
                crate::sandbox::probe::Decision::Warn(m) => Some(m),
                _ => None,
            };
            self.isolation = Some(Isolation {
                verdict: iso.verdict.to_string(),
                uid: p.uid.as_ref().map(|u| u.uid()),
                layers,
                warning,
            });
        }
    }

    /// Runs one tool or hook step and records it: the one place steps are recorded. It
    /// announces the start, runs the step, settles its status, then announces the end with the
    /// record that `result.json` keeps.
    pub(super) async fn step(
        &mut self,
        cx: &StepContext<'_>,
        p: &Prepared,
        cmd: Command<'_>,
    ) -> StepStatus {
        let index = self.steps.len();
        let kind = cmd.kind;
        if index > 0
            && let Err(e) = self.copy_identity(&p.fs).await
        {
            // The previous copy stays; the step may still work with it.
            let line = self.log.masker().mask(&format!("Warning: {e}"));
            self.log.line(&line);
        }
        let name = self.log.masker().mask(cmd.name);
        self.announce(StepEvent::Started {
            index,
            kind,
            name: name.clone(),
        });
        let (mut record, layers) = step::run(cx, cmd, self.log).await;
        self.record_layers(p, layers);
        record.name = name;
        // `plan -detailed-exitcode`: 0 no changes, 2 changes, anything else an error.
        if kind == StepKind::Plan
            && record.status == StepStatus::Failed
            && record.exit_code == Some(2)
        {
            record.status = StepStatus::Succeeded;
        }
        let status = record.status;
        self.announce(StepEvent::Finished {
            index,
            record: record.clone(),
        });
        self.steps.push(record);
        status
    }

    pub(super) fn env_with(&self, p: &Prepared, exit_code: Option<i32>) -> env::Env {
        let mut env = p.env.clone();
        if let Some((k, v)) = &self.provider_env {
            env.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.hook_env {
            env.insert(k.clone(), v.clone());
        }
        if let Some(code) = exit_code {
            env.insert("SCALR_TERRAFORM_EXIT_CODE".into(), code.to_string());
        }
        env
    }

    async fn tool(
        &mut self,
        cx: &StepContext<'_>,
        p: &Prepared,
        kind: StepKind,
        header: &str,
        args: Vec<String>,
        stdout_file: Option<PathBuf>,
    ) -> StepStatus {
        let env = self.env_with(p, None);
        let timeout = Duration::from_secs(
            self.task
                .workspace
                .operation_timeout
                .unwrap_or(DEFAULT_OPERATION_TIMEOUT),
        );
        let program = p.tool.path.clone();
        self.step(
            cx,
            p,
            Command {
                name: kind.as_str(),
                header,
                program: &program,
                args,
                cwd: &p.workdir,
                env: &env,
                timeout,
                stdout_file,
                kind,
            },
        )
        .await
    }

    async fn init(&mut self, cx: &StepContext<'_>, p: &Prepared) -> Flow {
        self.hooks(cx, p, HookPhase::PreInit, None).await?;
        self.seed_providers(p).await;
        let status = self
            .tool(
                cx,
                p,
                StepKind::Init,
                "Initializing...",
                vec!["init".into(), "-input=false".into()],
                None,
            )
            .await;
        ok_or_stop(self, status, "init")
    }

    /// Pre-init hooks, `init`, then the operation's pre hooks.
    async fn prologue(&mut self, cx: &StepContext<'_>, p: &Prepared, pre_phase: HookPhase) -> Flow {
        self.init(cx, p).await?;
        self.hooks(cx, p, pre_phase, None).await
    }

    pub(super) async fn plan(
        &mut self,
        cx: &StepContext<'_>,
        p: &Prepared,
    ) -> Result<TaskStatus, CheckError> {
        if let Err(s) = self.prologue(cx, p, HookPhase::PrePlan).await {
            return Ok(s);
        }
        let plan_file = p.dirs.artifacts.join(Artifact::PlanFile.file_name());
        let mut args = vec![
            "plan".into(),
            "-input=false".into(),
            "-detailed-exitcode".into(),
            format!("-out={}", plan_file.display()),
        ];
        match self.task.run.mode {
            RunMode::Refresh => args.push("-refresh-only".into()),
            RunMode::SkipRefresh => args.push("-refresh=false".into()),
            RunMode::Apply | RunMode::Dry => {}
        }
        if self.task.run.is_destroy {
            args.push("-destroy".into());
        }
        args.extend(self.task.run.targets.iter().map(|t| format!("-target={t}")));
        args.extend(
            self.task
                .workspace
                .var_files
                .iter()
                .map(|f| format!("-var-file={f}")),
        );
        // The recorder counts exit code 2 (changes) as a success.
        let mut status = self
            .tool(cx, p, StepKind::Plan, "Planning...", args, None)
            .await;
        let code = self.steps.last().and_then(|s| s.exit_code);
        let planned = status == StepStatus::Succeeded;
        if planned {
            self.artifacts.has_changes = Some(code == Some(2));
            let json = p.dirs.artifacts.join(Artifact::PlanJson.file_name());
            let show = self
                .tool(
                    cx,
                    p,
                    StepKind::Show,
                    "Rendering the plan as JSON...",
                    vec![
                        "show".into(),
                        "-json".into(),
                        plan_file.display().to_string(),
                    ],
                    Some(json),
                )
                .await;
            if show != StepStatus::Succeeded {
                status = show;
            }
        } else {
            self.fail(format!(
                "plan failed ({})",
                describe(self.steps.iter().rev().find(|s| s.kind == StepKind::Plan))
            ));
        }
        // The plan's own exit code, as `result.json` records it (2: changes, with
        // `-detailed-exitcode`); 1 when it ended without one (a signal).
        let hook_code = code.unwrap_or(1);
        let _ = self
            .hooks(cx, p, HookPhase::PostPlan, Some(hook_code))
            .await;
        if status != StepStatus::Succeeded {
            return Ok(status_of(status));
        }
        if let (Some(cost), Some(infracost)) = (&self.task.cost_estimation, &p.infracost) {
            let estimate = super::checks::cost_estimate(self, cx, p, cost, &infracost.path).await?;
            self.cost = Some(estimate);
        }
        Ok(
            if self.steps.iter().any(|s| s.status != StepStatus::Succeeded) {
                TaskStatus::Failed
            } else {
                TaskStatus::Succeeded
            },
        )
    }

    pub(super) async fn apply(&mut self, cx: &StepContext<'_>, p: &Prepared) -> TaskStatus {
        if let Err(s) = self.prologue(cx, p, HookPhase::PreApply).await {
            return s;
        }
        let plan_file = p.dirs.artifacts.join(Artifact::PlanFile.file_name());
        let status = self
            .tool(
                cx,
                p,
                StepKind::Apply,
                "Applying...",
                vec![
                    "apply".into(),
                    "-input=false".into(),
                    plan_file.display().to_string(),
                ],
                None,
            )
            .await;
        let code = self.steps.last().and_then(|s| s.exit_code).unwrap_or(1);
        if status != StepStatus::Succeeded {
            self.fail(format!("apply failed ({})", describe(self.steps.last())));
        }
        let _ = self.hooks(cx, p, HookPhase::PostApply, Some(code)).await;
        if self.steps.iter().any(|s| s.status != StepStatus::Succeeded) {
            match status_of(status) {
                TaskStatus::Succeeded => TaskStatus::Failed,
                other => other,
            }
        } else {
            TaskStatus::Succeeded
        }
    }

    pub(super) async fn policy_check(
        &mut self,
        cx: &StepContext<'_>,
        p: &Prepared,
    ) -> Result<TaskStatus, CheckError> {
        let check = super::checks::policy_check(self, cx, p).await?;
        let failed = check.status == super::checks::PolicyStatus::HardFailed;
        // Written by `collect` from this value: nothing is read back from the task for it.
        self.artifacts.set(
            Artifact::PolicyCheck,
            Some(Artifact::PolicyCheck.file_name().into()),
        );
        self.policy_check = Some(check);
        Ok(if failed {
            TaskStatus::Failed
        } else {
            TaskStatus::Succeeded
        })
    }

    /// Copies the artifacts to the output directory through `taskfs`. A refused artifact is
    /// named in the log and the errors and counted in `refusals` (the task fails); one the
    /// task did not produce is simply absent.
    pub(super) async fn collect(&mut self, p: &Prepared, out: &Path) {
        let mut wanted: Vec<(Artifact, PathBuf, Kind)> = Vec::new();
        if self.task.action == Action::Plan {
            for (artifact, kind) in [
                (Artifact::PlanFile, Kind::PlanFile),
                (Artifact::PlanJson, Kind::PlanJson),
                (Artifact::CostEstimate, Kind::CostEstimate),
            ] {
                let rel = in_artifacts(artifact.file_name());
                wanted.push((artifact, rel, kind));
            }
        }
        if self.task.action != Action::PolicyCheck
            && let Some(work) = p.fs.relative(&p.workdir)
        {
            wanted.push((
                Artifact::LockFile,
                work.join(crate::providers::lockfile::LOCK_FILE),
                Kind::LockFile,
            ));
        }
        for (artifact, rel, kind) in wanted {
            let name = artifact.file_name();
            let copied = match p.fs.copy_out_blocking(&rel, kind, &out.join(name)).await {
                Ok(_) => Some(name.to_string()),
                Err(e) if e.is_missing() => None,
                Err(e) => {
                    self.refuse(&e);
                    None
                }
            };
            self.artifacts.set(artifact, copied);
        }
        if let Some(check) = &self.policy_check {
            let path = out.join(Artifact::PolicyCheck.file_name());
            let bytes = serde_json::to_vec_pretty(check).unwrap_or_default();
            if let Err(e) = tokio::fs::write(&path, bytes).await {
                self.artifacts.policy_check = None;
                self.fail(format!("writing {}: {e}", path.display()));
            }
        }
    }

    /// Records a file of the task the agent refused to read: a line in the log (masked), an
    /// error in the result, and the task fails.
    pub(super) fn refuse(&mut self, e: &taskfs::TaskFileError) {
        self.fail(e.to_string());
        self.refusals += 1;
    }
}

fn ok_or_stop(run: &mut Run<'_>, status: StepStatus, name: &str) -> Flow {
    if status == StepStatus::Succeeded {
        return Ok(());
    }
    run.fail(format!("{name} failed ({})", describe(run.steps.last())));
    Err(status_of(status))
}

pub(super) fn status_of(status: StepStatus) -> TaskStatus {
    match status {
        StepStatus::Succeeded => TaskStatus::Succeeded,
        StepStatus::Failed | StepStatus::TimedOut => TaskStatus::Failed,
        StepStatus::Canceled => TaskStatus::Canceled,
        StepStatus::Errored => TaskStatus::Errored,
    }
}

pub(super) fn describe(step: Option<&super::result::StepRecord>) -> String {
    match step {
        None => "not run".into(),
        Some(s) => match (s.status, s.exit_code, s.signal) {
            (StepStatus::TimedOut, ..) => "timed out".into(),
            (StepStatus::Canceled, ..) => "cancelled".into(),
            (StepStatus::Errored, ..) => "could not be started".into(),
            (_, Some(c), _) => format!("exit code {c}"),
            (_, _, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown".into(),
        },
    }
}
