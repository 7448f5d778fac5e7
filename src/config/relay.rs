//! Fills `relay::Settings` (`scalr-agent relay`) from `SCALR_AGENT_VCS_*`,
//! `SCALR_AGENT_RELAY_*` and `SCALR_AGENT_METADATA_*`, with the shared control-plane, HTTP,
//! name, debug and health settings.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use regex::Regex;
use url::Url;

use super::parse::{Parser, Raw, nonempty};
use super::{Config, Problem};
use crate::relay::{Settings, Vendor};

/// Prefix of the metadata tags sent at registration.
pub const METADATA_PREFIX: &str = "SCALR_AGENT_METADATA_";
const MAX_TAGS: usize = 32;

/// The relay's settings; `None` (with problems recorded) when a required one is missing.
pub(super) fn parse(
    p: &mut Parser<'_>,
    raw: &Raw,
    metadata: Vec<(String, String)>,
    config: &Config,
) -> Option<Settings> {
    let vcs_url = vcs_url(p, raw);
    let vendor = vendor(p, raw);
    let allowed_projects = allowed_projects(p, raw);
    let rules_file = nonempty(raw.scalr_agent_relay_rules_file.clone())
        .map(|v| p.abs_path("SCALR_AGENT_RELAY_RULES_FILE", &v));
    let parallelism = p
        .number(
            "SCALR_AGENT_RELAY_PARALLELISM",
            &raw.scalr_agent_relay_parallelism,
            1,
            256,
        )
        .and_then(|n| NonZeroU32::new(n as u32))
        .unwrap_or(NonZeroU32::new(4).expect("4 is not zero"));
    let mut dur = |name: &'static str, v: &Option<String>, default: Duration| {
        p.duration(name, v).unwrap_or(default)
    };
    let request_timeout = dur(
        "SCALR_AGENT_RELAY_REQUEST_TIMEOUT",
        &raw.scalr_agent_relay_request_timeout,
        Duration::from_secs(1800),
    );
    let idle_timeout = dur(
        "SCALR_AGENT_RELAY_IDLE_TIMEOUT",
        &raw.scalr_agent_relay_idle_timeout,
        Duration::from_secs(60),
    );
    // On Cloud Run the whole stop fits its 10 s window: 5 s for in-flight requests, then at
    // most `relay::CANCEL_GRACE` (2 s) to cancel and report, and the 2 s deregistration.
    let stop_default = if super::agent::on_cloud_run(raw) {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    };
    let stop_timeout = dur(
        "SCALR_AGENT_RELAY_STOP_TIMEOUT",
        &raw.scalr_agent_relay_stop_timeout,
        stop_default,
    );
    let max_body_mb = p
        .number(
            "SCALR_AGENT_RELAY_MAX_BODY_MB",
            &raw.scalr_agent_relay_max_body_mb,
            1,
            1 << 30,
        )
        .unwrap_or(4096);
    let metadata = tags(p, metadata);
    let cp = config.control_plane.clone()?;
    Some(Settings {
        url: cp.url,
        token: cp.token,
        name: config.name.clone(),
        vcs_url: vcs_url?,
        vendor: vendor?,
        allowed_projects,
        rules_file,
        parallelism,
        request_timeout,
        idle_timeout,
        max_body_bytes: max_body_mb << 20,
        stop_timeout,
        health_addr: config.agent.health_addr,
        metadata,
        debug: config.debug,
        http: config.http.clone(),
    })
}

