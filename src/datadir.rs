//! The agent's data directory and the modes of what it holds: private by permission, not only
//! by Landlock (a platform without Landlock still keeps one task out of another's files).
//!
//! ```text
//! <data>/            0711  traversable, not listable, by task uids (they reach their own dir)
//!     tasks/         0711  the same; each task root 0700 owned by its task uid
//!     tasks/<id>/    0700  the daemon's inputs of one task (root only)
//!     spool/         0700  every task's token, log and artifacts (root only): dirs 0700, files 0600
//!     uids/          0700  uid lease files (see `sandbox::uid`)
//!     .agent.state   0600
//! <cache>/binaries/.locks/  0700, lock and lease files 0600 (tasks cannot `flock` them)
//! ```
//!
//! Modes are set explicitly (`chmod` after `mkdir`), never left to the umask: a umask would
//! also strip the software cache's executables, which task uids must run. [`prepare`] runs at
//! every start (before any task) and fixes paths an older version left with wider modes.
//!
//! What lies above the data and cache directories is not the agent's: it never changes those
//! modes. [`check_reach`] runs at the start of `exec`, `run` and `doctor` and names the first
//! directory there that task uids cannot traverse (a data directory in root's 0700 home), which
//! would otherwise fail every task with a misleading "task directory … is missing".
#![allow(
    clippy::disallowed_methods,
    reason = "the agent's own data directory and the cache's lock files"
)]

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Data directory and `tasks/`: task uids may traverse, not list.
pub const TRAVERSE_ONLY: u32 = 0o711;
/// Directories only the agent uses.
pub const PRIVATE_DIR: u32 = 0o700;
/// Files only the agent reads.
pub const PRIVATE_FILE: u32 = 0o600;

/// A data directory path could not be made private.
#[derive(Debug, thiserror::Error)]
#[error("making {path} private (mode {mode:o}): {source}")]
pub struct DataDirError {
    pub path: PathBuf,
    pub mode: u32,
    pub source: io::Error,
}

/// Creates `dir` if missing (parents too) and sets exactly `mode` on it. A symbolic link in
/// place of `dir` is refused (`chmod` would follow it).
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), DataDirError> {
    let err = |source| DataDirError {
        path: dir.to_path_buf(),
        mode,
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    let meta = fs::symlink_metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::other("not a directory")));
    }
    let found = meta.mode() & 0o7777;
    if found != mode {
        // A shared directory (sticky or world-writable, like /tmp) is never the agent's own:
        // narrowing it would break every other user of it.
        if found & 0o1002 != 0 {
            return Err(err(io::Error::other(format!(
                "it is a shared directory (mode {found:o}); give the agent a directory of its own"
            ))));
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(())
}

/// Creates the data directory's fixed parts with their modes and narrows what an earlier
/// version left wider: the spool (recursively) and the cache's locks. The state file is left
/// as found: it holds a secret, and the agent refuses it when it is wider than 0600 (a secret
/// others could have read is not narrowed into trust; see `agent::state`).
/// Blocking: call from a blocking thread.
pub fn prepare(data_dir: &Path, binaries_dir: &Path) -> Result<(), DataDirError> {
    ensure_dir(data_dir, TRAVERSE_ONLY)?;
    ensure_dir(&data_dir.join("tasks"), TRAVERSE_ONLY)?;
    ensure_dir(&data_dir.join("uids"), PRIVATE_DIR)?;
    let spool = data_dir.join("spool");
    ensure_dir(&spool, PRIVATE_DIR)?;
    narrow_tree(&spool)?;
    let locks = binaries_dir.join(".locks");
    if fs::symlink_metadata(&locks).is_ok() {
        ensure_dir(&locks, PRIVATE_DIR)?;
        narrow_tree(&locks)?;
    }
    for private in [".tmp", ".trash"] {
        let dir = binaries_dir.join(private);
        if fs::symlink_metadata(&dir).is_ok() {
            ensure_dir(&dir, PRIVATE_DIR)?;
        }
    }
    Ok(())
}

/// Sets 0600 on a regular file if it exists (links are left alone).
fn narrow_file(path: &Path) -> Result<(), DataDirError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.is_file() && meta.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_FILE)).map_err(|source| {
            DataDirError {
                path: path.to_path_buf(),
                mode: PRIVATE_FILE,
                source,
            }
        })?;
    }
    Ok(())
}

