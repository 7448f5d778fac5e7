//! The agent's configuration: read from the environment once, validated, then passed down.
//!
//! This is the only module that reads environment variables (clippy's `disallowed-methods`
//! enforces it). [`Config::from_vars`] takes the variables as an iterator so tests pass a map
//! instead of mutating the process environment. Every bad or missing value is collected and
//! reported together in one [`ConfigError`]; `main` turns it into exit code 64.
//!
//! Names follow the Scalr agent's; legacy names are read only when the modern one is unset.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use url::Url;

use crate::secret::Secret;
use crate::software::catalog::Tool;
use crate::software::verify::{self, TrustedKey};

/// Every variable the agent reads, with its legacy aliases, default and meaning.
///
/// The README's configuration table is checked against this list by a unit test, so the two
/// cannot drift apart.
pub const VARIABLES: &[Variable] = &[
    var("SCALR_URL", &[], "", "Control-plane URL (needed by `run`)."),
    var("SCALR_AGENT_TOKEN", &["SCALR_TOKEN"], "", "Pool token (needed by `run`); never passed to tasks."),
    var("SCALR_AGENT_NAME", &[], "host name", "Unique agent name in the pool."),
    var("SCALR_AGENT_DEBUG", &["SCALR_DEBUG"], "false", "Debug logs."),
    var("SCALR_AGENT_LOG_FORMAT", &["SCALR_LOG_FORMAT"], "plain", "`plain` (alias `dev`) or `json` (one JSON object per line)."),
    var("SCALR_AGENT_DATA_DIR", &["SCALR_WORK_DIR", "SCALR_DATA_HOME"], "/var/lib/scalr-agent", "Run data; must allow exec."),
    var("SCALR_AGENT_CACHE_DIR", &[], "the data dir", "Software (and later provider) caches; may be shared by several agents."),
    var("SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB", &[], "5120", "Soft LRU limit of cached binaries; a binary in use is never evicted."),
    var("SCALR_AGENT_BINARY_CACHE_THRESHOLD_DAYS", &[], "10", "Remove binaries unused this many days."),
    var("SCALR_AGENT_CA_CERT", &["SCALR_CA_CERT"], "", "Extra CA bundle: a PEM file path, inline PEM, or base64 of a PEM bundle; added to the system and built-in roots."),
    var("HTTP_PROXY", &["http_proxy"], "", "Proxy for `http://` URLs."),
    var("HTTPS_PROXY", &["https_proxy"], "", "Proxy for `https://` URLs."),
    var("NO_PROXY", &["no_proxy"], "", "Comma-separated hosts, domains and CIDRs that bypass the proxy."),
    var("SCALR_AGENT_HTTP_READ_TIMEOUT", &[], "60s", "Idle timeout of one read on a connection (seconds or `90s`, `2m`); downloads have no whole-transfer timeout."),
    var("SCALR_AGENT_HTTP_CONNECT_TIMEOUT", &[], "15s", "TCP+TLS connect timeout."),
    var("SCALR_AGENT_HTTP_MAX_RETRIES", &[], "5", "Retries of a request after a connection error, timeout, 408, 429 or 5xx."),
    var("SCALR_AGENT_HTTP_BACKOFF", &[], "500ms", "First retry delay; doubles each retry (with jitter), capped at 30 s; `Retry-After` wins when larger."),
    var("SCALR_AGENT_SOFTWARE_MIRROR_URL", &[], "", "Base URL of a mirror for all tools: `<base>/<tool>/` then the vendor's own layout (see README)."),
    var("SCALR_AGENT_TERRAFORM_MIRROR_URL", &[], "https://releases.hashicorp.com/terraform", "Base URL for Terraform releases (`<base>/<V>/terraform_<V>_...`)."),
    var("SCALR_AGENT_OPENTOFU_MIRROR_URL", &[], "https://github.com/opentofu/opentofu/releases/download", "Base URL for OpenTofu releases (`<base>/v<V>/tofu_<V>_...`)."),
    var("SCALR_AGENT_OPA_MIRROR_URL", &[], "https://github.com/open-policy-agent/opa/releases/download", "Base URL for OPA releases (`<base>/v<V>/opa_linux_<arch>_static`)."),
    var("SCALR_AGENT_INFRACOST_MIRROR_URL", &[], "GitHub `infracost/infracost` (v0.x), `infracost/cli` (v2+)", "Base URL for Infracost releases (`<base>/v<V>/infracost-linux-<arch>.tar.gz`)."),
    var("SCALR_AGENT_SOFTWARE_TRUSTED_KEYS", &[], "", "Comma-separated paths of armored OpenPGP public keys trusted, besides the vendors' pinned keys, to sign Terraform and OpenTofu checksum files (a private mirror's re-signed files)."),
    var("SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK", &[], "required", "`required`, or `disabled` to accept checksum files without an OpenPGP signature (every install then logs a warning). SHA256 is always checked."),
    var("SCALR_AGENT_SOFTWARE_MAX_SIZE_MB", &[], "1024", "Largest download and largest extracted executable accepted."),
];

