//! Whole trees out of an archive, under the same entry rules as one executable: a provider
//! package (a zip of regular files) and a task's configuration (a tar.gz, links inside it).
#![allow(
    clippy::disallowed_methods,
    reason = "the agent's own staging directories and a task's before any task code runs"
)]

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path};

use super::{ExtractError, copy_capped_mode, safe_name};

/// One file of an extracted tree: its normalised name, size, SHA-256 and whether the archive
/// marked it executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub executable: bool,
}

/// Extracts every entry of the zip at `archive` under `dest` (an existing, empty directory).
/// Refuses the whole archive on any unsafe, non-regular, duplicate or non-normalised entry,
/// or when the total extracted size would pass `cap` or the count `max_entries`. Files are
/// created with mode 0555 (executable in the zip) or 0444, fsynced, and listed sorted by name.
pub fn extract_zip_tree(
    archive: &Path,
    dest: &Path,
    cap: u64,
    max_entries: usize,
) -> Result<Vec<TreeFile>, ExtractError> {
    let mut zip = zip::ZipArchive::new(BufReader::new(File::open(archive)?))
        .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
    if zip.len() > max_entries {
        return Err(ExtractError::Corrupt(format!(
            "{} entries, above the {max_entries}-entry cap",
            zip.len()
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut declared = 0u64;
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        let raw = String::from_utf8_lossy(f.name_raw()).into_owned();
        let unsafe_entry = |reason| ExtractError::Unsafe {
            entry: raw.clone(),
            reason,
        };
        let name = safe_name(&raw)?;
        if f.is_symlink() {
            return Err(unsafe_entry("is a symbolic link"));
        }
        if f.is_dir() {
            return Err(unsafe_entry(
                "is a directory entry (it would make the zip's h1: differ from the tree's)",
            ));
        }
        if name != raw || name.is_empty() || name.contains('\n') {
            return Err(unsafe_entry("is not a plain normalised relative name"));
        }
        if !names.insert(name) {
            return Err(ExtractError::Duplicate { expected: raw });
        }
        declared = declared.saturating_add(f.size());
        if declared > cap {
            return Err(ExtractError::TooLarge {
                entry: raw,
                size: declared,
                cap,
            });
        }
    }
    let mut out = Vec::new();
    let mut left = cap;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        let name = f.name().to_string();
        let executable = f.unix_mode().is_some_and(|m| m & 0o111 != 0);
        let path = dest.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mode = if executable { 0o555 } else { 0o444 };
        let got = copy_capped_mode(&mut f, &name, &path, left, mode)?;
        left -= got.size;
        out.push(TreeFile {
            name,
            size: got.size,
            sha256: got.sha256,
            executable,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Extracts a tar.gz into `dest` (which exists and is empty): the entry rules of [`safe_name`],
/// directories, regular files (0755 when the archive marks them executable, else 0644) and
/// symbolic links to relative targets that stay inside `dest`; never a hard link, a device, a
/// FIFO, or a write through a link that leads out of `dest`. At most `max_entries` entries and
/// `cap` bytes once extracted (declared sizes are checked against what is read).
pub fn extract_tar_tree(
    archive: &Path,
    dest: &Path,
    cap: u64,
    max_entries: usize,
) -> Result<(), ExtractError> {
    let file = File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let (mut total, mut count) = (0u64, 0usize);
    for entry in tar
        .entries()
        .map_err(|e| ExtractError::Corrupt(format!("not a tar.gz archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        count += 1;
        if count > max_entries {
            return Err(ExtractError::TooManyEntries { cap: max_entries });
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = safe_name(&raw)?;
        if name.is_empty() {
            continue;
        }
        let target = dest.join(&name);
        let kind = entry.header().entry_type();
        let at = |source| ExtractError::Entry {
            entry: raw.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            ensure_inside(dest, parent, &raw)?;
            fs::create_dir_all(parent).map_err(at)?;
        }
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(at)?;
        } else if kind.is_file() {
            total += entry.size();
            if total > cap {
                return Err(ExtractError::TreeTooLarge { cap });
            }
            write_file(&mut entry, &raw, &target)?;
        } else if kind.is_symlink() {
            let link = entry.link_name().map_err(at)?;
            link_inside(link.as_deref(), &raw, &target, dest)?;
        } else if kind.is_hard_link() {
            return Err(ExtractError::Unsafe {
                entry: raw,
                reason: "is a hard link",
            });
        } else if !matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Err(ExtractError::Unsafe {
                entry: raw,
                reason: "is a device, FIFO or other special file",
            });
        }
    }
    Ok(())
}

/// Writes one regular file of a tar tree, new (never through an existing file or link), exactly
/// as long as its header says.
fn write_file(
    entry: &mut tar::Entry<'_, impl Read>,
    raw: &str,
    target: &Path,
) -> Result<(), ExtractError> {
    use std::os::unix::fs::OpenOptionsExt;
    let at = |source| ExtractError::Entry {
        entry: raw.to_string(),
        source,
    };
    let mode = if entry.header().mode().unwrap_or(0o644) & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(target)
        .map_err(at)?;
    let size = entry.size();
    let copied = io::copy(&mut entry.take(size + 1), &mut out).map_err(at)?;
    if copied != size {
        return Err(ExtractError::SizeMismatch { entry: raw.into() });
    }
    Ok(())
}

/// Creates the symbolic link `target` -> `link`, refusing a missing, absolute or escaping one.
fn link_inside(
    link: Option<&Path>,
    raw: &str,
    target: &Path,
    dest: &Path,
) -> Result<(), ExtractError> {
    let refuse = |target: &Path, reason| ExtractError::Link {
        entry: raw.to_string(),
        target: target.display().to_string(),
        reason,
    };
    let Some(link) = link else {
        return Err(refuse(Path::new(""), "it has no target"));
    };
    let at = |source| ExtractError::Entry {
        entry: raw.to_string(),
        source,
    };
    link_stays_inside(dest, target.parent().unwrap_or(dest), link)
        .map_err(at)?
        .map_err(|reason| refuse(link, reason))?;
    std::os::unix::fs::symlink(link, target).map_err(at)
}

/// Whether a symbolic link to `link`, made in the existing directory `parent` of the tree
/// `root`, can only ever resolve inside `root`: `Ok(Err(reason))` when it could leave it.
/// A target is relative, its `..` components come first (a `..` after a name would climb
/// out of wherever that name leads once it is itself a link, e.g. `a -> .` and `b -> a/..`),
/// and those `..` are applied to `parent`'s real path, not its spelling (`x -> .` makes
/// `x/x/l -> ../..` climb two levels above `x/x`'s spelling). Names after them stay inside as
/// long as every link made this way does, so a tree built only from such links, in any
/// order, never leads out. Blocking (resolves `parent` and `root`).
pub fn link_stays_inside(
    root: &Path,
    parent: &Path,
    link: &Path,
) -> io::Result<Result<(), &'static str>> {
    if link.is_absolute() {
        return Ok(Err("an absolute path"));
    }
    let mut at = parent.canonicalize()?;
    let root = root.canonicalize()?;
    let mut named = false;
    for c in link.components() {
        match c {
            Component::ParentDir if named => {
                return Ok(Err("`..` after a name, which may itself be a link"));
            }
            Component::ParentDir => {
                at.pop();
                if !at.starts_with(&root) {
                    return Ok(Err("it leaves the configuration"));
                }
            }
            Component::Normal(_) => named = true,
            _ => {}
        }
    }
    Ok(Ok(()))
}

/// Refuses to write through a symbolic link that points outside `root`.
fn ensure_inside(root: &Path, dir: &Path, raw: &str) -> Result<(), ExtractError> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            return Ok(());
        }
    }
    let at = |source| ExtractError::Entry {
        entry: raw.to_string(),
        source,
    };
    let real = probe.canonicalize().map_err(at)?;
    let real_root = root.canonicalize().map_err(at)?;
    if real.starts_with(&real_root) {
        Ok(())
    } else {
        Err(ExtractError::Unsafe {
            entry: raw.to_string(),
            reason: "leads out of the configuration through a link",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar.gz of `(name, kind, data or link target)` entries.
    fn tar_gz(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_size(0);
                b.append_link(&mut h, name, data).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_path(name).unwrap();
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn extract(entries: &[(&str, tar::EntryType, &str)], cap: u64) -> Result<(), ExtractError> {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        fs::write(&archive, tar_gz(entries)).unwrap();
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        extract_tar_tree(&archive, &dest, cap, 3)
    }

    #[test]
    fn a_tar_tree_keeps_links_inside_and_its_caps() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        extract(
            &[
                ("d/", Directory, ""),
                ("d/main.tf", Regular, "x"),
                ("d/alias.tf", Symlink, "main.tf"),
            ],
            10,
        )
        .unwrap();
        let err = |e: Result<(), ExtractError>| e.unwrap_err().to_string();
        assert_eq!(
            err(extract(&[("up", Symlink, "../../etc/passwd")], 10)),
            "entry \"up\": symbolic link ../../etc/passwd: it leaves the configuration"
        );
        assert_eq!(
            err(extract(&[("abs", Symlink, "/etc/passwd")], 10)),
            "entry \"abs\": symbolic link /etc/passwd: an absolute path"
        );
        assert_eq!(
            err(extract(&[("a", Regular, "x"), ("h", Link, "a")], 10)),
            "unsafe entry \"h\" in the archive: is a hard link"
        );
        assert_eq!(
            err(extract(&[("big", Regular, "0123456789a")], 10)),
            "more than 10 bytes once extracted"
        );
        // Lexically inside, really outside: `a -> .` makes `a/..` the parent of the tree.
        assert_eq!(
            err(extract(&[("a", Symlink, "."), ("b", Symlink, "a/..")], 10)),
            "entry \"b\": symbolic link a/..: `..` after a name, which may itself be a link"
        );
        assert_eq!(
            err(extract(
                &[("a", Symlink, "."), ("a/a/l", Symlink, "../..")],
                10
            )),
            "entry \"a/a/l\": symbolic link ../..: it leaves the configuration"
        );
        let four = [
            ("a", Regular, ""),
            ("b", Regular, ""),
            ("c", Regular, ""),
            ("d", Regular, ""),
        ];
        assert_eq!(err(extract(&four, 10)), "more than 3 entries");
    }
}
