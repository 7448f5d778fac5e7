//! What a task uid still owns on the host after its processes are gone, found and removed:
//! SysV shared memory, semaphores and message queues (`/proc/sysvipc/*`, removed with
//! `IPC_RMID`), POSIX message queues (`/dev/mqueue`, when mounted; stages cannot create new
//! ones anyway: the seccomp filter denies `mq_open`) and files in `/tmp`, `/var/tmp` and
//! `/dev/shm` (POSIX shared memory lives there).
//!
//! The temporary directories are walked with `openat(O_NOFOLLOW)` and `unlinkat` relative to
//! descriptors, never by path: an entry owned by the uid is removed (a directory with
//! everything in it); other directories are entered only when world-writable (the only places
//! a task uid can create anything besides its own directories). Links are removed, never
//! followed. Blocking: call from a blocking thread.
#![allow(
    clippy::disallowed_methods,
    reason = "/proc entries of the agent's own view (sysvipc, process status)"
)]

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

pub use super::sys::IpcKind;

/// The temporary directories swept for a task uid's files.
pub const TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"];

/// How deep the walk goes into world-writable directories.
const MAX_DEPTH: usize = 6;

/// What a uid still owns.
#[derive(Debug, Default)]
pub struct Found {
    pub processes: Vec<i32>,
    pub ipc: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.ipc.is_empty() && self.files.is_empty()
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} processes {:?}, {} IPC objects {:?}, {} temporary files {:?}",
            self.processes.len(),
            self.processes.iter().take(5).collect::<Vec<_>>(),
            self.ipc.len(),
            self.ipc.iter().take(5).collect::<Vec<_>>(),
            self.files.len(),
            self.files.iter().take(5).collect::<Vec<_>>()
        )
    }
}

/// What [`remove`] removed, and what it could not.
#[derive(Debug, Default)]
pub struct Removed {
    pub ipc: usize,
    pub files: usize,
    pub errors: Vec<String>,
}

impl Removed {
    /// Logs the outcome (debug when nothing was there).
    pub fn log(&self, uid: u32) {
        if !self.errors.is_empty() {
            tracing::warn!(uid, errors = ?self.errors, "cannot remove everything the task uid left");
        } else if self.ipc + self.files > 0 {
            tracing::info!(
                uid,
                ipc = self.ipc,
                files = self.files,
                "removed what the task left under its uid"
            );
        }
    }
}

/// Everything `uid` still owns: processes, IPC objects, temporary files.
pub fn find(uid: u32) -> Found {
    let mut found = Found {
        processes: processes(uid),
        ..Found::default()
    };
    for (kind, id) in ipc_objects(uid) {
        found.ipc.push(format!("{} {id}", kind.name()));
    }
    for dir in TEMP_DIRS {
        walk(Path::new(dir), uid, false, &mut |p| found.files.push(p));
    }
    found
}

/// Whether a process runs with `uid` as any of its uids.
pub fn has_processes(uid: u32) -> bool {
    !processes(uid).is_empty()
}

/// Removes the IPC objects and temporary files `uid` owns (call once its processes are gone).
pub fn remove(uid: u32) -> Removed {
    let mut removed = Removed::default();
    for (kind, id) in ipc_objects(uid) {
        match super::sys::ipc_remove(kind, id) {
            Ok(()) => removed.ipc += 1,
            Err(e) => removed
                .errors
                .push(format!("removing {} {id}: {e}", kind.name())),
        }
    }
    for dir in TEMP_DIRS {
        walk(Path::new(dir), uid, true, &mut |_| removed.files += 1);
    }
    removed
}

/// The SysV IPC objects whose owner or creator is `uid`, from `/proc/sysvipc/*`.
pub fn ipc_objects(uid: u32) -> Vec<(IpcKind, i32)> {
    let mut out = Vec::new();
    for kind in [IpcKind::Shm, IpcKind::Sem, IpcKind::Msg] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/sysvipc/{}", kind.name())) else {
            continue;
        };
        out.extend(parse_sysvipc(&text, uid).into_iter().map(|id| (kind, id)));
    }
    out
}

