//! Parsing a task file strictly: every top-level section is checked even when another failed,
//! and every problem is reported with its JSON path, what was expected and what was found.

use std::fmt;

use super::*;

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
                    problems.push(format!("{section}: required, but missing"))
                }
                None => {}
                Some(serde_json::Value::Null) if OPTIONAL.contains(section) => {}
                Some(v) => problems.extend(section_problem(section, v)),
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
        if let Some(problem) = super::super::id::problem(&self.id) {
            problems.push(format!("id: {problem}"));
        }
        for (i, v) in self.variables.iter().enumerate() {
            if let Some(rule) = v.category.name_problem(&v.key) {
                problems.push(format!("variables[{i}].key: {:?} {rule}", v.key));
            }
            if v.category == VariableCategory::Shell && AGENT_OWNED_SHELL.contains(&v.key.as_str())
            {
                problems.push(format!(
                    "variables[{i}].key: the shell variable {} would replace the agent's CLI \
                     configuration (and the run's credentials in it); put the file's content in \
                     the shell variable SCALR_TERRAFORM_RC instead, which the agent merges",
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

/// Deserializes one section alone, so that each section's first problem is reported: the
/// problem's line in [`TaskError::problems`], or `None` when the section is valid.
fn section_problem(name: &str, value: &serde_json::Value) -> Option<String> {
    fn check<T: serde::de::DeserializeOwned>(name: &str, v: &serde_json::Value) -> Option<String> {
        serde_path_to_error::deserialize::<_, T>(v)
            .err()
            .map(|e| format!("{name}{}", describe_suffix(&e)))
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
        _ => None,
    }
}

fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    located(&path, &e.inner().to_string())
}

fn describe_suffix(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let suffix = if path == "." {
        String::new()
    } else if path.starts_with('[') {
        path
    } else {
        format!(".{path}")
    };
    located(&suffix, &e.inner().to_string())
}

/// Joins a JSON path (or its suffix) with serde's message, rewritten in words a task author
/// knows: a missing or unknown field is named in the path itself, types are named as JSON
/// names them, and what was found is quoted.
fn located(path: &str, message: &str) -> String {
    if let Some(field) = between(message, "missing field `", "`") {
        return format!("{path}.{field}: required, but missing");
    }
    // The path of an unknown field already ends with its name.
    if message.starts_with("unknown field `") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, rest)| format!(" (expected {})", names(rest)))
            .unwrap_or_default();
        return format!("{path}: unknown field{expected}");
    }
    if let Some(variant) = between(message, "unknown variant `", "`") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, rest)| format!("; expected {}", names(rest)))
            .unwrap_or_default();
        return format!("{path}: unknown value {variant:?}{expected}");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            return format!(
                "{path}: expected {}, found {}",
                json_type(expected),
                json_found(found)
            );
        }
    }
    format!("{path}: {message}")
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(start)?;
    Some(&rest[..rest.find(end)?])
}

/// "one of `a`, `b`" and "`a`" as a plain list.
fn names(list: &str) -> String {
    list.replace('`', "").replacen("one of ", "one of: ", 1)
}

/// serde's name of an expected type, in JSON's words.
fn json_type(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list (JSON array)".into(),
        "a map" => "an object".into(),
        e if e.starts_with("struct ") => "an object".into(),
        e if e.starts_with("enum ") || e.starts_with("variant identifier") => {
            "one of the documented names".into()
        }
        e => e.into(),
    }
}

/// serde's description of what it found, in JSON's words.
fn json_found(found: &str) -> String {
    if let Some(s) = found.strip_prefix("string ") {
        return format!("the string {s}");
    }
    for prefix in ["integer ", "floating point "] {
        if let Some(n) = found.strip_prefix(prefix) {
            return format!("the number {}", n.trim_matches('`'));
        }
    }
    if let Some(b) = found.strip_prefix("boolean ") {
        return b.trim_matches('`').into();
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "an object".into(),
        "unit value" | "null" => "null".into(),
        f => f.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_example() -> String {
        let doc = include_str!("../../../docs/task-spec.md");
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
        let example = Task::parse(include_bytes!("../../../examples/hello/plan.json")).unwrap();
        assert_eq!(example.id, "task-hello-plan");
    }

    /// The documented example as JSON, for a test to spoil.
    fn example() -> serde_json::Value {
        serde_json::from_str(&doc_example()).unwrap()
    }

    /// Parses `v`, which must fail, and checks that the message holds every text in `expected`.
    /// Returns how many problems were reported, and the message.
    fn refused(v: &serde_json::Value, expected: &[&str]) -> (usize, String) {
        let err = Task::parse(v.to_string().as_bytes()).unwrap_err();
        let text = err.to_string();
        for expected in expected {
            assert!(text.contains(expected), "{expected:?} in {text}");
        }
        (err.problems.len(), text)
    }

    #[test]
    fn problems_in_several_sections_are_reported_together() {
        let mut v = example();
        v["run"]["mode"] = "sometimes".into();
        v["workspace"]["iac_version"] = "latest".into();
        v["variables"][1]["category"] = "env".into();
        v.as_object_mut().unwrap().remove("control_plane");
        let (problems, text) = refused(
            &v,
            &[
                "run.mode: unknown value \"sometimes\"; expected one of: apply",
                "workspace.iac_version: invalid version \"latest\"",
                "variables[1].category: unknown value \"env\"",
                "control_plane: required, but missing",
            ],
        );
        assert_eq!(problems, 4, "{text}");
    }

    #[test]
    fn messages_name_the_field_what_was_expected_and_what_was_found() {
        let mut v = example();
        v["workspace"]
            .as_object_mut()
            .unwrap()
            .remove("iac_version");
        v["run"]["is_destroy"] = "yes".into();
        v["variables"][0]["hcl"] = 1.into();
        refused(
            &v,
            &[
                "workspace.iac_version: required, but missing",
                "run.is_destroy: expected a boolean, found the string \"yes\"",
                "variables[0].hcl: expected a boolean, found the number 1",
            ],
        );
        let mut v = example();
        v["workspace"]["operation_timeout"] = "1h".into();
        let (_, text) = refused(
            &v,
            &[
                "workspace.operation_timeout: expected a whole number (0 or more), found the \
               string \"1h\"",
            ],
        );
        assert!(!text.contains("u64"), "{text}");
    }

    #[test]
    fn variable_names_follow_their_category() {
        let mut v = example();
        v["variables"] = serde_json::json!([
            {"key": "dash-name", "value": "1", "category": "terraform"},
            {"key": "dash-name", "value": "1", "category": "shell"},
            {"key": "9lives", "value": "1", "category": "terraform"},
            {"key": "TF_CLI_CONFIG_FILE", "value": "/x", "category": "shell"},
        ]);
        let (problems, text) = refused(
            &v,
            &[
                "variables[1].key: \"dash-name\" is not a valid shell variable name",
                "variables[2].key: \"9lives\" is not a valid Terraform variable name",
                "variables[3].key: the shell variable TF_CLI_CONFIG_FILE would replace",
                "SCALR_TERRAFORM_RC",
            ],
        );
        assert_eq!(problems, 3, "{text}");
    }

    #[test]
    fn cross_field_rules() {
        let mut v = example();
        v["action"] = "apply".into();
        v["configuration"] = serde_json::json!({"archive": {"sha256": "abc"}});
        refused(
            &v,
            &[
                "plan_artifacts.plan_file: required for an apply task",
                "configuration.archive: exactly one of `path` and `url` is required",
                "configuration.archive.sha256: expected 64 hex digits",
            ],
        );
    }
}
