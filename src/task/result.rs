//! The structured outcome of a task (`result.json`): what the runner returns, what `exec`
//! writes and what the daemon sends to the control plane as is, and the one list of the
//! files a task exchanges with the control plane ([`Artifact`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{Action, PlanArtifacts};
use crate::sandbox::policy::LayerReport;

/// How the task ended: in `result.json`, the final report to the control plane (where the
/// protocol calls it `FinalStatus`) and the metrics' labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Every step succeeded (a policy check may still report failed policies).
    Succeeded,
    /// A step failed (non-zero exit, timeout): the user's configuration or hooks.
    Failed,
    /// The agent could not run the task (bad input, missing build, refused by isolation).
    Errored,
    /// Cancelled before it finished.
    Canceled,
}

impl TaskStatus {
    /// The name in `result.json`, the final report and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Errored => "errored",
            TaskStatus::Canceled => "canceled",
        }
    }
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    TimedOut,
    Canceled,
    /// The agent could not start it.
    Errored,
}

impl StepStatus {
    /// The name in `result.json`, step reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Canceled => "canceled",
            StepStatus::Errored => "errored",
        }
    }
}

/// What a step is, from a closed set: a label with bounded cardinality for metrics and the
/// control plane (names may carry policy names; kinds never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `init`.
    Init,
    /// `plan -detailed-exitcode`: its exit code 2 (the plan has changes) is a success.
    Plan,
    /// `show -json` of the saved plan.
    Show,
    /// `apply` of the saved plan.
    Apply,
    /// An agent or workspace hook.
    Hook,
    /// `opa eval` of one policy.
    Policy,
    /// `infracost breakdown`.
    Cost,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Init => "init",
            StepKind::Plan => "plan",
            StepKind::Show => "show",
            StepKind::Apply => "apply",
            StepKind::Hook => "hook",
            StepKind::Policy => "policy",
            StepKind::Cost => "cost",
        }
    }
}

/// One step: a hook or a tool invocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub name: String,
    /// The command line, masked.
    pub command: String,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    /// Processes the step left behind, killed when it ended.
    pub leftovers_killed: u32,
    pub kind: StepKind,
}

/// Files produced by the task (names relative to the output directory).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Artifacts {
    pub plan_file: Option<String>,
    pub plan_json: Option<String>,
    pub lock_file: Option<String>,
    pub has_changes: Option<bool>,
    pub cost_estimate: Option<String>,
    pub policy_check: Option<String>,
}

impl Artifacts {
    /// The file the task produced as `artifact`, relative to the output directory.
    pub fn get(&self, artifact: Artifact) -> Option<&str> {
        match artifact {
            Artifact::PlanFile => self.plan_file.as_deref(),
            Artifact::PlanJson => self.plan_json.as_deref(),
            Artifact::LockFile => self.lock_file.as_deref(),
            Artifact::CostEstimate => self.cost_estimate.as_deref(),
            Artifact::PolicyCheck => self.policy_check.as_deref(),
        }
    }

    /// Records (or clears) the file the task produced as `artifact`.
    pub fn set(&mut self, artifact: Artifact, file: Option<String>) {
        let field = match artifact {
            Artifact::PlanFile => &mut self.plan_file,
            Artifact::PlanJson => &mut self.plan_json,
            Artifact::LockFile => &mut self.lock_file,
            Artifact::CostEstimate => &mut self.cost_estimate,
            Artifact::PolicyCheck => &mut self.policy_check,
        };
        *field = file;
    }

    /// Every artifact produced, with its file under `out`.
    pub fn files(&self, out: &Path) -> Vec<(Artifact, PathBuf)> {
        Artifact::ALL
            .into_iter()
            .filter_map(|a| self.get(a).map(|f| (a, out.join(f))))
            .collect()
    }
}

/// The files a task exchanges with the control plane, one list: their names in the protocol
/// (inputs and uploads), their files in an output directory and in the daemon's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Artifact {
    PlanFile,
    PlanJson,
    LockFile,
    CostEstimate,
    PolicyCheck,
}

/// The task's configuration archive: its input name in the protocol.
pub const CONFIGURATION_INPUT: &str = "configuration";
/// The file the daemon downloads the configuration archive into, in the task's inputs.
pub const CONFIGURATION_FILE: &str = "configuration.tar.gz";

impl Artifact {
    /// Every artifact, in upload order.
    pub const ALL: [Artifact; 5] = [
        Artifact::PlanFile,
        Artifact::PlanJson,
        Artifact::LockFile,
        Artifact::CostEstimate,
        Artifact::PolicyCheck,
    ];

