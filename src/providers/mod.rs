//! The shared provider store: every provider package downloaded and verified once per cache
//! directory, linked read-only into each run's own plugin cache.
//!
//! Only this module writes into `<SCALR_AGENT_CACHE_DIR>/providers`, and only by
//! fetch-verify-rename ([`fill`]): the agent downloads a package itself from a network mirror
//! or the origin registry (signed `SHA256SUMS`, `zh:` of the zip), extracts it with the
//! software cache's archive rules, computes `h1:` from the extracted tree and renames the
//! complete entry into place. A run's own copy of a provider is never trusted. One fill per
//! entry runs at a time across processes (an OS file lock, re-checked once held), at most
//! `concurrency` in this process. Runs hold a shared lease on each entry they link, so
//! eviction never removes one in use. [`seed`] decides, from the run's lock file, what to link.

pub mod addr;
mod fill;
pub mod hash;
pub mod lockfile;
mod registry;
pub mod seed;
pub mod settings;
pub mod stats;
pub mod store;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::http::{HttpClient, HttpError, SharedClient};
use addr::Package;
pub use settings::{NetworkMirror, Settings};
pub use stats::ProviderStats;
use store::{Layout, Manifest};

/// Why a package could not be put into the store. Wrapped with the package in [`StoreError`].
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Http(HttpError),
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("signature {url} over SHA256SUMS rejected: {reason}")]
    Signature {
        url: String,
        reason: crate::software::verify::SignatureError,
    },
    #[error("{what}: expected {expected}, found {found}")]
    Hash {
        what: String,
        expected: String,
        found: String,
    },
    #[error("package {url} rejected: {reason}")]
    Archive {
        url: String,
        reason: crate::archive::ExtractError,
    },
    #[error("provider store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent's HTTP client: {0}")]
    Client(HttpError),
    #[error(
        "the stored entry {path} is damaged ({damage}) and leased by a running task: left to \
         that task, replaced by the first fill after its lease ends"
    )]
    DamagedInUse { path: PathBuf, damage: String },
}

/// A failed store operation, naming the package.
#[derive(Debug, thiserror::Error)]
#[error("provider {package}: {kind}")]
pub struct StoreError {
    pub package: String,
    pub kind: FillError,
}

/// A store entry present and checked, and whether this call filled it.
#[derive(Debug)]
pub struct Ensured {
    pub manifest: Manifest,
    /// `Some(wall time)` when this call downloaded it.
    pub filled: Option<Duration>,
}

/// A shared lease on an entry: eviction leaves it alone while this lives.
#[derive(Debug)]
pub struct Lease {
    package: Package,
    _lock: File,
}

impl Lease {
    /// The leased entry.
    pub fn package(&self) -> &Package {
        &self.package
    }
}

/// One row of `software providers`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub provider: String,
    pub version: String,
    pub target: String,
    pub size: u64,
    pub last_used: Option<String>,
    pub h1: Option<String>,
    pub verified: Option<String>,
    /// `None` when the entry passes the check.
    pub damage: Option<String>,
}

/// What a prune removed and kept: the software cache's report, the same fields.
pub use crate::software::PruneReport;

/// The provider store.
#[derive(Debug)]
pub struct ProviderStore {
    layout: Layout,
    settings: Settings,
    http: SharedClient,
    fills: tokio::sync::Semaphore,
    stats: Arc<ProviderStats>,
}

