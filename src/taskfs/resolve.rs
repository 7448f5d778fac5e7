//! Opening a path beneath a directory descriptor without following any symbolic link.
//!
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` when the
//! kernel has it (Linux 5.6); otherwise a walk that opens each component with
//! `openat(O_NOFOLLOW)` (directories also with `O_DIRECTORY`), refusing `..`. Both refuse a
//! symbolic link anywhere in the path with `ELOOP` (or `ENOTDIR` for a link where a directory
//! is expected), so no task-made link ever takes the agent outside the task directory.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Set once `openat2` answered `ENOSYS` (or a test forced the walk): later opens walk at once.
static WALK: AtomicBool = AtomicBool::new(false);

/// Makes every later resolution use the per-component walk, as on a kernel without `openat2`.
/// For tests of the fallback; the production code never calls it.
pub fn force_walk(on: bool) {
    WALK.store(on, Ordering::SeqCst);
}

/// Whether resolutions use the per-component walk (no `openat2`, or forced).
pub fn walking() -> bool {
    WALK.load(Ordering::SeqCst)
}

/// Opens `rel` beneath `root` with `flags` (to which `O_NOFOLLOW | O_CLOEXEC | O_NOCTTY` are
/// added), by the walk when `walk` is set. `rel` must be relative, without `..`.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    walk: bool,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
    {
        return Err(Errno::XDEV);
    }
    if !walk && !walking() {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, rel, flags, mode, resolve) {
            Err(Errno::NOSYS) => {
                if !WALK.swap(true, Ordering::SeqCst) {
                    tracing::info!(
                        "openat2 is unavailable: task files are resolved by a per-component walk"
                    );
                }
            }
            other => return other,
        }
    }
    walk_components(root, rel, flags, mode)
}

fn walk_components(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let names: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, dirs)) = names.split_last() else {
        // The root itself.
        return rustix::fs::openat(root, ".", flags, mode);
    };
    let dir_flags =
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let mut current: Option<OwnedFd> = None;
    for name in dirs {
        let at = current.as_ref().map_or(root, |fd| fd.as_fd());
        current = Some(rustix::fs::openat(at, *name, dir_flags, Mode::empty())?);
    }
    let at = current.as_ref().map_or(root, |fd| fd.as_fd());
    rustix::fs::openat(at, *last, flags, mode)
}

/// The directory holding `rel` and `rel`'s last name, both checked as [`open_beneath`] does.
pub fn parent_beneath<'a>(
    root: BorrowedFd<'_>,
    rel: &'a Path,
    walk: bool,
) -> Result<(OwnedFd, &'a std::ffi::OsStr), Errno> {
    let name = rel.file_name().ok_or(Errno::INVAL)?;
    let parent = rel
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = open_beneath(
        root,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
        Mode::empty(),
        walk,
    )?;
    Ok((dir, name))
}
