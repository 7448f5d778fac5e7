//! The verified software cache: OpenTofu, Terraform, OPA and Infracost binaries, shared by
//! every task of this agent and by other agents pointed at the same directory.
//!
//! Only this module writes into the cache, and only by verify-then-rename: download into a
//! staging directory on the cache's filesystem while hashing, check the hash against the
//! checksum file (whose OpenPGP signature is checked first, for vendors that sign), extract the
//! one expected executable, fsync, and rename the complete directory into place. A cache hit is
//! a manifest read plus a `stat`. One install per entry runs at a time across processes (an OS
//! file lock, re-checked after it is taken); tasks hold a shared lease so eviction never removes
//! a binary in use. Every install is counted (hits, misses, failures, bytes downloaded) in the
//! cache's [`CacheStats`], which the daemon renders at `/metrics`.

pub mod catalog;
mod fetch;
pub mod locks;
mod prune;
mod settings;
pub mod stats;
pub mod store;
pub mod verify;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use reqwest::StatusCode;

use crate::archive;
use crate::http::{Downloaded, HttpClient, HttpError, SharedClient, redact};
use catalog::{Platform, Release, Tool, Version};
use locks::{LockMode, Wait};
use prune::evict;
pub use prune::{Listed, PruneReport};
pub use settings::{Settings, SignatureCheck};
pub use stats::{CacheStats, ToolStats};
use store::{Key, Layout, Manifest, Verification};

/// Largest checksum or signature file accepted.
const SMALL_FILE_LIMIT: u64 = 1 << 20;

/// An install or lookup that failed. Always names the tool, version and platform; the kind
/// names the URL and what was expected versus found.
#[derive(Debug, thiserror::Error)]
#[error("{tool} {version} ({platform}): {kind}")]
pub struct SoftwareError {
    pub tool: Tool,
    pub version: String,
    pub platform: Platform,
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("{tool} {version} has no {platform} build: {reason}")]
    NoBuild {
        tool: Tool,
        version: String,
        platform: Platform,
        reason: String,
    },
    #[error("{tool} {version} does not exist: {url} answered 404 Not Found")]
    NoSuchVersion {
        tool: Tool,
        version: String,
        url: String,
    },
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("checksum file {url} is invalid: {reason}")]
    ChecksumFile {
        url: String,
        reason: verify::ChecksumFileError,
    },
    #[error(
        "checksum mismatch for {file} from {url}: expected sha256 {expected} (from {checksums_url}), found {found}"
    )]
    ChecksumMismatch {
        file: String,
        url: String,
        checksums_url: String,
        expected: String,
        found: String,
    },
    #[error(
        "no OpenPGP signature for {checksums_url}: tried {tried} (all answered 404); set SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK=disabled only if this mirror cannot serve them"
    )]
    SignatureMissing {
        checksums_url: String,
        tried: String,
    },
    #[error("OpenPGP signature {url} over {checksums_url} rejected: {reason}")]
    SignatureInvalid {
        url: String,
        checksums_url: String,
        reason: verify::SignatureError,
    },
    #[error("artifact {url} rejected: {reason}")]
    Archive {
        url: String,
        reason: archive::ExtractError,
    },
    #[error("cache I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent's HTTP client: {0}")]
    Client(HttpError),
    #[error(
        "the cached entry {path} is damaged ({damage}) and leased by a running task: left to \
         that task, reinstalled by the first install after its lease ends"
    )]
    DamagedInUse { path: PathBuf, damage: String },
}

/// A verified executable, leased: eviction leaves it alone while this value lives.
#[derive(Debug)]
pub struct Installed {
    pub tool: Tool,
    pub version: Version,
    pub platform: Platform,
    /// Absolute path of the executable.
    pub path: PathBuf,
    pub manifest: Manifest,
    /// True when this call downloaded it.
    pub downloaded: bool,
    _lease: File,
}

/// The software cache.
#[derive(Debug)]
pub struct SoftwareCache {
    layout: Layout,
    config: Settings,
    http: SharedClient,
    stats: Arc<CacheStats>,
}

impl SoftwareCache {
    /// A cache rooted at `root` (normally `<SCALR_AGENT_CACHE_DIR>/binaries`). Nothing is
    /// created until first use; the HTTP client is built on the first miss, so a hit stays cheap.
    pub fn new(
        root: PathBuf,
        config: Settings,
        http_config: crate::http::Settings,
    ) -> SoftwareCache {
        SoftwareCache {
            layout: Layout { root },
            config,
            http: SharedClient::new(http_config),
            stats: Arc::default(),
        }
    }

    /// This cache's counters (see [`stats`] for what counts as a hit, a miss and a downloaded
    /// byte). Shared: the daemon keeps a clone to render them.
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// The cache's HTTP client, built on its first use: the runner's one client, shared with
    /// the provider store and the tasks' downloads.
    pub fn shared_client(&self) -> &SharedClient {
        &self.http
    }