/// One documented environment variable.
#[derive(Debug)]
pub struct Variable {
    pub name: &'static str,
    pub legacy: &'static [&'static str],
    pub default: &'static str,
    pub meaning: &'static str,
}

const fn var(
    name: &'static str,
    legacy: &'static [&'static str],
    default: &'static str,
    meaning: &'static str,
) -> Variable {
    Variable {
        name,
        legacy,
        default,
        meaning,
    }
}

/// The validated configuration. Every field already has its final type: nothing downstream
/// parses strings from the environment again.
#[derive(Debug, Clone)]
pub struct Config {
    pub control_plane: Option<ControlPlane>,
    pub name: String,
    pub debug: bool,
    pub log_format: LogFormat,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub software: SoftwareConfig,
    pub http: HttpConfig,
    /// `SCALR_AGENT_*` variables that are set but unknown (likely typos); logged as warnings.
    pub unknown_variables: Vec<String>,
}

/// Where the control plane is and how the agent proves it belongs to the pool.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub url: Url,
    pub token: Secret,
}

/// `SCALR_AGENT_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Settings of the software cache.
#[derive(Debug, Clone)]
pub struct SoftwareConfig {
    pub size_limit_bytes: u64,
    pub unused_threshold: Duration,
    /// A mirror for every tool; a per-tool entry in `tool_mirrors` wins over it.
    pub mirror: Option<Url>,
    pub tool_mirrors: BTreeMap<Tool, Url>,
    pub trusted_keys: Vec<TrustedKey>,
    pub signature_check: SignatureCheck,
    pub max_size_bytes: u64,
}

/// Whether a Terraform/OpenTofu checksum file must carry a valid OpenPGP signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    Required,
    Disabled,
}

/// Settings of the one HTTP client.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub ca_bundle: Option<CaBundle>,
    pub http_proxy: Option<Url>,
    pub https_proxy: Option<Url>,
    pub no_proxy: Option<String>,
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_retries: u32,
    pub initial_backoff: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            ca_bundle: None,
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

/// A PEM bundle of extra trust anchors, already checked to contain at least one certificate.
#[derive(Clone)]
pub struct CaBundle {
    pub pem: Vec<u8>,
    pub certificates: usize,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certificates)
    }
}

/// What the command about to run needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Local work (software cache, `exec`): no control plane.
    Local,
    /// `run`: `SCALR_URL` and the pool token are required.
    ControlPlane,
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
        writeln!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            match &p.value {
                Some(v) => writeln!(f, "  {}={:?}: expected {}", p.variable, v, p.expected)?,
                None => writeln!(f, "  {}: expected {}", p.variable, p.expected)?,
            }
        }
        Ok(())
    }
}

/// Raw values as envy reads them: every field optional and a string, so that one bad value
/// does not hide the others.
#[derive(Debug, Default, Deserialize)]
struct Raw {
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
}

