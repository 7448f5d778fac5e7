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
#![allow(
    clippy::disallowed_methods,
    reason = "the cache's own entries, locks and manifests"
)]

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::catalog::{Platform, Tool, Version};
use super::locks::{LockMode, Wait, lock_file};

pub const MANIFEST: &str = "manifest.json";
pub const LAST_USED: &str = ".last-used";
const SCHEMA: u32 = 1;

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

    /// The install lock of an entry, taken exclusively (waiting for its holder).
    pub fn install_lock(&self, key: &Key) -> io::Result<File> {
        lock_file(
            &self.lock_path(key, "install"),
            LockMode::Exclusive,
            Wait::Yes,
        )
        .map(|f| f.expect("a waiting lock is always taken"))
    }

    /// The lease lock of an entry: taken shared by tasks using it, exclusively by removal.
    pub fn lease_path(&self, key: &Key) -> PathBuf {
        self.lock_path(key, "lease")
    }

    /// A fresh staging directory on the cache's own filesystem.
    pub fn staging(&self, key: &Key) -> io::Result<Staging> {
        Staging::create(&self.tmp(), &key.slug())
    }

    /// Moves an entry aside (atomically, so no reader sees it half-deleted) and deletes it.
    pub fn remove_entry(&self, key: &Key) -> io::Result<()> {
        let dir = self.entry(key);
        fs::create_dir_all(self.trash())?;
        set_mode(&self.trash(), 0o700)?;
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

    /// Removes leftovers that nothing may trust: the trash, staging directories of dead
    /// installs, and lock files of entries that do not exist. A staging directory or lock file
    /// goes only when a non-blocking lock shows that no live process holds its entry's install
    /// lock (or, for lock files, its lease): never by age alone, so another process's install
    /// in progress is never touched. `holding` is an entry whose install lock the caller holds:
    /// its staging directories are a dead install's. Blocking: call from a blocking context.
    pub fn sweep_leftovers(&self, holding: Option<&Key>) {
        let held = holding.map(Key::slug);
        if let Ok(items) = fs::read_dir(self.trash()) {
            for item in items.flatten() {
                let _ = fs::remove_dir_all(item.path());
            }
        }
        if let Ok(items) = fs::read_dir(self.tmp()) {
            for item in items.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                // `<slug>.<pid>.<random>`; the slug itself may hold dots (versions).
                let Some(slug) = name.rsplitn(3, '.').nth(2) else {
                    continue;
                };
                if held.as_deref() == Some(slug) {
                    let _ = fs::remove_dir_all(item.path());
                    continue;
                }
                let lock = self.locks().join(format!("{slug}.install"));
                if let Ok(Some(_free)) = lock_file(&lock, LockMode::Exclusive, Wait::No) {
                    let _ = fs::remove_dir_all(item.path());
                }
            }
        }
        let present: std::collections::HashSet<String> = self
            .scan()
            .unwrap_or_default()
            .iter()
            .map(Key::slug)
            .collect();
        let Ok(items) = fs::read_dir(self.locks()) else {
            return;
        };
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(slug) = name.strip_suffix(".install") else {
                continue;
            };
            if present.contains(slug) {
                continue;
            }
            let install = self.locks().join(&name);
            let lease = self.locks().join(format!("{slug}.lease"));
            let Ok(Some(_install)) = lock_file(&install, LockMode::Exclusive, Wait::No) else {
                continue;
            };
            // Under the install lock no entry can appear; re-check, then take the lease.
            if self.root.join(slug_path(slug)).exists() {
                continue;
            }
            if let Ok(Some(_lease)) = lock_file(&lease, LockMode::Exclusive, Wait::No) {
                let _ = fs::remove_file(&lease);
                let _ = fs::remove_file(&install);
            }
        }
    }
}

/// The entry directory of a slug, relative to the root (`tool/version/platform`): a slug is
/// `<tool>-<version>-<platform>`, and neither tool names nor platforms hold a `-`.
fn slug_path(slug: &str) -> PathBuf {
    match (slug.split_once('-'), slug.rsplit_once('-')) {
        (Some((tool, _)), Some((rest, platform))) if rest.len() > tool.len() => {
            Path::new(tool).join(&rest[tool.len() + 1..]).join(platform)
        }
        _ => PathBuf::from(slug),
    }
}

/// Sets exactly `mode` on a directory (explicitly: the umask does not decide who may read the
/// cache).
fn set_mode(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if fs::symlink_metadata(dir)?.mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// A staging directory, removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    dir: Option<PathBuf>,
}

impl Staging {
    /// Creates `<tmp>/<slug>.<pid>.<random>` (and `tmp` itself when missing, 0700). The
    /// directory is 0755 whatever the umask: it becomes the entry, whose files task uids read
    /// and run.
    pub fn create(tmp: &Path, slug: &str) -> io::Result<Staging> {
        let dir = tmp.join(format!(
            "{slug}.{}.{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(tmp)?;
        set_mode(tmp, 0o700)?;
        fs::create_dir(&dir)?;
        set_mode(&dir, 0o755)?;
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
        // The tool and version directories (and the cache root) stay reachable by task uids.
        for d in parent.ancestors().take(3) {
            set_mode(d, 0o755)?;
        }
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

/// Removes a staging file that is no longer needed (a downloaded artifact once extracted);
/// best effort: the staging directory goes at the end anyway.
pub fn discard(path: &Path) {
    let _ = fs::remove_file(path);
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
    let Some(install) = lock_file(
        &layout.lock_path(key, "install"),
        LockMode::Exclusive,
        Wait::No,
    )?
    else {
        return Ok(None);
    };
    Ok(lock_file(
        &layout.lock_path(key, "lease"),
        LockMode::Exclusive,
        Wait::No,
    )?
    .map(|lease| (install, lease)))
}
