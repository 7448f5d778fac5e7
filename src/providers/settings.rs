//! The provider store's settings, filled in by `config`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::addr::Provider;
use crate::secret::Secret;

/// How the provider store behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SCALR_AGENT_PROVIDER_CACHE_ENABLED`: off means runs get an empty plugin cache as before.
    pub enabled: bool,
    /// `<SCALR_AGENT_CACHE_DIR>/providers`.
    pub root: PathBuf,
    /// Soft limit: least recently used entries not in use are evicted above it.
    pub size_limit_bytes: u64,
    /// Entries unused for longer are evicted.
    pub unused_threshold: Duration,
    /// Fills running at once in this process (all runs together).
    pub concurrency: usize,
    /// Tried in order before the origin registry.
    pub mirrors: Vec<NetworkMirror>,
    /// `providers.v1` base URL per registry host, instead of service discovery (an operator's
    /// private registry; also written as a `host` block into each run's CLI configuration).
    pub registry_hosts: BTreeMap<String, Url>,
    /// Largest zip and largest extracted package accepted.
    pub max_package_bytes: u64,
    /// `SCALR_AGENT_PROVIDER_CACHE_DROP_KERNEL_PAGES`: after a run, drop the page cache of
    /// the entries it used that no other run leases (the files stay).
    pub drop_kernel_pages: bool,
}

impl Settings {
    /// Defaults for a store at `root`.
    pub fn new(root: PathBuf) -> Settings {
        Settings {
            enabled: true,
            root,
            size_limit_bytes: 2560 << 20,
            unused_threshold: Duration::from_secs(30 * 86_400),
            concurrency: 10,
            mirrors: Vec::new(),
            registry_hosts: BTreeMap::new(),
            max_package_bytes: 2 << 30,
            drop_kernel_pages: true,
        }
    }
}

/// One `SCALR_AGENT_PROVIDER_NETWORK_MIRRORS` entry.
#[derive(Debug, Clone)]
pub struct NetworkMirror {
    pub url: Url,
    pub token: Option<Secret>,
    /// `hostname/namespace/type` patterns, `*` matching one segment; empty matches all.
    pub include: Vec<String>,
}

impl NetworkMirror {
    /// Whether this mirror serves `provider`.
    pub fn serves(&self, provider: &Provider) -> bool {
        if self.include.is_empty() {
            return true;
        }
        let parts = [provider.host.as_str(), &provider.namespace, &provider.kind];
        self.include.iter().any(|pat| {
            let pat: Vec<&str> = pat.split('/').collect();
            pat.len() == 3
                && pat
                    .iter()
                    .zip(parts)
                    .all(|(p, s)| *p == "*" || p.eq_ignore_ascii_case(s))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_patterns() {
        let m = NetworkMirror {
            url: Url::parse("https://m/").unwrap(),
            token: None,
            include: vec!["registry.terraform.io/hashicorp/*".into()],
        };
        assert!(m.serves(&"hashicorp/aws".parse().unwrap()));
        assert!(!m.serves(&"acme/aws".parse().unwrap()));
    }
}
