//! Workload identity for runs: which of the agent's platform identity variables reach stages,
//! the token files they name, and the values masked in logs.
//!
//! A run on ECS uses the task role, on EKS IRSA or Pod Identity, on ACA and AKS a managed or
//! workload identity: the platform tells the container through environment variables
//! ([`IDENTITY_VARIABLES`]). Stages get every one of them present in the agent's environment
//! (unless `SCALR_AGENT_TASK_INHERIT_IDENTITY=false`), plus the operator's
//! `SCALR_AGENT_TASK_ENV_PASSTHROUGH` names and `PREFIX_*` patterns. A pattern that could match
//! a variable the agent itself reads (its configuration names and legacy names, `SCALR_*`, `*`)
//! is refused at start: the pool token must never reach a run.
//!
//! Token files a variable names ([`TOKEN_FILE_VARIABLES`]) are copied into the task directory
//! through `taskfs` (mode 0400, owned by the task's uid, so Landlock and the uid switch allow
//! them) before every step, which also picks up a rotated token; the variable points at the
//! copy. Secret values ([`SECRET_VARIABLES`], and the token files' contents) are masked in the
//! task's log.
//!
//! Precedence: inherited variables come after the agent's defaults and before the workspace's
//! shell variables, so a workspace may replace them (with its own static credentials, say).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::taskfs::{self, Kind, TaskFileError, TaskRoot};

/// The documented identity variables, by platform.
pub const IDENTITY_VARIABLES: &[&str] = &[
    // AWS: ECS task role (EC2 and Fargate), EKS Pod Identity, IRSA, the region.
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    // Azure: managed identity (Container Apps, App Service), workload identity (AKS).
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    // Google: the metadata server needs no variable; the project, where the platform sets it.
    "GOOGLE_CLOUD_PROJECT",
];

/// Variables whose value is a credential: masked in logs.
pub const SECRET_VARIABLES: &[&str] = &[
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "IDENTITY_HEADER",
    "MSI_SECRET",
];

/// Variables naming a token file: the file is copied into the task and masked.
pub const TOKEN_FILE_VARIABLES: &[&str] = &[
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// Prefix of the token files' copies in the task directory (`identity.<VARIABLE>`).
pub const TOKEN_PREFIX: &str = "identity.";

/// A `SCALR_AGENT_TASK_ENV_PASSTHROUGH` entry: a name, or a prefix followed by `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Name(String),
    Prefix(String),
}

/// A passthrough entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error(
        "{entry:?}: expected a variable name or a prefix followed by `*` (letters, digits, `_`)"
    )]
    Syntax { entry: String },
    #[error("{entry:?} matches {name}, {}", owner.reason())]
    Reserved {
        entry: String,
        name: String,
        owner: Owner,
    },
}

/// Who a reserved name belongs to, which says why a passthrough entry may not match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The agent's own configuration (the pool token among it), and every `SCALR_*` name.
    Agent,
    /// A variable the runner sets for every stage (`task::env`, `task::users`).
    Run,
    /// A documented identity variable: inherited through `SCALR_AGENT_TASK_INHERIT_IDENTITY`.
    Identity,
}

impl Owner {
    fn reason(self) -> &'static str {
        match self {
            Owner::Agent => {
                "a variable the agent itself reads (its configuration, the pool token): it would reach every run"
            }
            Owner::Run => {
                "a variable the agent sets for every stage: it would replace the run's own"
            }
            Owner::Identity => {
                "an identity variable: stages inherit it through SCALR_AGENT_TASK_INHERIT_IDENTITY (token files copied, credentials masked)"
            }
        }
    }
}

/// Names the runner sets for every stage (`task::env::build`, `task::users::apply_env`):
/// a passthrough entry may not replace them. `tests/it/identity.rs` checks that every name a
/// stage sees is covered by these or [`RUN_PREFIXES`].
pub const RUN_NAMES: &[&str] = &[
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "LANG",
    "PATH",
    "TF_IN_AUTOMATION",
    "TF_INPUT",
    "CHECKPOINT_DISABLE",
    "TF_PLUGIN_CACHE_DIR",
    "TF_CLI_CONFIG_FILE",
    "TERRAFORM_CONFIG",
    "SSL_CERT_FILE",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "LD_PRELOAD",
];

/// Prefixes of names the runner sets (run variables, Terraform variables and credentials,
/// `libnss-wrapper`'s files).
pub const RUN_PREFIXES: &[&str] = &["TF_VAR_", "TF_TOKEN_", "NSS_WRAPPER_"];

/// Prefix of every name the agent reads or sets as a run variable.
const AGENT_PREFIX: &str = "SCALR_";

