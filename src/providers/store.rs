//! The provider store on disk: entries, manifests, the entry check, locks and leases.
//!
//! ```text
//! <cache>/providers/<host>/<ns>/<type>/<version>/<os_arch>/manifest.json  how it was verified
//!                                                         /pkg/          the extracted zip
//!                                                         /.last-used    mtime = last use
//! <cache>/providers/.by-id/<id> -> ../<host>/<ns>/<type>/<version>/<os_arch>/pkg
//!                                         a short alias, so a run's link fits in an inode
//! <cache>/providers/.locks/<slug>.fill    held (exclusive) while filling the entry
//! <cache>/providers/.locks/<slug>.lease   held (shared) while a run links the entry
//! <cache>/providers/.tmp/  .trash/        staging and deletion, never trusted
//! ```
//!
//! Runs see only `pkg/` (their plugin cache links to it), so the manifest never counts in
//! `h1:`. Directories are 0755 and files 0555/0444, owned by the agent: task uids can read and
//! execute, never write. An entry appears only by renaming a complete, fsynced staging
//! directory, so one that fails [`check_entry`] is damage and is replaced.
#![allow(
    clippy::disallowed_methods,
    reason = "the provider store's own manifests and lock files"
)]

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::addr::{Package, Provider};
use crate::software::locks as shared;

pub const MANIFEST: &str = "manifest.json";
pub const PKG: &str = "pkg";
const LAST_USED: &str = ".last-used";
const BY_ID: &str = ".by-id";
const SCHEMA: u32 = 1;

/// One file of a stored package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub mtime_ns: i64,
}

/// What the store knows about one package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema: u32,
    pub provider: String,
    pub version: String,
    pub target: String,
    /// `h1:` of `pkg/`, computed from the extracted files.
    pub h1: String,
    /// `zh:` of the zip it came from.
    pub zh: String,
    pub files: Vec<StoredFile>,
    pub zip_url: String,
    pub zip_size: u64,
    /// `registry` (signed `SHA256SUMS`) or `mirror` (the mirror's hashes).
    pub origin: String,
    /// How it was verified, one line.
    pub verification: String,
    pub installed_at: String,
}

impl Manifest {
    pub fn schema() -> u32 {
        SCHEMA
    }
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Paths of the store.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn entry(&self, pkg: &Package) -> PathBuf {
        self.root.join(pkg.rel_path())
    }
    pub fn pkg_dir(&self, pkg: &Package) -> PathBuf {
        self.entry(pkg).join(PKG)
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join(".tmp")
    }
    /// The directory of short aliases ([`Layout::ensure_alias`]).
    pub fn by_id(&self) -> PathBuf {
        self.root.join(BY_ID)
    }
    fn trash(&self) -> PathBuf {
        self.root.join(".trash")
    }
    fn lock(&self, pkg: &Package, kind: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(format!("{}.{kind}", pkg.slug()))
    }
    pub fn fill_lock(&self, pkg: &Package) -> io::Result<File> {
        shared::open_lock(&self.lock(pkg, "fill"))
    }
    pub fn lease_lock(&self, pkg: &Package) -> io::Result<File> {
        shared::open_lock(&self.lock(pkg, "lease"))
    }
    /// The entry's lease lock taken exclusively without waiting: `None` while any run holds a
    /// lease on it. Blocking (file I/O only, never waits for a holder).
    pub fn try_lease_exclusive(&self, pkg: &Package) -> io::Result<Option<File>> {
        shared::lock_file(
            &self.lock(pkg, "lease"),
            shared::LockMode::Exclusive,
            shared::Wait::No,
        )
    }

