//! The task model: one stage of a run (plan, apply or policy check) with everything needed to
//! execute it. `scalr-agent exec` reads it from a file; the control plane sends the same JSON.
//! Documented with a complete example in `docs/task-spec.md`.
//!
//! Parsing is strict: unknown fields are rejected, and every invalid or missing field is
//! reported with its JSON path (each top-level section is checked even when another failed).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::Secret;

mod parse;

use crate::software::catalog::Version;
pub use parse::TaskError;

/// One task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: String,
    pub action: Action,
    pub run: Run,
    pub workspace: Workspace,
    pub environment: Environment,
    pub control_plane: ControlPlaneRef,
    pub configuration: Source,
    #[serde(default)]
    pub variables: Vec<Variable>,
    #[serde(default)]
    pub tools: Tools,
    #[serde(default)]
    pub policies: Option<Source>,
    #[serde(default)]
    pub cost_estimation: Option<CostEstimation>,
    /// For `apply` and `policy-check`: the plan task's artifacts.
    #[serde(default)]
    pub plan_artifacts: Option<PlanArtifacts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Plan,
    Apply,
    #[serde(alias = "policy.check")]
    PolicyCheck,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Plan => "plan",
            Action::Apply => "apply",
            Action::PolicyCheck => "policy-check",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub id: String,
    pub mode: RunMode,
    #[serde(default)]
    pub is_destroy: bool,
    /// `vcs`, `cli`, `api`, `ui`, ... (passed through as `SCALR_RUN_SOURCE`).
    pub source: String,
    #[serde(default)]
    pub vcs: Option<Vcs>,
    #[serde(default)]
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Apply,
    Dry,
    Refresh,
    SkipRefresh,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Apply => "apply",
            RunMode::Dry => "dry",
            RunMode::Refresh => "refresh",
            RunMode::SkipRefresh => "skip_refresh",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vcs {
    pub branch: String,
    pub commit: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    /// Relative to the configuration root; must stay inside it.
    #[serde(default)]
    pub working_directory: String,
    pub iac_platform: IacPlatform,
    pub iac_version: Version,
    #[serde(default)]
    pub var_files: Vec<String>,
    #[serde(default)]
    pub hooks: Hooks,
    /// Seconds allowed for each Terraform/OpenTofu operation (default 3600).
    #[serde(default)]
    pub operation_timeout: Option<u64>,
    /// Seconds allowed for each hook (default 600).
    #[serde(default)]
    pub hook_timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IacPlatform {
    Opentofu,
    Terraform,
}

/// Workspace hook command lines, run with `/bin/sh -c` in the working directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    pub pre_init: Option<String>,
    pub pre_plan: Option<String>,
    pub post_plan: Option<String>,
    pub pre_apply: Option<String>,
    pub post_apply: Option<String>,
}

/// When a hook runs. A failed `pre-*` hook stops the task; a failed `post-*` hook is reported
/// and the task goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPhase {
    PreInit,
    PrePlan,
    PostPlan,
    PreApply,
    PostApply,
}

impl HookPhase {
    pub const ALL: [HookPhase; 5] = [
        HookPhase::PreInit,
        HookPhase::PrePlan,
        HookPhase::PostPlan,
        HookPhase::PreApply,
        HookPhase::PostApply,
    ];

    /// The phase's name: the agent-level hook's file name in `SCALR_AGENT_HOOKS_DIR` and how
    /// the log names it (`pre-plan`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookPhase::PreInit => "pre-init",
            HookPhase::PrePlan => "pre-plan",
            HookPhase::PostPlan => "post-plan",
            HookPhase::PreApply => "pre-apply",
            HookPhase::PostApply => "post-apply",
        }
    }

    /// The workspace's hook line for this phase (`workspace.hooks.pre_plan`).
    pub fn line(self, hooks: &Hooks) -> Option<&String> {
        match self {
            HookPhase::PreInit => hooks.pre_init.as_ref(),
            HookPhase::PrePlan => hooks.pre_plan.as_ref(),
            HookPhase::PostPlan => hooks.post_plan.as_ref(),
            HookPhase::PreApply => hooks.pre_apply.as_ref(),
            HookPhase::PostApply => hooks.post_apply.as_ref(),
        }
    }

    /// Whether a failure of this phase's hook stops the task.
    pub fn stops_on_failure(self) -> bool {
        matches!(
            self,
            HookPhase::PreInit | HookPhase::PrePlan | HookPhase::PreApply
        )
    }
}

impl std::fmt::Display for HookPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneRef {
    /// Host name of the control plane (`SCALR_HOSTNAME`, credentials for the remote backend).
    pub hostname: String,
    /// The run's short-lived token (`SCALR_TOKEN`); never the agent's own.
    pub run_token: Secret,
}

/// Where files come from: a directory (local use) or a tar.gz archive by path or URL, with its
/// SHA256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Source {
    Directory(PathBuf),
    Archive(Archive),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Archive {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub url: Option<url::Url>,
    pub sha256: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub category: VariableCategory,
    #[serde(default)]
    pub hcl: bool,
    #[serde(default)]
    pub sensitive: bool,
}

impl fmt::Debug for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variable")
            .field("key", &self.key)
            .field("value", if self.sensitive { &"***" } else { &self.value })
            .field("category", &self.category)
            .field("hcl", &self.hcl)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableCategory {
    Terraform,
    Shell,
}

/// Shell variables the agent sets itself and a workspace may not replace: they name the CLI
/// configuration file, which carries the run's credentials (`SCALR_TERRAFORM_RC` is merged into
/// it instead).
const AGENT_OWNED_SHELL: &[&str] = &["TF_CLI_CONFIG_FILE", "TERRAFORM_CONFIG"];

impl VariableCategory {
    /// Why `key` cannot be a name of this category, or `None` when it can. Terraform's own rule
    /// for variable names allows `-` (Terraform reads `TF_VAR_dash-name`); a shell variable must
    /// be a name the shell can expand.
    pub fn name_problem(self, key: &str) -> Option<&'static str> {
        let first_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        let rest_ok = |dash: bool| {
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dash && b == b'-'))
        };
        match self {
            VariableCategory::Terraform if !(first_ok && rest_ok(true)) => Some(
                "is not a valid Terraform variable name (expected a letter or `_`, then letters, \
                 digits, `_` or `-`)",
            ),
            VariableCategory::Shell if !(first_ok && rest_ok(false)) => Some(
                "is not a valid shell variable name (expected a letter or `_`, then letters, \
                 digits or `_`)",
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    pub opa: Option<Version>,
    pub infracost: Option<Version>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostEstimation {
    pub api_key: Secret,
    #[serde(default)]
    pub currency: Option<String>,
}

/// Files produced by the plan task, consumed by `apply` and `policy-check`. Relative paths are
/// resolved against the directory of the task file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanArtifacts {
    pub plan_file: Option<PathBuf>,
    pub plan_json: Option<PathBuf>,
    pub lock_file: Option<PathBuf>,
    /// The plan task's `cost-estimate.json` (Infracost output), given to policies as
    /// `tfrun.cost_estimate`.
    #[serde(default)]
    pub cost_estimate: Option<PathBuf>,
}
