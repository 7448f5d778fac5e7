//! The on-disk layout of the software cache: entries, manifests, locks, leases and eviction.
//!
//! ```text
//! <cache>/binaries/<tool>/<version>/<platform>/<executable>   verified executable, 0755
//!                                             /manifest.json  how it was obtained and verified
//!                                             /.last-used     its mtime is the last use
//! <cache>/binaries/.locks/<tool>-<version>-<platform>.install  held (exclusive) while installing
//! <cache>/binaries/.locks/<tool>-<version>-<platform>.lease    held (shared) while a task uses it
//! <cache>/binaries/.tmp/       downloads and staging directories, never trusted
//! <cache>/binaries/.trash/     entries being deleted, never trusted
//! ```
//!
//! An entry directory only ever appears by an atomic rename of a complete, fsynced staging
//! directory, so a directory that exists but fails [`check_entry`] is damage, not work in
//! progress. Locks are `flock`s: the kernel drops them when a process dies, so none goes stale.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::catalog::{Platform, Tool, Version};

pub const MANIFEST: &str = "manifest.json";
pub const LAST_USED: &str = ".last-used";
const SCHEMA: u32 = 1;
/// Staging directories older than this belong to a process that died mid-install.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

/// What the cache knows about one installed executable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema: u32,
    pub tool: String,
    pub version: String,
    pub platform: String,
    pub executable: String,
    pub executable_size: u64,
    pub executable_sha256: String,
    pub executable_mtime_ns: i64,
    pub artifact_url: String,
    pub artifact_file: String,
    pub artifact_size: u64,
    pub artifact_sha256: String,
    pub checksums_url: String,
    pub verification: Verification,
    pub installed_at: String,
}

impl Manifest {
    pub fn new_schema() -> u32 {
        SCHEMA
    }
}

/// How an artifact was verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    /// `sha256+openpgp`, `sha256` (the vendor signs nothing) or `sha256 (signature check disabled)`.
    pub method: String,
    pub signature_url: Option<String>,
    /// Fingerprint of the trusted primary key, and of the (sub)key that signed.
    pub key_fingerprint: Option<String>,
    pub signing_key: Option<String>,
    pub key_user_id: Option<String>,
    /// `built-in` or the path of the operator's key file.
    pub key_origin: Option<String>,
}

impl Verification {
    /// One line for `software list`.
    pub fn summary(&self) -> String {
        match (&self.key_fingerprint, &self.key_origin) {
            (Some(fpr), Some(origin)) => format!("{} by {fpr} ({origin})", self.method),
            _ => self.method.clone(),
        }
    }
}

/// Paths of the cache.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

/// Identifies one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub tool: Tool,
    pub version: Version,
    pub platform: Platform,
}

impl Key {
    fn slug(&self) -> String {
        format!("{}-{}-{}", self.tool, self.version, self.platform)
    }
}

impl Layout {
    pub fn entry(&self, key: &Key) -> PathBuf {
        self.root
            .join(key.tool.name())
            .join(key.version.as_str())
            .join(key.platform.name())
    }
    pub fn locks(&self) -> PathBuf {
        self.root.join(".locks")
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join(".tmp")
    }
    pub fn trash(&self) -> PathBuf {
        self.root.join(".trash")
    }
    fn lock_path(&self, key: &Key, kind: &str) -> PathBuf {
        self.locks().join(format!("{}.{kind}", key.slug()))
    }

    /// Opens (creating) the install lock of an entry, unlocked.
    pub fn install_lock(&self, key: &Key) -> io::Result<File> {
        open_lock(&self.lock_path(key, "install"))
    }

    /// Opens (creating) the lease lock of an entry, unlocked.
    pub fn lease_lock(&self, key: &Key) -> io::Result<File> {
        open_lock(&self.lock_path(key, "lease"))
    }

    /// A fresh staging directory on the cache's own filesystem.
    pub fn staging(&self, key: &Key) -> io::Result<Staging> {
        Staging::create(&self.tmp(), &key.slug())
    }

    /// Moves an entry aside (atomically, so no reader sees it half-deleted) and deletes it.
    pub fn remove_entry(&self, key: &Key) -> io::Result<()> {
        let dir = self.entry(key);
        fs::create_dir_all(self.trash())?;
        let dest = self
            .trash()
            .join(format!("{}.{:x}", key.slug(), rand::random::<u64>()));
        match fs::rename(&dir, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        fs::remove_dir_all(&dest)?;
        // Drop the now-empty version and tool directories; failure means they are not empty.
        if let Some(version_dir) = dir.parent() {
            let _ = fs::remove_dir(version_dir);
            if let Some(tool_dir) = version_dir.parent() {
                let _ = fs::remove_dir(tool_dir);
            }
        }
        Ok(())
    }

    /// Every entry directory present, valid or not.
    pub fn scan(&self) -> io::Result<Vec<Key>> {
        let mut keys = Vec::new();
        for tool in Tool::ALL {
            let tool_dir = self.root.join(tool.name());
            let Ok(versions) = fs::read_dir(&tool_dir) else {
                continue;
            };
            for v in versions.flatten() {
                let Some(version) = v
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<Version>().ok())
                else {
                    continue;
                };
                let Ok(platforms) = fs::read_dir(v.path()) else {
                    continue;
                };
                for p in platforms.flatten() {
                    if let Some(platform) = p
                        .file_name()
                        .to_str()
                        .and_then(|s| s.parse::<Platform>().ok())
                    {
                        keys.push(Key {
                            tool,
                            version: version.clone(),
                            platform,
                        });
                    }
                }
            }
        }
        keys.sort_by(|a, b| {
            (a.tool, a.version.as_str(), a.platform).cmp(&(b.tool, b.version.as_str(), b.platform))
        });
        Ok(keys)
    }

