//! Getting a task ready for its steps ([`Run::prepare`]), in an order that fails cheap input
//! first: the task directory, then the task's own input checked (its configuration archive
//! unpacked and checked, the working directory, the policies, the syntax of every hook line),
//! and only then the tools downloaded ("Preparing terraform ..."), a task uid leased, the
//! directory filled (tool links, plan artifacts, CLI configuration, CA bundle, user entry),
//! the environment and the sandbox policy built, and the tree given to the task's uid.
//!
//! A bad task is refused before any tool is downloaded. Whatever was half done is removed
//! when preparation fails or is dropped (a cancellation): the directory (`Unclaimed`), the
//! uid lease; a cache install never publishes a partial entry.

use std::path::{Path, PathBuf};

use super::env::{self, EnvContext};
use super::error::SetupError;
use super::model::{Action, IacPlatform, VariableCategory};
use super::prepare::{self, TaskDirs};
use super::result::Artifact;
use super::runner::{Prepared, Run, TaskPaths};
use crate::sandbox::policy::Policy;
use crate::sandbox::uid::UidLease;
use crate::software::Installed;
use crate::software::catalog::{Platform, Tool};
use crate::taskfs::{self, Kind};

/// The tools a task runs: its IaC tool, and OPA or Infracost when its action uses them.
struct Tools {
    iac: Installed,
    opa: Option<Installed>,
    infracost: Option<Installed>,
}

