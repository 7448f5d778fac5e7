//! Fills `software::Settings` from `SCALR_AGENT_BINARY_CACHE_*`, `SCALR_AGENT_SOFTWARE_*` and
//! the per-tool mirror variables. The operator's key files are read here and parsed by the
//! software module's own key parser (`software::verify::parse_armored_keys`), so a bad key is
//! one more problem in the exit-64 list.

use std::collections::BTreeMap;
use std::time::Duration;

use super::parse::{Parser, Raw, nonempty, read_named_file};
use crate::software::catalog::Tool;
use crate::software::verify::{TrustedKey, parse_armored_keys};
use crate::software::{Settings, SignatureCheck};

const TRUSTED_KEYS: &str = "SCALR_AGENT_SOFTWARE_TRUSTED_KEYS";

pub(super) fn parse(p: &mut Parser<'_>, raw: &Raw) -> Settings {
    let d = Settings::default();
    let size_limit_bytes = p
        .number(
            "SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB",
            &raw.scalr_agent_binary_cache_size_limit_mb,
            1,
            u64::MAX / (1 << 20),
        )
        .map_or(d.size_limit_bytes, |mb| mb.saturating_mul(1 << 20));
    let unused_threshold = p
        .number(
            "SCALR_AGENT_BINARY_CACHE_THRESHOLD_DAYS",
            &raw.scalr_agent_binary_cache_threshold_days,
            1,
            36500,
        )
        .map_or(d.unused_threshold, |days| {
            Duration::from_secs(days * 86_400)
        });
    let mirror = nonempty(raw.scalr_agent_software_mirror_url.clone())
        .and_then(|v| p.url("SCALR_AGENT_SOFTWARE_MIRROR_URL", &v));
    let signature_check = match nonempty(raw.scalr_agent_software_signature_check.clone()) {
        None => d.signature_check,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "required" => SignatureCheck::Required,
            "disabled" => SignatureCheck::Disabled,
            _ => {
                p.bad(
                    "SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK",
                    &v,
                    "`required` or `disabled`",
                );
                d.signature_check
            }
        },
    };
    let max_size_bytes = p
        .number(
            "SCALR_AGENT_SOFTWARE_MAX_SIZE_MB",
            &raw.scalr_agent_software_max_size_mb,
            1,
            1 << 20,
        )
        .map_or(d.max_size_bytes, |mb| mb << 20);
    Settings {
        size_limit_bytes,
        unused_threshold,
        mirror,
        tool_mirrors: tool_mirrors(p, raw),
        trusted_keys: trusted_keys(p, raw),
        signature_check,
        max_size_bytes,
    }
}

fn tool_mirrors(p: &mut Parser<'_>, raw: &Raw) -> BTreeMap<Tool, url::Url> {
    let mut out = BTreeMap::new();
    for (tool, name, value) in [
        (
            Tool::Terraform,
            "SCALR_AGENT_TERRAFORM_MIRROR_URL",
            &raw.scalr_agent_terraform_mirror_url,
        ),
        (
            Tool::OpenTofu,
            "SCALR_AGENT_OPENTOFU_MIRROR_URL",
            &raw.scalr_agent_opentofu_mirror_url,
        ),
        (
            Tool::Opa,
            "SCALR_AGENT_OPA_MIRROR_URL",
            &raw.scalr_agent_opa_mirror_url,
        ),
        (
            Tool::Infracost,
            "SCALR_AGENT_INFRACOST_MIRROR_URL",
            &raw.scalr_agent_infracost_mirror_url,
        ),
    ] {
        if let Some(url) = nonempty(value.clone()).and_then(|v| p.url(name, &v)) {
            out.insert(tool, url);
        }
    }
    out
}

fn trusted_keys(p: &mut Parser<'_>, raw: &Raw) -> Vec<TrustedKey> {
    let mut keys = Vec::new();
    let Some(list) = nonempty(raw.scalr_agent_software_trusted_keys.clone()) else {
        return keys;
    };
    for path in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let text = match read_named_file(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                p.bad(
                    TRUSTED_KEYS,
                    path,
                    &format!("a readable armored OpenPGP public key file ({e})"),
                );
                continue;
            }
        };
        match parse_armored_keys(&text, path) {
            Ok(k) => keys.extend(k),
            Err(e) => p.bad(
                TRUSTED_KEYS,
                path,
                &format!("an armored OpenPGP public key file ({e})"),
            ),
        }
    }
    keys
}
