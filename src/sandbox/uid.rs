//! The pool of dedicated uid/gid pairs: one per running task, taken from
//! `SCALR_AGENT_TASK_UID_RANGE` (gid = uid; no `/etc/passwd` entry is needed).
//!
//! A uid is dedicated across processes, not only within one: a lease is an exclusive `flock`
//! on `<data>/uids/<uid>` (0600, in a 0700 directory), so every agent process sharing a data
//! directory (the daemon, any number of `exec`s, a second daemon) holds distinct uids. The
//! kernel drops the lock when a process dies, so no lease goes stale. Agents on *different*
//! data directories do not see each other's leases: give them disjoint uid ranges.
//!
//! While leased, the file holds the holder's pid; a clean [`UidLease::release`] removes what
//! the task left under its uid (`sandbox::leftovers`) and empties it. A non-empty file found by
//! the next leaser means the holder died mid-task, so the leftovers of that uid are its own
//! and are removed first. Before a uid is handed out, it is checked: a process, a SysV IPC
//! object, a POSIX message queue or a file in `/tmp`, `/var/tmp` or `/dev/shm` still owned by
//! it makes the pool skip it (logged) — someone else uses that uid.
//!
//! Leasing and releasing are blocking (file locks, a `/proc` scan, a walk of the temporary
//! directories): call them from a blocking thread.
#![allow(
    clippy::disallowed_methods,
    reason = "the uid lease files in the agent's data directory"
)]

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::leftovers;

/// The uid pool of one data directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct UidPool {
    range: RangeInclusive<u32>,
    exclude: Vec<u32>,
    dir: PathBuf,
}

/// One uid held by this process; released (unlocked) on drop.
#[derive(Debug)]
pub struct UidLease {
    id: u32,
    file: File,
}

/// No uid could be leased.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "all {size} task uids of {first}-{last} are in use (SCALR_AGENT_TASK_UID_RANGE){}",
        if *skipped > 0 { format!("; {skipped} of them skipped: still owning processes, IPC objects or temporary files (see the agent's log)") } else { String::new() }
    )]
    Exhausted {
        first: u32,
        last: u32,
        size: usize,
        skipped: usize,
    },
    #[error("uid lease file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl UidPool {
    /// A pool over `range`, leasing through `<data_dir>/uids`, leaving out `exclude` (the
    /// agent's own uid, if it falls inside).
    pub fn new(range: RangeInclusive<u32>, exclude: &[u32], data_dir: &Path) -> UidPool {
        UidPool {
            range,
            exclude: exclude.to_vec(),
            dir: data_dir.join("uids"),
        }
    }

    /// Takes the lowest uid that no process on this data directory holds and that owns
    /// nothing on the host. Blocking.
    pub fn lease(&self) -> Result<UidLease, LeaseError> {
        crate::datadir::ensure_dir(&self.dir, crate::datadir::PRIVATE_DIR).map_err(|e| {
            LeaseError::Io {
                path: e.path,
                source: e.source,
            }
        })?;
        let mut skipped = 0;
        for id in self.range.clone().filter(|id| !self.exclude.contains(id)) {
            let path = self.dir.join(id.to_string());
            let io_err = |source| LeaseError::Io {
                path: path.clone(),
                source,
            };
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_err)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => continue,
                Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            if !holder.trim().is_empty() && !leftovers::has_processes(id) {
                tracing::warn!(uid = id, previous = %holder.trim(), "the previous holder of this task uid died mid-task; removing what its task left");
                leftovers::remove(id).log(id);
            }
            let found = leftovers::find(id);
            if !found.is_empty() {
                tracing::warn!(uid = id, found = %found, "task uid skipped: it still owns something");
                skipped += 1;
                continue;
            }
            file.set_len(0).map_err(io_err)?;
            file.rewind().map_err(io_err)?;
            write!(file, "pid {}", std::process::id()).map_err(io_err)?;
            return Ok(UidLease { id, file });
        }
        Err(LeaseError::Exhausted {
            first: *self.range.start(),
            last: *self.range.end(),
            size: self.range.clone().count(),
            skipped,
        })
    }
}

