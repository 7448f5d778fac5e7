//! Preparing a task: its private directory, its configuration files, its working directory and
//! its tools, before any stage starts (so a missing build or a bad archive fails fast, named).
//!
//! ```text
//! <data>/tasks/<task id>.<random>/   0700, owned by the task's dedicated uid
//!     work/         the configuration (SCALR_RUN_CONTENT_ROOT)
//!     home/         HOME (with .local/bin on PATH)   tmp/   TMPDIR
//!     bin/          links to the task's tools (first on PATH)
//!     plugin-cache/ TF_PLUGIN_CACHE_DIR
//!     artifacts/    plan file, plan JSON, lock file, cost and policy results
//!     agent.env     SCALR_AGENT_ENV       cli.tfrc   the CLI configuration
//! ```
//!
//! Configuration archives are extracted by [`crate::archive`], the software cache's extractor: no absolute paths, no
//! `..`, no hard links, symbolic links only to places inside the tree, size and count caps.
#![allow(
    clippy::disallowed_methods,
    reason = "reads the task's inputs and fills its directory before any task code ran"
)]

use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model::{Source, Task};
use crate::archive;
use crate::http::SharedClient;

/// Largest configuration accepted, extracted.
pub const MAX_TREE_BYTES: u64 = 4 << 30;
/// Most entries accepted in a configuration archive.
pub const MAX_TREE_ENTRIES: usize = 200_000;

/// The artifacts' directory (`artifacts/`), relative to the task root: what `taskfs` reads
/// back from it is named relative to the root.
pub const ARTIFACTS_DIR: &str = "artifacts";
/// The task's policies (`policies/`, only for tasks that have some), relative to the root.
pub const POLICIES_DIR: &str = "policies";

/// A file in the task's `artifacts/`, relative to the task root (how `taskfs` names it).
pub fn in_artifacts(name: &str) -> PathBuf {
    Path::new(ARTIFACTS_DIR).join(name)
}

/// A task's directories.
#[derive(Debug, Clone)]
pub struct TaskDirs {
    pub root: PathBuf,
    pub work: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub bin: PathBuf,
    pub plugin_cache: PathBuf,
    pub artifacts: PathBuf,
    pub agent_env: PathBuf,
    pub cli_config: PathBuf,
    /// The root's descriptor, opened right after the agent created it: every file read back
    /// from the task, and every write after task code ran, goes through it.
    pub fs: crate::taskfs::TaskRoot,
    /// Held while the directory is in use, so no start-time sweep removes it (`task::sweep`).
    _lock: std::sync::Arc<super::sweep::DirLock>,
}

/// Why a task could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{name} archive {origin}: sha256 is {found}, the task says {expected}")]
    Checksum {
        name: &'static str,
        origin: String,
        expected: String,
        found: String,
    },
    #[error("{name} archive {origin}: {reason}")]
    Archive {
        name: &'static str,
        origin: String,
        reason: archive::ExtractError,
    },
    #[error("{name} directory {path}: {reason}")]
    Directory {
        name: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("downloading the {name} archive: {source}")]
    Download {
        name: &'static str,
        source: crate::http::HttpError,
    },
    #[error("workspace.working_directory {given:?}: {reason}")]
    WorkingDirectory { given: String, reason: String },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PrepareError + use<> {
    let path = path.to_path_buf();
    move |source| PrepareError::Io { what, path, source }
}

impl TaskDirs {
    /// Creates a fresh task directory under `<data>/tasks`. The data and tasks directories are
    /// set traversable but not listable (0711, `crate::datadir`) so a task's own uid can reach
    /// its directory and no other.
    pub fn create(data_dir: &Path, task_id: &str) -> Result<TaskDirs, PrepareError> {
        use std::os::unix::fs::DirBuilderExt;
        let tasks = data_dir.join("tasks");
        for dir in [data_dir, tasks.as_path()] {
            crate::datadir::ensure_dir(dir, crate::datadir::TRAVERSE_ONLY).map_err(|e| {
                PrepareError::Io {
                    what: "creating",
                    path: e.path,
                    source: e.source,
                }
            })?;
        }
        let name = format!("{task_id}.{:08x}", rand::random::<u32>());
        let lock = super::sweep::create_locked(&tasks, &name, 0o700)
            .map_err(io_err("creating", &tasks.join(&name)))?;
        let root = lock.path().to_path_buf();
        let fs = crate::taskfs::TaskRoot::open(&root).map_err(io_err("opening", &root))?;
        let d = TaskDirs {
            fs,
            work: root.join("work"),
            home: root.join("home"),
            tmp: root.join("tmp"),
            bin: root.join("bin"),
            plugin_cache: root.join("plugin-cache"),
            artifacts: root.join(ARTIFACTS_DIR),
            agent_env: root.join("agent.env"),
            cli_config: root.join("cli.tfrc"),
            root,
            _lock: std::sync::Arc::new(lock),
        };
        for dir in [
            &d.work,
            &d.home.join(".local/bin"),
            &d.tmp,
            &d.bin,
            &d.plugin_cache,
            &d.artifacts,
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("creating", dir))?;
        }
        File::create(&d.agent_env).map_err(io_err("creating", &d.agent_env))?;
        Ok(d)
    }

    /// Removes the task directory (symlink-safe: `task::sweep`). Blocking.
    pub fn remove(&self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            tracing::warn!(path = %self.root.display(), error = %e, "cannot remove the task directory");
        }
    }
}