impl Pattern {
    /// Parses one entry (`NAME` or `PREFIX*`).
    pub fn parse(entry: &str) -> Result<Pattern, PatternError> {
        let syntax = || PatternError::Syntax {
            entry: entry.to_string(),
        };
        let (body, prefix) = match entry.strip_suffix('*') {
            Some(p) => (p, true),
            None => (entry, false),
        };
        let valid = body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !body.starts_with(|c: char| c.is_ascii_digit());
        if !valid || (!prefix && body.is_empty()) {
            return Err(syntax());
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_string())
        } else {
            Pattern::Name(body.to_string())
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Name(n) => n == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// Whether this pattern could match a name starting with `prefix`.
    fn overlaps_prefix(&self, prefix: &str) -> bool {
        match self {
            Pattern::Name(n) => n.starts_with(prefix),
            Pattern::Prefix(p) => p.starts_with(prefix) || prefix.starts_with(p.as_str()),
        }
    }

    /// Refuses a pattern that could match a name the agent reads (`agent`, any `SCALR_*`),
    /// a name the runner sets, or a documented identity variable.
    pub fn check(&self, entry: &str, agent: &[&str]) -> Result<(), PatternError> {
        let refuse = |name: &str, owner| PatternError::Reserved {
            entry: entry.to_string(),
            name: name.to_string(),
            owner,
        };
        let names = [
            (agent, Owner::Agent),
            (RUN_NAMES, Owner::Run),
            (IDENTITY_VARIABLES, Owner::Identity),
        ];
        for (list, owner) in names {
            if let Some(name) = list.iter().find(|n| self.matches(n)) {
                return Err(refuse(name, owner));
            }
        }
        if self.overlaps_prefix(AGENT_PREFIX) {
            return Err(refuse("SCALR_*", Owner::Agent));
        }
        if let Some(p) = RUN_PREFIXES.iter().find(|p| self.overlaps_prefix(p)) {
            return Err(refuse(&format!("{p}*"), Owner::Run));
        }
        Ok(())
    }
}

/// Parses `SCALR_AGENT_TASK_ENV_PASSTHROUGH` (comma-separated), refusing every entry that is
/// malformed or could match a reserved name (see [`Pattern::check`]; `agent` is every name and
/// legacy name the agent reads). All problems are returned.
pub fn parse_passthrough(value: &str, agent: &[&str]) -> Result<Vec<Pattern>, Vec<PatternError>> {
    let (mut patterns, mut errors) = (Vec::new(), Vec::new());
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match Pattern::parse(entry).and_then(|p| p.check(entry, agent).map(|()| p)) {
            Ok(p) => patterns.push(p),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(patterns)
    } else {
        Err(errors)
    }
}

/// Settings of this module, filled in by `config` from the agent's environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The variables stages inherit, with their values in the agent's environment: the
    /// documented identity variables present (unless inheritance is off) and the passthrough
    /// matches.
    pub inherited: BTreeMap<String, String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("inherited", &self.inherited.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Settings {
    /// Picks from the agent's environment `vars` what stages inherit.
    pub fn select<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
        inherit_identity: bool,
        passthrough: &[Pattern],
    ) -> Settings {
        let inherited = vars
            .into_iter()
            .filter(|(k, _)| {
                (inherit_identity && IDENTITY_VARIABLES.contains(k))
                    || passthrough.iter().any(|p| p.matches(k))
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings { inherited }
    }

    /// Values to mask in the task's log (token files' contents are added by [`Settings::copy_tokens`]).
    pub fn secrets(&self) -> Vec<String> {
        SECRET_VARIABLES
            .iter()
            .filter_map(|k| self.inherited.get(*k))
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    }
}

/// What a task's stages get: the variables (token files pointing at their copies) and the
/// secret values to mask.
#[derive(Default)]
pub struct TaskIdentity {
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
}

/// A token file could not be copied into the task.
#[derive(Debug, thiserror::Error)]
#[error("copying {variable}'s token file {path} into the task: {source}")]
pub struct TokenFileError {
    pub variable: String,
    pub path: PathBuf,
    #[source]
    pub source: TaskFileError,
}

impl Settings {
    /// Copies every token file into `<task>/identity.<VARIABLE>` (0400, the task's uid; a
    /// rename over the previous copy, so a rotated token replaces it) and returns the variables
    /// with token files pointing at the copies. Blocks: call it on the blocking pool.
    pub fn copy_tokens(&self, root: &TaskRoot) -> Result<TaskIdentity, TokenFileError> {
        let mut out = TaskIdentity {
            secrets: self.secrets(),
            ..TaskIdentity::default()
        };
        for (name, value) in &self.inherited {
            if !TOKEN_FILE_VARIABLES.contains(&name.as_str()) || value.is_empty() {
                out.env.push((name.clone(), value.clone()));
                continue;
            }
            let err = |source| TokenFileError {
                variable: name.clone(),
                path: PathBuf::from(value),
                source,
            };
            let bytes = taskfs::read_input(Path::new(value), Kind::IdentityToken, root.limits())
                .map_err(err)?;
            let rel = PathBuf::from(format!("{TOKEN_PREFIX}{name}"));
            root.write(&rel, Kind::IdentityToken, &bytes).map_err(err)?;
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if !text.is_empty() {
                out.secrets.push(text);
            }
            out.env
                .push((name.clone(), root.path().join(&rel).display().to_string()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESERVED: &[&str] = &[
        "SCALR_AGENT_TOKEN",
        "HTTP_PROXY",
        "PATH",
        "ECS_CONTAINER_METADATA_URI_V4",
    ];

    #[test]
    fn passthrough_refuses_what_could_reach_the_agents_own_variables() {
        let refused = |v: &str| parse_passthrough(v, RESERVED).unwrap_err();
        assert!(
            matches!(&refused("*")[0], PatternError::Reserved { name, .. } if name == "SCALR_AGENT_TOKEN")
        );
        assert!(matches!(&refused("S*")[0], PatternError::Reserved { .. }));
        assert!(
            matches!(&refused("SCALR_ANYTHING")[0], PatternError::Reserved { name, .. } if name == "SCALR_*")
        );
        assert!(
            matches!(&refused("SCA*")[0], PatternError::Reserved { name, .. } if name == "SCALR_AGENT_TOKEN")
        );
        assert!(
            matches!(&refused("HTTP_*")[0], PatternError::Reserved { name, .. } if name == "HTTP_PROXY")
        );
        assert!(matches!(
            &refused("ECS_*")[0],
            PatternError::Reserved { .. }
        ));
        assert!(matches!(&refused("PATH")[0], PatternError::Reserved { .. }));
        assert!(matches!(
            &refused("BAD-NAME")[0],
            PatternError::Syntax { .. }
        ));
        assert!(matches!(&refused("A*B")[0], PatternError::Syntax { .. }));
        assert_eq!(refused("X,*,HTTP_PROXY,Y").len(), 2);
        let ok = parse_passthrough(" GITHUB_TOKEN , TFE_*,", RESERVED).unwrap();
        assert_eq!(
            ok,
            [
                Pattern::Name("GITHUB_TOKEN".into()),
                Pattern::Prefix("TFE_".into())
            ]
        );
        // What the runner sets and the identity list are refused too, each saying why.
        let owner = |v: &str| match &refused(v)[0] {
            PatternError::Reserved { name, owner, .. } => (name.clone(), *owner),
            e => panic!("{v}: {e}"),
        };
        assert_eq!(owner("HOME"), ("HOME".into(), Owner::Run));
        assert_eq!(owner("TF_VAR_region"), ("TF_VAR_*".into(), Owner::Run));
        assert_eq!(owner("TF_*"), ("TF_IN_AUTOMATION".into(), Owner::Run));
        assert_eq!(owner("NSS*"), ("NSS_WRAPPER_*".into(), Owner::Run));
        assert_eq!(
            owner("AWS_*"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".into(),
                Owner::Identity
            )
        );
        assert_eq!(owner("MSI_SECRET"), ("MSI_SECRET".into(), Owner::Identity));
        assert!(
            refused("AWS_*")[0]
                .to_string()
                .contains("SCALR_AGENT_TASK_INHERIT_IDENTITY")
        );
        assert!(parse_passthrough("AWS_PROFILE,ARM_*,TFC_TOKEN", RESERVED).is_ok());
        let text = refused("HTTP_*")[0].to_string();
        assert!(text.contains("\"HTTP_*\" matches HTTP_PROXY"), "{text}");
    }

    #[test]
    fn select_takes_the_documented_list_and_the_passthrough_only() {
        let env = [
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/x",
            ),
            ("AWS_REGION", "eu-west-1"),
            ("IDENTITY_HEADER", "header-secret"),
            ("SCALR_AGENT_TOKEN", "pool-token"),
            ("HOME", "/root"),
            ("TFE_TOKEN", "t"),
        ];
        let s = Settings::select(env, true, &[Pattern::Prefix("TFE_".into())]);
        assert_eq!(
            s.inherited.keys().collect::<Vec<_>>(),
            [
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_REGION",
                "IDENTITY_HEADER",
                "TFE_TOKEN"
            ]
        );
        assert_eq!(s.secrets(), ["header-secret"]);
        assert!(!format!("{s:?}").contains("header-secret"));
        let off = Settings::select(env, false, &[]);
        assert!(off.inherited.is_empty());
    }
}
