//! `scalr-agent exec <task.json> [--out DIR]`: run one task locally, the way the daemon runs a
//! task from the control plane, with the log on stdout and the result in files.
#![allow(
    clippy::disallowed_methods,
    reason = "reads the task file named on the command line, the operator's input"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::sandbox::stage::Launcher;
use crate::software::SoftwareCache;
use crate::task::cancel::Cancel;
use crate::task::log::{Masker, Sink, TaskLog};
use crate::task::model::Task;
use crate::task::result::{Artifact, TaskStatus};
use crate::task::runner::{IsolationContext, Runner, RunnerSettings, TaskPaths};

mod settings;

pub use settings::Settings;

/// Builds a runner from the configuration (also used by the daemon).
pub fn runner(config: &Settings, launcher: Launcher) -> Runner {
    let cache = SoftwareCache::new(
        config.binaries_dir.clone(),
        config.software.clone(),
        config.http.clone(),
    );
    Runner {
        providers: config.providers.enabled.then(|| {
            Arc::new(
                crate::providers::ProviderStore::new(config.providers.clone(), config.http.clone())
                    .sharing_client(cache.shared_client().clone()),
            )
        }),
        cache: Arc::new(cache),
        launcher,
        settings: RunnerSettings {
            data_dir: config.data_dir.clone(),
            binaries_dir: config.binaries_dir.clone(),
            hooks_dir: config.task.hooks_dir.clone(),
            keep_task_dirs: config.task.keep_task_dirs,
            grace: config.task.cancel_grace,
            system_path: config.task.system_path.clone(),
            read_paths: config.task.read_paths.clone(),
            task_ca_bundle: config.task.task_ca_bundle.clone(),
            http: config.http.clone(),
            task_files: crate::taskfs::Limits {
                artifact: config.task.artifact_limit_bytes,
            },
            log_limit_bytes: config.task.log_limit_bytes,
            nss_wrapper: crate::task::users::find_library(config.task.nss_wrapper_lib.as_deref()),
            task_memory_limit_bytes: config.task.task_memory_limit_bytes,
            identity: config.task.identity.clone(),
        },
        isolation: Arc::new(IsolationContext::probe(
            config.sandbox.clone(),
            &config.data_dir,
        )),
    }
}

/// Runs the task in `task_file` with its log on stdout and in `<out>/task.log`, and its
/// result in `<out>/result.json`; returns how the task ended (`cli` maps it to an exit code).
pub async fn run(
    config: &Settings,
    task_file: &Path,
    out: Option<&Path>,
) -> anyhow::Result<TaskStatus> {
    let bytes = std::fs::read(task_file)
        .with_context(|| format!("reading the task file {}", task_file.display()))?;
    let task = Task::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", task_file.display()))?;
    // `exec plan.json` has the parent "": the current directory.
    let base = match task_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = std::path::absolute(&base).context("resolving the task file's directory")?;
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => PathBuf::from(&task.id),
    };
    let out = std::path::absolute(&out).context("resolving the output directory")?;
    let prepared = out.clone();
    tokio::task::spawn_blocking(move || prepare_out(&prepared))
        .await
        .context("preparing the output directory")??;
    let log_file = crate::datadir::create_private(&out.join("task.log"))
        .with_context(|| format!("creating {}", out.join("task.log").display()))?;
    let sinks: Vec<Sink> = vec![Box::new(std::io::stdout()), Box::new(log_file)];
    let mut log = TaskLog::new(Arc::new(Masker::for_task(&task)), sinks);

    let runner = runner(
        config,
        Launcher::current().context("locating the agent's own executable")?,
    );
    let cancel = Cancel::default();
    let watcher = {
        let cancel = cancel.clone();
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        tokio::spawn(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::warn!("cancelling the task (a second signal kills it)");
            cancel.graceful.cancel();
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            cancel.kill.cancel();
        })
    };
    let result = runner
        .run(
            &task,
            TaskPaths {
                base: &base,
                out: &out,
            },
            &mut log,
            &cancel,
            None,
        )
        .await;
    watcher.abort();
    let path = out.join("result.json");
    {
        use std::io::Write;
        crate::datadir::create_private(&path)
            .and_then(|mut f| f.write_all(&serde_json::to_vec_pretty(&result)?))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let written = out.clone();
    tokio::task::spawn_blocking(move || private_artifacts(&written))
        .await
        .context("narrowing the artifacts' modes")??;
    log.line(&format!(
        "Task {}: {}; result in {}",
        task.id,
        result.status.as_str(),
        path.display()
    ));
    Ok(result.status)
}

/// The names an `exec` writes into `--out`: the only ones a later `exec` removes.
pub fn out_names() -> impl Iterator<Item = &'static str> {
    ["result.json", "task.log"]
        .into_iter()
        .chain(Artifact::ALL.map(Artifact::file_name))
}

/// Creates `--out` (0700 when new) or empties it of what an earlier `exec` wrote. Anything else
/// there is refused, named, before anything is removed: unknown files are never deleted.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
    {
        Ok(()) => {}
        Err(e) => anyhow::bail!("creating the output directory {}: {e}", out.display()),
    }
    let mut ours = Vec::new();
    for entry in std::fs::read_dir(out)
        .with_context(|| format!("reading the output directory {}", out.display()))?
    {
        let entry = entry.with_context(|| format!("reading {}", out.display()))?;
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match name.to_str() {
            Some(n) if out_names().any(|o| o == n) && !is_dir => ours.push(entry.path()),
            _ => anyhow::bail!(
                "the output directory {} holds {:?}, which `exec` does not write: use an empty \
                 or new --out (a re-run removes only {})",
                out.display(),
                name,
                out_names().collect::<Vec<_>>().join(", ")
            ),
        }
    }
    for path in ours {
        // Unlinks a link itself, never its target.
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Every file `exec` wrote into `--out` made 0600: plan files hold sensitive values.
fn private_artifacts(out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for name in out_names() {
        let path = out.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("narrowing {}", path.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}
