//! The pool of dedicated uid/gid pairs: one per concurrently running task, taken from
//! `SCALR_AGENT_TASK_UID_RANGE` (gid = uid; no `/etc/passwd` entry is needed).
//!
//! A [`UidLease`] gives its id back to the pool when dropped. Ids are handed out lowest first,
//! so a small pool is reused predictably. The caller makes sure no process of the uid is left
//! before the lease is dropped (the helper kills everything running as the task's uid).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A thread-safe pool of ids; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct UidPool {
    free: Arc<Mutex<BTreeSet<u32>>>,
    range: RangeInclusive<u32>,
}

/// One id taken from the pool; returned on drop.
#[derive(Debug)]
pub struct UidLease {
    id: u32,
    pool: Arc<Mutex<BTreeSet<u32>>>,
}

/// Every id of the range is in use.
#[derive(Debug, thiserror::Error)]
#[error("all {size} task uids of {first}-{last} are in use (SCALR_AGENT_TASK_UID_RANGE)")]
pub struct PoolExhausted {
    pub first: u32,
    pub last: u32,
    pub size: usize,
}

impl UidPool {
    /// A pool over `range`, leaving out `exclude` (the agent's own uid, if it falls inside).
    pub fn new(range: RangeInclusive<u32>, exclude: &[u32]) -> UidPool {
        let free = range.clone().filter(|id| !exclude.contains(id)).collect();
        UidPool {
            free: Arc::new(Mutex::new(free)),
            range,
        }
    }

    /// Takes the lowest free id.
    pub fn lease(&self) -> Result<UidLease, PoolExhausted> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.pop_first() {
            Some(id) => Ok(UidLease {
                id,
                pool: Arc::clone(&self.free),
            }),
            None => Err(PoolExhausted {
                first: *self.range.start(),
                last: *self.range.end(),
                size: self.range.clone().count(),
            }),
        }
    }

    /// How many ids are free now.
    pub fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
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
    pub fn own_tree(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        chown_tree(dir, self.id)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
}

fn chown_tree(path: &Path, id: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(id), Some(id))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), id)?;
        }
    }
    Ok(())
}

impl Drop for UidLease {
    /// Returns the id to the pool.
    fn drop(&mut self) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_and_returned_on_drop() {
        let pool = UidPool::new(100..=102, &[101]);
        assert_eq!(pool.available(), 2);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!((a.uid(), b.uid()), (100, 102));
        assert_eq!(a.ids(), (100, 100));
        let err = pool.lease().unwrap_err();
        assert_eq!(
            err.to_string(),
            "all 3 task uids of 100-102 are in use (SCALR_AGENT_TASK_UID_RANGE)"
        );
        drop(a);
        assert_eq!(pool.clone().lease().unwrap().uid(), 100);
        assert_eq!(pool.available(), 1);
    }

    #[test]
    fn concurrent_leases_never_collide() {
        let pool = UidPool::new(1..=64, &[]);
        let handles: Vec<_> = (0..8)
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
        assert_eq!(ids.len(), 64);
        drop(leases);
        assert_eq!(pool.available(), 64);
    }
}
