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
use crate::software::catalog::Version;

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

/// A task file that could not be accepted: every problem with its JSON path.
#[derive(Debug, thiserror::Error)]
pub struct TaskError {
    pub problems: Vec<String>,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid task ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

const SECTIONS: &[&str] = &[
    "id",
    "action",
    "run",
    "workspace",
    "environment",
    "control_plane",
    "configuration",
    "variables",
    "tools",
    "policies",
    "cost_estimation",
    "plan_artifacts",
];
const OPTIONAL: &[&str] = &[
    "variables",
    "tools",
    "policies",
    "cost_estimation",
    "plan_artifacts",
];

impl Task {
    /// Parses and validates a task, collecting problems from every section.
    pub fn parse(bytes: &[u8]) -> Result<Task, TaskError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| TaskError {
            problems: vec![format!("not valid JSON: {e}")],
        })?;
        let Some(object) = value.as_object() else {
            return Err(TaskError {
                problems: vec!["$: expected a JSON object".into()],
            });
        };
        let mut problems = Vec::new();
        for key in object.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!(
                    "{key}: unknown field (expected one of: {})",
                    SECTIONS.join(", ")
                ));
            }
        }
        for section in SECTIONS {
            match object.get(*section) {
                None if !OPTIONAL.contains(section) => {
                    problems.push(format!("{section}: missing field"))
                }
                None => {}
                Some(serde_json::Value::Null) if OPTIONAL.contains(section) => {}
                Some(v) => {
                    if let Err(e) = check_section(section, v) {
                        problems.push(e);
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(TaskError { problems });
        }
        let task: Task = serde_path_to_error::deserialize(&value).map_err(|e| TaskError {
            problems: vec![describe(&e)],
        })?;
        task.validate()?;
        Ok(task)
    }

    fn validate(&self) -> Result<(), TaskError> {
        let mut problems = Vec::new();
        if self.id.is_empty()
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(format!(
                "id: {:?} must be non-empty letters, digits, `-` or `_`",
                self.id
            ));
        }
        for (i, v) in self.variables.iter().enumerate() {
            let valid = !v.key.is_empty()
                && v.key
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && v.key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                problems.push(format!(
                    "variables[{i}].key: {:?} is not a valid variable name",
                    v.key
                ));
            }
        }
        for (name, source) in [
            ("configuration", Some(&self.configuration)),
            ("policies", self.policies.as_ref()),
        ] {
            if let Some(Source::Archive(a)) = source {
                if a.path.is_some() == a.url.is_some() {
                    problems.push(format!(
                        "{name}.archive: exactly one of `path` and `url` is required"
                    ));
                }
                if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    problems.push(format!("{name}.archive.sha256: expected 64 hex digits"));
                }
            }
        }
        match (self.action, &self.plan_artifacts) {
            (
                Action::Apply,
                None
                | Some(PlanArtifacts {
                    plan_file: None, ..
                }),
            ) => problems.push("plan_artifacts.plan_file: required for an apply task".into()),
            (
                Action::PolicyCheck,
                None
                | Some(PlanArtifacts {
                    plan_json: None, ..
                }),
            ) => problems.push("plan_artifacts.plan_json: required for a policy-check task".into()),
            _ => {}
        }
        if self.action == Action::PolicyCheck {
            if self.policies.is_none() {
                problems.push("policies: required for a policy-check task".into());
            }
            if self.tools.opa.is_none() {
                problems.push("tools.opa: required for a policy-check task".into());
            }
        }
        if self.cost_estimation.is_some() && self.tools.infracost.is_none() {
            problems.push("tools.infracost: required when cost_estimation is set".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TaskError { problems })
        }
    }
}

/// Deserializes one section alone, so that each section's first problem is reported.
fn check_section(name: &str, value: &serde_json::Value) -> Result<(), String> {
    fn check<T: serde::de::DeserializeOwned>(
        name: &str,
        v: &serde_json::Value,
    ) -> Result<(), String> {
        serde_path_to_error::deserialize::<_, T>(v)
            .map(|_| ())
            .map_err(|e| format!("{name}{}", describe_suffix(&e)))
    }
    match name {
        "id" => check::<String>(name, value),
        "action" => check::<Action>(name, value),
        "run" => check::<Run>(name, value),
        "workspace" => check::<Workspace>(name, value),
        "environment" => check::<Environment>(name, value),
        "control_plane" => check::<ControlPlaneRef>(name, value),
        "configuration" | "policies" => check::<Source>(name, value),
        "variables" => check::<Vec<Variable>>(name, value),
        "tools" => check::<Tools>(name, value),
        "cost_estimation" => check::<CostEstimation>(name, value),
        "plan_artifacts" => check::<PlanArtifacts>(name, value),
        _ => Ok(()),
    }
}

fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    format!("{}: {}", e.path(), e.inner())
}

fn describe_suffix(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if path == "." {
        format!(": {}", e.inner())
    } else if path.starts_with('[') {
        format!("{path}: {}", e.inner())
    } else {
        format!(".{path}: {}", e.inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_example() -> String {
        let doc = include_str!("../../docs/task-spec.md");
        let start = doc.find("```json\n").expect("the spec has a JSON example") + 8;
        let end = start + doc[start..].find("```").unwrap();
        doc[start..end].to_string()
    }

    #[test]
    fn the_documented_example_and_the_shipped_example_parse() {
        let task = Task::parse(doc_example().as_bytes()).unwrap();
        assert_eq!(task.action, Action::Plan);
        assert_eq!(task.workspace.iac_platform, IacPlatform::Opentofu);
        assert_eq!(task.variables.len(), 5);
        assert!(
            !format!("{task:?}").contains("<secret>"),
            "sensitive values stay out of Debug"
        );
        let example = Task::parse(include_bytes!("../../examples/hello/plan.json")).unwrap();
        assert_eq!(example.id, "task-hello-plan");
    }

    #[test]
    fn problems_in_several_sections_are_reported_together() {
        let mut v: serde_json::Value = serde_json::from_str(&doc_example()).unwrap();
        v["run"]["mode"] = "sometimes".into();
        v["workspace"]["iac_version"] = "latest".into();
        v["variables"][1]["category"] = "env".into();
        v.as_object_mut().unwrap().remove("control_plane");
        let err = Task::parse(v.to_string().as_bytes()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 4, "{text}");
        assert!(
            text.contains("run.mode: unknown variant `sometimes`"),
            "{text}"
        );
        assert!(
            text.contains("workspace.iac_version: invalid version \"latest\""),
            "{text}"
        );
        assert!(
            text.contains("variables[1].category: unknown variant `env`"),
            "{text}"
        );
        assert!(text.contains("control_plane: missing field"), "{text}");
    }

    #[test]
    fn cross_field_rules() {
        let mut v: serde_json::Value = serde_json::from_str(&doc_example()).unwrap();
        v["action"] = "apply".into();
        v["configuration"] = serde_json::json!({"archive": {"sha256": "abc"}});
        let text = Task::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("plan_artifacts.plan_file: required for an apply task"),
            "{text}"
        );
        assert!(
            text.contains("configuration.archive: exactly one of `path` and `url` is required"),
            "{text}"
        );
        assert!(
            text.contains("configuration.archive.sha256: expected 64 hex digits"),
            "{text}"
        );
    }
}
