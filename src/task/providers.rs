//! The run's side of the provider store: seeding its plugin cache before `init`, and after the
//! run, reporting what Terraform downloaded itself and filling the store with it (from the
//! registry, never from the run's copy). One log line per provider.

use std::sync::Arc;

use super::model::IacPlatform;
use super::runner::{Prepared, Run};
use crate::providers::ProviderStore;
use crate::providers::addr::{Package, host_target};
use crate::providers::lockfile::{self, LockFile};
use crate::providers::seed::{self, CachePolicy};

/// Variable that lets Terraform ≥ 1.4 use cache entries its lock file does not list.
pub const MAY_BREAK_LOCK: &str = "TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE";

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl Run<'_> {
    fn provider_store(&self, p: &Prepared) -> Option<Arc<ProviderStore>> {
        let store = self.runner.providers.clone()?;
        // The user's own `plugin_cache_dir` wins: the run does not use ours then.
        let ours = p.dirs.plugin_cache.display().to_string();
        (p.env.get("TF_PLUGIN_CACHE_DIR") == Some(&ours)).then_some(store)
    }

    fn cache_policy(&self) -> CachePolicy {
        let w = &self.task.workspace;
        let minor = w
            .iac_version
            .as_str()
            .split('.')
            .nth(1)
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        match w.iac_platform {
            IacPlatform::Terraform
                if w.iac_version.major == 0 || (w.iac_version.major == 1 && minor < 4) =>
            {
                CachePolicy::Lenient
            }
            _ => CachePolicy::Strict,
        }
    }

    /// Links the store entries the run's lock file accepts into its plugin cache.
    pub(super) async fn seed_providers(&mut self, p: &Prepared) {
        let Some(store) = self.provider_store(p) else {
            return;
        };
        let Some(target) = host_target() else {
            return;
        };
        let (workdir, plugin_dir) = (p.workdir.clone(), p.dirs.plugin_cache.clone());
        let (policy, owner) = (self.cache_policy(), p.uid.as_ref().map(|u| u.ids()));
        let root = p.fs.clone();
        let result = tokio::task::spawn_blocking(move || {
            let lock = lockfile::read_task_lock_file(&root, &workdir).map_err(|e| e.to_string())?;
            seed::seed(&store, &plugin_dir, lock.as_ref(), policy, target, owner)
                .map_err(|e| format!("seeding {}: {e}", plugin_dir.display()))
        })
        .await
        .expect("seed task does not panic");
        let seeded = match result {
            Ok(s) => s,
            Err(e) => {
                self.log
                    .line(&format!("Provider cache: not used for this run: {e}"));
                return;
            }
        };
        let stats = self.runner.providers.as_ref().map(|s| s.stats().clone());
        for o in &seeded.offered {
            if let Some(s) = &stats {
                s.hit();
            }
            self.log.line(&format!(
                "Provider cache: {} {} from the store ({}; {})",
                o.package.provider,
                o.package.version,
                mb(o.size),
                o.reason
            ));
        }
        for (pkg, why) in &seeded.withheld {
            self.log.line(&format!(
                "Provider cache: {} {} not offered: {why}",
                pkg.provider, pkg.version
            ));
        }
        if !seeded.offered.is_empty() {
            self.log.line(&format!(
                "Provider cache: {} provider(s) linked in {:.1} ms",
                seeded.offered.len(),
                seeded.took.as_secs_f64() * 1e3
            ));
        }
        if seeded.may_break_lock {
            self.provider_env = Some((MAY_BREAK_LOCK.into(), "true".into()));
        }
        self.provider_leases = seeded.leases;
    }

    /// Ends the run's leases; then, with `SCALR_AGENT_PROVIDER_CACHE_DROP_KERNEL_PAGES`, drops
    /// the page cache of the entries it used that no other run leases, on a blocking thread.
    pub(super) async fn release_providers(&mut self) {
        let leases = std::mem::take(&mut self.provider_leases);
        let store = self.runner.providers.clone();
        let Some(store) = store.filter(|s| s.settings().drop_kernel_pages && !leases.is_empty())
        else {
            return;
        };
        let pkgs: Vec<Package> = leases.iter().map(|l| l.package().clone()).collect();
        let advised = tokio::task::spawn_blocking(move || {
            drop(leases);
            store.drop_pages(&pkgs)
        })
        .await
        .unwrap_or(0);
        if advised > 0 {
            self.log.line(&format!(
                "Provider cache: dropped the kernel's page cache of {advised} stored file(s) this run used"
            ));
        }
    }

    /// Reports what Terraform downloaded into the run and fills the store with each provider
    /// of the run's lock file that the store lacks, from the registry.
    pub(super) async fn fill_providers_after(&mut self, p: &Prepared) {
        let Some(store) = self.provider_store(p) else {
            return;
        };
        let Some(target) = host_target() else {
            return;
        };
        let (workdir, plugin_dir) = (p.workdir.clone(), p.dirs.plugin_cache.clone());
        let root = p.fs.clone();
        let (cache, lock) = tokio::task::spawn_blocking(move || {
            (
                seed::inspect(&plugin_dir),
                lockfile::read_task_lock_file(&root, &workdir),
            )
        })
        .await
        .expect("inspect task does not panic");
        for (pkg, size) in &cache.downloaded {
            store.stats().miss();
            self.log.line(&format!(
                "Provider cache: {} {} was downloaded into the run by {} ({})",
                pkg.provider,
                pkg.version,
                match self.task.workspace.iac_platform {
                    IacPlatform::Terraform => "terraform",
                    IacPlatform::Opentofu => "tofu",
                },
                mb(*size)
            ));
        }
        let lock: LockFile = match lock {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                self.log.line(&format!(
                    "Provider cache: lock file not used to fill the store: {e}"
                ));
                return;
            }
        };
        for (provider, locked) in &lock {
            let Ok(pkg) = Package::new(provider.clone(), &locked.version, target) else {
                continue;
            };
            if store.check(&pkg).await.is_ok() {
                continue;
            }
            match store.ensure(&pkg).await {
                Ok(e) => {
                    let m = &e.manifest;
                    let how = match e.filled {
                        Some(t) => format!(
                            "added to the store after the run ({} zip, {} unpacked, {:.2} s)",
                            mb(m.zip_size),
                            mb(m.size()),
                            t.as_secs_f64()
                        ),
                        None => "already added to the store by a concurrent run".into(),
                    };
                    self.log.line(&format!(
                        "Provider cache: {} {} {how}",
                        pkg.provider, pkg.version
                    ));
                    if !locked.hashes.is_empty()
                        && !locked.hashes.iter().any(|h| *h == m.h1 || *h == m.zh)
                    {
                        self.log.line(&format!(
                            "Provider cache: warning: the registry's {} {} matches none of the run's lock file hashes",
                            pkg.provider, pkg.version
                        ));
                    }
                }
                Err(e) => self
                    .log
                    .line(&format!("Provider cache: could not add to the store: {e}")),
            }
        }
    }
}
