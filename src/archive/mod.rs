//! The one archive extractor of the crate, shared by the software cache (one executable out of
//! a release artifact), the provider store (a whole zip) and a task's configuration (a whole
//! tar.gz). A bottom module: it imports nothing of the crate.
//!
//! [`extract`]: only the expected entry is extracted, as a regular file, with a size cap. Any entry with an
//! absolute path or `..`, any symlink, hardlink or device entry, and a second entry of the
//! expected name make the whole artifact invalid: a vendor never ships those, an attacker does.
//! The executable is hashed while it is written. Runs on a blocking thread.
//!
//! [`tree`] applies the same entry rules to whole trees: [`extract_zip_tree`] (a provider
//! package: regular files only, so the tree's `h1:` equals the zip's) and [`extract_tar_tree`]
//! (a task's configuration: directories and symbolic links that stay inside the tree too),
//! each with a total size and an entry count cap.
#![allow(
    clippy::disallowed_methods,
    reason = "the agent's own staging files: the cache's, the provider store's, a task's before any task code runs"
)]

mod tree;

pub use tree::{TreeFile, extract_tar_tree, extract_zip_tree, link_stays_inside};

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

/// How the executable is packed in a release artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Zip,
    TarGz,
    /// The artifact is the executable itself.
    Bare,
}

/// Why an artifact could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsafe entry {entry:?} in the archive: {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("the archive has no entry {expected:?} (found: {found})")]
    Missing { expected: String, found: String },
    #[error("the archive holds {expected:?} twice")]
    Duplicate { expected: String },
    #[error(
        "entry {entry:?} is {size} bytes, above the {cap}-byte cap \
         (SCALR_AGENT_SOFTWARE_MAX_SIZE_MB)"
    )]
    TooLarge { entry: String, size: u64, cap: u64 },
    /// The entry held more bytes than the cap while being read (its header may have said less).
    #[error(
        "entry {entry:?} is more than {cap} bytes, the cap (SCALR_AGENT_SOFTWARE_MAX_SIZE_MB); \
         reading stopped there"
    )]
    Overflow { entry: String, cap: u64 },
    #[error("entry {entry:?} is not a regular file")]
    NotRegular { entry: String },
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    #[error("more than {cap} entries")]
    TooManyEntries { cap: usize },
    #[error("more than {cap} bytes once extracted")]
    TreeTooLarge { cap: u64 },
    #[error("entry {entry:?}: size differs from its header")]
    SizeMismatch { entry: String },
    /// A symbolic link whose target is absolute, missing or outside the tree.
    #[error("entry {entry:?}: symbolic link {target}: {reason}")]
    Link {
        entry: String,
        target: String,
        reason: &'static str,
    },
    /// Writing one entry failed.
    #[error("entry {entry:?}: {source}")]
    Entry { entry: String, source: io::Error },
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// The extracted executable.
#[derive(Debug)]
pub struct Extracted {
    pub size: u64,
    pub sha256: String,
}

/// Extracts `entry` from the artifact at `archive` into `dest` (created, fsynced, mode 0755).
pub fn extract(
    archive: &Path,
    kind: ArchiveKind,
    entry: &str,
    dest: &Path,
    cap: u64,
) -> Result<Extracted, ExtractError> {
    let result = match kind {
        ArchiveKind::Zip => extract_zip(archive, entry, dest, cap),
        ArchiveKind::TarGz => extract_tar_gz(archive, entry, dest, cap),
        ArchiveKind::Bare => {
            let size = std::fs::metadata(archive)?.len();
            if size > cap {
                return Err(ExtractError::TooLarge {
                    entry: entry.into(),
                    size,
                    cap,
                });
            }
            copy_capped(&mut File::open(archive)?, entry, dest, cap)
        }
    };
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// Checks an entry's path: relative, no `..`, no root or prefix. Returns it without `./`.
pub(crate) fn safe_name(name: &str) -> Result<String, ExtractError> {
    let unsafe_entry = |reason| ExtractError::Unsafe {
        entry: name.to_string(),
        reason,
    };
    if name.contains('\0') || name.contains('\\') {
        return Err(unsafe_entry("contains a NUL or backslash"));
    }
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry("contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry("is an absolute path"));
            }
        }
    }
    Ok(parts.join("/"))
}

fn extract_zip(
    archive: &Path,
    entry: &str,
    dest: &Path,
    cap: u64,
) -> Result<Extracted, ExtractError> {
    let mut zip = zip::ZipArchive::new(BufReader::new(File::open(archive)?))
        .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
    let mut found = None;
    let mut names = Vec::new();
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        let raw = String::from_utf8_lossy(f.name_raw()).into_owned();
        let name = safe_name(&raw)?;
        if f.is_symlink() {
            return Err(ExtractError::Unsafe {
                entry: raw,
                reason: "is a symbolic link",
            });
        }
        if name == entry {
            check_wanted(entry, &raw, found.is_some(), f.is_file(), f.size(), cap)?;
            found = Some(i);
        }
        names.push(raw);
    }
    let Some(i) = found else {
        return Err(missing(entry, &names));
    };
    let mut f = zip
        .by_index(i)
        .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
    copy_capped(&mut f, entry, dest, cap)
}