    /// Removes leftovers that nothing may trust: the trash, and staging directories of dead
    /// installs.
    pub fn sweep_leftovers(&self) {
        if let Ok(items) = fs::read_dir(self.trash()) {
            for item in items.flatten() {
                let _ = fs::remove_dir_all(item.path());
            }
        }
        if let Ok(items) = fs::read_dir(self.tmp()) {
            for item in items.flatten() {
                let old = item
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_dir_all(item.path());
                }
            }
        }
    }
}

/// Opens (creating it and its directory) a lock file, unlocked. Shared by the provider store.
pub fn open_lock(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// A staging directory, removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    dir: Option<PathBuf>,
}

impl Staging {
    /// Creates `<tmp>/<slug>.<pid>.<random>` (and `tmp` itself when missing).
    pub fn create(tmp: &Path, slug: &str) -> io::Result<Staging> {
        let dir = tmp.join(format!(
            "{slug}.{}.{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(tmp)?;
        fs::create_dir(&dir)?;
        Ok(Staging { dir: Some(dir) })
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_deref()
            .expect("staging directory not yet committed")
    }

    /// Renames the staging directory into place as `dest` and fsyncs the parent.
    pub fn commit(mut self, dest: &Path) -> io::Result<()> {
        let dir = self.dir.take().expect("staging directory committed once");
        let parent = dest.parent().expect("entry paths have a parent");
        fs::create_dir_all(parent)?;
        File::open(&dir)?.sync_all()?;
        if let Err(e) = fs::rename(&dir, dest) {
            self.dir = Some(dir);
            return Err(e);
        }
        File::open(parent)?.sync_all()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
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
    #[error("executable missing: {0}")]
    NoExecutable(io::Error),
    #[error("executable is not a regular executable file")]
    NotExecutable,
    #[error("executable size {found} differs from the recorded {expected}")]
    Size { expected: u64, found: u64 },
    #[error("executable was modified after install (mtime changed)")]
    Modified,
}

/// The cheap validity check of a cache hit: manifest, size, mtime and mode; no hashing.
pub fn check_entry(dir: &Path, key: &Key) -> Result<Manifest, Damage> {
    let text = match fs::read(dir.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Damage::NoManifest),
        Err(e) => return Err(Damage::BadManifest(e.to_string())),
    };
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| Damage::BadManifest(e.to_string()))?;
    if m.schema != SCHEMA
        || m.tool != key.tool.name()
        || m.version != key.version.as_str()
        || m.platform != key.platform.name()
        || m.executable != key.tool.executable()
    {
        return Err(Damage::WrongEntry(format!(
            "{} {} {} (schema {})",
            m.tool, m.version, m.platform, m.schema
        )));
    }
    let meta = fs::symlink_metadata(dir.join(&m.executable)).map_err(Damage::NoExecutable)?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Err(Damage::NotExecutable);
    }
    if meta.len() != m.executable_size {
        return Err(Damage::Size {
            expected: m.executable_size,
            found: meta.len(),
        });
    }
    if mtime_ns(&meta) != m.executable_mtime_ns {
        return Err(Damage::Modified);
    }
    Ok(m)
}

/// Writes a small file and fsyncs it (manifests).
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

pub fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Records a use of an entry (best effort: a read-only cache still serves).
pub fn touch_last_used(dir: &Path) {
    let path = dir.join(LAST_USED);
    let result = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = result {
        tracing::debug!(path = %path.display(), error = %e, "could not record last use");
    }
}

/// When an entry was last used.
pub fn last_used(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir.join(LAST_USED))
        .or_else(|_| fs::metadata(dir.join(MANIFEST)))
        .and_then(|m| m.modified())
        .ok()
}

/// Bytes used by an entry directory.
pub fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .filter_map(|i| i.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Tries to take both locks of an entry exclusively without waiting: `None` when the entry is
/// being installed or used by a task (in this process or another).
pub fn try_lock_for_removal(layout: &Layout, key: &Key) -> io::Result<Option<(File, File)>> {
    try_lock_both(layout.install_lock(key)?, || layout.lease_lock(key))
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