    pub fn root(&self) -> &std::path::Path {
        &self.layout.root
    }

    fn client(&self) -> Result<&HttpClient, ErrorKind> {
        self.http.get().map_err(ErrorKind::Client)
    }

    /// Returns the verified executable of `tool` `version` for `platform`, installing it first
    /// if needed. Concurrent calls for the same entry, in this process or others sharing the
    /// cache, download it once; the others wait on the install lock and reuse it. Counts the
    /// call in [`SoftwareCache::stats`]: a miss when this call downloaded, a hit otherwise
    /// (also after waiting for a concurrent install), a failure when it returns an error.
    pub async fn install(
        &self,
        tool: Tool,
        version: &Version,
        platform: Platform,
    ) -> Result<Installed, SoftwareError> {
        let result = self.resolve(tool, version, platform).await;
        match &result {
            Ok(i) if i.downloaded => self.stats.miss(tool),
            Ok(_) => self.stats.hit(tool),
            Err(_) => self.stats.failure(tool),
        }
        result
    }

    /// The lookup or install behind [`SoftwareCache::install`], not counted yet.
    async fn resolve(
        &self,
        tool: Tool,
        version: &Version,
        platform: Platform,
    ) -> Result<Installed, SoftwareError> {
        let key = Key {
            tool,
            version: version.clone(),
            platform,
        };
        let fail = |kind| SoftwareError {
            tool,
            version: version.to_string(),
            platform,
            kind,
        };
        let dir = self.layout.entry(&key);

        // Fast path: a valid entry, no lock needed (entries appear only by atomic rename).
        if let Some(manifest) = self.check(&key).await {
            let lease = self.lease(&key).await.map_err(fail)?;
            touch_last_used(&dir).await;
            return Ok(self.installed(key, manifest, lease, false));
        }

        let lock = self.blocking_lock(&key).await.map_err(fail)?;
        let outcome = self.install_locked(&key).await;
        let (manifest, downloaded) = match outcome {
            Ok(v) => v,
            Err(kind) => {
                drop(lock);
                return Err(fail(kind));
            }
        };
        let lease = self.lease(&key).await.map_err(fail)?;
        touch_last_used(&dir).await;
        drop(lock);
        if downloaded {
            let layout = self.layout.clone();
            let config = self.config.clone();
            let evicted = tokio::task::spawn_blocking(move || evict(&layout, &config)).await;
            match evicted {
                Ok(Ok(report)) if !report.removed.is_empty() => {
                    tracing::info!(removed = ?report.removed, freed_bytes = report.freed_bytes, "evicted cached binaries")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cache eviction failed"),
                _ => {}
            }
        }
        Ok(self.installed(key, manifest, lease, downloaded))
    }

    /// The entry's manifest when it passes [`store::check_entry`], on a blocking thread.
    async fn check(&self, key: &Key) -> Option<Manifest> {
        let (dir, key) = (self.layout.entry(key), key.clone());
        tokio::task::spawn_blocking(move || store::check_entry(&dir, &key).ok())
            .await
            .expect("the entry check does not panic")
    }

    fn installed(&self, key: Key, manifest: Manifest, lease: File, downloaded: bool) -> Installed {
        let path = self.layout.entry(&key).join(&manifest.executable);
        Installed {
            tool: key.tool,
            version: key.version,
            platform: key.platform,
            path,
            manifest,
            downloaded,
            _lease: lease,
        }
    }

    async fn blocking_lock(&self, key: &Key) -> Result<File, ErrorKind> {
        let layout = self.layout.clone();
        let key = key.clone();
        let path = layout.locks();
        tokio::task::spawn_blocking(move || {
            let f = layout.install_lock(&key)?;
            // Under this entry's lock: what dead installs left (other entries' staging
            // directories and lock files are removed only when their own locks are free).
            layout.sweep_leftovers(Some(&key));
            Ok::<_, std::io::Error>(f)
        })
        .await
        .expect("lock task does not panic")
        .map_err(|source| ErrorKind::Io { path, source })
    }

    /// Takes the shared lease of an entry (waits only while a prune is deleting it).
    async fn lease(&self, key: &Key) -> Result<File, ErrorKind> {
        let path = self.layout.lease_path(key);
        let io = |source| ErrorKind::Io {
            path: path.clone(),
            source,
        };
        if let Some(f) = locks::lock_file(&path, LockMode::Shared, Wait::No).map_err(io)? {
            return Ok(f);
        }
        let wait_path = path.clone();
        tokio::task::spawn_blocking(move || {
            locks::lock_file(&wait_path, LockMode::Shared, Wait::Yes)
                .map(|f| f.expect("a waiting lock is always taken"))
        })
        .await
        .expect("lock task does not panic")
        .map_err(io)
    }

    /// The slow path, under the install lock: re-check, then download, verify and commit.
    async fn install_locked(&self, key: &Key) -> Result<(Manifest, bool), ErrorKind> {
        let dir = self.layout.entry(key);
        let (layout, k) = (self.layout.clone(), key.clone());
        let present = tokio::task::spawn_blocking(move || clear_damaged(&layout, &k))
            .await
            .expect("the entry check does not panic")?;
        if let Some(m) = present {
            return Ok((m, false));
        }
        let base = catalog::base_url(
            key.tool,
            &key.version,
            self.config.tool_mirrors.get(&key.tool),
            self.config.mirror.as_ref(),
        );
        let release = catalog::release(key.tool, &key.version, key.platform, &base);
        // A handle on the shared client that counts the bytes this install receives.
        let client = &self.client()?.counting(self.stats.downloaded(key.tool));
        tracing::info!(tool = %key.tool, version = %key.version, platform = %key.platform, url = %redact(&release.artifact_url), "installing");

        let (expected, verification) = self.expected_sha256(client, &release).await?;

        let staging = self.layout.staging(key).map_err(|source| ErrorKind::Io {
            path: self.layout.tmp(),
            source,
        })?;
        let artifact = staging
            .path()
            .join(format!("artifact.{}", release.file_name));
        let downloaded = self
            .download_artifact(client, &release, &artifact, expected)
            .await?;

        let exe = staging.path().join(key.tool.executable());
        let (archive, entry, cap) = (
            release.archive,
            release.entry.clone(),
            self.config.max_size_bytes,
        );
        let (artifact_in, exe_out) = (artifact.clone(), exe.clone());
        let extracted = tokio::task::spawn_blocking(move || {
            let r = archive::extract(&artifact_in, archive, &entry, &exe_out, cap);
            store::discard(&artifact_in);
            r
        })
        .await
        .expect("extract task does not panic")
        .map_err(|reason| ErrorKind::Archive {
            url: redact(&release.artifact_url),
            reason,
        })?;

        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| ErrorKind::Io { path, source }
        };
        let meta = std::fs::metadata(&exe).map_err(io(&exe))?;
        let manifest = new_manifest(key, &release, downloaded, extracted, verification, &meta);
        let manifest_path = staging.path().join(store::MANIFEST);
        store::write_synced(
            &manifest_path,
            &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
        )
        .map_err(io(&manifest_path))?;
        staging.commit(&dir).map_err(io(&dir))?;
        tracing::info!(tool = %key.tool, version = %key.version, platform = %key.platform, path = %dir.display(), verified = %manifest.verification.summary(), "installed");
        Ok((manifest, true))
    }
}