impl Config {
    /// Reads the process environment. The only place the agent looks at it.
    pub fn from_process_env(needs: Needs) -> Result<Config, ConfigError> {
        #[allow(clippy::disallowed_methods)]
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
        let config = p.build(raw, needs);
        let unknown_variables = unknown_variables(map.keys());
        if problems.is_empty() {
            Ok(Config {
                unknown_variables,
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
}

fn is_ours(name: &str) -> bool {
    VARIABLES
        .iter()
        .any(|v| v.name == name || v.legacy.contains(&name))
}

fn leak_name(name: &str) -> &'static str {
    VARIABLES
        .iter()
        .flat_map(|v| std::iter::once(&v.name).chain(v.legacy.iter()))
        .find(|n| **n == name)
        .copied()
        .unwrap_or("SCALR_AGENT_*")
}

fn unknown_variables<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .filter(|n| n.starts_with("SCALR_AGENT_") && !is_ours(n) && !RESERVED.contains(&n.as_str()))
        .cloned()
        .collect();
    unknown.sort();
    unknown
}

/// Names of the Scalr agent that later parts of this agent will read; not warned about.
const RESERVED: &[&str] = &[
    "SCALR_AGENT_DRIVER",
    "SCALR_AGENT_CONCURRENCY",
    "SCALR_AGENT_SINGLE",
    "SCALR_AGENT_HOOKS_DIR",
    "SCALR_AGENT_TLS_CERT_FILE",
    "SCALR_AGENT_TLS_KEY_FILE",
    "SCALR_AGENT_WORKER_ON_STOP_ACTION",
    "SCALR_AGENT_WORKER_DRAIN_TIMEOUT",
    "SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT",
    "SCALR_AGENT_DISCONNECT_ON_STOP",
    "SCALR_AGENT_STATE_PERSISTENCE_ENABLED",
    "SCALR_AGENT_PROVIDER_CACHE_ENABLED",
    "SCALR_AGENT_PROVIDER_CACHE_SIZE_LIMIT_MB",
    "SCALR_AGENT_PROVIDER_NETWORK_MIRRORS",
    "SCALR_AGENT_ENV",
];

struct Parser<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Parser<'_> {
    fn build(&mut self, raw: Raw, needs: Needs) -> Config {
        let software = self.software(&raw_software(&raw));
        let http = self.http(&raw);
        let control_plane = self.control_plane(&raw, needs);
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
            .pick_bool(("SCALR_AGENT_DEBUG", raw.scalr_agent_debug), ("SCALR_DEBUG", raw.scalr_debug))
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
            &[("SCALR_WORK_DIR", raw.scalr_work_dir.clone()), ("SCALR_DATA_HOME", raw.scalr_data_home.clone())],
        ) {
            None => PathBuf::from("/var/lib/scalr-agent"),
            Some((name, v)) => self.abs_path(name, &v),
        };
        let cache_dir = match nonempty(raw.scalr_agent_cache_dir.clone()) {
            None => data_dir.clone(),
            Some(v) => self.abs_path("SCALR_AGENT_CACHE_DIR", &v),
        };
        Config {
            control_plane,
            name,
            debug,
            log_format,
            data_dir,
            cache_dir,
            software,
            http,
            unknown_variables: Vec::new(),
        }
    }