    /// The artifacts a task may take as inputs (a plan's, for its apply or policy check),
    /// downloaded by the daemon under their names.
    pub const INPUTS: [Artifact; 3] = [Artifact::PlanFile, Artifact::PlanJson, Artifact::LockFile];

    /// The name in the protocol: `GET /tasks/{id}/inputs/{name}` and uploads.
    pub fn name(self) -> &'static str {
        match self {
            Artifact::PlanFile => "plan-file",
            Artifact::PlanJson => "plan-json",
            Artifact::LockFile => "lock-file",
            Artifact::CostEstimate => "cost-estimate",
            Artifact::PolicyCheck => "policy-check",
        }
    }

    /// The file in the output directory (`exec --out`, the runner's `out`).
    pub fn file_name(self) -> &'static str {
        match self {
            Artifact::PlanFile => "plan.tfplan",
            Artifact::PlanJson => "plan.json",
            Artifact::LockFile => "terraform.lock.hcl",
            Artifact::CostEstimate => "cost-estimate.json",
            Artifact::PolicyCheck => "policy-check.json",
        }
    }

    /// The task's field naming this artifact as an input (`None`: never an input).
    pub fn input(self, plan: &mut PlanArtifacts) -> Option<&mut Option<PathBuf>> {
        match self {
            Artifact::PlanFile => Some(&mut plan.plan_file),
            Artifact::PlanJson => Some(&mut plan.plan_json),
            Artifact::LockFile => Some(&mut plan.lock_file),
            Artifact::CostEstimate | Artifact::PolicyCheck => None,
        }
    }
}

/// The isolation the task's processes ran under.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Isolation {
    pub verdict: String,
    pub uid: Option<u32>,
    pub layers: Vec<LayerReport>,
    pub warning: Option<String>,
}

/// Monthly costs from Infracost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CostEstimate {
    pub currency: String,
    pub prior_monthly_cost: String,
    pub proposed_monthly_cost: String,
    pub delta_monthly_cost: String,
}

/// One policy's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyOutcome {
    pub name: String,
    pub enforcement_level: super::checks::policy_file::EnforcementLevel,
    pub passed: bool,
    pub messages: Vec<String>,
}

/// The policy check's overall outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyCheck {
    pub status: super::checks::policy_file::PolicyStatus,
    pub policies: Vec<PolicyOutcome>,
}

/// `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskResult {
    pub task_id: String,
    pub action: Action,
    pub status: TaskStatus,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub isolation: Option<Isolation>,
    pub steps: Vec<StepRecord>,
    pub artifacts: Artifacts,
    pub cost_estimate: Option<CostEstimate>,
    pub policy_check: Option<PolicyCheck>,
    /// What went wrong, masked, most important first.
    pub errors: Vec<String>,
    /// The log reached `SCALR_AGENT_TASK_LOG_LIMIT_MB`: later output was dropped.
    pub log_truncated: bool,
}

impl TaskResult {
    /// A result with no step, artifact or error, started and finished at `at` (RFC 3339): the
    /// start of a result built step by step (fakes and tests build theirs from it).
    pub fn new(task_id: &str, action: Action, status: TaskStatus, at: &str) -> TaskResult {
        TaskResult {
            task_id: task_id.into(),
            action,
            status,
            started_at: at.into(),
            finished_at: at.into(),
            duration_ms: 0,
            isolation: None,
            steps: Vec::new(),
            artifacts: Artifacts::default(),
            cost_estimate: None,
            policy_check: None,
            errors: Vec::new(),
            log_truncated: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_the_serialized_names() {
        for kind in [
            StepKind::Init,
            StepKind::Plan,
            StepKind::Show,
            StepKind::Apply,
            StepKind::Hook,
            StepKind::Policy,
            StepKind::Cost,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for status in [
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::TimedOut,
            StepStatus::Canceled,
            StepStatus::Errored,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for status in [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Errored,
            TaskStatus::Canceled,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn artifacts_round_trip_through_their_one_list() {
        let mut a = Artifacts::default();
        for (i, artifact) in Artifact::ALL.into_iter().enumerate() {
            a.set(artifact, Some(format!("f{i}")));
        }
        for (i, artifact) in Artifact::ALL.into_iter().enumerate() {
            assert_eq!(a.get(artifact), Some(format!("f{i}").as_str()));
        }
        let files = a.files(Path::new("/out"));
        assert_eq!(files.len(), 5);
        assert_eq!(files[0], (Artifact::PlanFile, PathBuf::from("/out/f0")));
        // result.json keeps its field names.
        let v = serde_json::to_value(&a).unwrap();
        for field in [
            "plan_file",
            "plan_json",
            "lock_file",
            "cost_estimate",
            "policy_check",
        ] {
            assert!(v[field].is_string(), "{field}: {v}");
        }
    }
}
