//! What a task file is ([`Kind`]), for its size limit and for messages, and the limits
//! themselves ([`Limits`], filled in by `config`).

/// `SCALR_AGENT_ENV`: a few `KEY=VALUE` lines.
pub const AGENT_ENV_LIMIT: u64 = 1 << 20;
/// `.terraform.lock.hcl`: hashes of every provider; real ones are a few KiB.
pub const LOCK_FILE_LIMIT: u64 = 16 << 20;
/// `scalr-policy.hcl` and each `.rego` file.
pub const POLICY_LIMIT: u64 = 1 << 20;
/// The JSON a check tool (OPA) prints.
pub const CHECK_OUTPUT_LIMIT: u64 = 64 << 20;
/// A platform's identity token file (a JWT of a few KiB).
pub const IDENTITY_TOKEN_LIMIT: u64 = 64 << 10;
/// Default of `SCALR_AGENT_TASK_ARTIFACT_LIMIT_MB`: plan file, plan JSON, cost estimate.
pub const DEFAULT_ARTIFACT_LIMIT: u64 = 512 << 20;

/// Settings of this module, filled in by `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest plan file, plan JSON or cost estimate read back from a task.
    pub artifact: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            artifact: DEFAULT_ARTIFACT_LIMIT,
        }
    }
}

/// What a file is, for its limit and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AgentEnv,
    LockFile,
    Policy,
    PlanFile,
    PlanJson,
    CostEstimate,
    CheckOutput,
    PolicyInput,
    /// A copy of the platform's identity token file (`task::identity`): read-only to the task.
    IdentityToken,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::AgentEnv => "SCALR_AGENT_ENV file",
            Kind::LockFile => "lock file",
            Kind::Policy => "policy file",
            Kind::PlanFile => "plan file",
            Kind::PlanJson => "plan JSON",
            Kind::CostEstimate => "cost estimate",
            Kind::CheckOutput => "check output",
            Kind::PolicyInput => "policy input",
            Kind::IdentityToken => "identity token file",
        }
    }

    pub fn limit(self, limits: &Limits) -> u64 {
        match self {
            Kind::AgentEnv => AGENT_ENV_LIMIT,
            Kind::LockFile => LOCK_FILE_LIMIT,
            Kind::Policy => POLICY_LIMIT,
            Kind::IdentityToken => IDENTITY_TOKEN_LIMIT,
            Kind::CheckOutput | Kind::PolicyInput => CHECK_OUTPUT_LIMIT,
            Kind::PlanFile | Kind::PlanJson | Kind::CostEstimate => limits.artifact,
        }
    }
}
