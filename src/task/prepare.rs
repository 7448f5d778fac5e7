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
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model::Source;
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
        {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&d.agent_env)
                .map_err(io_err("creating", &d.agent_env))?;
        }
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

/// Copies a local directory (regular files, directories, links staying inside it; anything
/// else is skipped) without following a link inside it: each directory is opened beneath the
/// top one component by component with `O_NOFOLLOW | O_DIRECTORY`, each file with
/// `O_NOFOLLOW | O_NONBLOCK` and checked a regular file on its descriptor, and the copies are
/// created new. A directory swapped for a link, or a file for a FIFO, while it is copied is
/// refused instead of followed or waited on. The top directory itself may be a link (the
/// operator's choice). The same caps as an archive's tree hold: [`MAX_TREE_BYTES`] in all,
/// [`MAX_TREE_ENTRIES`] entries. Blocking.
fn copy_tree(name: &'static str, src: &Path, dest: &Path) -> Result<(), PrepareError> {
    copy_tree_capped(name, src, dest, MAX_TREE_BYTES, MAX_TREE_ENTRIES)
}

/// [`copy_tree`] with the caps given.
fn copy_tree_capped(
    name: &'static str,
    src: &Path,
    dest: &Path,
    cap: u64,
    max_entries: usize,
) -> Result<(), PrepareError> {
    use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bad = |reason: String| PrepareError::Directory {
        name,
        path: src.to_path_buf(),
        reason,
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let top = rustix::fs::open(src, dir_flags, Mode::empty())
        .map_err(|e| bad(format!("not a readable directory: {e}")))?;
    let (mut left, mut seen) = (cap, 0usize);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = open_beneath(&top, &rel).map_err(|e| bad(format!("{}: {e}", rel.display())))?;
        let entries = Dir::read_from(&here).map_err(|e| bad(e.to_string()))?;
        for item in entries {
            let item = item.map_err(|e| bad(e.to_string()))?;
            let file = item.file_name();
            if matches!(file.to_bytes(), b"." | b"..") {
                continue;
            }
            seen += 1;
            if seen > max_entries {
                return Err(bad(format!("more than {max_entries} entries")));
            }
            let rel_item = rel.join(std::ffi::OsStr::from_bytes(file.to_bytes()));
            let at = |e: rustix::io::Errno| bad(format!("{}: {e}", rel_item.display()));
            let to = dest.join(&rel_item);
            let stat = rustix::fs::statat(&here, file, AtFlags::SYMLINK_NOFOLLOW).map_err(at)?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    fs::create_dir_all(&to).map_err(io_err("creating", &to))?;
                    stack.push(rel_item);
                }
                FileType::RegularFile => {
                    left -= copy_file(&here, file, &to, stat.st_mode & 0o777, left)
                        .map_err(|why| bad(format!("{}: {why}", rel_item.display())))?;
                }
                FileType::Symlink => {
                    let link = rustix::fs::readlinkat(&here, file, Vec::new()).map_err(at)?;
                    let link = PathBuf::from(std::ffi::OsString::from_vec(link.into_bytes()));
                    if let Err(why) =
                        archive::link_stays_inside(dest, to.parent().unwrap_or(dest), &link)
                            .map_err(io_err("resolving", &to))?
                    {
                        return Err(bad(format!(
                            "{} links outside the configuration ({} : {why})",
                            rel_item.display(),
                            link.display()
                        )));
                    }
                    std::os::unix::fs::symlink(&link, &to).map_err(io_err("linking", &to))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Copies the regular file `name` of the directory `here` into the new file `to` with `mode`,
/// at most `left` bytes: opened without following a link or waiting on a FIFO, and checked a
/// regular file on its descriptor. The bytes copied, or why not.
fn copy_file(
    here: &OwnedFd,
    name: &std::ffi::CStr,
    to: &Path,
    mode: u32,
    left: u64,
) -> Result<u64, String> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let from = rustix::fs::openat(here, name, flags, Mode::empty()).map_err(|e| e.to_string())?;
    let kind =
        FileType::from_raw_mode(rustix::fs::fstat(&from).map_err(|e| e.to_string())?.st_mode);
    if kind != FileType::RegularFile {
        return Err(format!("became a {kind:?} while it was copied"));
    }
    match archive::copy_capped_mode(&mut File::from(from), "", to, left, mode) {
        Ok(copied) => Ok(copied.size),
        Err(archive::ExtractError::Overflow { .. }) => {
            Err("the copy passes the size cap for the whole tree".into())
        }
        Err(e) => Err(format!("copying: {e}")),
    }
}

/// Opens the directory `rel` beneath `top`, refusing any link on the way.
fn open_beneath(top: &OwnedFd, rel: &Path) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut at = rustix::fs::openat(top, ".", flags, Mode::empty())?;
    for part in rel.components() {
        at = rustix::fs::openat(&at, part.as_os_str(), flags, Mode::empty())?;
    }
    Ok(at)
}

/// Resolves the workspace's working directory (`given`) inside the configuration root.
/// Blocking (resolves links).
pub fn working_dir(given: String, work: &Path) -> Result<PathBuf, PrepareError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A source tree with files, a subdirectory, a link inside it and a FIFO.
    fn source() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir(&dest).unwrap();
        fs::write(src.join("main.tf"), "x").unwrap();
        fs::write(src.join("sub/a.tf"), "y").unwrap();
        symlink("main.tf", src.join("alias.tf")).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        (dir, src, dest)
    }

    #[test]
    fn a_copied_directory_keeps_the_tree_caps() {
        // 2 bytes in files ("x", "y"), 5 entries (main.tf, sub, sub/a.tf, alias.tf, fifo).
        let (_dir, src, dest) = source();
        let err = copy_tree_capped("configuration", &src, &dest, 1, 100)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("passes the size cap for the whole tree"),
            "{err}"
        );
        let (_dir, src, dest) = source();
        let err = copy_tree_capped("configuration", &src, &dest, 100, 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 4 entries"), "{err}");
        let (_dir, src, dest) = source();
        copy_tree_capped("configuration", &src, &dest, 2, 5).unwrap();
        assert_eq!(fs::read_to_string(dest.join("sub/a.tf")).unwrap(), "y");
    }

    #[test]
    fn a_directory_is_copied_without_following_or_opening_anything_but_files() {
        let (_dir, src, dest) = source();
        copy_tree("configuration", &src, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("sub/a.tf")).unwrap(), "y");
        assert_eq!(fs::read_to_string(dest.join("alias.tf")).unwrap(), "x");
        assert!(
            fs::symlink_metadata(dest.join("alias.tf"))
                .unwrap()
                .is_symlink()
        );
        assert!(!dest.join("fifo").exists(), "a FIFO is skipped");
    }

    /// Links that are lexically inside but lead out once followed (`a -> .`, `b -> a/..`) or
    /// that lead out directly are refused, naming the entry.
    #[test]
    fn links_leading_out_of_a_copied_directory_are_refused() {
        for (links, expected) in [
            (&[("a", "."), ("b", "a/..")][..], "b links outside"),
            (&[("up", "../../etc")][..], "up links outside"),
            (&[("abs", "/etc/passwd")][..], "abs links outside"),
        ] {
            let (_dir, src, dest) = source();
            for (name, target) in links {
                symlink(target, src.join(name)).unwrap();
            }
            let err = copy_tree("configuration", &src, &dest)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    /// A top directory that is not a directory is refused.
    #[test]
    fn a_source_that_is_not_a_directory_is_refused() {
        let (_dir, src, dest) = source();
        let err = copy_tree("configuration", &src.join("main.tf"), &dest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a readable directory"), "{err}");
    }
}
