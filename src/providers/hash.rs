//! The two package hashes of Terraform's lock files.
//!
//! - `zh:` is the lower-case hex SHA-256 of the distribution zip (the registry's `shasum`).
//! - `h1:` is Go's `dirhash.Hash1` over the package's files: for each file, sorted by its
//!   forward-slash relative name, the line `"<hex sha256>  <name>\n"` goes into an outer SHA-256,
//!   whose base64 (padded) follows `h1:`. Names, not modes or mtimes, are covered.
#![allow(
    clippy::disallowed_methods,
    reason = "files of the provider store and its staging directories, never a task's"
)]

use std::io;
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::archive::TreeFile;

/// `zh:` of a zip whose SHA-256 is `sha256_hex`.
pub fn zh(sha256_hex: &str) -> String {
    format!("zh:{}", sha256_hex.to_ascii_lowercase())
}

/// `h1:` of files given by name and hex SHA-256 (any order).
pub fn h1<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut files: Vec<(&str, &str)> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut outer = Sha256::new();
    for (name, sha) in files {
        outer.update(format!("{sha}  {name}\n").as_bytes());
    }
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(outer.finalize())
    )
}

/// `h1:` of an extracted tree as the extractor listed it.
pub fn h1_of_tree(files: &[TreeFile]) -> String {
    h1(files.iter().map(|f| (f.name.as_str(), f.sha256.as_str())))
}

/// `h1:` of a directory on disk, re-reading every file. Refuses links and special files (the
/// store holds none). Blocking.
pub fn h1_of_dir(dir: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    Ok(h1(files.iter().map(|(n, s)| (n.as_str(), s.as_str()))))
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) -> io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let kind = item.file_type()?;
        if kind.is_dir() {
            walk(&item.path(), &format!("{rel}/"), out)?;
        } else if kind.is_file() {
            let mut f = std::fs::File::open(item.path())?;
            let mut h = Sha256::new();
            io::copy(&mut f, &mut h)?;
            out.push((rel, hex::encode(h.finalize())));
        } else {
            return Err(io::Error::other(format!("{rel} is not a regular file")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h1_matches_the_shell_recipe() {
        // `sha256sum $(find . -type f | sort) | sha256sum` over a="hello\n", d/b="x".
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "hello\n").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), "x").unwrap();
        assert_eq!(
            h1_of_dir(dir.path()).unwrap(),
            "h1:HbCPpYrylmNfS61bT9UACUVGRpyBe1lMpufQKJqCzpU="
        );
        assert_eq!(zh("ABC"), "zh:abc");
    }
}
