//! The environment every test of the agent starts from: a fresh release mirror, a trusted test
//! key, and a private temporary directory (traversable by task uids, see [`super::dirs`]) with
//! the data and cache directories; the variables that point the agent there; a software cache
//! over them for in-process tests, the real Terraform on the mirror when a test asks for it,
//! and [`Harness::agent`] for the real binary.

use std::path::{Path, PathBuf};

use scalr_agent::config::{Config, Needs};
use scalr_agent::software::SoftwareCache;
use scalr_agent::software::catalog::Platform;

use super::agent::AgentBuilder;
use super::keys::TestKey;
use super::mirror::Mirror;

pub struct Harness {
    pub mirror: Mirror,
    pub key: TestKey,
    pub dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with(&[]).await
    }

    /// Extra variables override the defaults below.
    pub async fn with(extra: &[(&str, &str)]) -> Harness {
        let mirror = Mirror::start().await;
        let key = TestKey::generate("Test Mirror <mirror@example.test>");
        let dir = super::dirs::tempdir();
        let key_file = dir.path().join("mirror-key.asc");
        key.write_public(&key_file);
        let mut vars: Vec<(String, String)> = vec![
            (
                "SCALR_AGENT_CACHE_DIR".into(),
                dir.path().join("cache").display().to_string(),
            ),
            (
                "SCALR_AGENT_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            (
                "SCALR_AGENT_SOFTWARE_MIRROR_URL".into(),
                mirror.url.to_string(),
            ),
            (
                "SCALR_AGENT_SOFTWARE_TRUSTED_KEYS".into(),
                key_file.display().to_string(),
            ),
            ("SCALR_AGENT_HTTP_BACKOFF".into(), "10ms".into()),
            ("SCALR_AGENT_HTTP_MAX_RETRIES".into(), "3".into()),
        ];
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_string(), v.to_string()));
        }
        Harness {
            mirror,
            key,
            dir,
            vars,
        }
    }

    /// The real agent with this environment: the variables above plus its overrides, its
    /// output kept in this directory.
    pub fn agent(&self) -> AgentBuilder {
        AgentBuilder::new(&self.vars).logs(self.dir.path())
    }

    /// Publishes the real Terraform 1.0.3 for linux_amd64 on the mirror, signed with the key.
    pub fn publish_real_terraform(&self) {
        let zip = std::fs::read(super::terraform::real_terraform_zip()).unwrap();
        super::releases::publish_terraform(
            &self.mirror,
            "1.0.3",
            &[("linux_amd64", zip)],
            super::releases::Signing::With(&self.key, ".sig"),
        );
    }

    /// The data directory the variables name.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self) -> Config {
        Config::from_vars(self.vars.clone(), Needs::Local).expect("test configuration is valid")
    }

    /// A new cache object over the same directory (as another task or process would have).
    pub fn cache(&self) -> SoftwareCache {
        let c = self.config();
        SoftwareCache::new(c.binaries_dir(), c.software, c.http)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("cache/binaries")
    }

    pub fn entry(&self, tool: &str, version: &str, platform: Platform) -> PathBuf {
        self.root().join(tool).join(version).join(platform.name())
    }

    /// Nothing of a failed install is left where a later lookup could find it.
    pub fn assert_clean(&self, tool: &str, version: &str, platform: Platform) {
        let entry = self.entry(tool, version, platform);
        assert!(
            !entry.exists(),
            "{} exists after a failed install",
            entry.display()
        );
        assert_empty(&self.root().join(".tmp"));
    }
}

fn assert_empty(dir: &Path) {
    if let Ok(items) = std::fs::read_dir(dir) {
        let left: Vec<_> = items.flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "leftovers in {}: {left:?}", dir.display());
    }
}
