//! Turning raw environment strings into typed settings, collecting every problem.
//!
//! size: every variable's parsing, one after another, while `config` is being inverted into per-module settings (issue 14, helper `config`).
#![allow(
    clippy::disallowed_methods,
    reason = "reads the operator's CA bundle and files named by variables"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use url::Url;

use super::{
    CaBundle, Config, ControlPlane, HttpConfig, LogFormat, Needs, Problem, RunnerConfig,
    SandboxConfig, SignatureCheck, SoftwareConfig,
};
use crate::secret::Secret;
use crate::software::catalog::Tool;
use crate::software::verify;

/// Raw values as envy reads them: every field optional and a string, so that one bad value
/// does not hide the others.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct Raw {
    scalr_url: Option<String>,
    scalr_agent_token: Option<String>,
    scalr_token: Option<String>,
    scalr_agent_name: Option<String>,
    scalr_agent_debug: Option<String>,
    scalr_debug: Option<String>,
    scalr_agent_log_format: Option<String>,
    scalr_log_format: Option<String>,
    scalr_agent_data_dir: Option<String>,
    scalr_work_dir: Option<String>,
    scalr_data_home: Option<String>,
    scalr_agent_cache_dir: Option<String>,
    scalr_agent_binary_cache_size_limit_mb: Option<String>,
    scalr_agent_binary_cache_threshold_days: Option<String>,
    scalr_agent_ca_cert: Option<String>,
    scalr_ca_cert: Option<String>,
    scalr_agent_container_task_ca_cert: Option<String>,
    scalr_container_task_ca_cert: Option<String>,
    http_proxy: Option<String>,
    https_proxy: Option<String>,
    no_proxy: Option<String>,
    scalr_agent_http_read_timeout: Option<String>,
    scalr_agent_http_connect_timeout: Option<String>,
    scalr_agent_http_max_retries: Option<String>,
    scalr_agent_http_backoff: Option<String>,
    scalr_agent_software_mirror_url: Option<String>,
    scalr_agent_terraform_mirror_url: Option<String>,
    scalr_agent_opentofu_mirror_url: Option<String>,
    scalr_agent_opa_mirror_url: Option<String>,
    scalr_agent_infracost_mirror_url: Option<String>,
    scalr_agent_software_trusted_keys: Option<String>,
    scalr_agent_software_signature_check: Option<String>,
    scalr_agent_software_max_size_mb: Option<String>,
    pub(super) scalr_agent_hooks_dir: Option<String>,
    pub(super) scalr_agent_keep_task_dirs: Option<String>,
    pub(super) scalr_agent_task_artifact_limit_mb: Option<String>,
    pub(super) scalr_agent_task_log_limit_mb: Option<String>,
    pub(super) scalr_agent_task_memory_limit_mb: Option<String>,
    pub(super) scalr_agent_cancel_grace: Option<String>,
    pub(super) path: Option<String>,
    pub(super) scalr_agent_task_read_paths: Option<String>,
    pub(super) scalr_agent_min_isolation: Option<String>,
    pub(super) scalr_agent_task_uid_range: Option<String>,
    pub(super) scalr_agent_task_rlimit_nofile: Option<String>,
    pub(super) scalr_agent_task_rlimit_fsize_mb: Option<String>,
    pub(super) scalr_agent_task_rlimit_nproc: Option<String>,
    pub(super) scalr_agent_sandbox_test_deny: Option<String>,
    pub(super) ecs_container_metadata_uri_v4: Option<String>,
    pub(super) k_service: Option<String>,
    pub(super) cloud_run_job: Option<String>,
    pub(super) container_app_job_name: Option<String>,
    pub(super) scalr_agent_nss_wrapper_lib: Option<String>,
    pub(super) container_app_name: Option<String>,
    pub(super) kubernetes_service_host: Option<String>,
    pub(super) scalr_agent_concurrency: Option<String>,
    pub(super) scalr_agent_single: Option<String>,
    pub(super) scalr_single: Option<String>,
    pub(super) scalr_agent_single_wait_timeout: Option<String>,
    pub(super) scalr_agent_driver: Option<String>,
    pub(super) scalr_driver: Option<String>,
    pub(super) scalr_agent_worker_on_stop_action: Option<String>,
    pub(super) scalr_agent_worker_drain_timeout: Option<String>,
    pub(super) scalr_agent_worker_grace_shutdown_timeout: Option<String>,
    pub(super) scalr_agent_worker_report_timeout: Option<String>,
    pub(super) scalr_agent_disconnect_on_stop: Option<String>,
    pub(super) scalr_agent_state_persistence_enabled: Option<String>,
    pub(super) scalr_agent_health_addr: Option<String>,
    pub(super) scalr_agent_spool_limit_mb: Option<String>,
    pub(super) scalr_agent_vcs_url: Option<String>,
    pub(super) scalr_agent_vcs_vendor: Option<String>,
    pub(super) scalr_agent_vcs_allowed_projects: Option<String>,
    pub(super) scalr_agent_relay_rules_file: Option<String>,
    pub(super) scalr_agent_relay_parallelism: Option<String>,
    pub(super) scalr_agent_relay_request_timeout: Option<String>,
    pub(super) scalr_agent_relay_idle_timeout: Option<String>,
    pub(super) scalr_agent_relay_max_body_mb: Option<String>,
    pub(super) scalr_agent_relay_stop_timeout: Option<String>,
    pub(super) scalr_agent_provider_cache_enabled: Option<String>,
    pub(super) scalr_agent_provider_cache_size_limit_mb: Option<String>,
    pub(super) scalr_agent_provider_cache_concurrency: Option<String>,
    pub(super) scalr_agent_provider_network_mirrors: Option<String>,
    pub(super) scalr_agent_provider_registry_hosts: Option<String>,
}

