//! The one way the agent reads, copies or writes a file a task could have touched.
//!
//! Job code is hostile: after a stage ran, anything in the task directory may have been
//! replaced by a symbolic link to `/proc/self/environ`, a FIFO that blocks the reader, a
//! directory, a hard link to someone else's file or a sparse file of many gigabytes. The agent
//! runs as root, so a plain `fs::copy` of such a path hands the attacker the agent's privileges.
//!
//! A [`TaskRoot`] is a descriptor of the task directory, opened by the agent right after it
//! created the directory. Every path is resolved beneath it (`resolve`: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or a per-component
//! `openat(O_NOFOLLOW)` walk where `openat2` is missing) and opened with
//! `O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY`, so opening never blocks. Then, from `fstat`
//! on the descriptor (never from the path), the file must be a regular file with one link,
//! owned by the task's uid (the agent's own when tasks run under it), and within the limit of
//! its [`Kind`]; the size is checked again while copying, in constant memory. Writes go to a
//! fresh name made with `O_CREAT | O_EXCL | O_NOFOLLOW` beneath the root, then `renameat`.
//!
//! Every function here blocks; async callers use the `*_blocking` wrappers, which run on
//! tokio's blocking pool.
#![allow(
    clippy::disallowed_methods,
    reason = "the one home of task file access; other paths here are the agent's own"
)]

mod kind;
mod resolve;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

pub use kind::{
    AGENT_ENV_LIMIT, CHECK_OUTPUT_LIMIT, DEFAULT_ARTIFACT_LIMIT, IDENTITY_TOKEN_LIMIT, Kind,
    LOCK_FILE_LIMIT, Limits, POLICY_LIMIT,
};
pub use resolve::{force_walk, walking};

const CHUNK: usize = 64 << 10;

