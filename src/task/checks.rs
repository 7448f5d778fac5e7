//! The cost estimate (Infracost) and the policy check (OPA).
//!
//! - Cost: `infracost breakdown --path <plan.json> --format json`, its JSON saved as
//!   `cost-estimate.json`; `pastTotalMonthlyCost`, `totalMonthlyCost` and
//!   `diffTotalMonthlyCost` give the prior, proposed and delta monthly costs.
//! - Policies: `scalr-policy.hcl` lists `policy "<name>" { enabled, enforcement_level }`; each
//!   enabled policy is `<name>.rego`, evaluated with `opa eval --format json --input <input>
//!   --data <name>.rego data.<package>.deny` against `{tfplan: <plan JSON>, tfrun: {...}}`.
//!   Any `deny` message fails the policy; the worst failed enforcement level (`hard-mandatory`,
//!   `soft-mandatory`, `advisory`) gives `hard_failed`, `soft_failed` or `advisory_failed`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::model::{CostEstimation, Task};
use super::prepare::{POLICIES_DIR, in_artifacts};
use super::result::{Artifact, CostEstimate, PolicyCheck, PolicyOutcome, StepKind, StepStatus};
use super::runner::{Prepared, Run};
use super::step::{Command, StepContext};
use crate::taskfs::{Kind, TaskFileError};

pub mod policy_file;

pub use policy_file::{PolicyFileError, PolicyStatus, parse_policy_file};

const CHECK_TIMEOUT: Duration = Duration::from_secs(600);
/// The policy file, in the task's policies.
const POLICY_FILE: &str = "scalr-policy.hcl";
/// OPA's input (the plan and the run), written into the task's artifacts.
const POLICY_INPUT: &str = "policy-input.json";

/// Why the cost estimate or the policy check could not give an answer (the task fails).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The tool's step did not succeed (its output is in the task log).
    #[error("{what} failed")]
    Failed { what: String },
    #[error("{what} is not JSON: {source}")]
    NotJson {
        what: String,
        source: serde_json::Error,
    },
    #[error("infracost output lacks totalMonthlyCost")]
    NoTotal,
    #[error("no OPA executable")]
    NoOpa,
    #[error("policy {policy:?}: {path} has no package declaration")]
    NoPackage { policy: String, path: String },
    #[error(transparent)]
    PolicyFile(#[from] PolicyFileError),
    /// A file read back from the task (or its input) was refused.
    #[error(transparent)]
    TaskFile(#[from] TaskFileError),
}

pub(super) async fn cost_estimate(
    run: &mut Run<'_>,
    cx: &StepContext<'_>,
    p: &Prepared,
    cost: &CostEstimation,
    infracost: &Path,
) -> Result<CostEstimate, CheckError> {
    let mut env = p.env.clone();
    env.insert(
        "INFRACOST_API_KEY".into(),
        cost.api_key.expose().to_string(),
    );
    env.insert("INFRACOST_SKIP_UPDATE_CHECK".into(), "true".into());
    if let Some(c) = &cost.currency {
        env.insert("INFRACOST_CURRENCY".into(), c.clone());
    }
    let out = p.dirs.artifacts.join(Artifact::CostEstimate.file_name());
    let plan_json = p.dirs.artifacts.join(Artifact::PlanJson.file_name());
    let args = vec![
        "breakdown".into(),
        "--path".into(),
        plan_json.display().to_string(),
        "--format".into(),
        "json".into(),
    ];
    let status = run
        .step(
            cx,
            p,
            Command {
                name: "cost estimate",
                header: "Estimating cost...",
                program: infracost,
                args,
                cwd: &p.workdir,
                env: &env,
                timeout: CHECK_TIMEOUT,
                stdout_file: Some(out.clone()),
                kind: StepKind::Cost,
            },
        )
        .await;
    if status != StepStatus::Succeeded {
        return Err(CheckError::Failed {
            what: "infracost breakdown".into(),
        });
    }
    let rel = in_artifacts(Artifact::CostEstimate.file_name());
    let bytes = read_back(p, &rel, Kind::CostEstimate).await?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|source| CheckError::NotJson {
        what: "infracost output".into(),
        source,
    })?;
    let estimate = parse_cost(&doc).ok_or(CheckError::NoTotal)?;
    run.log.line(&format!(
        "Cost estimate: {} {} per month (was {}, change {})",
        estimate.proposed_monthly_cost,
        estimate.currency,
        estimate.prior_monthly_cost,
        estimate.delta_monthly_cost
    ));
    Ok(estimate)
}

