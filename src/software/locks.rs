//! The cache's cross-process file locks (`flock`): the install lock, the tasks' shared
//! leases, and taking both for removal. Lock files are 0600 in a 0700 directory so no task uid
//! can hold them. Shared by the provider store.
#![allow(clippy::disallowed_methods, reason = "the cache's own lock files")]

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// Whether taking a lock may wait for its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Yes,
    No,
}

/// Opens (creating) and `flock`s a lock file; `None` when `wait` is `No` and another holder
/// has it. Lock files may be deleted by [`Layout::sweep_leftovers`] (only while it holds them
/// exclusively), so after locking, the file must still be the one at `path`: otherwise the lock
/// is on a deleted file that nobody else will ever see, and it is taken again on the new one.
pub fn lock_file(path: &Path, mode: LockMode, wait: Wait) -> io::Result<Option<File>> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let f = open_lock(path)?;
        let taken = match (mode, wait) {
            (LockMode::Exclusive, Wait::Yes) => f.lock().map(|()| true),
            (LockMode::Shared, Wait::Yes) => f.lock_shared().map(|()| true),
            (LockMode::Exclusive, Wait::No) => try_taken(f.try_lock()),
            (LockMode::Shared, Wait::No) => try_taken(f.try_lock_shared()),
        }?;
        if !taken {
            return Ok(None);
        }
        let held = f.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(Some(f)),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

fn try_taken(r: Result<(), fs::TryLockError>) -> io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Opens (creating) a lock file, unlocked: the directory 0700 and the file 0600, whatever the
/// umask, so no task uid can open it (and `flock` it to stall installs or prunes). Shared by
/// the provider store.
pub fn open_lock(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
        if fs::symlink_metadata(dir)?.mode() & 0o7777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if f.metadata()?.mode() & 0o7777 != 0o600 {
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Takes an install lock then a lease lock exclusively without waiting: `None` when either is
/// held. Shared by the provider store.
pub fn try_lock_both(
    install: File,
    lease: impl FnOnce() -> io::Result<File>,
) -> io::Result<Option<(File, File)>> {
    match install.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(None),
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    let lease = lease()?;
    match lease.try_lock() {
        Ok(()) => Ok(Some((install, lease))),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}
