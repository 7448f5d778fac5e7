//! The relay's settings, filled in by `config` from `SCALR_AGENT_VCS_*`,
//! `SCALR_AGENT_RELAY_*` and `SCALR_AGENT_METADATA_*`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use url::Url;

use crate::secret::Secret;

/// The VCS product behind the relay; chooses the preset rules and how projects are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    GithubEnterprise,
    Gitlab,
    BitbucketDatacenter,
    AzureDevops,
}

impl Vendor {
    pub const ALL: [Vendor; 4] = [
        Vendor::GithubEnterprise,
        Vendor::Gitlab,
        Vendor::BitbucketDatacenter,
        Vendor::AzureDevops,
    ];

    /// The name used in `SCALR_AGENT_VCS_VENDOR`, logs and the protocol.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::GithubEnterprise => "github_enterprise",
            Vendor::Gitlab => "gitlab",
            Vendor::BitbucketDatacenter => "bitbucket_datacenter",
            Vendor::AzureDevops => "azure_devops",
        }
    }

    pub fn from_name(s: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Everything `scalr-agent relay` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The control plane (`SCALR_URL`); the relay protocol lives under `/api/relay/v1/`.
    pub url: Url,
    /// The relay pool's token (`SCALR_AGENT_TOKEN`).
    pub token: Secret,
    pub name: String,
    /// `SCALR_AGENT_VCS_URL`: scheme, host, port and optional path prefix of the VCS.
    pub vcs_url: Url,
    pub vendor: Vendor,
    /// `SCALR_AGENT_VCS_ALLOWED_PROJECTS`, anchored as `^(?:…)$`; `None` allows every project.
    pub allowed_projects: Option<Regex>,
    /// `SCALR_AGENT_RELAY_RULES_FILE`: operator rules, checked before the preset.
    pub rules_file: Option<PathBuf>,
    pub parallelism: NonZeroU32,
    /// Whole-request bound, from acquisition to the last response byte.
    pub request_timeout: Duration,
    /// A request fails when none of its bytes moved, either way, for this long (`flow`).
    pub idle_timeout: Duration,
    /// Largest request or response body relayed.
    pub max_body_bytes: u64,
    /// How long in-flight requests may take to finish once the relay is asked to stop.
    pub stop_timeout: Duration,
    pub health_addr: Option<SocketAddr>,
    /// `SCALR_AGENT_METADATA_<tag>` values, sent at registration.
    pub metadata: BTreeMap<String, String>,
    /// Logs each request's headers' names (never values) and timings.
    pub debug: bool,
    /// CA bundle, proxies and backoff, shared with the run agent.
    pub http: crate::http::Settings,
}