/// Reads the totals of Infracost's JSON output (`null` counts as 0).
pub fn parse_cost(doc: &Value) -> Option<CostEstimate> {
    let field = |k: &str| match doc.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Null) | None => None,
        _ => None,
    };
    Some(CostEstimate {
        currency: field("currency").unwrap_or_else(|| "USD".into()),
        proposed_monthly_cost: field("totalMonthlyCost")?,
        prior_monthly_cost: field("pastTotalMonthlyCost").unwrap_or_else(|| "0".into()),
        delta_monthly_cost: field("diffTotalMonthlyCost").unwrap_or_else(|| "0".into()),
    })
}

/// The policy check in order: the policy file, OPA's input, each enabled policy's
/// evaluation, the outcome.
pub(super) async fn policy_check(
    run: &mut Run<'_>,
    cx: &StepContext<'_>,
    p: &Prepared,
) -> Result<PolicyCheck, CheckError> {
    let opa = p.opa.as_ref().ok_or(CheckError::NoOpa)?;
    let hcl = read_back(p, &Path::new(POLICIES_DIR).join(POLICY_FILE), Kind::Policy).await?;
    let specs = parse_policy_file(&String::from_utf8_lossy(&hcl))?;
    let input = write_policy_input(run.task, p).await?;
    let mut outcomes = Vec::new();
    for spec in specs.iter().filter(|s| s.enabled) {
        outcomes.push(evaluate(run, cx, p, &opa.path, spec, &input).await?);
    }
    let worst = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.enforcement_level)
        .max();
    let status = PolicyStatus::of(worst);
    run.log.line(&format!("Policy check: {status}"));
    Ok(PolicyCheck {
        status,
        policies: outcomes,
    })
}

/// Writes OPA's input into the task's artifacts: `{tfplan: <plan JSON>, tfrun: {...}}`, with
/// the plan's cost estimate when the task names one. Returns the file.
async fn write_policy_input(task: &Task, p: &Prepared) -> Result<PathBuf, CheckError> {
    let plan = read_back(
        p,
        &in_artifacts(Artifact::PlanJson.file_name()),
        Kind::PlanJson,
    )
    .await?;
    let plan: Value = serde_json::from_slice(&plan).map_err(|source| CheckError::NotJson {
        what: "plan JSON".into(),
        source,
    })?;
    let cost = match task
        .plan_artifacts
        .as_ref()
        .and_then(|a| a.cost_estimate.as_ref())
    {
        None => Value::Null,
        Some(path) => input_cost(path, p).await?,
    };
    let input = json!({
        "tfplan": plan,
        "tfrun": {
            "id": task.run.id,
            "mode": task.run.mode.as_str(),
            "is_destroy": task.run.is_destroy,
            "source": task.run.source,
            "vcs": task.run.vcs.as_ref().map(|v| json!({"branch": v.branch, "commit": v.commit})),
            "workspace": {"id": task.workspace.id, "name": task.workspace.name, "working_directory": task.workspace.working_directory},
            "environment": {"id": task.environment.id, "name": task.environment.name},
            "cost_estimate": cost,
        }
    });
    p.fs.write_blocking(
        &in_artifacts(POLICY_INPUT),
        Kind::PolicyInput,
        serde_json::to_vec(&input).expect("JSON serializes"),
    )
    .await?;
    Ok(p.dirs.artifacts.join(POLICY_INPUT))
}

/// The plan's cost estimate the task names (an input file), as OPA sees it: its totals, or
/// `null` when it has none.
async fn input_cost(path: &Path, p: &Prepared) -> Result<Value, CheckError> {
    let (path, limits) = (path.to_path_buf(), *p.fs.limits());
    let bytes = tokio::task::spawn_blocking(move || {
        crate::taskfs::read_input(&path, Kind::CostEstimate, &limits)
    })
    .await
    .expect("reading does not panic")?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|source| CheckError::NotJson {
        what: "cost estimate".into(),
        source,
    })?;
    Ok(parse_cost(&doc)
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .unwrap_or(Value::Null))
}