impl Run<'_> {
    /// Prepares the task for its steps (see the module's documentation for the order).
    pub(super) async fn prepare(&mut self, paths: &TaskPaths<'_>) -> Result<Prepared, SetupError> {
        let platform = Platform::host().ok_or(SetupError::NoBuilds)?;
        let (data_dir, id) = (self.runner.settings.data_dir.clone(), self.task.id.clone());
        let created = tokio::task::spawn_blocking(move || TaskDirs::create(&data_dir, &id))
            .await
            .expect("creating a task directory does not panic");
        let mut dirs = Unclaimed(Some(created?));
        let workdir = self.check_input(paths, dirs.get()).await?;
        let tools = self.install_tools(platform).await?;
        let uid = self.lease_uid().await?;
        let (env, policy) = self
            .fill(paths, dirs.get(), &workdir, &tools, uid.as_ref())
            .await?;
        let dirs = dirs.0.take().expect("claimed once");
        let uid = match uid {
            None => None,
            Some(lease) => Some(give_tree(lease, &dirs.root).await?),
        };
        let fs = match &uid {
            Some(lease) => dirs.fs.owned_by(lease.uid(), lease.gid()),
            None => dirs.fs.clone(),
        }
        .with_limits(self.runner.settings.task_files);
        let mut env = env;
        self.inherit_identity(&fs, &mut env).await?;
        Ok(Prepared {
            fs,
            dirs,
            workdir,
            env,
            policy,
            tool: tools.iac,
            opa: tools.opa,
            infracost: tools.infracost,
            uid,
        })
    }

    /// Adds the inherited identity variables under the workspace's shell variables, their
    /// token files copied into the task (`task::identity`).
    async fn inherit_identity(
        &mut self,
        fs: &crate::taskfs::TaskRoot,
        env: &mut env::Env,
    ) -> Result<(), SetupError> {
        let inherited = self.copy_identity(fs).await?;
        let task = self.task;
        let shell = |k: &str| {
            task.variables
                .iter()
                .any(|v| v.category == VariableCategory::Shell && v.key == k)
        };
        for (k, v) in inherited {
            if !shell(&k) {
                env.insert(k, v);
            }
        }
        Ok(())
    }

    /// Copies the platform's identity token files into the task (at the start and again before
    /// every step, so a rotated token replaces the copy) and masks the credentials; returns the
    /// variables, token files pointing at the copies.
    pub(super) async fn copy_identity(
        &mut self,
        fs: &crate::taskfs::TaskRoot,
    ) -> Result<Vec<(String, String)>, super::identity::TokenFileError> {
        let settings = &self.runner.settings.identity;
        if settings.inherited.is_empty() {
            return Ok(Vec::new());
        }
        let (settings, root) = (settings.clone(), fs.clone());
        let identity = tokio::task::spawn_blocking(move || settings.copy_tokens(&root))
            .await
            .expect("copying token files does not panic")?;
        self.log.add_secrets(&identity.secrets);
        Ok(identity.env)
    }

    /// The task's own input, checked before any download of a tool: its configuration
    /// unpacked (the archive checks), its working directory, its policies, its hook lines'
    /// syntax. Returns the working directory.
    async fn check_input(
        &mut self,
        paths: &TaskPaths<'_>,
        dirs: &TaskDirs,
    ) -> Result<PathBuf, SetupError> {
        let task = self.task;
        let http = self.runner.cache.shared_client();
        let config = &task.configuration;
        prepare::materialize("configuration", config, paths.base, &dirs.work, http).await?;
        let (given, work) = (task.workspace.working_directory.clone(), dirs.work.clone());
        let workdir = tokio::task::spawn_blocking(move || prepare::working_dir(given, &work))
            .await
            .expect("resolving the working directory does not panic")?;
        if let Some(policies) = &task.policies {
            let dest = dirs.root.join(prepare::POLICIES_DIR);
            let d = dest.clone();
            tokio::task::spawn_blocking(move || std::fs::create_dir(&d))
                .await
                .expect("creating a directory does not panic")
                .map_err(io("creating", &dest))?;
            prepare::materialize("policies", policies, paths.base, &dest, http).await?;
        }
        self.check_hooks(dirs).await?;
        Ok(workdir)
    }

    /// Installs the task's tools through the software cache ("Preparing ...").
    async fn install_tools(&mut self, platform: Platform) -> Result<Tools, SetupError> {
        let task = self.task;
        let iac = match task.workspace.iac_platform {
            IacPlatform::Terraform => Tool::Terraform,
            IacPlatform::Opentofu => Tool::OpenTofu,
        };
        self.log.line(&format!(
            "Preparing {} {}...",
            iac, task.workspace.iac_version
        ));
        let cache = &self.runner.cache;
        let install = |tool, version| async move { cache.install(tool, version, platform).await };
        let iac = install(iac, &task.workspace.iac_version).await?;
        let opa = match (&task.tools.opa, task.action) {
            (Some(v), Action::PolicyCheck) => Some(install(Tool::Opa, v).await?),
            _ => None,
        };
        let infracost = match (&task.tools.infracost, &task.cost_estimation, task.action) {
            (Some(v), Some(_), Action::Plan) => Some(install(Tool::Infracost, v).await?),
            _ => None,
        };
        Ok(Tools {
            iac,
            opa,
            infracost,
        })
    }

    /// A uid of its own for the task, when the platform can switch to one.
    async fn lease_uid(&mut self) -> Result<Option<UidLease>, SetupError> {
        let iso = &self.runner.isolation;
        if !iso.probes.uid_switch.ok {
            return Ok(None);
        }
        let pool = iso.uids.clone();
        let lease = tokio::task::spawn_blocking(move || pool.lease())
            .await
            .expect("leasing a uid does not panic")?;
        Ok(Some(lease))
    }

    /// Fills the checked task directory for the steps and builds their environment and
    /// sandbox policy.
    async fn fill(
        &mut self,
        paths: &TaskPaths<'_>,
        dirs: &TaskDirs,
        workdir: &Path,
        tools: &Tools,
        uid: Option<&UidLease>,
    ) -> Result<(env::Env, Policy), SetupError> {
        let ids = uid.map(|u| u.ids());
        let settings = &self.runner.settings;
        let task = self.task;
        let installed = std::iter::once(&tools.iac)
            .chain(&tools.opa)
            .chain(&tools.infracost);
        let links: Vec<_> = installed
            .map(|i| (i.path.clone(), dirs.bin.join(i.tool.executable())))
            .collect();
        tokio::task::spawn_blocking(move || {
            for (target, link) in links {
                std::os::unix::fs::symlink(&target, &link).map_err(io("linking", &link))?;
            }
            Ok::<_, SetupError>(())
        })
        .await
        .expect("linking the tools does not panic")?;
        self.import_plan_artifacts(paths, dirs, workdir).await?;
        let hosts = self
            .runner
            .providers
            .as_ref()
            .map(|s| s.settings().registry_hosts.clone())
            .unwrap_or_default();
        let user_cache =
            env::write_cli_config(task, dirs, &hosts).map_err(io("writing", &dirs.cli_config))?;
        let ca_file = self.write_ca_bundle(dirs)?;
        let identity = match &settings.nss_wrapper {
            Some(_) => Some(user_entry(dirs, ids).await?),
            None => None,
        };
        let cx = EnvContext {
            dirs,
            system_path: &settings.system_path,
            http: &settings.http,
            ca_file: ca_file.as_deref(),
            content_root: &dirs.work,
            user: settings.nss_wrapper.as_deref().zip(identity.as_ref()),
        };
        let mut env = env::build(task, &cx);
        if user_cache {
            env.remove("TF_PLUGIN_CACHE_DIR");
        }
        let iso = &self.runner.isolation;
        let mut read_exec = vec![settings.binaries_dir.clone()];
        if let Some(store) = &self.runner.providers {
            read_exec.push(store.settings().root.clone());
        }
        read_exec.extend(settings.hooks_dir.clone());
        read_exec.extend(settings.read_paths.iter().cloned());
        let policy = Policy::for_task(&iso.probes, &iso.config, ids, &dirs.root, &read_exec);
        Ok((env, policy))
    }

    /// Copies the plan's artifacts the task names into the task directory, through `taskfs`.
    async fn import_plan_artifacts(
        &mut self,
        paths: &TaskPaths<'_>,
        dirs: &TaskDirs,
        workdir: &Path,
    ) -> Result<(), SetupError> {
        let Some(a) = &self.task.plan_artifacts else {
            return Ok(());
        };
        let root = dirs.fs.with_limits(self.runner.settings.task_files);
        let work = root
            .relative(workdir)
            .ok_or(SetupError::OutsideWorkdir)?
            .to_path_buf();
        for (src, rel, kind) in [
            (
                &a.plan_file,
                prepare::in_artifacts(Artifact::PlanFile.file_name()),
                Kind::PlanFile,
            ),
            (
                &a.plan_json,
                prepare::in_artifacts(Artifact::PlanJson.file_name()),
                Kind::PlanJson,
            ),
            (
                &a.lock_file,
                work.join(crate::providers::lockfile::LOCK_FILE),
                Kind::LockFile,
            ),
        ] {
            if let Some(src) = src {
                let (root, src) = (root.clone(), paths.base.join(src));
                tokio::task::spawn_blocking(move || taskfs::import(&root, &src, &rel, kind))
                    .await
                    .expect("importing does not panic")
                    .map_err(SetupError::PlanArtifact)?;
            }
        }
        Ok(())
    }

    /// The stages' CA bundle, when there is one beyond the system roots: the system roots,
    /// then `SCALR_AGENT_CA_CERT`, then the stages-only `SCALR_AGENT_CONTAINER_TASK_CA_CERT`.
    fn write_ca_bundle(&self, dirs: &TaskDirs) -> Result<Option<PathBuf>, SetupError> {
        let settings = &self.runner.settings;
        let extra: Vec<&[u8]> = [&settings.http.ca_bundle, &settings.task_ca_bundle]
            .into_iter()
            .flatten()
            .map(|b| b.pem())
            .collect();
        if extra.is_empty() {
            return Ok(None);
        }
        let mut pem = crate::http::system_roots_pem();
        for bundle in extra {
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(bundle);
        }
        let path = dirs.root.join("ca-bundle.pem");
        std::fs::write(&path, pem).map_err(io("writing", &path))?;
        Ok(Some(path))
    }
}

