//! The agent's configuration: read from the environment once, validated, then passed down.
//!
//! This is the only module that reads environment variables (clippy's `disallowed-methods`
//! enforces it). [`Config::from_vars`] takes the variables as an iterator so tests pass a map
//! instead of mutating the process environment. Every bad or missing value is collected and
//! reported together in one [`ConfigError`]; `main` turns it into exit code 64.
//!
//! Names follow the Scalr agent's; legacy names are read only when the modern one is unset.
//! `variables` lists every name (the README's table is checked against it); `parse` turns raw
//! strings into typed values.

mod agent;
mod build;
mod http;
mod parse;
mod providers;
mod relay;
mod sandbox;
mod software;
mod task;
mod variables;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use parse::{Parser, Raw};
pub use parse::{parse_bool, parse_duration};
pub use variables::{VARIABLES, Variable};
use variables::{ignored_variables, is_ours, leak_name, unknown_variables};

/// The validated configuration: each module's settings, filled in. Every field already has its
/// final type: nothing downstream parses strings from the environment again. `cli` hands each
/// command its own part ([`Config::exec`], [`Config::doctor`], `agent`, `relay`).
#[derive(Debug, Clone)]
pub struct Config {
    pub control_plane: Option<crate::agent::ControlPlane>,
    pub name: String,
    pub debug: bool,
    pub log_format: crate::logging::Format,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub software: crate::software::Settings,
    /// The provider store's settings.
    pub providers: crate::providers::Settings,
    pub http: crate::http::Settings,
    pub sandbox: crate::sandbox::Settings,
    /// The task runner's settings.
    pub task: crate::task::Settings,
    /// The platforms' variables, to guess where the agent runs.
    pub runtime: crate::platform::RuntimeHints,
    /// Settings of `scalr-agent run` (complete: control plane, name, data directory, HTTP).
    pub agent: crate::agent::Settings,
    /// Settings of `scalr-agent relay` (only with [`Needs::Relay`]).
    pub relay: Option<crate::relay::Settings>,
    /// `SCALR_*` variables that are set but unknown (likely typos); logged as warnings.
    pub unknown_variables: Vec<String>,
    /// Settings of the Scalr agent's container drivers that are set and that the local driver
    /// ignores; logged at start.
    pub ignored_variables: Vec<String>,
}

/// What the command about to run needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Local work (software cache, `exec`): no control plane.
    Local,
    /// `run`: `SCALR_URL` and the pool token are required.
    ControlPlane,
    /// `relay`: the control plane and the VCS (`SCALR_AGENT_VCS_URL`, `SCALR_AGENT_VCS_VENDOR`).
    Relay,
}

/// Every problem found in the environment, reported together.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

/// One bad or missing variable.
#[derive(Debug)]
pub struct Problem {
    pub variable: &'static str,
    /// The value as given, or `None` when it is missing or secret.
    pub value: Option<String>,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            match &p.value {
                Some(v) => writeln!(f, "  {}={:?}: expected {}", p.variable, v, p.expected)?,
                None => writeln!(f, "  {}: expected {}", p.variable, p.expected)?,
            }
        }
        Ok(())
    }
}