/// Directories below `dir` become 0700, files 0600 (the agent's own tree: no task writes here).
fn narrow_tree(dir: &Path) -> Result<(), DataDirError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                ensure_dir(&path, PRIVATE_DIR)?;
                narrow_tree(&path)?;
            }
            Ok(t) if t.is_file() => narrow_file(&path)?,
            _ => {}
        }
    }
    Ok(())
}

/// Whether task uids reach the data and cache directories (see [`check_reach`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every directory above both lets other users traverse it.
    Reachable,
    /// Not checked: the agent cannot switch uids, so stages run as its own uid.
    Skipped,
}

/// A directory above the data (or cache) directory that task uids cannot traverse.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error(
        "task uids cannot reach {what} {target}: {dir} (mode {mode:o}) does not let other users \
         traverse it, and tasks run as dedicated uids that are neither its owner nor its group. \
         Fix: `chmod o+x {dir}` (the agent never changes the modes above its own directories), \
         or set {variable} to a directory every user can traverse to, such as \
         /var/lib/scalr-agent"
    )]
    Blocked {
        what: &'static str,
        target: PathBuf,
        dir: PathBuf,
        mode: u32,
        variable: &'static str,
    },
    #[error(
        "task uids could not reach {what} {target}: {dir} does not exist, and the agent would \
         create it under its umask {umask:03o}, which denies other users. Fix: `mkdir -p -m 755 \
         {dir}` before the start, or set {variable} to an existing directory every user can \
         traverse to"
    )]
    Umask {
        what: &'static str,
        target: PathBuf,
        dir: PathBuf,
        umask: u32,
        variable: &'static str,
    },
    #[error(
        "{target} ({variable}) is on {fs}, a file system without POSIX ownership and modes \
         (Azure Files and other SMB shares): task directories cannot be given to task uids, \
         the agent's private files (spool tokens, leases) cannot be made private, and the \
         software and provider caches' read-only modes and locks do not hold. Fix: put {variable} \
         on a local disk or an ephemeral volume (emptyDir, the container's own file system); \
         only an NFS or block volume with POSIX semantics may be shared"
    )]
    NoPosix {
        target: PathBuf,
        fs: &'static str,
        variable: &'static str,
    },
    #[error("checking that task uids can reach {target}: {path}: {source}")]
    Io {
        target: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
}

/// Checks that task uids can reach the task directories under `data_dir` and the tools under
/// `cache_dir`: every directory from `/` down to each one's parent must let others search it
/// (the task uids are never the owner or group of a directory there; ACLs are not consulted).
/// Links are resolved first: a task traverses the real path. Parents that do not exist yet
/// are judged by the umask they would be created under. The directories themselves are the
/// agent's ([`prepare`] sets their modes). `task_uids: false` (the agent cannot switch uids,
/// so stages run as its own uid) skips the check. Before it, and always: neither directory
/// may be on a file system without POSIX ownership and modes (SMB/CIFS, e.g. Azure Files;
/// [`ReachError::NoPosix`]). Blocking: call at start.
pub fn check_reach(
    data_dir: &Path,
    cache_dir: &Path,
    task_uids: bool,
) -> Result<Reach, ReachError> {
    for (target, variable) in [
        (data_dir, "SCALR_AGENT_DATA_DIR"),
        (cache_dir, "SCALR_AGENT_CACHE_DIR"),
    ] {
        if let Some(fs) = no_posix_fs(target) {
            return Err(ReachError::NoPosix {
                target: target.to_path_buf(),
                fs,
                variable,
            });
        }
    }
    if !task_uids {
        return Ok(Reach::Skipped);
    }
    let targets = [
        (
            "the task directories under",
            data_dir,
            "SCALR_AGENT_DATA_DIR",
        ),
        ("the software cache", cache_dir, "SCALR_AGENT_CACHE_DIR"),
    ];
    for (what, target, variable) in targets {
        let Some(parent) = target.parent() else {
            continue;
        };
        if let Some((dir, found)) = first_closed(target, parent)? {
            return Err(match found {
                Closed::Mode(mode) => ReachError::Blocked {
                    what,
                    target: target.to_path_buf(),
                    dir,
                    mode,
                    variable,
                },
                Closed::Umask(umask) => ReachError::Umask {
                    what,
                    target: target.to_path_buf(),
                    dir,
                    umask,
                    variable,
                },
            });
        }
    }
    Ok(Reach::Reachable)
}