/// Why a task file was refused or could not be read or written. The path is relative to the
/// task directory (or, for `Input`, the operator's path).
#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    #[error("{kind} {path}: not found")]
    Missing { kind: &'static str, path: PathBuf },
    #[error(
        "{kind} {path} refused: a symbolic link, or a path through one, or leading outside the task directory"
    )]
    Link { kind: &'static str, path: PathBuf },
    #[error("{kind} {path} refused: expected a regular file, found {found}")]
    NotRegular {
        kind: &'static str,
        path: PathBuf,
        found: &'static str,
    },
    #[error("{kind} {path} refused: expected 1 link, found {found} (a hard link)")]
    HardLink {
        kind: &'static str,
        path: PathBuf,
        found: u64,
    },
    #[error("{kind} {path} refused: expected owner uid {expected}, found uid {found}")]
    Owner {
        kind: &'static str,
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error("{kind} {path} refused: the limit is {limit} bytes, found {found}")]
    TooLarge {
        kind: &'static str,
        path: PathBuf,
        limit: u64,
        found: String,
    },
    #[error("{kind} {path}: {source}")]
    Io {
        kind: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl TaskFileError {
    /// The file does not exist (an artifact that was not produced).
    pub fn is_missing(&self) -> bool {
        matches!(self, TaskFileError::Missing { .. })
    }
}

/// A task directory, held by a descriptor the agent opened when it created it.
#[derive(Debug, Clone)]
pub struct TaskRoot {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    owner: (u32, u32),
    limits: Limits,
    walk: bool,
}

impl TaskRoot {
    /// Opens the directory the agent has just created (before any task code ran); files are
    /// expected to belong to the agent until [`TaskRoot::owned_by`].
    pub fn open(path: &Path) -> io::Result<TaskRoot> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(TaskRoot {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            limits: Limits::default(),
            walk: false,
        })
    }

    /// The same root, whose files must belong to this uid (and gid, for files written here).
    pub fn owned_by(&self, uid: u32, gid: u32) -> TaskRoot {
        TaskRoot {
            owner: (uid, gid),
            ..self.clone()
        }
    }

    /// The same root with these limits.
    pub fn with_limits(&self, limits: Limits) -> TaskRoot {
        TaskRoot {
            limits,
            ..self.clone()
        }
    }

    /// The same root, resolving by the per-component walk even where `openat2` exists: the
    /// test-only switch that lets tests cover the fallback (the whole process can be switched
    /// with `SCALR_AGENT_SANDBOX_TEST_DENY=openat2`).
    pub fn walking_only(&self) -> TaskRoot {
        TaskRoot {
            walk: true,
            ..self.clone()
        }
    }

    /// The limits of this root.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The path the directory had when it was opened (for messages and for stages, which
    /// resolve paths with the task's own privileges).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `abs` relative to the root, if it lies beneath it (by name).
    pub fn relative<'a>(&self, abs: &'a Path) -> Option<&'a Path> {
        abs.strip_prefix(&self.path).ok()
    }

    /// Opens `rel` for reading and checks it; returns the file and its size.
    fn open_checked(&self, rel: &Path, kind: Kind) -> Result<(File, u64), TaskFileError> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let fd = resolve::open_beneath(self.fd.as_fd(), rel, flags, Mode::empty(), self.walk)
            .map_err(|e| open_error(kind, rel, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_error(kind, rel, e.into()))?;
        let (kind_name, path) = (kind.name(), rel.to_path_buf());
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type != FileType::RegularFile {
            return Err(TaskFileError::NotRegular {
                kind: kind_name,
                path,
                found: type_name(file_type),
            });
        }
        if st.st_nlink != 1 {
            return Err(TaskFileError::HardLink {
                kind: kind_name,
                path,
                found: st.st_nlink as u64,
            });
        }
        if st.st_uid != self.owner.0 {
            return Err(TaskFileError::Owner {
                kind: kind_name,
                path,
                expected: self.owner.0,
                found: st.st_uid,
            });
        }
        let size = st.st_size as u64;
        let limit = kind.limit(&self.limits);
        if size > limit {
            return Err(TaskFileError::TooLarge {
                kind: kind_name,
                path,
                limit,
                found: format!("{size} bytes"),
            });
        }
        Ok((File::from(fd), size))
    }

    /// Reads a whole file (at most its kind's limit) into memory.
    pub fn read(&self, rel: &Path, kind: Kind) -> Result<Vec<u8>, TaskFileError> {
        let (file, size) = self.open_checked(rel, kind)?;
        let mut out = Vec::with_capacity(size as usize);
        self.pump(file, kind, rel, &mut out)?;
        Ok(out)
    }

    /// Copies a file to `dest` (a path of the agent's own, e.g. `--out`), in constant memory:
    /// a fresh temporary name beside `dest`, filled, synced, then renamed over it (mode 0600).
    /// Returns the bytes copied.
    pub fn copy_out(&self, rel: &Path, kind: Kind, dest: &Path) -> Result<u64, TaskFileError> {
        let (file, _) = self.open_checked(rel, kind)?;
        let tmp = temp_name(dest);
        let dest_err = |e: io::Error| TaskFileError::Io {
            kind: kind.name(),
            path: dest.to_path_buf(),
            source: e,
        };
        let mut out = create_new(&tmp).map_err(dest_err)?;
        let result = self
            .pump(file, kind, rel, &mut out)
            .and_then(|n| out.sync_all().map(|()| n).map_err(dest_err))
            .and_then(|n| std::fs::rename(&tmp, dest).map(|()| n).map_err(dest_err));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Writes `bytes` as `rel` (mode 0600, 0400 for an identity token, owned by the task's
    /// uid): a fresh name created
    /// beneath the root, then renamed over `rel`, so a link or FIFO at `rel` is replaced, never
    /// followed.
    pub fn write(&self, rel: &Path, kind: Kind, bytes: &[u8]) -> Result<(), TaskFileError> {
        let err = |e: io::Error| TaskFileError::Io {
            kind: kind.name(),
            path: rel.to_path_buf(),
            source: e,
        };
        let (dir, name) = resolve::parent_beneath(self.fd.as_fd(), rel, self.walk)
            .map_err(|e| open_error(kind, rel, e))?;
        let tmp = temp_name(Path::new(name));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = resolve::open_beneath(
            dir.as_fd(),
            &tmp,
            flags,
            Mode::from_raw_mode(match kind {
                Kind::IdentityToken => 0o400,
                _ => 0o600,
            }),
            self.walk,
        )
        .map_err(|e| err(e.into()))?;
        let written = (|| {
            if self.owner.0 != nix::unistd::geteuid().as_raw() {
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::fs::Uid::from_raw(self.owner.0)),
                    Some(rustix::fs::Gid::from_raw(self.owner.1)),
                )?;
            }
            File::from(fd).write_all(bytes)?;
            rustix::fs::renameat(&dir, &tmp, &dir, name)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, &tmp, rustix::fs::AtFlags::empty());
        }
        written.map_err(err)
    }

    /// Copies `file` into `out`, stopping with `TooLarge` past the kind's limit (the file may
    /// grow while it is read).
    fn pump(
        &self,
        mut file: File,
        kind: Kind,
        rel: &Path,
        out: &mut impl Write,
    ) -> Result<u64, TaskFileError> {
        let limit = kind.limit(&self.limits);
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(kind, rel, e)),
            };
            total += n as u64;
            if total > limit {
                return Err(TaskFileError::TooLarge {
                    kind: kind.name(),
                    path: rel.to_path_buf(),
                    limit,
                    found: "more (it grew while being read)".into(),
                });
            }
            out.write_all(&buf[..n])
                .map_err(|e| io_error(kind, rel, e))?;
        }
    }

    /// [`TaskRoot::read`] on tokio's blocking pool.
    pub async fn read_blocking(&self, rel: &Path, kind: Kind) -> Result<Vec<u8>, TaskFileError> {
        let (root, rel) = (self.clone(), rel.to_path_buf());
        tokio::task::spawn_blocking(move || root.read(&rel, kind))
            .await
            .expect("reading a task file does not panic")
    }

    /// [`TaskRoot::copy_out`] on tokio's blocking pool.
    pub async fn copy_out_blocking(
        &self,
        rel: &Path,
        kind: Kind,
        dest: &Path,
    ) -> Result<u64, TaskFileError> {
        let (root, rel, dest) = (self.clone(), rel.to_path_buf(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || root.copy_out(&rel, kind, &dest))
            .await
            .expect("copying a task file does not panic")
    }

    /// [`TaskRoot::write`] on tokio's blocking pool.
    pub async fn write_blocking(
        &self,
        rel: &Path,
        kind: Kind,
        bytes: Vec<u8>,
    ) -> Result<(), TaskFileError> {
        let (root, rel) = (self.clone(), rel.to_path_buf());
        tokio::task::spawn_blocking(move || root.write(&rel, kind, &bytes))
            .await
            .expect("writing a task file does not panic")
    }
}

