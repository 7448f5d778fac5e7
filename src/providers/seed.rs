//! Per-run seeding: which store entries a run's plugin cache links to, and what the run
//! downloaded itself.
//!
//! Rules (Terraform 1.0-1.3 "lenient", Terraform ≥ 1.4 and OpenTofu "strict": they reuse a
//! cache entry only when the lock file accepts its `h1:`, else reinstall it, writing through a
//! link):
//! - the lock lists the provider: only its locked version is offered, and only when the lock
//!   lists the entry's `h1:`. Otherwise (another OS's `h1:`, or only `zh:` hashes, which
//!   Terraform cannot check against an unpacked entry: measured with 1.0.3, it fails init)
//!   nothing is offered and Terraform downloads into the run's own directory, as without a
//!   store, verifying the zip by the lock's `zh:`;
//! - the lock does not list the provider (or there is no lock file): every stored version is
//!   offered; with a strict tool the run also gets
//!   `TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE=true`, so Terraform uses the entry and
//!   records its Linux `h1:` (the run's new lock then lists this platform only).
//!
//! The agent never edits the lock file. Offered entries are symlinks
//! `<plugin cache>/HOST/NS/TYPE/VERSION/TARGET -> ../../../../.store/<id>`, where
//! `<plugin cache>/.store` links to the store's `.by-id` aliases of each entry's `pkg/`
//! ([`store::Layout::ensure_alias`]): the short targets stay in the links' inodes, so a run
//! costs its directories and one link (Terraform ignores links above the leaf level). They are
//! made by the agent in the run's own directory (parents owned by the run's uid, so Terraform
//! can add what the store lacks); each offered entry is leased for the whole run.

use std::collections::BTreeMap;
use std::os::unix::fs::{lchown, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::addr::{Package, Provider};
use super::lockfile::{LockFile, Locked};
use super::store::{self, Manifest};
use super::{Lease, ProviderStore};

/// The link in a run's plugin cache to the store's `.by-id` directory.
pub const STORE_LINK: &str = ".store";

/// Whether the tool reuses a cache entry only when the lock accepts its `h1:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Terraform before 1.4.
    Lenient,
    /// Terraform 1.4 and later, OpenTofu.
    Strict,
}

/// One store entry linked into the run.
#[derive(Debug)]
pub struct Offered {
    pub package: Package,
    pub size: u64,
    pub reason: &'static str,
}

/// The outcome of seeding one run.
#[derive(Debug, Default)]
pub struct Seeded {
    pub offered: Vec<Offered>,
    /// Stored providers not offered, and why.
    pub withheld: Vec<(Package, Withheld)>,
    pub leases: Vec<Lease>,
    /// Set `TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE=true` for the run.
    pub may_break_lock: bool,
    pub took: Duration,
}

/// Links the entries the run may use into `plugin_dir` and leases them. `owner`: the run's
/// uid and gid, given the directories created. Blocking.
pub fn seed(
    store: &ProviderStore,
    plugin_dir: &Path,
    lock: Option<&LockFile>,
    policy: CachePolicy,
    target: &str,
    owner: Option<(u32, u32)>,
) -> std::io::Result<Seeded> {
    let started = Instant::now();
    let layout = store.layout();
    let mut out = Seeded::default();
    let mut by_provider: BTreeMap<Provider, Vec<Package>> = BTreeMap::new();
    for pkg in layout.scan().into_iter().filter(|p| p.target == target) {
        by_provider
            .entry(pkg.provider.clone())
            .or_default()
            .push(pkg);
    }
    for (provider, pkgs) in by_provider {
        let locked = lock.and_then(|l| l.get(&provider));
        for pkg in pkgs {
            if locked.is_some_and(|l| l.version != pkg.version) {
                continue;
            }
            let Ok(manifest) = store::check_entry(layout, &pkg) else {
                continue;
            };
            match decide(locked, &manifest, policy) {
                Err(why) => out.withheld.push((pkg, why)),
                Ok(reason) => {
                    let lease = store.lease(&pkg)?;
                    // Re-check under the lease: a prune may have removed it meanwhile.
                    let Ok(manifest) = store::check_entry(layout, &pkg) else {
                        continue;
                    };
                    if out.offered.is_empty() {
                        let store_link = plugin_dir.join(STORE_LINK);
                        symlink(layout.by_id(), &store_link)?;
                        if let Some((uid, gid)) = owner {
                            lchown(&store_link, Some(uid), Some(gid))?;
                        }
                    }
                    let id = layout.ensure_alias(&pkg)?;
                    let target = Path::new("../../../..").join(STORE_LINK).join(id);
                    link(plugin_dir, &pkg, &target, owner)?;
                    store::touch_last_used(layout, &pkg);
                    if locked.is_none() && policy == CachePolicy::Strict {
                        out.may_break_lock = true;
                    }
                    out.leases.push(lease);
                    out.offered.push(Offered {
                        size: manifest.size(),
                        package: pkg,
                        reason,
                    });
                }
            }
        }
    }
    out.took = started.elapsed();
    Ok(out)
}