/// Why a directory is closed to other users.
enum Closed {
    /// It exists with this mode.
    Mode(u32),
    /// It does not exist and would be created under this umask.
    Umask(u32),
}

/// The first directory from `/` down to `parent` (links resolved) that others cannot search.
/// The name of the file system `path` (or its nearest existing ancestor) is on, when it has no
/// POSIX ownership and modes (`statfs`'s magic numbers of the Linux SMB clients).
fn no_posix_fs(path: &Path) -> Option<&'static str> {
    let stat = path.ancestors().find_map(|p| rustix::fs::statfs(p).ok())?;
    #[allow(
        clippy::unnecessary_cast,
        reason = "`f_type`'s integer type differs between architectures"
    )]
    fs_without_posix(stat.f_type as i64)
}

/// SMB/CIFS file systems by `statfs` magic (`CIFS_SUPER_MAGIC`, `SMB2_SUPER_MAGIC`,
/// `SMB_SUPER_MAGIC`).
pub fn fs_without_posix(magic: i64) -> Option<&'static str> {
    match magic {
        0xFF53_4D42 => Some("CIFS (SMB)"),
        0xFE53_4D42 => Some("SMB 2/3"),
        0x517B => Some("SMB"),
        _ => None,
    }
}

fn first_closed(target: &Path, parent: &Path) -> Result<Option<(PathBuf, Closed)>, ReachError> {
    let io_err = |path: &Path| {
        let (target, path) = (target.to_path_buf(), path.to_path_buf());
        move |source| ReachError::Io {
            target,
            path,
            source,
        }
    };
    let mut existing = parent;
    let mut topmost_missing = None;
    let real = loop {
        match fs::canonicalize(existing) {
            Ok(real) => break real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                topmost_missing = Some(existing);
                existing = existing.parent().ok_or_else(|| io_err(existing)(e))?;
            }
            Err(e) => return Err(io_err(existing)(e)),
        }
    };
    let mut dir = PathBuf::new();
    for part in real.components() {
        dir.push(part);
        let mode = fs::metadata(&dir).map_err(io_err(&dir))?.mode() & 0o7777;
        if mode & 0o001 == 0 {
            return Ok(Some((dir, Closed::Mode(mode))));
        }
    }
    if let Some(missing) = topmost_missing {
        let umask = umask().map_err(io_err(Path::new("/proc/self/status")))?;
        if umask & 0o001 != 0 {
            return Ok(Some((missing.to_path_buf(), Closed::Umask(umask))));
        }
    }
    Ok(None)
}

/// The process's umask, read without changing it (`umask(2)` can only set it).
fn umask() -> io::Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| io::Error::other("no Umask line"))
}

