//! Settings of the provider store (`crate::providers::Settings`), from
//! `SCALR_AGENT_PROVIDER_*`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use url::Url;

use super::parse::{Parser, Raw, nonempty};
use crate::providers::{NetworkMirror, Settings};
use crate::secret::Secret;

const MIRRORS: &str = "SCALR_AGENT_PROVIDER_NETWORK_MIRRORS";
const HOSTS: &str = "SCALR_AGENT_PROVIDER_REGISTRY_HOSTS";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    url: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    include: Vec<String>,
}

pub(super) fn parse(p: &mut Parser<'_>, raw: &Raw, cache_dir: &Path, unused_days: u64) -> Settings {
    let mut s = Settings::new(cache_dir.join("providers"));
    s.unused_threshold = std::time::Duration::from_secs(unused_days * 86_400);
    if let Some(b) = p.bool_of(
        "SCALR_AGENT_PROVIDER_CACHE_ENABLED",
        &raw.scalr_agent_provider_cache_enabled,
    ) {
        s.enabled = b;
    }
    if let Some(mb) = p.number(
        "SCALR_AGENT_PROVIDER_CACHE_SIZE_LIMIT_MB",
        &raw.scalr_agent_provider_cache_size_limit_mb,
        0,
        u64::MAX >> 20,
    ) {
        s.size_limit_bytes = mb << 20;
    }
    if let Some(n) = p.number(
        "SCALR_AGENT_PROVIDER_CACHE_CONCURRENCY",
        &raw.scalr_agent_provider_cache_concurrency,
        1,
        256,
    ) {
        s.concurrency = n as usize;
    }
    if let Some(b) = p.bool_of(
        "SCALR_AGENT_PROVIDER_CACHE_DROP_KERNEL_PAGES",
        &raw.scalr_agent_provider_cache_drop_kernel_pages,
    ) {
        s.drop_kernel_pages = b;
    }
    if let Some(text) = nonempty(raw.scalr_agent_provider_network_mirrors.clone()) {
        s.mirrors = mirrors(p, &text);
    }
    if let Some(text) = nonempty(raw.scalr_agent_provider_registry_hosts.clone()) {
        s.registry_hosts = hosts(p, &text);
    }
    s
}

fn mirrors(p: &mut Parser<'_>, text: &str) -> Vec<NetworkMirror> {
    let expected = "a JSON list of {\"url\": \"https://...\", \"token\"?: \"...\", \"include\"?: [\"host/namespace/type\", ...]} (`*` matches one segment)";
    let list: Vec<RawMirror> = match serde_json::from_str(text) {
        Ok(l) => l,
        Err(e) => {
            p.bad(
                MIRRORS,
                "(not shown: may hold tokens)",
                &format!("{expected}: {e}"),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for m in list {
        let url = match Url::parse(&m.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                if u.path().ends_with('/') {
                    u
                } else {
                    Url::parse(&format!("{u}/")).unwrap_or(u)
                }
            }
            _ => {
                p.bad(
                    MIRRORS,
                    &crate::http::redact_str(&m.url),
                    "an absolute http(s) mirror URL",
                );
                continue;
            }
        };
        if let Some(bad) = m.include.iter().find(|i| i.split('/').count() != 3) {
            p.bad(
                MIRRORS,
                bad,
                "include patterns of the form hostname/namespace/type",
            );
            continue;
        }
        out.push(NetworkMirror {
            url,
            token: m.token.map(Secret::new),
            include: m.include,
        });
    }
    out
}

fn hosts(p: &mut Parser<'_>, text: &str) -> BTreeMap<String, Url> {
    let expected = "a JSON object {\"registry.example.com\": \"https://.../v1/providers/\"}";
    let map: BTreeMap<String, String> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            p.bad(HOSTS, text, &format!("{expected}: {e}"));
            return BTreeMap::new();
        }
    };
    let mut out = BTreeMap::new();
    for (host, url) in map {
        match Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.path().ends_with('/') => {
                out.insert(host.to_ascii_lowercase(), u);
            }
            _ => p.bad(HOSTS, &url, "an absolute http(s) URL ending in `/`"),
        }
    }
    out
}