    fn control_plane(&mut self, raw: &Raw, needs: Needs) -> Option<ControlPlane> {
        let url = match nonempty(raw.scalr_url.clone()) {
            Some(v) => self.url("SCALR_URL", &v),
            None => {
                if needs == Needs::ControlPlane {
                    self.missing("SCALR_URL", "the control plane's URL, e.g. https://example.scalr.io");
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
                if needs == Needs::ControlPlane {
                    self.missing("SCALR_AGENT_TOKEN", "the agent pool token");
                }
                None
            }
        };
        Some(ControlPlane { url: url?, token: token? })
    }

    fn software(&mut self, raw: &RawSoftware) -> SoftwareConfig {
        let size_limit_mb = self
            .number("SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB", &raw.size_limit_mb, 1, u64::MAX / (1 << 20))
            .unwrap_or(5120);
        let days = self
            .number("SCALR_AGENT_BINARY_CACHE_THRESHOLD_DAYS", &raw.threshold_days, 1, 36500)
            .unwrap_or(10);
        let mirror = nonempty(raw.mirror.clone())
            .and_then(|v| self.url("SCALR_AGENT_SOFTWARE_MIRROR_URL", &v));
        let mut tool_mirrors = BTreeMap::new();
        for (tool, name, value) in [
            (Tool::Terraform, "SCALR_AGENT_TERRAFORM_MIRROR_URL", &raw.terraform),
            (Tool::OpenTofu, "SCALR_AGENT_OPENTOFU_MIRROR_URL", &raw.opentofu),
            (Tool::Opa, "SCALR_AGENT_OPA_MIRROR_URL", &raw.opa),
            (Tool::Infracost, "SCALR_AGENT_INFRACOST_MIRROR_URL", &raw.infracost),
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
                    self.bad("SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK", &v, "`required` or `disabled`");
                    SignatureCheck::Required
                }
            },
        };
        let max_mb = self
            .number("SCALR_AGENT_SOFTWARE_MAX_SIZE_MB", &raw.max_size_mb, 1, 1 << 20)
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
        let http_proxy = nonempty(raw.http_proxy.clone()).and_then(|v| self.proxy("HTTP_PROXY", &v));
        let https_proxy = nonempty(raw.https_proxy.clone()).and_then(|v| self.proxy("HTTPS_PROXY", &v));
        HttpConfig {
            ca_bundle,
            http_proxy,
            https_proxy,
            no_proxy: nonempty(raw.no_proxy.clone()),
            read_timeout: self
                .duration("SCALR_AGENT_HTTP_READ_TIMEOUT", &raw.scalr_agent_http_read_timeout.clone())
                .unwrap_or(defaults.read_timeout),
            connect_timeout: self
                .duration("SCALR_AGENT_HTTP_CONNECT_TIMEOUT", &raw.scalr_agent_http_connect_timeout.clone())
                .unwrap_or(defaults.connect_timeout),
            max_retries: self
                .number("SCALR_AGENT_HTTP_MAX_RETRIES", &raw.scalr_agent_http_max_retries, 0, 20)
                .map(|n| n as u32)
                .unwrap_or(defaults.max_retries),
            initial_backoff: self
                .duration("SCALR_AGENT_HTTP_BACKOFF", &raw.scalr_agent_http_backoff.clone())
                .unwrap_or(defaults.initial_backoff),
        }
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
                    self.bad(name, value, "a PEM file path, inline PEM, or base64 of a PEM bundle");
                    return None;
                }
            }
        };
        let certificates = String::from_utf8_lossy(&pem)
            .matches("-----BEGIN CERTIFICATE-----")
            .count();
        if certificates == 0 || reqwest::Certificate::from_pem_bundle(&pem).is_err() {
            self.bad(name, value, "a bundle of PEM certificates (none could be parsed)");
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
            Ok(u) if matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h") && u.host().is_some() => Some(u),
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

    fn url(&mut self, name: &'static str, value: &str) -> Option<Url> {
        match Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                self.problems.push(Problem {
                    variable: name,
                    value: Some(crate::http::redact_str(value)),
                    expected: "an absolute http:// or https:// URL".into(),
                });
                None
            }
        }
    }

    fn abs_path(&mut self, name: &'static str, value: &str) -> PathBuf {
        let p = PathBuf::from(value);
        if !p.is_absolute() {
            self.bad(name, value, "an absolute path");
        }
        p
    }

    fn number(&mut self, name: &'static str, value: &Option<String>, min: u64, max: u64) -> Option<u64> {
        let v = nonempty(value.clone())?;
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.bad(name, &v, &format!("a whole number from {min} to {max}"));
                None
            }
        }
    }

    fn duration(&mut self, name: &'static str, value: &Option<String>) -> Option<Duration> {
        let v = nonempty(value.clone())?;
        match parse_duration(&v) {
            Some(d) => Some(d),
            None => {
                self.bad(name, &v, "a duration: whole seconds (`30`) or with a unit (`500ms`, `90s`, `2m`)");
                None
            }
        }
    }

    fn pick_bool(&mut self, modern: (&'static str, Option<String>), legacy: (&'static str, Option<String>)) -> Option<bool> {
        let (name, v) = pick(modern, &[legacy])?;
        match parse_bool(&v) {
            Some(b) => Some(b),
            None => {
                self.bad(name, &v, "`true` or `false` (also 1/0, yes/no, on/off)");
                None
            }
        }
    }

    fn bad(&mut self, name: &'static str, value: &str, expected: &str) {
        self.problems.push(Problem {
            variable: name,
            value: Some(value.to_string()),
            expected: expected.to_string(),
        });
    }

    fn missing(&mut self, name: &'static str, expected: &str) {
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

fn nonempty(v: Option<String>) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)], needs: Needs) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())), needs)
    }

    #[test]
    fn defaults_for_local_work() {
        let c = load(&[], Needs::Local).unwrap();
        assert!(c.control_plane.is_none());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/scalr-agent"));
        assert_eq!(c.cache_dir, c.data_dir);
        assert_eq!(c.software.size_limit_bytes, 5120 << 20);
        assert_eq!(c.software.unused_threshold, Duration::from_secs(10 * 86_400));
        assert_eq!(c.software.signature_check, SignatureCheck::Required);
        assert_eq!(c.log_format, LogFormat::Plain);
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
        assert!(text.contains("SCALR_AGENT_LOG_FORMAT=\"xml\": expected `plain`, `dev` or `json`"), "{text}");
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
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn token_never_appears_in_debug() {
        let c = load(
            &[("SCALR_URL", "https://acme.scalr.io"), ("SCALR_AGENT_TOKEN", "canary-123")],
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
            &[("https_proxy", "proxy.internal:3128"), ("NO_PROXY", "localhost,10.0.0.0/8")],
            Needs::Local,
        )
        .unwrap();
        assert_eq!(c.http.https_proxy.unwrap().as_str(), "http://proxy.internal:3128/");
        assert_eq!(c.http.no_proxy.as_deref(), Some("localhost,10.0.0.0/8"));
        let c = load(&[("HTTPS_PROXY", "http://a:1"), ("https_proxy", "http://b:2")], Needs::Local).unwrap();
        assert_eq!(c.http.https_proxy.unwrap().host_str(), Some("a"));
    }

    #[test]
    fn unknown_agent_variables_are_listed() {
        let c = load(&[("SCALR_AGENT_CONCURENCY", "3"), ("SCALR_AGENT_SINGLE", "1")], Needs::Local).unwrap();
        assert_eq!(c.unknown_variables, ["SCALR_AGENT_CONCURENCY"]);
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
    fn readme_documents_every_variable() {
        let readme = include_str!("../README.md");
        for v in VARIABLES {
            assert!(readme.contains(&format!("`{}`", v.name)), "README lacks {}", v.name);
        }
    }
}