    /// Creates the root (0755, so task uids can reach `pkg/` directories) when missing.
    pub fn ensure_root(&self) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
    }

    /// Creates the parents of an entry with mode 0755.
    pub fn make_parents(&self, pkg: &Package) -> io::Result<()> {
        let entry = self.entry(pkg);
        let mut dir = self.root.clone();
        for part in entry
            .strip_prefix(&self.root)
            .expect("under root")
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
        {
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes sure `.by-id/<id>` is a relative link to the entry's `pkg/` and returns `<id>`
    /// (16 hex digits of the SHA-256 of the entry's slug). A run's plugin cache links to
    /// `.by-id/<id>` through one link to `.by-id` instead of to the entry's long path: a link
    /// target under 60 bytes is kept in the inode, so each costs no disk block. A wrong or
    /// missing alias is replaced atomically (a new link renamed over it).
    pub fn ensure_alias(&self, pkg: &Package) -> io::Result<String> {
        let id = alias_id(pkg);
        let link = self.by_id().join(&id);
        let target = Path::new("..").join(pkg.rel_path()).join(PKG);
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(id);
        }
        match fs::create_dir(self.by_id()) {
            Ok(()) => fs::set_permissions(self.by_id(), fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let tmp = self
            .by_id()
            .join(format!(".{id}.{:x}", rand::random::<u64>()));
        std::os::unix::fs::symlink(&target, &tmp)?;
        fs::rename(&tmp, &link).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        Ok(id)
    }

    /// Moves an entry aside atomically, then deletes it (and its alias).
    pub fn remove_entry(&self, pkg: &Package) -> io::Result<()> {
        let dir = self.entry(pkg);
        match fs::remove_file(self.by_id().join(alias_id(pkg))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(self.trash())?;
        let dest = self
            .trash()
            .join(format!("{}.{:x}", pkg.slug(), rand::random::<u64>()));
        match fs::rename(&dir, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        make_writable(&dest);
        fs::remove_dir_all(&dest)
    }

    /// Every entry directory present (valid or not) for any platform.
    pub fn scan(&self) -> Vec<Package> {
        let mut out = Vec::new();
        for host in names(&self.root) {
            for ns in names(&self.root.join(&host)) {
                for kind in names(&self.root.join(&host).join(&ns)) {
                    let Ok(provider) = format!("{host}/{ns}/{kind}").parse::<Provider>() else {
                        continue;
                    };
                    let pdir = self.root.join(&host).join(&ns).join(&kind);
                    for version in names(&pdir) {
                        for target in names(&pdir.join(&version)) {
                            if let Ok(p) = Package::new(provider.clone(), &version, &target) {
                                out.push(p);
                            }
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Drops the kernel's page cache of an entry's package files (`posix_fadvise(DONTNEED)`),
    /// keeping the files. Only the files `manifest` lists, each opened beneath the entry's
    /// `pkg/` descriptor without following any link (`openat2` beneath, no links; where the
    /// kernel lacks `openat2`, `O_NOFOLLOW` and only names directly in `pkg/`), without
    /// blocking, and advised only when the descriptor is a regular file. Returns how many
    /// files were advised. Blocking.
    pub fn drop_pages(&self, pkg: &Package, manifest: &Manifest) -> io::Result<usize> {
        use rustix::fs::{Advice, FileType, Mode, OFlags, ResolveFlags};
        let dir = rustix::fs::open(
            self.pkg_dir(pkg),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let mut advised = 0;
        for f in &manifest.files {
            let name = f.name.as_str();
            let fd = match rustix::fs::openat2(&dir, name, flags, Mode::empty(), resolve) {
                Err(rustix::io::Errno::NOSYS) if !name.contains('/') => {
                    rustix::fs::openat(&dir, name, flags, Mode::empty())
                }
                other => other,
            };
            let Ok(fd) = fd else { continue };
            if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
                continue;
            }
            rustix::fs::fadvise(&fd, 0, None, Advice::DontNeed)?;
            advised += 1;
        }
        Ok(advised)
    }

    /// Removes the trash, staging directories older than a day (of dead fills) and alias
    /// links a dead process left half-made.
    pub fn sweep_leftovers(&self) {
        let old = |item: &fs::DirEntry| {
            item.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600)
        };
        for item in fs::read_dir(self.by_id()).into_iter().flatten().flatten() {
            if item.file_name().to_string_lossy().starts_with('.') && old(&item) {
                let _ = fs::remove_file(item.path());
            }
        }
        for item in fs::read_dir(self.trash()).into_iter().flatten().flatten() {
            make_writable(&item.path());
            let _ = fs::remove_dir_all(item.path());
        }
        for item in fs::read_dir(self.tmp()).into_iter().flatten().flatten() {
            if old(&item) {
                make_writable(&item.path());
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }
}

/// The name of an entry's alias in `.by-id`.
fn alias_id(pkg: &Package) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(pkg.slug().as_bytes())[..8])
}

/// Non-hidden directory names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Gives the owner write permission on every directory of a tree about to be deleted (the
/// agent runs unprivileged in some deployments, and `pkg/` subdirectories may be read-only).
fn make_writable(dir: &Path) {
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.is_dir()
    {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        for item in fs::read_dir(dir).into_iter().flatten().flatten() {
            make_writable(&item.path());
        }
    }
}

/// Why an entry cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    #[error("no manifest")]
    NoManifest,
    #[error("unreadable manifest: {0}")]
    BadManifest(String),
    #[error("the manifest describes {0}")]
    WrongEntry(String),
    #[error("{name}: {reason}")]
    File { name: String, reason: String },
    #[error("pkg/ holds {found} files, the manifest lists {expected}")]
    Extra { expected: usize, found: usize },
}

/// The cheap check of a hit: manifest, then each file's type, size, mtime and mode, and no
/// extra file; no hashing.
pub fn check_entry(layout: &Layout, pkg: &Package) -> Result<Manifest, Damage> {
    let dir = layout.entry(pkg);
    let text = match fs::read(dir.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Damage::NoManifest),
        Err(e) => return Err(Damage::BadManifest(e.to_string())),
    };
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| Damage::BadManifest(e.to_string()))?;
    if m.schema != SCHEMA
        || m.provider != pkg.provider.to_string()
        || m.version != pkg.version
        || m.target != pkg.target
    {
        return Err(Damage::WrongEntry(format!(
            "{} {} {} (schema {})",
            m.provider, m.version, m.target, m.schema
        )));
    }
    let pkg_dir = dir.join(PKG);
    let bad = |name: &str, reason: String| Damage::File {
        name: name.to_string(),
        reason,
    };
    let meta = fs::symlink_metadata(&pkg_dir).map_err(|e| bad(PKG, e.to_string()))?;
    if !meta.is_dir() || meta.mode() & 0o022 != 0 {
        return Err(bad(PKG, "not a directory only its owner can write".into()));
    }
    for f in &m.files {
        let meta =
            fs::symlink_metadata(pkg_dir.join(&f.name)).map_err(|e| bad(&f.name, e.to_string()))?;
        if !meta.is_file() {
            return Err(bad(&f.name, "not a regular file".into()));
        }
        if meta.mode() & 0o222 != 0 {
            return Err(bad(
                &f.name,
                format!("writable (mode {:o})", meta.mode() & 0o7777),
            ));
        }
        if meta.len() != f.size {
            return Err(bad(
                &f.name,
                format!("size {} differs from the recorded {}", meta.len(), f.size),
            ));
        }
        if crate::software::store::mtime_ns(&meta) != f.mtime_ns {
            return Err(bad(
                &f.name,
                "modified after it was stored (mtime changed)".into(),
            ));
        }
    }
    let found = count_files(&pkg_dir);
    if found != m.files.len() {
        return Err(Damage::Extra {
            expected: m.files.len(),
            found,
        });
    }
    Ok(m)
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

/// Records a use (best effort).
pub fn touch_last_used(layout: &Layout, pkg: &Package) {
    let path = layout.entry(pkg).join(LAST_USED);
    let _ = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// When an entry was last used.
pub fn last_used(layout: &Layout, pkg: &Package) -> Option<SystemTime> {
    let dir = layout.entry(pkg);
    fs::metadata(dir.join(LAST_USED))
        .or_else(|_| fs::metadata(dir.join(MANIFEST)))
        .and_then(|m| m.modified())
        .ok()
}
