//! The software cache's settings, owned here and filled in by `config`
//! (`SCALR_AGENT_BINARY_CACHE_*`, `SCALR_AGENT_SOFTWARE_*`, the per-tool mirrors).

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::catalog::Tool;
use super::verify::TrustedKey;

/// Settings of the software cache.
#[derive(Debug, Clone)]
pub struct Settings {
    pub size_limit_bytes: u64,
    pub unused_threshold: Duration,
    /// A mirror for every tool; a per-tool entry in `tool_mirrors` wins over it.
    pub mirror: Option<Url>,
    pub tool_mirrors: BTreeMap<Tool, Url>,
    /// The operator's keys (`SCALR_AGENT_SOFTWARE_TRUSTED_KEYS`), parsed by
    /// [`super::verify::parse_armored_keys`], trusted besides the pinned vendor keys.
    pub trusted_keys: Vec<TrustedKey>,
    pub signature_check: SignatureCheck,
    /// Largest artifact downloaded or executable extracted.
    pub max_size_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            size_limit_bytes: 5120 << 20,
            unused_threshold: Duration::from_secs(10 * 86_400),
            mirror: None,
            tool_mirrors: BTreeMap::new(),
            trusted_keys: Vec::new(),
            signature_check: SignatureCheck::Required,
            max_size_bytes: 1024 << 20,
        }
    }
}

/// Whether a Terraform/OpenTofu checksum file must carry a valid OpenPGP signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    Required,
    Disabled,
}