/// `SCALR_AGENT_METADATA_<tag>=<value>`: tags of letters, digits and `_` (at most 64), values
/// of at most 256 printable characters, at most 32 tags.
fn tags(p: &mut Parser<'_>, vars: Vec<(String, String)>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in vars {
        let tag = &name[METADATA_PREFIX.len()..];
        let tag_ok = !tag.is_empty()
            && tag.len() <= 64
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let value_ok = value.len() <= 256 && !value.chars().any(char::is_control);
        if !tag_ok || !value_ok {
            p.problems.push(Problem {
                variable: "SCALR_AGENT_METADATA_*",
                value: Some(format!("{name}={value}")),
                expected: "a tag of letters, digits and `_` (at most 64) and a value of at most 256 printable characters".into(),
            });
            continue;
        }
        out.insert(tag.to_string(), value);
    }
    if out.len() > MAX_TAGS {
        p.problems.push(Problem {
            variable: "SCALR_AGENT_METADATA_*",
            value: None,
            expected: format!("at most {MAX_TAGS} metadata tags"),
        });
    }
    out
}

/// `SCALR_AGENT_VCS_URL` (required): the VCS's base URL, without credentials, query or
/// fragment.
fn vcs_url(p: &mut Parser<'_>, raw: &Raw) -> Option<Url> {
    match nonempty(raw.scalr_agent_vcs_url.clone()) {
        None => {
            p.missing("SCALR_AGENT_VCS_URL", "the VCS's base URL, e.g. https://gitlab.internal/gitlab");
            None
        }
        Some(v) => p.url("SCALR_AGENT_VCS_URL", &v).and_then(|u| {
            if u.password().is_some() || !u.username().is_empty() || u.query().is_some() || u.fragment().is_some() {
                p.bad(
                    "SCALR_AGENT_VCS_URL",
                    &crate::http::redact(&u),
                    "a URL without credentials, query or fragment (VCS credentials come with each request)",
                );
                None
            } else {
                Some(u)
            }
        }),
    }
}

/// `SCALR_AGENT_VCS_VENDOR` (required).
fn vendor(p: &mut Parser<'_>, raw: &Raw) -> Option<Vendor> {
    match nonempty(raw.scalr_agent_vcs_vendor.clone()) {
        None => {
            p.missing(
                "SCALR_AGENT_VCS_VENDOR",
                "`github_enterprise`, `gitlab`, `bitbucket_datacenter` or `azure_devops`",
            );
            None
        }
        Some(v) => Vendor::from_name(v.trim()).or_else(|| {
            p.bad(
                "SCALR_AGENT_VCS_VENDOR",
                &v,
                "`github_enterprise`, `gitlab`, `bitbucket_datacenter` or `azure_devops`",
            );
            None
        }),
    }
}

/// `SCALR_AGENT_VCS_ALLOWED_PROJECTS`: a regular expression a project's path must match whole.
fn allowed_projects(p: &mut Parser<'_>, raw: &Raw) -> Option<Regex> {
    let v = nonempty(raw.scalr_agent_vcs_allowed_projects.clone())?;
    match crate::relay::rules::anchored(&v) {
        Ok(re) => Some(re),
        Err(e) => {
            p.bad(
                "SCALR_AGENT_VCS_ALLOWED_PROJECTS",
                &v,
                &format!("a regular expression ({e})"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, Needs};

    fn stop_timeout(extra: &[(&str, &str)]) -> Duration {
        let base = [
            ("SCALR_URL", "https://example.scalr.io"),
            ("SCALR_AGENT_TOKEN", "t"),
            ("SCALR_AGENT_VCS_URL", "https://git.internal"),
            ("SCALR_AGENT_VCS_VENDOR", "gitlab"),
        ];
        Config::from_vars(
            base.iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string())),
            Needs::Relay,
        )
        .unwrap()
        .relay
        .unwrap()
        .stop_timeout
    }

    #[test]
    fn the_stop_window_fits_the_platform() {
        assert_eq!(stop_timeout(&[]), Duration::from_secs(30));
        assert_eq!(
            stop_timeout(&[("K_SERVICE", "relay"), ("PORT", "8080")]),
            Duration::from_secs(5)
        );
        assert_eq!(
            stop_timeout(&[
                ("K_SERVICE", "relay"),
                ("SCALR_AGENT_RELAY_STOP_TIMEOUT", "8s")
            ]),
            Duration::from_secs(8)
        );
    }
}