impl Config {
    /// Reads the process environment. The only place the agent looks at it.
    pub fn from_process_env(needs: Needs) -> Result<Config, ConfigError> {
        #[allow(
            clippy::disallowed_methods,
            reason = "the one read of the process environment"
        )]
        let vars = std::env::vars_os();
        Config::from_vars(vars, needs)
    }

    /// Parses and validates the given variables.
    pub fn from_vars<I, K, V>(vars: I, needs: Needs) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut problems = Vec::new();
        let mut map: HashMap<String, String> = HashMap::new();
        for (k, v) in vars {
            let (k, v) = (k.into(), v.into());
            let Some(k) = k.to_str().map(str::to_owned) else {
                continue;
            };
            match v.into_string() {
                Ok(v) => {
                    map.insert(k, v);
                }
                Err(_) if is_ours(&k) => problems.push(Problem {
                    variable: leak_name(&k),
                    value: None,
                    expected: "a UTF-8 value".into(),
                }),
                Err(_) => {}
            }
        }
        // envy lower-cases names, so `http_proxy` and `HTTP_PROXY` would collide: feed it the
        // upper-case spelling first and the lower-case one only where the upper-case is unset.
        let mut fed: Vec<(String, String)> = Vec::new();
        for (k, v) in &map {
            if k.chars().any(|c| c.is_ascii_lowercase())
                && map.contains_key(&k.to_ascii_uppercase())
            {
                continue;
            }
            if is_ours(k) || is_ours(&k.to_ascii_uppercase()) {
                fed.push((k.clone(), v.clone()));
            }
        }
        let raw: Raw = envy::from_iter(fed).unwrap_or_default();
        let mut p = Parser {
            problems: &mut problems,
        };
        let relay_raw = raw.clone();
        let identity = task::identity(&mut p, &raw, &map);
        let mut config = p.build(raw, needs);
        config.task.identity = identity;
        if needs == Needs::Relay {
            let mut tags: Vec<(String, String)> = map
                .iter()
                .filter(|(k, _)| k.starts_with(relay::METADATA_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            tags.sort();
            config.relay = relay::parse(&mut p, &relay_raw, tags, &config);
        }
        let unknown_variables = unknown_variables(map.keys());
        let ignored_variables = ignored_variables(map.iter());
        if problems.is_empty() {
            Ok(Config {
                unknown_variables,
                ignored_variables,
                ..config
            })
        } else {
            problems.sort_by_key(|p| p.variable);
            Err(ConfigError { problems })
        }
    }

    /// The directory of the software cache.
    pub fn binaries_dir(&self) -> PathBuf {
        self.cache_dir.join("binaries")
    }

    /// What a task runner needs (`exec`, and the daemon's executor).
    pub fn exec(&self) -> crate::exec::Settings {
        crate::exec::Settings {
            data_dir: self.data_dir.clone(),
            binaries_dir: self.binaries_dir(),
            http: self.http.clone(),
            software: self.software.clone(),
            providers: self.providers.clone(),
            sandbox: self.sandbox.clone(),
            task: self.task.clone(),
        }
    }

    /// What `doctor` reports on.
    pub fn doctor(&self) -> crate::doctor::Settings {
        crate::doctor::Settings {
            sandbox: self.sandbox.clone(),
            task: self.task.clone(),
            runtime: self.runtime.clone(),
            unknown_variables: self.unknown_variables.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn load(vars: &[(&str, &str)], needs: Needs) -> Result<Config, ConfigError> {
        Config::from_vars(
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            needs,
        )
    }

    #[test]
    fn defaults_for_local_work() {
        let c = load(&[], Needs::Local).unwrap();
        assert!(c.control_plane.is_none());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/scalr-agent"));
        assert_eq!(c.cache_dir, c.data_dir);
        assert_eq!(c.software.size_limit_bytes, 5120 << 20);
        assert_eq!(
            c.software.unused_threshold,
            Duration::from_secs(10 * 86_400)
        );
        assert_eq!(
            c.software.signature_check,
            crate::software::SignatureCheck::Required
        );
        assert_eq!(c.log_format, crate::logging::Format::Plain);
        assert!(!c.name.is_empty());
    }

    #[test]
    fn every_problem_is_reported_together_and_secrets_hidden() {
        let err = load(
            &[
                ("SCALR_AGENT_TOKEN", "tok en-secret"),
                ("SCALR_AGENT_LOG_FORMAT", "xml"),
                ("SCALR_AGENT_DATA_DIR", "relative/dir"),
                ("SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB", "lots"),
                ("SCALR_AGENT_HTTP_READ_TIMEOUT", "soon"),
                ("SCALR_AGENT_TERRAFORM_MIRROR_URL", "ftp://mirror"),
            ],
            Needs::ControlPlane,
        )
        .unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            names,
            [
                "SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB",
                "SCALR_AGENT_DATA_DIR",
                "SCALR_AGENT_HTTP_READ_TIMEOUT",
                "SCALR_AGENT_LOG_FORMAT",
                "SCALR_AGENT_TERRAFORM_MIRROR_URL",
                "SCALR_AGENT_TOKEN",
                "SCALR_URL",
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("SCALR_AGENT_LOG_FORMAT=\"xml\": expected `plain`, `dev` or `json`"),
            "{text}"
        );
        assert!(text.contains("SCALR_URL: expected"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn legacy_names_apply_only_when_modern_unset() {
        let c = load(
            &[
                ("SCALR_URL", "https://acme.scalr.io"),
                ("SCALR_TOKEN", "legacy"),
                ("SCALR_WORK_DIR", "/work"),
                ("SCALR_DEBUG", "yes"),
                ("SCALR_AGENT_LOG_FORMAT", "json"),
                ("SCALR_LOG_FORMAT", "xml"),
            ],
            Needs::ControlPlane,
        )
        .unwrap();
        assert_eq!(c.control_plane.unwrap().token.expose(), "legacy");
        assert_eq!(c.data_dir, PathBuf::from("/work"));
        assert!(c.debug);
        assert_eq!(c.log_format, crate::logging::Format::Json);
    }

    #[test]
    fn token_never_appears_in_debug() {
        let c = load(
            &[
                ("SCALR_URL", "https://acme.scalr.io"),
                ("SCALR_AGENT_TOKEN", "canary-123"),
            ],
            Needs::ControlPlane,
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("canary-123"));
        assert!(dbg.contains("***"));
    }

    #[test]
    fn proxies_and_lower_case_spellings() {
        let c = load(
            &[
                ("https_proxy", "proxy.internal:3128"),
                ("NO_PROXY", "localhost,10.0.0.0/8"),
            ],
            Needs::Local,
        )
        .unwrap();
        assert_eq!(
            c.http.https_proxy.unwrap().as_str(),
            "http://proxy.internal:3128/"
        );
        assert_eq!(c.http.no_proxy.as_deref(), Some("localhost,10.0.0.0/8"));
        let c = load(
            &[("HTTPS_PROXY", "http://a:1"), ("https_proxy", "http://b:2")],
            Needs::Local,
        )
        .unwrap();
        assert_eq!(c.http.https_proxy.unwrap().host_str(), Some("a"));
    }

    #[test]
    fn unknown_agent_variables_are_listed() {
        let c = load(
            &[("SCALR_AGENT_CONCURENCY", "3"), ("SCALR_AGENT_SINGLE", "1")],
            Needs::Local,
        )
        .unwrap();
        assert_eq!(c.unknown_variables, ["SCALR_AGENT_CONCURENCY"]);
        // Every `SCALR_*` name, not only `SCALR_AGENT_*`; the container drivers' settings are
        // listed apart, as ignored by the local driver.
        let c = load(
            &[
                ("SCALR_URLL", "x"),
                ("SCALR_AGENT_CONTAINER_TASK_IMAGE", "scalr/runner:1"),
                (
                    "SCALR_AGENT_CONTAINER_TASK_IMAGE_REGISTRY",
                    "registry.internal",
                ),
                ("SCALR_URL", "https://x.scalr.io"),
            ],
            Needs::Local,
        )
        .unwrap();
        assert_eq!(c.unknown_variables, ["SCALR_URLL"]);
        assert_eq!(
            c.ignored_variables,
            [
                "SCALR_AGENT_CONTAINER_TASK_IMAGE",
                "SCALR_AGENT_CONTAINER_TASK_IMAGE_REGISTRY"
            ]
        );
    }

    #[test]
    fn the_stages_ca_bundle_has_the_product_names() {
        // One public root of the machine's ca-certificates, as a file path.
        let pem = std::fs::read_dir("/usr/share/ca-certificates/mozilla")
            .expect("ca-certificates is installed")
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "crt"))
            .unwrap();
        let pem = pem.to_str().unwrap();
        for name in [
            "SCALR_AGENT_CONTAINER_TASK_CA_CERT",
            "SCALR_CONTAINER_TASK_CA_CERT",
        ] {
            let c = load(&[(name, pem)], Needs::Local).unwrap();
            let bundle = c.task.task_ca_bundle.expect(name);
            assert_eq!(bundle.certificates(), 1, "{name}");
            assert!(c.http.ca_bundle.is_none(), "stages only: {name}");
        }
        let err = load(&[("SCALR_CONTAINER_TASK_CA_CERT", "not pem")], Needs::Local).unwrap_err();
        assert_eq!(err.problems[0].variable, "SCALR_CONTAINER_TASK_CA_CERT");
    }

    #[test]
    fn a_bad_url_says_what_is_wrong_and_keeps_its_scheme() {
        let err = load(
            &[(
                "SCALR_AGENT_TERRAFORM_MIRROR_URL",
                "http://user:pw@127.0.0.1:99999/terraform",
            )],
            Needs::Local,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"http://***@127.0.0.1:99999/terraform\"")
                && err.contains("does not parse: invalid port number")
                && !err.contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn bad_ca_bundle_is_reported() {
        let err = load(&[("SCALR_AGENT_CA_CERT", "bm90IGEgY2VydA==")], Needs::Local).unwrap_err();
        assert_eq!(err.problems[0].variable, "SCALR_AGENT_CA_CERT");
        assert!(err.problems[0].expected.contains("PEM"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn relay_settings_are_filled_and_bad_values_reported_together() {
        let base = [
            ("SCALR_URL", "https://acme.scalr.io"),
            ("SCALR_AGENT_TOKEN", "tok"),
            ("SCALR_AGENT_VCS_URL", "https://gitlab.internal/gitlab"),
            ("SCALR_AGENT_VCS_VENDOR", "gitlab"),
            ("SCALR_AGENT_VCS_ALLOWED_PROJECTS", "acme/.*"),
            ("SCALR_AGENT_METADATA_instance_id", "i-1"),
        ];
        let c = load(&base, Needs::Relay).unwrap();
        assert!(c.unknown_variables.is_empty());
        let r = c.relay.unwrap();
        assert_eq!(r.vendor, crate::relay::Vendor::Gitlab);
        assert_eq!(r.parallelism.get(), 4);
        assert_eq!(r.metadata["instance_id"], "i-1");
        let re = r.allowed_projects.unwrap();
        assert!(re.is_match("acme/infra") && !re.is_match("xacme/infra"));
        let err = load(
            &[
                ("SCALR_URL", "https://acme.scalr.io"),
                ("SCALR_AGENT_TOKEN", "tok"),
                ("SCALR_AGENT_VCS_URL", "https://user:pw@gitlab.internal"),
                ("SCALR_AGENT_VCS_VENDOR", "gitea"),
                ("SCALR_AGENT_VCS_ALLOWED_PROJECTS", "acme/("),
                ("SCALR_AGENT_RELAY_PARALLELISM", "0"),
                ("SCALR_AGENT_METADATA_bad-tag", "x"),
            ],
            Needs::Relay,
        )
        .unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            names,
            [
                "SCALR_AGENT_METADATA_*",
                "SCALR_AGENT_RELAY_PARALLELISM",
                "SCALR_AGENT_VCS_ALLOWED_PROJECTS",
                "SCALR_AGENT_VCS_URL",
                "SCALR_AGENT_VCS_VENDOR",
            ]
        );
        assert!(!err.to_string().contains("pw"), "{err}");
        let err = load(&base[..2], Needs::Relay).unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(names, ["SCALR_AGENT_VCS_URL", "SCALR_AGENT_VCS_VENDOR"]);
    }

    #[test]
    fn readme_documents_every_variable() {
        let readme = include_str!("../../README.md");
        for v in VARIABLES {
            assert!(
                readme.contains(&format!("`{}`", v.name)),
                "README lacks {}",
                v.name
            );
        }
    }
}
