//! Hooks: checking workspace hook lines before a task starts, running a phase's hooks
//! (agent-level from `SCALR_AGENT_HOOKS_DIR` first, then the workspace's), and reading the
//! `KEY=VALUE` lines hooks append to `SCALR_AGENT_ENV`.

use std::path::Path;
use std::time::Duration;

use super::env;
use super::error::HookCheckError;
use super::model::HookPhase;
use super::prepare::TaskDirs;
use super::result::{StepKind, StepStatus};
use super::runner::{Prepared, Run};
use super::stages::{DEFAULT_HOOK_TIMEOUT, Flow, describe, status_of};
use super::step::{Command, StepContext};
use crate::sandbox::policy::Policy;
use crate::taskfs::Kind;

/// `SCALR_AGENT_ENV`, relative to the task root.
const AGENT_ENV: &str = "agent.env";

impl Run<'_> {
    /// Checks every workspace hook line with `sh -n`: a line that is not valid shell is bad
    /// input, reported before anything runs.
    pub(super) async fn check_hooks(&mut self, dirs: &TaskDirs) -> Result<(), HookCheckError> {
        let hooks = &self.task.workspace.hooks;
        for phase in HookPhase::ALL {
            let Some(line) = phase.line(hooks) else {
                continue;
            };
            let spec = crate::sandbox::helper::HelperSpec {
                program: "/bin/sh".into(),
                args: vec!["-n".into(), "-c".into(), line.clone()],
                env: vec![("PATH".into(), env::SYSTEM_PATH.into())],
                cwd: dirs.root.clone(),
                stdout_file: None,
                policy: Policy::process_only(&dirs.root),
            };
            let mut stage = self.runner.launcher.spawn(&spec).await?;
            let mut out = stage.take_output().expect("output is taken once");
            let mut text = String::new();
            let (_, exit) = tokio::join!(
                tokio::io::AsyncReadExt::read_to_string(&mut out, &mut text),
                stage.wait()
            );
            if !exit?.success() {
                return Err(HookCheckError::NotShell {
                    field: format!("workspace.hooks.{}", phase.as_str().replace('-', "_")),
                    message: text.trim().replace("/bin/sh: ", ""),
                });
            }
        }
        Ok(())
    }

    /// Runs the hooks of a phase: agent-level first, then the workspace's.
    pub(super) async fn hooks(
        &mut self,
        cx: &StepContext<'_>,
        p: &Prepared,
        phase: HookPhase,
        exit_code: Option<i32>,
    ) -> Flow {
        let workspace = phase.line(&self.task.workspace.hooks);
        let agent = self
            .runner
            .settings
            .hooks_dir
            .as_ref()
            .map(|d| d.join(phase.as_str()))
            .filter(|f| f.is_file());
        let timeout = Duration::from_secs(
            self.task
                .workspace
                .hook_timeout
                .unwrap_or(DEFAULT_HOOK_TIMEOUT),
        );
        let mut lines: Vec<(String, String)> = Vec::new();
        if let Some(file) = agent {
            use std::os::unix::fs::PermissionsExt;
            let executable =
                std::fs::metadata(&file).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
            let line = if executable {
                shell_quote(&file)
            } else {
                format!(". {}", shell_quote(&file))
            };
            lines.push((format!("agent {phase} hook"), line));
        }
        if let Some(line) = workspace {
            lines.push((format!("{phase} hook"), line.clone()));
        }
        for (name, line) in lines {
            let env = self.env_with(p, exit_code);
            let header = format!("Running {name}...");
            let status = self
                .step(
                    cx,
                    p,
                    Command {
                        name: &name,
                        header: &header,
                        program: Path::new("/bin/sh"),
                        args: vec!["-c".into(), line],
                        cwd: &p.workdir,
                        env: &env,
                        timeout,
                        stdout_file: None,
                        kind: StepKind::Hook,
                    },
                )
                .await;
            if !self.read_agent_env(p).await {
                return Err(super::result::TaskStatus::Failed);
            }
            if status != StepStatus::Succeeded && phase.stops_on_failure() {
                self.fail(format!("{name} failed ({})", describe(self.steps.last())));
                return Err(status_of(status));
            }
            if status != StepStatus::Succeeded {
                self.fail(format!("{name} failed ({})", describe(self.steps.last())));
            }
        }
        Ok(())
    }

    /// Reads the lines hooks appended to `SCALR_AGENT_ENV` through `taskfs`. A file the agent
    /// refuses (a link, a FIFO, too large, ...) fails the task: returns `false`.
    async fn read_agent_env(&mut self, p: &Prepared) -> bool {
        let bytes = match p
            .fs
            .read_blocking(Path::new(AGENT_ENV), Kind::AgentEnv)
            .await
        {
            Ok(bytes) => bytes,
            Err(e) if e.is_missing() => return true,
            Err(e) => {
                self.refuse(&e);
                return false;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let (vars, bad, read) = env::parse_agent_env(&text, self.agent_env_lines);
        self.agent_env_lines = read;
        for (line, reason) in bad {
            self.log.line(&format!(
                "Warning: SCALR_AGENT_ENV line {line} ignored: {reason}"
            ));
        }
        for (k, v) in vars {
            self.hook_env.retain(|(name, _)| *name != k);
            self.hook_env.push((k, v));
        }
        true
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}