fn extract_tar_gz(
    archive: &Path,
    entry: &str,
    dest: &Path,
    cap: u64,
) -> Result<Extracted, ExtractError> {
    let gz =
        flate2::read::GzDecoder::new(BufReader::with_capacity(256 * 1024, File::open(archive)?));
    let mut tar = tar::Archive::new(gz);
    let mut found = None;
    let mut names = Vec::new();
    for item in tar
        .entries()
        .map_err(|e| ExtractError::Corrupt(e.to_string()))?
    {
        let mut item = item.map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        let raw = String::from_utf8_lossy(&item.path_bytes()).into_owned();
        let name = safe_name(&raw)?;
        let kind = item.header().entry_type();
        if kind.is_symlink() {
            return Err(ExtractError::Unsafe {
                entry: raw,
                reason: "is a symbolic link",
            });
        }
        if kind.is_hard_link() {
            return Err(ExtractError::Unsafe {
                entry: raw,
                reason: "is a hard link",
            });
        }
        if !(kind.is_file() || kind.is_dir()) {
            return Err(ExtractError::Unsafe {
                entry: raw,
                reason: "is a device, FIFO or other special file",
            });
        }
        if name == entry {
            check_wanted(
                entry,
                &raw,
                found.is_some(),
                kind.is_file(),
                item.size(),
                cap,
            )?;
            found = Some(copy_capped(&mut item, entry, dest, cap)?);
        }
        names.push(raw);
    }
    found.ok_or_else(|| missing(entry, &names))
}

/// The checks on the wanted entry itself: named only once, a regular file, within the cap.
fn check_wanted(
    entry: &str,
    raw: &str,
    seen: bool,
    regular: bool,
    size: u64,
    cap: u64,
) -> Result<(), ExtractError> {
    if seen {
        return Err(ExtractError::Duplicate {
            expected: entry.into(),
        });
    }
    if !regular {
        return Err(ExtractError::NotRegular { entry: raw.into() });
    }
    if size > cap {
        return Err(ExtractError::TooLarge {
            entry: raw.into(),
            size,
            cap,
        });
    }
    Ok(())
}

pub(crate) fn missing(entry: &str, names: &[String]) -> ExtractError {
    let mut found: Vec<&str> = names.iter().map(String::as_str).take(10).collect();
    if names.len() > 10 {
        found.push("...");
    }
    ExtractError::Missing {
        expected: entry.into(),
        found: if found.is_empty() {
            "nothing".into()
        } else {
            found.join(", ")
        },
    }
}

/// Copies at most `cap` bytes (declared sizes can lie), hashing, then fsyncs and sets 0755.
fn copy_capped(
    src: &mut impl Read,
    entry: &str,
    dest: &Path,
    cap: u64,
) -> Result<Extracted, ExtractError> {
    copy_capped_mode(src, entry, dest, cap, 0o755)
}

/// [`copy_capped`] with the mode given. The file is created new (never through an existing
/// file or link) and its final mode is set on the descriptor, whatever the umask.
pub(crate) fn copy_capped_mode(
    src: &mut impl Read,
    entry: &str,
    dest: &Path,
    cap: u64,
    mode: u32,
) -> Result<Extracted, ExtractError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    let mut out = io::BufWriter::with_capacity(256 * 1024, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut limited = src.take(cap + 1);
    loop {
        let n = limited
            .read(&mut buf)
            .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > cap {
            return Err(ExtractError::Overflow {
                entry: entry.into(),
                cap,
            });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    Ok(Extracted {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_longer_than_its_header_says_more_than_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("tool");
        let err = copy_capped(&mut &[7u8; 10][..], "tool", &dest, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry \"tool\" is more than 4 bytes, the cap (SCALR_AGENT_SOFTWARE_MAX_SIZE_MB); \
             reading stopped there"
        );
    }

    #[test]
    fn names() {
        assert_eq!(safe_name("./tofu").unwrap(), "tofu");
        assert_eq!(safe_name("dir/x").unwrap(), "dir/x");
        assert!(matches!(
            safe_name("../tofu"),
            Err(ExtractError::Unsafe { .. })
        ));
        assert!(matches!(
            safe_name("/etc/passwd"),
            Err(ExtractError::Unsafe { .. })
        ));
        assert!(matches!(
            safe_name("a/../../b"),
            Err(ExtractError::Unsafe { .. })
        ));
    }
}
