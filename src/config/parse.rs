//! Turning raw environment strings into typed settings, collecting every problem.
#![allow(
    clippy::disallowed_methods,
    reason = "reads the operator's CA bundle and files named by variables"
)]

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::Problem;

/// Raw values as envy reads them: every field optional and a string, so that one bad value
/// does not hide the others.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct Raw {
    pub(super) scalr_url: Option<String>,
    pub(super) scalr_agent_token: Option<String>,
    pub(super) scalr_token: Option<String>,
    pub(super) scalr_agent_token_file: Option<String>,
    pub(super) scalr_agent_name: Option<String>,
    pub(super) scalr_agent_debug: Option<String>,
    pub(super) scalr_debug: Option<String>,
    pub(super) scalr_agent_log_format: Option<String>,
    pub(super) scalr_log_format: Option<String>,
    pub(super) scalr_agent_data_dir: Option<String>,
    pub(super) scalr_work_dir: Option<String>,
    pub(super) scalr_data_home: Option<String>,
    pub(super) scalr_agent_cache_dir: Option<String>,
    pub(super) scalr_agent_binary_cache_size_limit_mb: Option<String>,
    pub(super) scalr_agent_binary_cache_threshold_days: Option<String>,
    pub(super) scalr_agent_ca_cert: Option<String>,
    pub(super) scalr_ca_cert: Option<String>,
    pub(super) scalr_agent_container_task_ca_cert: Option<String>,
    pub(super) scalr_container_task_ca_cert: Option<String>,
    pub(super) http_proxy: Option<String>,
    pub(super) https_proxy: Option<String>,
    pub(super) no_proxy: Option<String>,
    pub(super) scalr_agent_http_read_timeout: Option<String>,
    pub(super) scalr_agent_http_connect_timeout: Option<String>,
    pub(super) scalr_agent_http_max_retries: Option<String>,
    pub(super) scalr_agent_http_backoff: Option<String>,
    pub(super) scalr_agent_software_mirror_url: Option<String>,
    pub(super) scalr_agent_terraform_mirror_url: Option<String>,
    pub(super) scalr_agent_opentofu_mirror_url: Option<String>,
    pub(super) scalr_agent_opa_mirror_url: Option<String>,
    pub(super) scalr_agent_infracost_mirror_url: Option<String>,
    pub(super) scalr_agent_software_trusted_keys: Option<String>,
    pub(super) scalr_agent_software_signature_check: Option<String>,
    pub(super) scalr_agent_software_max_size_mb: Option<String>,
    pub(super) scalr_agent_hooks_dir: Option<String>,
    pub(super) scalr_agent_keep_task_dirs: Option<String>,
    pub(super) scalr_agent_task_artifact_limit_mb: Option<String>,
    pub(super) scalr_agent_task_log_limit_mb: Option<String>,
    pub(super) scalr_agent_task_memory_limit_mb: Option<String>,
    pub(super) scalr_agent_task_inherit_identity: Option<String>,
    pub(super) scalr_agent_task_env_passthrough: Option<String>,
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
    pub(super) port: Option<String>,
    pub(super) cloud_run_job: Option<String>,
    pub(super) container_app_job_name: Option<String>,
    pub(super) scalr_agent_nss_wrapper_lib: Option<String>,
    pub(super) container_app_name: Option<String>,
    pub(super) kubernetes_service_host: Option<String>,
    pub(super) gce_metadata_host: Option<String>,
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
    pub(super) scalr_agent_provider_cache_drop_kernel_pages: Option<String>,
    pub(super) scalr_agent_provider_network_mirrors: Option<String>,
    pub(super) scalr_agent_provider_registry_hosts: Option<String>,
}

pub(super) struct Parser<'a> {
    pub(super) problems: &'a mut Vec<Problem>,
}

impl Parser<'_> {
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

/// Largest secret file read (`SCALR_AGENT_TOKEN_FILE`): a pool token is a few hundred bytes.
pub(super) const SECRET_FILE_LIMIT: u64 = 16 << 10;

