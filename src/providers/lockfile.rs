//! The run's dependency lock file (`.terraform.lock.hcl`): which provider versions and hashes
//! it accepts. Read only to choose what to offer from the store; the agent never edits it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::addr::Provider;

pub const LOCK_FILE: &str = ".terraform.lock.hcl";

/// What the lock file says about one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub version: String,
    pub hashes: Vec<String>,
}

impl Locked {
    pub fn h1s(&self) -> impl Iterator<Item = &str> {
        self.hashes
            .iter()
            .map(String::as_str)
            .filter(|h| !h.starts_with("zh:"))
    }
    pub fn has_h1(&self) -> bool {
        self.h1s().next().is_some()
    }
}

/// The providers of a lock file.
pub type LockFile = BTreeMap<Provider, Locked>;

/// Why a lock file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockFileError {
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Parses a lock file's text.
pub fn parse(text: &str, path: &Path) -> Result<LockFile, LockFileError> {
    let invalid = |reason: String| LockFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let body: hcl::Body = hcl::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut out = LockFile::new();
    for block in body.blocks().filter(|b| b.identifier() == "provider") {
        let Some(label) = block.labels().first() else {
            return Err(invalid("a provider block without an address".into()));
        };
        let provider: Provider = label
            .as_str()
            .parse()
            .map_err(|e: super::addr::AddrError| invalid(e.to_string()))?;
        let mut version = None;
        let mut hashes = Vec::new();
        for attr in block.body().attributes() {
            match (attr.key(), attr.expr()) {
                ("version", hcl::Expression::String(v)) => version = Some(v.clone()),
                ("hashes", hcl::Expression::Array(items)) => {
                    for item in items {
                        if let hcl::Expression::String(h) = item {
                            hashes.push(h.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let version =
            version.ok_or_else(|| invalid(format!("provider {provider} has no version")))?;
        out.insert(provider, Locked { version, hashes });
    }
    Ok(out)
}

/// Reads the lock file in a working directory that the task's own processes can write, through
/// `taskfs` (the one way the agent reads a task's files: no link followed, opened without
/// blocking, a regular file of the task's uid with one link, at most
/// [`crate::taskfs::LOCK_FILE_LIMIT`]). `Ok(None)`: no lock file. Blocking.
pub fn read_task_lock_file(
    root: &crate::taskfs::TaskRoot,
    workdir: &Path,
) -> Result<Option<LockFile>, LockFileError> {
    let Some(rel) = root.relative(workdir) else {
        return Err(LockFileError::Invalid {
            path: workdir.join(LOCK_FILE),
            reason: "the working directory is not inside the task directory".into(),
        });
    };
    let rel = rel.join(LOCK_FILE);
    let bytes = match root.read(&rel, crate::taskfs::Kind::LockFile) {
        Ok(b) => b,
        Err(e) if e.is_missing() => return Ok(None),
        Err(e) => {
            return Err(LockFileError::Invalid {
                path: rel,
                reason: e.to_string(),
            });
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| LockFileError::Invalid {
        path: rel.clone(),
        reason: "not UTF-8".into(),
    })?;
    parse(&text, &rel).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_providers() {
        let text = r#"
# This file is maintained automatically by "terraform init".
provider "registry.terraform.io/hashicorp/null" {
  version     = "3.2.1"
  constraints = "~> 3.0"
  hashes = [
    "h1:abc=",
    "zh:0011",
  ]
}
"#;
        let lock = parse(text, Path::new("x")).unwrap();
        let l = &lock[&"hashicorp/null".parse().unwrap()];
        assert_eq!(l.version, "3.2.1");
        assert_eq!(l.h1s().collect::<Vec<_>>(), ["h1:abc="]);
        assert!(
            parse(
                "provider \"../x/y\" {\n version = \"1\"\n}\n",
                Path::new("x")
            )
            .is_err()
        );
    }

    #[test]
    fn refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), "").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join(LOCK_FILE)).unwrap();
        let root = crate::taskfs::TaskRoot::open(dir.path()).unwrap();
        assert!(read_task_lock_file(&root, dir.path()).is_err());
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        assert!(read_task_lock_file(&root, dir.path()).unwrap().is_none());
    }

    #[test]
    fn refuses_fifos_and_oversized_files_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let root = crate::taskfs::TaskRoot::open(dir.path()).unwrap();
        let err = read_task_lock_file(&root, dir.path()).unwrap_err();
        assert!(err.to_string().contains("expected a regular file"), "{err}");
        std::fs::remove_file(&lock).unwrap();
        let f = std::fs::File::create(&lock).unwrap();
        f.set_len(crate::taskfs::LOCK_FILE_LIMIT + 1).unwrap();
        let err = read_task_lock_file(&root, dir.path()).unwrap_err();
        assert!(err.to_string().contains("lock file"), "{err}");
        assert!(
            err.to_string()
                .contains(&crate::taskfs::LOCK_FILE_LIMIT.to_string()),
            "{err}"
        );
    }
}