/// Under the entry's install lock: the manifest of a sound entry, or `None` once there is no
/// entry. A damaged entry is removed only while no task leases it (the lease lock taken
/// exclusively without waiting, as eviction does); a leased one is left to its task and this
/// install fails with [`ErrorKind::DamagedInUse`] (removing it would pull the executable from
/// under that task's next step). Blocking.
fn clear_damaged(layout: &store::Layout, key: &Key) -> Result<Option<Manifest>, ErrorKind> {
    let dir = layout.entry(key);
    let damage = match store::check_entry(&dir, key) {
        Ok(m) => return Ok(Some(m)),
        Err(store::Damage::NoManifest) if !dir.exists() => return Ok(None),
        Err(damage) => damage,
    };
    let io = |source| ErrorKind::Io {
        path: layout.entry(key),
        source,
    };
    let lease = locks::lock_file(&layout.lease_path(key), LockMode::Exclusive, Wait::No);
    let Some(_lease) = lease.map_err(io)? else {
        return Err(ErrorKind::DamagedInUse {
            path: dir,
            damage: damage.to_string(),
        });
    };
    tracing::warn!(tool = %key.tool, version = %key.version, platform = %key.platform, %damage, "cached entry is damaged; reinstalling");
    layout.remove_entry(key).map_err(io)?;
    Ok(None)
}

/// Records an entry's use ([`store::touch_last_used`]) on a blocking thread.
async fn touch_last_used(dir: &std::path::Path) {
    let dir = dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || store::touch_last_used(&dir)).await;
}

/// The manifest of a verified install of `release` as `key`: what was downloaded and
/// extracted, how it was verified, and the executable's mtime (`meta`).
fn new_manifest(
    key: &Key,
    release: &Release,
    downloaded: Downloaded,
    extracted: archive::Extracted,
    verification: Verification,
    meta: &std::fs::Metadata,
) -> Manifest {
    Manifest {
        schema: Manifest::new_schema(),
        tool: key.tool.name().into(),
        version: key.version.to_string(),
        platform: key.platform.name().into(),
        executable: key.tool.executable().into(),
        executable_size: extracted.size,
        executable_sha256: extracted.sha256,
        executable_mtime_ns: store::mtime_ns(meta),
        artifact_url: redact(&release.artifact_url),
        artifact_file: release.file_name.clone(),
        artifact_size: downloaded.size,
        artifact_sha256: downloaded.sha256,
        checksums_url: redact(&release.checksums_url),
        verification,
        installed_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    }
}
