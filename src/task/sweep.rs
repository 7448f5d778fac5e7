//! Nothing of a task outlives it: task directories are locked while in use and removed at the
//! task's end, and whatever a crashed agent left under `<data>/tasks/` is removed at the next
//! start, before any task runs (so the next task given the same uid never finds the last one's
//! `cli.tfrc` with its run token).
//!
//! Every directory under `<data>/tasks/` (a task root, or the daemon's `<task>/` of inputs) is
//! held by its creator with an exclusive `flock` on the directory itself for as long as it is
//! in use; the kernel drops it when that process dies. The start-time sweep removes each entry
//! whose lock it can take, and leaves the others (another agent process on the same data
//! directory is using them). Creators hold `<data>/.tasks.lock` shared from `mkdir` until their
//! directory lock is taken, and the sweep holds it exclusively, so a sweep never removes a
//! directory between its creation and its lock.
//!
//! Removal uses `std::fs::remove_dir_all`, which on Linux (since Rust 1.58.1) walks with
//! `openat(O_NOFOLLOW)` and `unlinkat` relative to directory descriptors: a link planted by
//! job code is removed, never followed. The directories removed are named by the agent inside
//! its own `tasks/` (0711, root-owned), so no component of the path is job-controlled.
//! The start also cleans the task uids whose holder died mid-task (`sandbox::uid::recover`).
//! Everything here is blocking: call it from a blocking thread.
#![allow(
    clippy::disallowed_methods,
    reason = "lock files of the agent's own tasks directory"
)]

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An exclusive lock on a directory in use under `<data>/tasks/`; unlocked on drop.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    _fd: File,
}

impl DirLock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory (symlink-safe, see the module docs), then unlocks it.
    pub fn remove(self) {
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the task directory");
        }
    }
}

/// `<data>/.tasks.lock`, beside `tasks/` (which holds task directories only).
fn open_sweep_lock(tasks: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tasks.with_file_name(".tasks.lock"))
}

fn open_dir(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates `<tasks>/<name>` with exactly `mode` and locks it. A leftover of that name that
/// nobody holds is removed first; one that is held is an error (`AlreadyExists`).
pub fn create_locked(tasks: &Path, name: &str, mode: u32) -> io::Result<DirLock> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let guard = open_sweep_lock(tasks)?;
    guard.lock_shared()?;
    let path = tasks.join(name);
    if let Err(e) = fs::DirBuilder::new().mode(mode).create(&path) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        let stale = open_dir(&path)?;
        if stale.try_lock().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is in use by another agent process", path.display()),
            ));
        }
        fs::remove_dir_all(&path)?;
        fs::DirBuilder::new().mode(mode).create(&path)?;
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    let fd = open_dir(&path)?;
    fd.try_lock().map_err(io::Error::other)?;
    drop(guard);
    Ok(DirLock { path, _fd: fd })
}

/// At every start, before any task: the data directory made private (`crate::datadir`) and
/// every unheld directory under `<data>/tasks/` removed. Returns how many were removed.
pub fn at_start(data_dir: &Path, binaries_dir: &Path) -> Result<usize, SweepError> {
    crate::datadir::prepare(data_dir, binaries_dir)?;
    let tasks = data_dir.join("tasks");
    let err = |source| SweepError::Io {
        path: tasks.clone(),
        source,
    };
    let guard = open_sweep_lock(&tasks).map_err(err)?;
    guard.lock().map_err(err)?;
    let mut removed = 0;
    for entry in fs::read_dir(&tasks).map_err(err)?.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            let Ok(fd) = open_dir(&path) else { continue };
            if fd.try_lock().is_err() {
                continue;
            }
        }
        match if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        } {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover task directory")
            }
        }
    }
    drop(guard);
    let uids = crate::sandbox::uid::recover(data_dir);
    if !uids.is_empty() {
        tracing::warn!(
            ?uids,
            "cleaned the task uids of tasks that ran when an agent stopped abruptly"
        );
    }
    if removed > 0 {
        tracing::warn!(
            removed,
            "removed task directories left by an agent that stopped abruptly"
        );
    }
    Ok(removed)
}

/// The start-time sweep failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    #[error("sweeping {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_removes_unheld_directories_only() {
        let data = tempfile::tempdir().unwrap();
        let bins = data.path().join("binaries");
        at_start(data.path(), &bins).unwrap();
        let tasks = data.path().join("tasks");
        let held = create_locked(&tasks, "held.1", 0o700).unwrap();
        let dead = create_locked(&tasks, "dead.2", 0o700).unwrap();
        fs::write(dead.path().join("cli.tfrc"), "token").unwrap();
        std::os::unix::fs::symlink("/etc", dead.path().join("link")).unwrap();
        drop(dead);
        assert_eq!(at_start(data.path(), &bins).unwrap(), 1);
        assert!(held.path().is_dir());
        assert!(!tasks.join("dead.2").exists());
        assert!(Path::new("/etc/passwd").exists());
        let err = create_locked(&tasks, "held.1", 0o700).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        held.remove();
        assert!(!tasks.join("held.1").exists());
    }
}