/// Gives the task tree to the task's uid. The recursive chown blocks: on the blocking pool,
/// the lease travelling with it.
async fn give_tree(lease: UidLease, root: &Path) -> Result<UidLease, SetupError> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || match lease.own_tree(&root) {
        Ok(()) => Ok(lease),
        Err(source) => Err(SetupError::Chown { root, source }),
    })
    .await
    .expect("chown does not panic")
}

/// An I/O error on `path` of the task directory, for `map_err`.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
    let path = path.to_path_buf();
    move |source| SetupError::Io { what, path, source }
}

/// Writes the stage's user entry into the task directory (before the tree is given to the
/// task's uid and before any of its code runs): the dedicated `ids`, or the agent's own.
async fn user_entry(
    dirs: &TaskDirs,
    ids: Option<(u32, u32)>,
) -> Result<super::users::Identity, SetupError> {
    let (uid, gid) = ids.unwrap_or_else(|| {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    });
    let (root, home) = (dirs.root.clone(), dirs.home.clone());
    tokio::task::spawn_blocking(move || {
        let (passwd, group) = super::users::system_databases();
        super::users::write_files(&root, uid, gid, &home, &passwd, &group)
            .map_err(io("writing the user entry into", &root))
    })
    .await
    .expect("writing the user entry does not panic")
}

/// A task directory not yet handed over to [`Prepared`]: removed when preparation fails or is
/// dropped (a cancellation while preparing), so no half-prepared directory stays behind.
struct Unclaimed(Option<TaskDirs>);

impl Unclaimed {
    fn get(&self) -> &TaskDirs {
        self.0.as_ref().expect("claimed only at the end")
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(dirs) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || dirs.remove())),
                Err(_) => dirs.remove(),
            }
        }
    }
}