/// Why a stored entry is not offered to a run (the run's log names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Withheld {
    /// The lock file has `h1:` hashes (other platforms' perhaps), not the stored entry's.
    #[error("the lock file's h1: hashes do not include the stored {stored}")]
    H1NotLocked { stored: String },
    /// Measured with Terraform 1.0.3: a cache entry checked against a lock with only `zh:`
    /// fails init ("doesn't match any of the checksums"), so it is never offered.
    #[error(
        "the lock file lists only zh: hashes, which Terraform cannot check against an unpacked entry"
    )]
    OnlyZh,
    /// The lock file has neither the entry's `h1:` nor its `zh:`.
    #[error("the lock file does not list its {zh}")]
    NotLocked { zh: String },
}

fn decide(
    locked: Option<&Locked>,
    m: &Manifest,
    _policy: CachePolicy,
) -> Result<&'static str, Withheld> {
    let Some(locked) = locked else {
        return Ok("not in the lock file");
    };
    if locked.hashes.contains(&m.h1) {
        return Ok("its h1: is in the lock file");
    }
    if locked.has_h1() {
        return Err(Withheld::H1NotLocked {
            stored: m.h1.clone(),
        });
    }
    Err(if locked.hashes.contains(&m.zh) {
        Withheld::OnlyZh
    } else {
        Withheld::NotLocked { zh: m.zh.clone() }
    })
}

fn link(
    plugin_dir: &Path,
    pkg: &Package,
    target: &Path,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let rel = pkg.rel_path();
    let mut dir = plugin_dir.to_path_buf();
    for part in rel.parent().expect("five parts").components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                if let Some((uid, gid)) = owner {
                    lchown(&dir, Some(uid), Some(gid))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    symlink(target, plugin_dir.join(rel))
}

/// What a run's plugin cache holds after init.
#[derive(Debug, Default)]
pub struct RunCache {
    /// Packages linked from the store.
    pub linked: Vec<Package>,
    /// Packages Terraform downloaded into the run itself, with their size.
    pub downloaded: Vec<(Package, u64)>,
}

/// Lists `plugin_dir` without following anything the run made: only real directories are
/// descended into (the `.store` link and any link the run put above the leaf level are
/// skipped, as Terraform skips them). Blocking.
pub fn inspect(plugin_dir: &Path) -> RunCache {
    let mut out = RunCache::default();
    let entries = |p: &Path| -> Vec<(String, PathBuf, std::fs::FileType)> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let t = e.file_type().ok()?;
                Some((e.file_name().into_string().ok()?, e.path(), t))
            })
            .collect()
    };
    let dirs = |p: &Path| -> Vec<(String, PathBuf)> {
        entries(p)
            .into_iter()
            .filter(|(_, _, t)| t.is_dir())
            .map(|(n, p, _)| (n, p))
            .collect()
    };
    for (host, hp) in dirs(plugin_dir) {
        for (ns, np) in dirs(&hp) {
            for (kind, kp) in dirs(&np) {
                let Ok(provider) = format!("{host}/{ns}/{kind}").parse::<Provider>() else {
                    continue;
                };
                for (version, vp) in dirs(&kp) {
                    for (target, tp, tt) in entries(&vp) {
                        let Ok(pkg) = Package::new(provider.clone(), &version, &target) else {
                            continue;
                        };
                        if tt.is_symlink() {
                            out.linked.push(pkg);
                        } else if tt.is_dir() {
                            out.downloaded.push((pkg, tree_size(&tp)));
                        }
                    }
                }
            }
        }
    }
    out
}

fn tree_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
