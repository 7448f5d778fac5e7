//! `scalr-policy.hcl`: which policies run and how much a failure of each weighs, and the
//! check's outcome (`PolicyStatus`).

/// What is wrong with `scalr-policy.hcl`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("scalr-policy.hcl: {0}")]
    Syntax(#[from] hcl::Error),
    #[error("scalr-policy.hcl: a policy block needs a name label")]
    NoName,
    #[error("scalr-policy.hcl: policy {policy:?}: {field} must be {expected}, found {found}")]
    BadValue {
        policy: String,
        field: &'static str,
        expected: &'static str,
        found: String,
    },
}

/// How much a failed policy weighs. Ordered: `Advisory < SoftMandatory < HardMandatory`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum EnforcementLevel {
    Advisory,
    SoftMandatory,
    HardMandatory,
}

impl EnforcementLevel {
    /// The name `scalr-policy.hcl` and `result.json` use.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementLevel::Advisory => "advisory",
            EnforcementLevel::SoftMandatory => "soft-mandatory",
            EnforcementLevel::HardMandatory => "hard-mandatory",
        }
    }

    fn parse(s: &str) -> Option<EnforcementLevel> {
        [
            EnforcementLevel::Advisory,
            EnforcementLevel::SoftMandatory,
            EnforcementLevel::HardMandatory,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

impl std::fmt::Display for EnforcementLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy check's overall outcome: the worst enforcement level among failed policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyStatus {
    Passed,
    AdvisoryFailed,
    SoftFailed,
    HardFailed,
}

impl PolicyStatus {
    /// The status of a check whose worst failed policy has `level` (`None`: all passed).
    pub fn of(worst_failed: Option<EnforcementLevel>) -> PolicyStatus {
        match worst_failed {
            None => PolicyStatus::Passed,
            Some(EnforcementLevel::Advisory) => PolicyStatus::AdvisoryFailed,
            Some(EnforcementLevel::SoftMandatory) => PolicyStatus::SoftFailed,
            Some(EnforcementLevel::HardMandatory) => PolicyStatus::HardFailed,
        }
    }
}

impl std::fmt::Display for PolicyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicyStatus::Passed => "passed",
            PolicyStatus::AdvisoryFailed => "advisory_failed",
            PolicyStatus::SoftFailed => "soft_failed",
            PolicyStatus::HardFailed => "hard_failed",
        })
    }
}

/// One `policy` block of `scalr-policy.hcl`.
#[derive(Debug, PartialEq)]
pub struct PolicySpec {
    pub name: String,
    pub enabled: bool,
    pub enforcement_level: EnforcementLevel,
}

/// Parses `scalr-policy.hcl`.
pub fn parse_policy_file(text: &str) -> Result<Vec<PolicySpec>, PolicyFileError> {
    let body: hcl::Body = hcl::from_str(text)?;
    let mut out = Vec::new();
    for block in body.blocks().filter(|b| b.identifier() == "policy") {
        let name = block
            .labels()
            .first()
            .map(|l| l.as_str().to_string())
            .ok_or(PolicyFileError::NoName)?;
        let attr = |k: &str| {
            block
                .body()
                .attributes()
                .find(|a| a.key() == k)
                .map(|a| a.expr().clone())
        };
        let enabled = match attr("enabled") {
            None => true,
            Some(hcl::Expression::Bool(b)) => b,
            Some(other) => {
                return Err(PolicyFileError::BadValue {
                    policy: name,
                    field: "enabled",
                    expected: "true or false",
                    found: other.to_string(),
                });
            }
        };
        let level = match attr("enforcement_level") {
            None => Some(EnforcementLevel::Advisory),
            Some(hcl::Expression::String(s)) => EnforcementLevel::parse(&s),
            Some(_) => None,
        };
        let Some(level) = level else {
            return Err(PolicyFileError::BadValue {
                policy: name,
                field: "enforcement_level",
                expected: "hard-mandatory, soft-mandatory or advisory",
                found: attr("enforcement_level").map_or_else(String::new, |e| e.to_string()),
            });
        };
        out.push(PolicySpec {
            name,
            enabled,
            enforcement_level: level,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file() {
        let specs = parse_policy_file(
            r#"
version = "v1"
policy "no_public_buckets" {
  enabled = true
  enforcement_level = "hard-mandatory"
}
policy "tags" {
  enforcement_level = "advisory"
}
policy "off" {
  enabled = false
}
"#,
        )
        .unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(
            specs[0],
            PolicySpec {
                name: "no_public_buckets".into(),
                enabled: true,
                enforcement_level: EnforcementLevel::HardMandatory
            }
        );
        assert!(!specs[2].enabled);
        let err = parse_policy_file("policy \"x\" {\n enforcement_level = \"mandatory\"\n}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("enforcement_level must be"), "{err}");
    }
}