impl ProviderStore {
    /// A store as configured. Nothing is created until the first fill.
    pub fn new(settings: Settings, http_config: crate::http::Settings) -> ProviderStore {
        ProviderStore {
            layout: Layout {
                root: settings.root.clone(),
            },
            fills: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
            settings,
            http: SharedClient::new(http_config),
            stats: Arc::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn stats(&self) -> &Arc<ProviderStats> {
        &self.stats
    }

    /// Uses `http` (the runner's one client, [`crate::software::SoftwareCache::shared_client`])
    /// instead of a client of its own.
    pub fn sharing_client(mut self, http: SharedClient) -> ProviderStore {
        self.http = http;
        self
    }

    fn client(&self) -> Result<&HttpClient, FillError> {
        self.http.get().map_err(FillError::Client)
    }

    /// Returns the checked entry of `pkg`, filling it first when missing or damaged. Concurrent
    /// calls for one entry, in any process sharing the store, download it once.
    pub async fn ensure(&self, pkg: &Package) -> Result<Ensured, StoreError> {
        let fail = |kind| StoreError {
            package: pkg.to_string(),
            kind,
        };
        if let Ok(manifest) = self.check(pkg).await {
            return Ok(Ensured {
                manifest,
                filled: None,
            });
        }
        let layout = self.layout.clone();
        let key = pkg.clone();
        let lock_dir = self.layout.root.join(".locks");
        let lock = tokio::task::spawn_blocking(move || {
            let f = layout.fill_lock(&key)?;
            f.lock()?;
            Ok::<_, std::io::Error>(f)
        })
        .await
        .expect("lock task does not panic")
        .map_err(|source| {
            fail(FillError::Io {
                path: lock_dir,
                source,
            })
        })?;
        let result = self.ensure_locked(pkg).await;
        drop(lock);
        match &result {
            Ok(Ensured {
                filled: Some(took), ..
            }) => self.stats.filled(*took),
            Ok(_) => {}
            Err(_) => self.stats.fill_failed(),
        }
        result.map_err(fail)
    }

    /// [`store::check_entry`] on a blocking thread.
    pub async fn check(&self, pkg: &Package) -> Result<Manifest, store::Damage> {
        let (layout, pkg) = (self.layout.clone(), pkg.clone());
        tokio::task::spawn_blocking(move || store::check_entry(&layout, &pkg))
            .await
            .expect("the entry check does not panic")
    }

    async fn ensure_locked(&self, pkg: &Package) -> Result<Ensured, FillError> {
        let (layout, key) = (self.layout.clone(), pkg.clone());
        let present = tokio::task::spawn_blocking(move || clear_damaged(&layout, &key))
            .await
            .expect("the entry check does not panic")?;
        if let Some(manifest) = present {
            return Ok(Ensured {
                manifest,
                filled: None,
            });
        }
        let _permit = self.fills.acquire().await.expect("never closed");
        let started = Instant::now();
        let client = self.client()?.counting(self.stats.downloaded());
        let manifest = fill::fill(&self.layout, &self.settings, &client, pkg).await?;
        tracing::info!(package = %pkg, h1 = %manifest.h1, verified = %manifest.verification, "provider stored");
        Ok(Ensured {
            manifest,
            filled: Some(started.elapsed()),
        })
    }

    /// Takes a shared lease on an entry (blocking only while a prune removes it). Blocking.
    pub fn lease(&self, pkg: &Package) -> std::io::Result<Lease> {
        let f = self.layout.lease_lock(pkg)?;
        f.lock_shared()?;
        Ok(Lease {
            package: pkg.clone(),
            _lock: f,
        })
    }

    /// Drops the kernel's page cache of each entry in `pkgs` that no run leases (a run still
    /// using one keeps its pages), keeping the files: [`Layout::drop_pages`], under the lease
    /// lock taken exclusively without waiting. Returns how many files were advised; failures
    /// are logged, never raised (this only saves memory). Blocking.
    pub fn drop_pages(&self, pkgs: &[Package]) -> usize {
        let mut advised = 0;
        for pkg in pkgs {
            let dropped = self.layout.try_lease_exclusive(pkg).and_then(|held| {
                let Some(_held) = held else { return Ok(0) };
                match store::check_entry(&self.layout, pkg) {
                    Ok(manifest) => self.layout.drop_pages(pkg, &manifest),
                    Err(_) => Ok(0),
                }
            });
            match dropped {
                Ok(n) => advised += n,
                Err(e) => {
                    tracing::debug!(package = %pkg, error = %e, "could not drop cached pages")
                }
            }
        }
        advised
    }

    /// Every entry with its state; `verify` also re-hashes each package. Blocking.
    pub fn list(&self, verify: bool) -> Vec<Listed> {
        self.layout
            .scan()
            .into_iter()
            .map(|pkg| {
                let checked = store::check_entry(&self.layout, &pkg);
                let mut damage = checked.as_ref().err().map(|d| d.to_string());
                if verify && let Ok(m) = &checked {
                    match hash::h1_of_dir(&self.layout.pkg_dir(&pkg)) {
                        Ok(h) if h == m.h1 => {}
                        Ok(h) => damage = Some(format!("h1: is {h}, the manifest says {}", m.h1)),
                        Err(e) => damage = Some(e.to_string()),
                    }
                }
                let m = checked.ok();
                Listed {
                    provider: pkg.provider.to_string(),
                    version: pkg.version.clone(),
                    target: pkg.target.clone(),
                    size: m.as_ref().map(Manifest::size).unwrap_or(0),
                    last_used: store::last_used(&self.layout, &pkg)
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    h1: m.as_ref().map(|m| m.h1.clone()),
                    verified: m.map(|m| m.verification),
                    damage,
                }
            })
            .collect()
    }

    /// Removes damaged entries, entries unused past the threshold, then the least recently
    /// used while above the size limit; never an entry being filled or leased. Blocking.
    pub fn prune(&self) -> std::io::Result<PruneReport> {
        self.prune_to(self.settings.size_limit_bytes)
    }

    /// [`ProviderStore::prune`] with another size limit (`0`: evict everything not in use).
    pub fn prune_to(&self, limit: u64) -> std::io::Result<PruneReport> {
        let layout = &self.layout;
        layout.sweep_leftovers();
        let mut report = PruneReport::default();
        let now = SystemTime::now();
        let mut live = Vec::new();
        let mut doomed = Vec::new();
        for pkg in layout.scan() {
            let used = store::last_used(layout, &pkg).unwrap_or(SystemTime::UNIX_EPOCH);
            match store::check_entry(layout, &pkg) {
                Err(_) => doomed.push((pkg, 0, "damaged")),
                Ok(m)
                    if now.duration_since(used).unwrap_or_default()
                        > self.settings.unused_threshold =>
                {
                    doomed.push((pkg, m.size(), "unused"))
                }
                Ok(m) => live.push((pkg, used, m.size())),
            }
        }
        let mut remove = |pkg: &Package, size: u64, why: &str| -> std::io::Result<bool> {
            let locks = crate::software::locks::try_lock_both(layout.fill_lock(pkg)?, || {
                layout.lease_lock(pkg)
            })?;
            if locks.is_none() {
                report.kept_in_use.push(pkg.to_string());
                return Ok(false);
            }
            layout.remove_entry(pkg)?;
            report.removed.push(format!("{pkg} ({why})"));
            report.freed_bytes += size;
            Ok(true)
        };
        for (pkg, size, why) in doomed {
            remove(&pkg, size, why)?;
        }
        let mut total: u64 = live.iter().map(|(_, _, s)| s).sum();
        live.sort_by_key(|(_, used, _)| *used);
        for (pkg, _, size) in live {
            if total <= limit {
                break;
            }
            if remove(&pkg, size, "over the size limit")? {
                total -= size;
            }
        }
        report.remaining_bytes = total;
        Ok(report)
    }
}

/// Under the entry's fill lock: the manifest of a sound entry, or `None` once there is no
/// entry. A damaged entry is removed only while no run leases it (the lease lock taken
/// exclusively without waiting, as a prune does). A leased one is left to its runs and this
/// fill fails with [`FillError::DamagedInUse`]: removing it would pull files from under a
/// running Terraform, and filling beside it would need a second path per entry. The first
/// fill after the leases end replaces it. Blocking.
fn clear_damaged(layout: &Layout, pkg: &Package) -> Result<Option<Manifest>, FillError> {
    let dir = layout.entry(pkg);
    let damage = match store::check_entry(layout, pkg) {
        Ok(manifest) => return Ok(Some(manifest)),
        Err(store::Damage::NoManifest) if !dir.exists() => return Ok(None),
        Err(damage) => damage,
    };
    let io = |source| FillError::Io {
        path: layout.entry(pkg),
        source,
    };
    let Some(_lease) = layout.try_lease_exclusive(pkg).map_err(io)? else {
        return Err(FillError::DamagedInUse {
            path: dir,
            damage: damage.to_string(),
        });
    };
    tracing::warn!(package = %pkg, %damage, "stored provider is damaged; replacing it");
    layout.remove_entry(pkg).map_err(io)?;
    Ok(None)
}