pub(super) struct Parser<'a> {
    pub(super) problems: &'a mut Vec<Problem>,
}

impl Parser<'_> {
    pub(super) fn build(&mut self, raw: Raw, needs: Needs) -> Config {
        let software = self.software(&raw_software(&raw));
        let raw_providers = super::providers::RawProviders::take(&raw);
        let http = self.http(&raw);
        let control_plane = self.control_plane(&raw, needs);
        let sandbox = self.sandbox(&raw);
        let runner = self.runner(&raw);
        let agent = super::agent::parse(self, &raw);
        let name = match nonempty(raw.scalr_agent_name.clone()) {
            Some(n) => {
                if n.len() > 128 || n.chars().any(|c| c.is_control()) {
                    self.bad("SCALR_AGENT_NAME", &n, "at most 128 printable characters");
                }
                n
            }
            None => hostname(),
        };
        let debug = self
            .pick_bool(
                ("SCALR_AGENT_DEBUG", raw.scalr_agent_debug),
                ("SCALR_DEBUG", raw.scalr_debug),
            )
            .unwrap_or(false);
        let log_format = match pick(
            ("SCALR_AGENT_LOG_FORMAT", raw.scalr_agent_log_format),
            &[("SCALR_LOG_FORMAT", raw.scalr_log_format)],
        ) {
            None => LogFormat::Plain,
            Some((name, v)) => match v.to_ascii_lowercase().as_str() {
                "plain" | "dev" => LogFormat::Plain,
                "json" => LogFormat::Json,
                _ => {
                    self.bad(name, &v, "`plain`, `dev` or `json`");
                    LogFormat::Plain
                }
            },
        };
        let data_dir = match pick(
            ("SCALR_AGENT_DATA_DIR", raw.scalr_agent_data_dir.clone()),
            &[
                ("SCALR_WORK_DIR", raw.scalr_work_dir.clone()),
                ("SCALR_DATA_HOME", raw.scalr_data_home.clone()),
            ],
        ) {
            None => PathBuf::from("/var/lib/scalr-agent"),
            Some((name, v)) => self.abs_path(name, &v),
        };
        let cache_dir = match nonempty(raw.scalr_agent_cache_dir.clone()) {
            None => data_dir.clone(),
            Some(v) => self.abs_path("SCALR_AGENT_CACHE_DIR", &v),
        };
        let unused_days = software.unused_threshold.as_secs() / 86_400;
        let providers = super::providers::parse(self, &raw_providers, &cache_dir, unused_days);
        Config {
            providers,
            control_plane,
            name,
            debug,
            log_format,
            data_dir,
            cache_dir,
            software,
            http,
            sandbox,
            runner,
            agent,
            relay: None,
            unknown_variables: Vec::new(),
            ignored_variables: Vec::new(),
        }
    }

    fn control_plane(&mut self, raw: &Raw, needs: Needs) -> Option<ControlPlane> {
        let url = match nonempty(raw.scalr_url.clone()) {
            Some(v) => self.url("SCALR_URL", &v),
            None => {
                if needs != Needs::Local {
                    self.missing(
                        "SCALR_URL",
                        "the control plane's URL, e.g. https://example.scalr.io",
                    );
                }
                None
            }
        };
        let token = match pick(
            ("SCALR_AGENT_TOKEN", raw.scalr_agent_token.clone()),
            &[("SCALR_TOKEN", raw.scalr_token.clone())],
        ) {
            Some((name, v)) => {
                if v.trim() != v || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.problems.push(Problem {
                        variable: name,
                        value: None,
                        expected: "a token without whitespace (value hidden)".into(),
                    });
                }
                Some(Secret::new(v))
            }
            None => {
                if needs != Needs::Local {
                    self.missing("SCALR_AGENT_TOKEN", "the agent pool token");
                }
                None
            }
        };
        Some(ControlPlane {
            url: url?,
            token: token?,
        })
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one setting per line: every variable, read in one place"
    )]
    fn software(&mut self, raw: &RawSoftware) -> SoftwareConfig {
        let size_limit_mb = self
            .number(
                "SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB",
                &raw.size_limit_mb,
                1,
                u64::MAX / (1 << 20),
            )
            .unwrap_or(5120);
        let days = self
            .number(
                "SCALR_AGENT_BINARY_CACHE_THRESHOLD_DAYS",
                &raw.threshold_days,
                1,
                36500,
            )
            .unwrap_or(10);
        let mirror = nonempty(raw.mirror.clone())
            .and_then(|v| self.url("SCALR_AGENT_SOFTWARE_MIRROR_URL", &v));
        let mut tool_mirrors = BTreeMap::new();
        for (tool, name, value) in [
            (
                Tool::Terraform,
                "SCALR_AGENT_TERRAFORM_MIRROR_URL",
                &raw.terraform,
            ),
            (
                Tool::OpenTofu,
                "SCALR_AGENT_OPENTOFU_MIRROR_URL",
                &raw.opentofu,
            ),
            (Tool::Opa, "SCALR_AGENT_OPA_MIRROR_URL", &raw.opa),
            (
                Tool::Infracost,
                "SCALR_AGENT_INFRACOST_MIRROR_URL",
                &raw.infracost,
            ),
        ] {
            if let Some(url) = nonempty(value.clone()).and_then(|v| self.url(name, &v)) {
                tool_mirrors.insert(tool, url);
            }
        }
        let mut trusted_keys = Vec::new();
        if let Some(list) = nonempty(raw.trusted_keys.clone()) {
            for path in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match std::fs::read_to_string(path) {
                    Err(e) => self.bad(
                        "SCALR_AGENT_SOFTWARE_TRUSTED_KEYS",
                        path,
                        &format!("a readable armored OpenPGP public key file ({e})"),
                    ),
                    Ok(text) => match verify::parse_armored_keys(&text, path) {
                        Ok(keys) => trusted_keys.extend(keys),
                        Err(e) => self.bad(
                            "SCALR_AGENT_SOFTWARE_TRUSTED_KEYS",
                            path,
                            &format!("an armored OpenPGP public key file ({e})"),
                        ),
                    },
                }
            }
        }
        let signature_check = match nonempty(raw.signature_check.clone()) {
            None => SignatureCheck::Required,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "required" => SignatureCheck::Required,
                "disabled" => SignatureCheck::Disabled,
                _ => {
                    self.bad(
                        "SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK",
                        &v,
                        "`required` or `disabled`",
                    );
                    SignatureCheck::Required
                }
            },
        };
        let max_mb = self
            .number(
                "SCALR_AGENT_SOFTWARE_MAX_SIZE_MB",
                &raw.max_size_mb,
                1,
                1 << 20,
            )
            .unwrap_or(1024);
        SoftwareConfig {
            size_limit_bytes: size_limit_mb.saturating_mul(1 << 20),
            unused_threshold: Duration::from_secs(days * 86_400),
            mirror,
            tool_mirrors,
            trusted_keys,
            signature_check,
            max_size_bytes: max_mb << 20,
        }
    }

    fn http(&mut self, raw: &Raw) -> HttpConfig {
        let defaults = HttpConfig::default();
        let ca_bundle = pick(
            ("SCALR_AGENT_CA_CERT", raw.scalr_agent_ca_cert.clone()),
            &[("SCALR_CA_CERT", raw.scalr_ca_cert.clone())],
        )
        .and_then(|(name, v)| self.ca_bundle(name, &v));
        let http_proxy =
            nonempty(raw.http_proxy.clone()).and_then(|v| self.proxy("HTTP_PROXY", &v));
        let https_proxy =
            nonempty(raw.https_proxy.clone()).and_then(|v| self.proxy("HTTPS_PROXY", &v));
        HttpConfig {
            ca_bundle,
            http_proxy,
            https_proxy,
            no_proxy: nonempty(raw.no_proxy.clone()),
            read_timeout: self
                .duration(
                    "SCALR_AGENT_HTTP_READ_TIMEOUT",
                    &raw.scalr_agent_http_read_timeout.clone(),
                )
                .unwrap_or(defaults.read_timeout),
            connect_timeout: self
                .duration(
                    "SCALR_AGENT_HTTP_CONNECT_TIMEOUT",
                    &raw.scalr_agent_http_connect_timeout.clone(),
                )
                .unwrap_or(defaults.connect_timeout),
            max_retries: self
                .number(
                    "SCALR_AGENT_HTTP_MAX_RETRIES",
                    &raw.scalr_agent_http_max_retries,
                    0,
                    20,
                )
                .map(|n| n as u32)
                .unwrap_or(defaults.max_retries),
            initial_backoff: self
                .duration(
                    "SCALR_AGENT_HTTP_BACKOFF",
                    &raw.scalr_agent_http_backoff.clone(),
                )
                .unwrap_or(defaults.initial_backoff),
        }
    }

    fn runner(&mut self, raw: &Raw) -> RunnerConfig {
        RunnerConfig {
            hooks_dir: nonempty(raw.scalr_agent_hooks_dir.clone())
                .map(|v| self.abs_path("SCALR_AGENT_HOOKS_DIR", &v)),
            keep_task_dirs: self
                .pick_bool(
                    (
                        "SCALR_AGENT_KEEP_TASK_DIRS",
                        raw.scalr_agent_keep_task_dirs.clone(),
                    ),
                    ("SCALR_AGENT_KEEP_TASK_DIRS", None),
                )
                .unwrap_or(false),
            cancel_grace: self
                .duration("SCALR_AGENT_CANCEL_GRACE", &raw.scalr_agent_cancel_grace)
                .unwrap_or(Duration::from_secs(30)),
            read_paths: nonempty(raw.scalr_agent_task_read_paths.clone())
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| self.abs_path("SCALR_AGENT_TASK_READ_PATHS", p))
                        .collect()
                })
                .unwrap_or_default(),
            task_ca_bundle: pick(
                (
                    "SCALR_AGENT_CONTAINER_TASK_CA_CERT",
                    raw.scalr_agent_container_task_ca_cert.clone(),
                ),
                &[(
                    "SCALR_CONTAINER_TASK_CA_CERT",
                    raw.scalr_container_task_ca_cert.clone(),
                )],
            )
            .and_then(|(name, v)| self.ca_bundle(name, &v)),
            artifact_limit_bytes: self
                .number(
                    "SCALR_AGENT_TASK_ARTIFACT_LIMIT_MB",
                    &raw.scalr_agent_task_artifact_limit_mb,
                    1,
                    1 << 20,
                )
                .unwrap_or(512)
                << 20,
            nss_wrapper_lib: nonempty(raw.scalr_agent_nss_wrapper_lib.clone())
                .map(|v| self.abs_path("SCALR_AGENT_NSS_WRAPPER_LIB", &v)),
            system_path: nonempty(raw.path.clone())
                .unwrap_or_else(|| crate::task::env::SYSTEM_PATH.to_string()),
            log_limit_bytes: self
                .number(
                    "SCALR_AGENT_TASK_LOG_LIMIT_MB",
                    &raw.scalr_agent_task_log_limit_mb,
                    1,
                    1 << 20,
                )
                .unwrap_or(100)
                << 20,
            task_memory_limit_bytes: self
                .number(
                    "SCALR_AGENT_TASK_MEMORY_LIMIT_MB",
                    &raw.scalr_agent_task_memory_limit_mb,
                    16,
                    1 << 24,
                )
                .map(|mb| mb << 20),
        }
    }

    fn sandbox(&mut self, raw: &Raw) -> SandboxConfig {
        super::sandbox::parse(self, raw)
    }

    fn ca_bundle(&mut self, name: &'static str, value: &str) -> Option<CaBundle> {
        let trimmed = value.trim();
        let pem: Vec<u8> = if trimmed.starts_with("-----BEGIN") {
            trimmed.as_bytes().to_vec()
        } else if Path::new(trimmed).is_absolute() || Path::new(trimmed).exists() {
            match std::fs::read(trimmed) {
                Ok(b) => b,
                Err(e) => {
                    self.bad(name, value, &format!("a readable PEM file ({e})"));
                    return None;
                }
            }
        } else {
            let compact: String = trimmed.split_whitespace().collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(b) => b,
                Err(_) => {
                    self.bad(
                        name,
                        value,
                        "a PEM file path, inline PEM, or base64 of a PEM bundle",
                    );
                    return None;
                }
            }
        };
        let certificates = String::from_utf8_lossy(&pem)
            .matches("-----BEGIN CERTIFICATE-----")
            .count();
        if certificates == 0 || reqwest::Certificate::from_pem_bundle(&pem).is_err() {
            self.bad(
                name,
                value,
                "a bundle of PEM certificates (none could be parsed)",
            );
            return None;
        }
        Some(CaBundle { pem, certificates })
    }

    fn proxy(&mut self, name: &'static str, value: &str) -> Option<Url> {
        // `host:port` without a scheme is common in the wild and means http.
        let with_scheme = if value.contains("://") {
            value.to_string()
        } else {
            format!("http://{value}")
        };
        match Url::parse(&with_scheme) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h")
                    && u.host().is_some() =>
            {
                Some(u)
            }
            _ => {
                self.problems.push(Problem {
                    variable: name,
                    value: Some(crate::http::redact_str(value)),
                    expected: "a proxy URL such as http://proxy.internal:3128".into(),
                });
                None
            }
        }
    }

    pub(super) fn url(&mut self, name: &'static str, value: &str) -> Option<Url> {
        let problem = match Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                return Some(u);
            }
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                format!("the scheme is {:?}", u.scheme())
            }
            Ok(_) => "there is no host".to_string(),
            Err(url::ParseError::RelativeUrlWithoutBase) => "it is not absolute".to_string(),
            Err(e) => format!("it does not parse: {e}"),
        };
        self.problems.push(Problem {
            variable: name,
            value: Some(crate::http::redact_str(value)),
            expected: format!("an absolute http:// or https:// URL, but {problem}"),
        });
        None
    }

    pub(super) fn abs_path(&mut self, name: &'static str, value: &str) -> PathBuf {
        let p = PathBuf::from(value);
        if !p.is_absolute() {
            self.bad(name, value, "an absolute path");
        }
        p
    }

    pub(super) fn number(
        &mut self,
        name: &'static str,
        value: &Option<String>,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        let v = nonempty(value.clone())?;
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.bad(name, &v, &format!("a whole number from {min} to {max}"));
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        name: &'static str,
        value: &Option<String>,
    ) -> Option<Duration> {
        let v = nonempty(value.clone())?;
        match parse_duration(&v) {
            Some(d) => Some(d),
            None => {
                self.bad(
                    name,
                    &v,
                    "a duration: whole seconds (`30`) or with a unit (`500ms`, `90s`, `2m`)",
                );
                None
            }
        }
    }

    pub(super) fn bool_of(&mut self, name: &'static str, value: &Option<String>) -> Option<bool> {
        let v = nonempty(value.clone())?;
        match parse_bool(&v) {
            Some(b) => Some(b),
            None => {
                self.bad(name, &v, "`true` or `false` (also 1/0, yes/no, on/off)");
                None
            }
        }
    }

    pub(super) fn pick_bool(
        &mut self,
        modern: (&'static str, Option<String>),
        legacy: (&'static str, Option<String>),
    ) -> Option<bool> {
        let (name, v) = pick(modern, &[legacy])?;
        match parse_bool(&v) {
            Some(b) => Some(b),
            None => {
                self.bad(name, &v, "`true` or `false` (also 1/0, yes/no, on/off)");
                None
            }
        }
    }

    pub(super) fn bad(&mut self, name: &'static str, value: &str, expected: &str) {
        self.problems.push(Problem {
            variable: name,
            value: Some(value.to_string()),
            expected: expected.to_string(),
        });
    }

    pub(super) fn missing(&mut self, name: &'static str, expected: &str) {
        self.problems.push(Problem {
            variable: name,
            value: None,
            expected: format!("{expected} (it is not set)"),
        });
    }
}

struct RawSoftware {
    size_limit_mb: Option<String>,
    threshold_days: Option<String>,
    mirror: Option<String>,
    terraform: Option<String>,
    opentofu: Option<String>,
    opa: Option<String>,
    infracost: Option<String>,
    trusted_keys: Option<String>,
    signature_check: Option<String>,
    max_size_mb: Option<String>,
}

fn raw_software(raw: &Raw) -> RawSoftware {
    RawSoftware {
        size_limit_mb: raw.scalr_agent_binary_cache_size_limit_mb.clone(),
        threshold_days: raw.scalr_agent_binary_cache_threshold_days.clone(),
        mirror: raw.scalr_agent_software_mirror_url.clone(),
        terraform: raw.scalr_agent_terraform_mirror_url.clone(),
        opentofu: raw.scalr_agent_opentofu_mirror_url.clone(),
        opa: raw.scalr_agent_opa_mirror_url.clone(),
        infracost: raw.scalr_agent_infracost_mirror_url.clone(),
        trusted_keys: raw.scalr_agent_software_trusted_keys.clone(),
        signature_check: raw.scalr_agent_software_signature_check.clone(),
        max_size_mb: raw.scalr_agent_software_max_size_mb.clone(),
    }
}

/// The modern variable if set and non-empty, else the first legacy one that is.
fn pick(
    modern: (&'static str, Option<String>),
    legacy: &[(&'static str, Option<String>)],
) -> Option<(&'static str, String)> {
    std::iter::once(&modern)
        .chain(legacy.iter())
        .find_map(|(name, v)| nonempty(v.clone()).map(|v| (*name, v)))
}

pub(super) fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Parses the boolean spellings found in the wild.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Whole seconds, or a humantime duration such as `500ms` or `2m`.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok()
}

fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "scalr-agent".into()
    } else {
        name
    }
}