/// Ids of the rows of a `/proc/sysvipc/*` table owned or created by `uid` (columns by header).
fn parse_sysvipc(text: &str, uid: u32) -> Vec<i32> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split_whitespace().collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(id_col), Some(uid_col), Some(cuid_col)) = (
        at("shmid").or(at("semid")).or(at("msqid")),
        at("uid"),
        at("cuid"),
    ) else {
        return Vec::new();
    };
    let uid = uid.to_string();
    lines
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let owned =
                f.get(uid_col) == Some(&uid.as_str()) || f.get(cuid_col) == Some(&uid.as_str());
            owned.then(|| f.get(id_col)?.parse().ok()).flatten()
        })
        .collect()
}

/// Pids of processes with `uid` as their real, effective, saved or file-system uid.
fn processes(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| {
                        l.strip_prefix("Uid:")
                            .map(|ids| ids.split_whitespace().any(|u| u == uid.to_string()))
                    })
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Walks `dir` for entries owned by `uid`; each is reported to `seen` (and removed when
/// `remove`). Errors (a vanished entry, a directory the agent cannot open) skip that entry.
fn walk(dir: &Path, uid: u32, remove: bool, seen: &mut dyn FnMut(PathBuf)) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open(dir, flags, Mode::empty()) {
        walk_fd(&fd, dir, uid, remove, 0, seen);
    }
}

fn walk_fd(
    fd: &OwnedFd,
    path: &Path,
    uid: u32,
    remove: bool,
    depth: usize,
    seen: &mut dyn FnMut(PathBuf),
) {
    for (name, stat) in entries(fd) {
        let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let child = path.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name));
        if stat.st_uid == uid {
            if !remove || remove_entry(fd, &name, is_dir).is_ok() {
                seen(child);
            }
        } else if is_dir && stat.st_mode & 0o002 != 0 && depth < MAX_DEPTH {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            if let Ok(sub) = rustix::fs::openat(fd, name.as_slice(), flags, Mode::empty()) {
                walk_fd(&sub, &child, uid, remove, depth + 1, seen);
            }
        }
    }
}

/// The entries of a directory (not `.` and `..`) with their `lstat`.
fn entries(fd: &OwnedFd) -> Vec<(Vec<u8>, rustix::fs::Stat)> {
    let Ok(dir) = rustix::fs::Dir::read_from(fd.as_fd()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_bytes().to_vec();
            if name == b"." || name == b".." {
                return None;
            }
            let stat = rustix::fs::statat(fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
            Some((name, stat))
        })
        .collect()
}

/// Removes `name` in `fd`: a directory with everything in it (any owner), without following
/// a link anywhere.
pub fn remove_entry(fd: &OwnedFd, name: &[u8], is_dir: bool) -> rustix::io::Result<()> {
    if is_dir {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let sub = rustix::fs::openat(fd, name, flags, Mode::empty())?;
        for (child, stat) in entries(&sub) {
            let _ = remove_entry(&sub, &child, stat.st_mode & libc::S_IFMT == libc::S_IFDIR);
        }
        rustix::fs::unlinkat(fd, name, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(fd, name, AtFlags::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysvipc_tables_are_read_by_their_header() {
        let shm = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n         0          7   600                  1024   100     0      0 20001 20001 20001 20001          0          0 1700000000                     0                     0\n         0          8   600                  1024   100     0      0     0     0     0     0          0          0 1700000000                     0                     0\n";
        assert_eq!(parse_sysvipc(shm, 20001), vec![7]);
        let sem = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n 1234  3 600 1 0 0 20002 20002 0 0\n";
        assert_eq!(parse_sysvipc(sem, 20002), vec![3]);
        assert!(parse_sysvipc("", 1).is_empty());
    }
}