impl Parser<'_> {
    /// Reads a secret from the operator's file `path` (named by `name`): opened without
    /// blocking (a FIFO cannot hang the start), links followed (Kubernetes mounts a secret as a
    /// link into `..data/`), then from the descriptor: a regular file, not readable by others
    /// (stages run as other uids; where Landlock is missing they could read it), at most
    /// [`SECRET_FILE_LIMIT`] bytes of UTF-8; surrounding whitespace (a final newline) is
    /// dropped. The content never appears in a problem.
    pub(super) fn secret_file(&mut self, name: &'static str, path: &str) -> Option<String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        if !std::path::Path::new(path).is_absolute() {
            self.bad(name, path, "an absolute path");
            return None;
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                self.bad(
                    name,
                    path,
                    &format!("a readable file, but opening it failed: {e}"),
                );
                return None;
            }
        };
        let stat = match rustix::fs::fstat(&file) {
            Ok(s) => s,
            Err(e) => {
                self.bad(
                    name,
                    path,
                    &format!("a readable file, but fstat failed: {e}"),
                );
                return None;
            }
        };
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        let mode = stat.st_mode & 0o7777;
        let problem = if kind != rustix::fs::FileType::RegularFile {
            Some(format!("a regular file, found {kind:?}"))
        } else if mode & 0o004 != 0 {
            Some(format!(
                "a file others cannot read (0400, or 0440 with the agent's group; Kubernetes: \
                 `defaultMode: 0400`), found mode {mode:04o}: a run under another uid could read it"
            ))
        } else if stat.st_size as u64 > SECRET_FILE_LIMIT {
            Some(format!(
                "at most {SECRET_FILE_LIMIT} bytes, found {} bytes",
                stat.st_size
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            self.bad(name, path, &p);
            return None;
        }
        let mut bytes = Vec::new();
        let read = file.take(SECRET_FILE_LIMIT + 1).read_to_end(&mut bytes);
        let text = match (read, String::from_utf8(bytes)) {
            (Err(e), _) => Err(format!("a readable file, but reading it failed: {e}")),
            (Ok(n), _) if n as u64 > SECRET_FILE_LIMIT => {
                Err(format!("at most {SECRET_FILE_LIMIT} bytes, found more"))
            }
            (Ok(_), Err(_)) => Err("UTF-8 text, found other bytes (content hidden)".into()),
            (Ok(_), Ok(t)) if t.trim().is_empty() => Err("a token, found an empty file".into()),
            (Ok(_), Ok(t)) => Ok(t.trim().to_string()),
        };
        text.map_err(|e| self.bad(name, path, &e)).ok()
    }
}

/// The modern variable if set and non-empty, else the first legacy one that is.
pub(super) fn pick(
    modern: (&'static str, Option<String>),
    legacy: &[(&'static str, Option<String>)],
) -> Option<(&'static str, String)> {
    std::iter::once(&modern)
        .chain(legacy.iter())
        .find_map(|(name, v)| nonempty(v.clone()).map(|v| (*name, v)))
}

/// Largest file named by a variable that is read whole (a CA bundle, a key file).
pub(super) const NAMED_FILE_LIMIT: u64 = 16 << 20;

/// Reads a file an operator named in a variable (a CA bundle, a key file): the agent's own
/// input, never a task's, so links are followed (a mounted secret is one). Opened without
/// blocking, then checked on the descriptor: a regular file of at most [`NAMED_FILE_LIMIT`]
/// bytes, so a FIFO, a device or a runaway file named by mistake fails the start with a
/// problem instead of hanging it or filling its memory.
pub(super) fn read_named_file(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::other(format!(
            "expected a regular file, found {:?}",
            rustix::fs::FileType::from_raw_mode(std::os::unix::fs::MetadataExt::mode(&meta))
        )));
    }
    let too_big = || Error::other(format!("expected at most {NAMED_FILE_LIMIT} bytes"));
    if meta.len() > NAMED_FILE_LIMIT {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(NAMED_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > NAMED_FILE_LIMIT {
        return Err(too_big());
    }
    Ok(bytes)
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