/// Evaluates one policy with `opa eval` (a step) and reads its `deny` messages, each logged.
async fn evaluate(
    run: &mut Run<'_>,
    cx: &StepContext<'_>,
    p: &Prepared,
    opa: &Path,
    spec: &policy_file::PolicySpec,
    input: &Path,
) -> Result<PolicyOutcome, CheckError> {
    let dir = p.dirs.root.join(POLICIES_DIR);
    let rego_name = format!("{}.rego", spec.name);
    let rego = dir.join(&rego_name);
    let text = read_back(p, &Path::new(POLICIES_DIR).join(&rego_name), Kind::Policy).await?;
    let text = String::from_utf8_lossy(&text);
    let package = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("package ")
                .map(|p| p.trim().to_string())
        })
        .ok_or_else(|| CheckError::NoPackage {
            policy: spec.name.clone(),
            path: rego.display().to_string(),
        })?;
    let out_name = format!("opa-{}.json", spec.name);
    let out = p.dirs.artifacts.join(&out_name);
    let args = vec![
        "eval".into(),
        "--format".into(),
        "json".into(),
        "--input".into(),
        input.display().to_string(),
        "--data".into(),
        rego.display().to_string(),
        format!("data.{package}.deny"),
    ];
    let header = format!(
        "Evaluating policy {} ({})...",
        spec.name, spec.enforcement_level
    );
    let env = p.env.clone();
    let status = run
        .step(
            cx,
            p,
            Command {
                name: &format!("policy {}", spec.name),
                header: &header,
                program: opa,
                args,
                cwd: &dir,
                env: &env,
                timeout: CHECK_TIMEOUT,
                stdout_file: Some(out),
                kind: StepKind::Policy,
            },
        )
        .await;
    if status != StepStatus::Succeeded {
        return Err(CheckError::Failed {
            what: format!("opa eval of policy {:?}", spec.name),
        });
    }
    let doc = read_back(p, &in_artifacts(&out_name), Kind::CheckOutput).await?;
    let doc: Value = serde_json::from_slice(&doc).map_err(|source| CheckError::NotJson {
        what: format!("opa output for {:?}", spec.name),
        source,
    })?;
    let messages = deny_messages(&doc);
    for m in &messages {
        run.log.line(&format!(
            "  {} [{}]: {m}",
            spec.name, spec.enforcement_level
        ));
    }
    Ok(PolicyOutcome {
        name: spec.name.clone(),
        enforcement_level: spec.enforcement_level,
        passed: messages.is_empty(),
        messages,
    })
}

/// Reads a file back from the task through `taskfs`. A refusal ends the check with the error,
/// which the runner logs and records; the task fails.
async fn read_back(p: &Prepared, rel: &Path, kind: Kind) -> Result<Vec<u8>, TaskFileError> {
    p.fs.read_blocking(rel, kind).await
}

/// The `deny` messages from `opa eval --format json` output: `result[0].expressions[0].value`,
/// a set (array) of strings; an undefined rule (no `result`) denies nothing.
pub fn deny_messages(doc: &Value) -> Vec<String> {
    let value = &doc["result"][0]["expressions"][0]["value"];
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opa_output() {
        let doc = json!({"result": [{"expressions": [{"value": ["a", "b"], "text": "data.x.deny", "location": {"row": 1, "col": 1}}]}]});
        assert_eq!(deny_messages(&doc), ["a", "b"]);
        assert!(deny_messages(&json!({})).is_empty());
    }

    #[test]
    fn infracost_output() {
        let doc = json!({"currency": "USD", "totalMonthlyCost": "12.5", "pastTotalMonthlyCost": null, "diffTotalMonthlyCost": "12.5"});
        let c = parse_cost(&doc).unwrap();
        assert_eq!(
            (
                c.prior_monthly_cost.as_str(),
                c.proposed_monthly_cost.as_str()
            ),
            ("0", "12.5")
        );
    }
}