/// At start, before any task: every uid whose holder died mid-task (a non-empty lease file
/// that nobody holds) gets what its task left removed, so nothing of a crashed task waits for
/// the uid's next lease. Returns the uids cleaned. Blocking.
pub fn recover(data_dir: &Path) -> Vec<u32> {
    let mut cleaned = Vec::new();
    let Ok(entries) = fs::read_dir(data_dir.join("uids")) else {
        return cleaned;
    };
    for entry in entries.flatten() {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(mut file) = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(entry.path())
        else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        if holder.trim().is_empty() {
            continue;
        }
        // The dead holder's stages are being killed (parent-death signal): give them a moment.
        let mut waited = 0;
        while leftovers::has_processes(id) && waited < 20 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited += 1;
        }
        if leftovers::has_processes(id) {
            tracing::warn!(
                uid = id,
                "a crashed task's uid still runs processes; it is cleaned at its next lease"
            );
            continue;
        }
        let removed = leftovers::remove(id);
        removed.log(id);
        if removed.errors.is_empty() {
            let _ = file.set_len(0);
        }
        cleaned.push(id);
    }
    cleaned
}

impl UidLease {
    /// The task's uid.
    pub fn uid(&self) -> u32 {
        self.id
    }

    /// The task's gid (the same number).
    pub fn gid(&self) -> u32 {
        self.id
    }

    /// `(uid, gid)`, as `Policy::for_task` takes them.
    pub fn ids(&self) -> (u32, u32) {
        (self.id, self.id)
    }

    /// Gives `dir` (the task directory, already filled by the agent) to this uid: every entry
    /// chowned, the top directory mode 0700. Symlinks are not followed.
    pub fn own_tree(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        chown_tree(dir, self.id)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }

    /// Ends the task's hold on the uid: removes the SysV IPC objects, POSIX message queues and
    /// temporary files it still owns (its processes are gone: the helper killed the tree),
    /// marks the lease clean and unlocks it. Blocking.
    pub fn release(self) -> leftovers::Removed {
        let removed = leftovers::remove(self.id);
        let mut file = &self.file;
        if removed.errors.is_empty() {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = file.flush();
        }
        removed
    }
}

fn chown_tree(path: &Path, id: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(id), Some(id))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn leases_are_unique_and_returned_on_drop() {
        let data = tempfile::tempdir().unwrap();
        let pool = UidPool::new(64100..=64102, &[64101], data.path());
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!((a.uid(), b.uid()), (64100, 64102));
        assert_eq!(a.ids(), (64100, 64100));
        let err = pool.lease().unwrap_err();
        assert_eq!(
            err.to_string(),
            "all 3 task uids of 64100-64102 are in use (SCALR_AGENT_TASK_UID_RANGE)"
        );
        drop(a);
        assert_eq!(pool.clone().lease().unwrap().uid(), 64100);
    }

    #[test]
    fn a_second_pool_on_the_same_data_dir_sees_the_leases() {
        let data = tempfile::tempdir().unwrap();
        let first = UidPool::new(64110..=64111, &[], data.path());
        let other = UidPool::new(64110..=64111, &[], data.path());
        let a = first.lease().unwrap();
        let b = other.lease().unwrap();
        assert_ne!(a.uid(), b.uid());
        assert!(other.lease().is_err());
        let path = data.path().join("uids").join(a.uid().to_string());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("pid {}", std::process::id())
        );
        let removed = a.release();
        assert!(removed.errors.is_empty(), "{removed:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn concurrent_leases_never_collide() {
        let data = tempfile::tempdir().unwrap();
        let pool = UidPool::new(64200..=64231, &[], data.path());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    (0..8).map(|_| pool.lease().unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let leases: Vec<UidLease> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let ids: BTreeSet<u32> = leases.iter().map(UidLease::uid).collect();
        assert_eq!(ids.len(), 32);
    }
}