/// Copies an input of the operator or the control plane (outside any task directory, before
/// task code ran) into the task directory as `rel`, through [`TaskRoot::write`]'s
/// create-then-rename, within the kind's limit.
pub fn import(root: &TaskRoot, src: &Path, rel: &Path, kind: Kind) -> Result<(), TaskFileError> {
    let bytes = read_input(src, kind, &root.limits)?;
    root.write(rel, kind, &bytes)
}

/// Reads an input of the operator or the control plane (not a task's file) by path, within the
/// kind's limit.
pub fn read_input(path: &Path, kind: Kind, limits: &Limits) -> Result<Vec<u8>, TaskFileError> {
    let err = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            TaskFileError::Missing {
                kind: kind.name(),
                path: path.to_path_buf(),
            }
        } else {
            io_error(kind, path, e)
        }
    };
    let limit = kind.limit(limits);
    // Non-blocking, so a FIFO put at an operator's path cannot hang the agent; only a regular
    // file is read (the size cap below bounds a huge or sparse one).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(err)?;
    let file_type =
        FileType::from_raw_mode(rustix::fs::fstat(&file).map_err(|e| err(e.into()))?.st_mode);
    if file_type != FileType::RegularFile {
        return Err(TaskFileError::NotRegular {
            kind: kind.name(),
            path: path.to_path_buf(),
            found: type_name(file_type),
        });
    }
    let mut out = Vec::new();
    file.take(limit + 1).read_to_end(&mut out).map_err(err)?;
    if out.len() as u64 > limit {
        return Err(TaskFileError::TooLarge {
            kind: kind.name(),
            path: path.to_path_buf(),
            limit,
            found: "more".into(),
        });
    }
    Ok(out)
}

fn create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(path)
}

fn libc_nofollow() -> i32 {
    OFlags::NOFOLLOW.bits() as i32
}

fn temp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()))
}

fn open_error(kind: Kind, rel: &Path, e: Errno) -> TaskFileError {
    let path = rel.to_path_buf();
    let kind = kind.name();
    match e {
        Errno::NOENT => TaskFileError::Missing { kind, path },
        Errno::LOOP | Errno::XDEV | Errno::NOTDIR => TaskFileError::Link { kind, path },
        other => TaskFileError::Io {
            kind,
            path,
            source: other.into(),
        },
    }
}

fn io_error(kind: Kind, rel: &Path, e: io::Error) -> TaskFileError {
    TaskFileError::Io {
        kind: kind.name(),
        path: rel.to_path_buf(),
        source: e,
    }
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "an unknown file type",
    }
}

#[cfg(test)]
mod tests;
