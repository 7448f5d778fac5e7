//! The structured outcome of a task (`result.json`).

use serde::{Deserialize, Serialize};

use super::model::Action;
use crate::sandbox::policy::LayerReport;

/// How the task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct Artifacts {
    pub plan_file: Option<String>,
    pub plan_json: Option<String>,
    pub lock_file: Option<String>,
    pub has_changes: Option<bool>,
    pub cost_estimate: Option<String>,
    pub policy_check: Option<String>,
}

/// The isolation the task's processes ran under.
#[derive(Debug, Clone, Serialize)]
pub struct Isolation {
    pub verdict: String,
    pub uid: Option<u32>,
    pub layers: Vec<LayerReport>,
    pub warning: Option<String>,
}

/// Monthly costs from Infracost.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostEstimate {
    pub currency: String,
    pub prior_monthly_cost: String,
    pub proposed_monthly_cost: String,
    pub delta_monthly_cost: String,
}

/// One policy's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyOutcome {
    pub name: String,
    pub enforcement_level: super::checks::EnforcementLevel,
    pub passed: bool,
    pub messages: Vec<String>,
}

/// The policy check's overall outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyCheck {
    pub status: super::checks::PolicyStatus,
    pub policies: Vec<PolicyOutcome>,
}

/// `result.json`.
#[derive(Debug, Clone, Serialize)]
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
    }
}