/// Materializes a source (configuration or policies) into `dest`. Relative paths are resolved
/// against `base` (the task file's directory).
pub async fn materialize(
    name: &'static str,
    source: &Source,
    base: &Path,
    dest: &Path,
    http: &SharedClient,
) -> Result<(), PrepareError> {
    match source {
        Source::Directory(dir) => {
            let dir = base.join(dir);
            let dest = dest.to_path_buf();
            tokio::task::spawn_blocking(move || copy_tree(name, &dir, &dest))
                .await
                .expect("copy does not panic")
        }
        Source::Archive(a) => {
            let (path, origin, _tmp) = match (&a.path, &a.url) {
                (Some(p), _) => (base.join(p), base.join(p).display().to_string(), None),
                (None, Some(url)) => {
                    let client = http
                        .get()
                        .map_err(|source| PrepareError::Download { name, source })?;
                    let tmp = dest.with_extension("download");
                    client
                        .download(url, &tmp, MAX_TREE_BYTES)
                        .await
                        .map_err(|source| PrepareError::Download { name, source })?;
                    (tmp.clone(), crate::http::redact(url), Some(TempFile(tmp)))
                }
                (None, None) => unreachable!("validated: path or url"),
            };
            let expected = a.sha256.to_ascii_lowercase();
            let dest = dest.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let found = sha256_file(&path).map_err(io_err("reading", &path))?;
                if found != expected {
                    return Err(PrepareError::Checksum {
                        name,
                        origin,
                        expected,
                        found,
                    });
                }
                archive::extract_tar_tree(&path, &dest, MAX_TREE_BYTES, MAX_TREE_ENTRIES).map_err(
                    |reason| PrepareError::Archive {
                        name,
                        origin,
                        reason,
                    },
                )
            })
            .await
            .expect("extraction does not panic")
        }
    }
}

struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Copies a local directory (regular files, directories, links staying inside it).
fn copy_tree(name: &'static str, src: &Path, dest: &Path) -> Result<(), PrepareError> {
    let bad = |reason: String| PrepareError::Directory {
        name,
        path: src.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(src).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for item in fs::read_dir(src.join(&rel)).map_err(|e| bad(e.to_string()))? {
            let item = item.map_err(|e| bad(e.to_string()))?;
            let rel_item = rel.join(item.file_name());
            let kind = item.file_type().map_err(|e| bad(e.to_string()))?;
            let (from, to) = (src.join(&rel_item), dest.join(&rel_item));
            if kind.is_dir() {
                fs::create_dir_all(&to).map_err(io_err("creating", &to))?;
                stack.push(rel_item);
            } else if kind.is_file() {
                fs::copy(&from, &to).map_err(io_err("copying", &from))?;
            } else if kind.is_symlink() {
                let link = fs::read_link(&from).map_err(io_err("reading", &from))?;
                if link.is_absolute()
                    || !archive::lexical_join(to.parent().unwrap_or(dest), &link).starts_with(dest)
                {
                    return Err(bad(format!(
                        "{} links outside the configuration",
                        rel_item.display()
                    )));
                }
                std::os::unix::fs::symlink(&link, &to).map_err(io_err("linking", &to))?;
            }
        }
    }
    Ok(())
}

/// Resolves the workspace's working directory inside the configuration root.
pub fn working_dir(task: &Task, work: &Path) -> Result<PathBuf, PrepareError> {
    let given = task.workspace.working_directory.clone();
    let bad = |reason: &str| PrepareError::WorkingDirectory {
        given: given.clone(),
        reason: reason.into(),
    };
    let rel = Path::new(&given);
    if rel.is_absolute() {
        return Err(bad("must be relative to the configuration root"));
    }
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad(
            "must not contain `..`: it would leave the configuration",
        ));
    }
    let dir = work.join(rel);
    let real = dir
        .canonicalize()
        .map_err(|_| bad("does not exist in the configuration"))?;
    let root = work.canonicalize().map_err(|e| bad(&e.to_string()))?;
    if !real.starts_with(&root) {
        return Err(bad("resolves outside the configuration (through a link)"));
    }
    if !real.is_dir() {
        return Err(bad("is not a directory"));
    }
    Ok(real)
}