/// Creates (or truncates) a file the agent alone reads: mode 0600 from its creation on.
pub fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // An existing file keeps its mode on open: narrow it.
    f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smb_file_systems_are_refused_with_the_fix() {
        assert_eq!(fs_without_posix(0xFF53_4D42), Some("CIFS (SMB)"));
        assert_eq!(fs_without_posix(0xFE53_4D42), Some("SMB 2/3"));
        assert_eq!(fs_without_posix(0x517B), Some("SMB"));
        // ext4, tmpfs, overlayfs, NFS: POSIX ownership and modes.
        for magic in [0xEF53, 0x0102_1994, 0x794C_7630, 0x6969] {
            assert_eq!(fs_without_posix(magic), None, "{magic:x}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(no_posix_fs(&dir.path().join("not/yet")), None);
        let e = ReachError::NoPosix {
            target: "/mnt/azurefiles/agent".into(),
            fs: "SMB 2/3",
            variable: "SCALR_AGENT_DATA_DIR",
        }
        .to_string();
        assert!(
            e.starts_with("/mnt/azurefiles/agent (SCALR_AGENT_DATA_DIR) is on SMB 2/3")
                && e.contains("Fix: put SCALR_AGENT_DATA_DIR on a local disk"),
            "{e}"
        );
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn prepare_sets_and_narrows_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let bin = data.join("binaries");
        fs::create_dir_all(data.join("spool/task-1/artifacts")).unwrap();
        fs::write(data.join("spool/task-1/meta.json"), "{}").unwrap();
        fs::set_permissions(
            data.join("spool/task-1/meta.json"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fs::write(data.join(".agent.state"), "{}").unwrap();
        fs::set_permissions(data.join(".agent.state"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir_all(bin.join(".locks")).unwrap();
        fs::write(bin.join(".locks/x.lease"), "").unwrap();
        fs::set_permissions(bin.join(".locks"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(
            bin.join(".locks/x.lease"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        prepare(&data, &bin).unwrap();
        assert_eq!(mode(&data), 0o711);
        assert_eq!(mode(&data.join("tasks")), 0o711);
        assert_eq!(mode(&data.join("uids")), 0o700);
        assert_eq!(mode(&data.join("spool")), 0o700);
        assert_eq!(mode(&data.join("spool/task-1")), 0o700);
        assert_eq!(mode(&data.join("spool/task-1/artifacts")), 0o700);
        assert_eq!(mode(&data.join("spool/task-1/meta.json")), 0o600);
        // Left as found: `agent::state` refuses it (it holds the reclaim secret).
        assert_eq!(mode(&data.join(".agent.state")), 0o644);
        assert_eq!(mode(&bin.join(".locks")), 0o700);
        assert_eq!(mode(&bin.join(".locks/x.lease")), 0o600);
    }

    #[test]
    fn a_shared_directory_is_refused_not_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = ensure_dir(&shared, TRAVERSE_ONLY).unwrap_err();
        assert!(
            err.to_string().contains("shared directory (mode 1777)"),
            "{err}"
        );
        assert_eq!(mode(&shared), 0o1777);
    }

    #[test]
    fn reach_names_the_first_closed_directory_above_and_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let home = tmp.path().join("home");
        let data = home.join("checkout/data");
        fs::create_dir_all(&data).unwrap();
        // The data directory itself is the agent's: its own mode does not matter here.
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        let ok = check_reach(&data, &open.join("cache"), true).unwrap();
        assert_eq!(ok, Reach::Reachable);

        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_reach(&data, &open.join("cache"), true).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "{}: {} (mode 700) does not let other users traverse it",
                data.display(),
                home.display()
            )) && text.contains(&format!("chmod o+x {}", home.display()))
                && text.contains("SCALR_AGENT_DATA_DIR"),
            "{text}"
        );
        assert_eq!(mode(&home), 0o700, "never changed");
        // The cache is checked too, and not yet existing parents pass under a usual umask.
        let err = check_reach(&open.join("data"), &home.join("a/b/cache"), true).unwrap_err();
        assert!(err.to_string().contains("SCALR_AGENT_CACHE_DIR"), "{err}");
        // Through a link, the real path counts.
        let link = open.join("link");
        std::os::unix::fs::symlink(home.join("checkout"), &link).unwrap();
        let err = check_reach(&link.join("data"), &open, true).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("{} (mode 700)", home.display())),
            "{err}"
        );
        // 0711 is enough: traversal, not listing.
        fs::set_permissions(&home, fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(check_reach(&data, &open, true).unwrap(), Reach::Reachable);
        // An agent that cannot switch uids does not check.
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_reach(&data, &open, false).unwrap(), Reach::Skipped);
    }

    #[test]
    fn create_private_narrows_an_existing_file_and_refuses_links() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        create_private(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"");
        std::os::unix::fs::symlink(&p, tmp.path().join("l")).unwrap();
        assert!(create_private(&tmp.path().join("l")).is_err());
    }
}
