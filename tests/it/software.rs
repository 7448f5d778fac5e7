//! The verified software cache against a loopback mirror.

use std::time::Duration;

use scalr_agent::archive::ExtractError;
use scalr_agent::software::catalog::{Platform, Tool, Version};
use scalr_agent::software::verify::SignatureError;
use scalr_agent::software::{ErrorKind, SoftwareError};

use crate::support::harness::Harness;
use crate::support::keys::TestKey;
use crate::support::mirror::Fault;
use crate::support::releases::{self, Entry, Signing};
use crate::support::terraform;

const AMD64: Platform = Platform::LinuxAmd64;
const ARM64: Platform = Platform::LinuxArm64;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn fake_terraform_zip(says: &str) -> Vec<u8> {
    releases::zip(&[
        Entry::File("terraform", &releases::script(says)),
        Entry::File("LICENSE.txt", b"license"),
    ])
}

/// Publishes a small signed Terraform release for amd64.
fn publish_small(h: &Harness, version: &str) -> String {
    releases::publish_terraform(
        &h.mirror,
        version,
        &[(
            "linux_amd64",
            fake_terraform_zip(&format!("Terraform v{version}")),
        )],
        Signing::With(&h.key, ".sig"),
    )
}

async fn install_err(h: &Harness, tool: Tool, version: &str, platform: Platform) -> SoftwareError {
    h.cache()
        .install(tool, &v(version), platform)
        .await
        .expect_err("install must fail")
}

#[tokio::test]
async fn real_terraform_is_installed_verified_and_runs() {
    let h = Harness::new().await;
    let zip = std::fs::read(terraform::real_terraform_zip()).unwrap();
    let dir = releases::publish_terraform(
        &h.mirror,
        "1.0.3",
        &[("linux_amd64", zip.clone())],
        Signing::With(&h.key, ".72D7468F.sig"),
    );

    let installed = h
        .cache()
        .install(Tool::Terraform, &v("1.0.3"), AMD64)
        .await
        .unwrap();
    assert!(installed.downloaded);
    assert_eq!(
        installed.path,
        h.entry("terraform", "1.0.3", AMD64).join("terraform")
    );
    let m = &installed.manifest;
    assert_eq!(m.artifact_sha256, releases::sha256_hex(&zip));
    assert_eq!(
        m.executable_sha256,
        releases::sha256_hex(&std::fs::read(terraform::real_terraform()).unwrap())
    );
    assert_eq!(m.verification.method, "sha256+openpgp");
    assert_eq!(
        m.verification.key_fingerprint.as_deref(),
        Some(h.key.fingerprint.as_str())
    );
    assert!(
        m.verification
            .signature_url
            .as_deref()
            .unwrap()
            .ends_with("terraform_1.0.3_SHA256SUMS.72D7468F.sig")
    );

    let out = std::process::Command::new(&installed.path)
        .arg("version")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("Terraform v1.0.3"), "{stdout}");

    // A second install is a hit: no request reaches the mirror.
    let again = h
        .cache()
        .install(Tool::Terraform, &v("1.0.3"), AMD64)
        .await
        .unwrap();
    assert!(!again.downloaded);
    assert_eq!(
        h.mirror
            .hits(&format!("{dir}/terraform_1.0.3_linux_amd64.zip")),
        1
    );
    assert_eq!(
        h.mirror.hits(&format!("{dir}/terraform_1.0.3_SHA256SUMS")),
        1
    );
}

#[tokio::test]
async fn signature_at_the_fallback_name_is_used() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let installed = h
        .cache()
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    assert_eq!(
        h.mirror
            .hits(&format!("{dir}/terraform_1.5.7_SHA256SUMS.72D7468F.sig")),
        1
    );
    assert!(
        installed
            .manifest
            .verification
            .signature_url
            .unwrap()
            .ends_with("_SHA256SUMS.sig")
    );
}

#[tokio::test]
async fn checksum_mismatch_is_rejected_and_leaves_nothing() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    // Serve different bytes than the checksum file describes.
    h.mirror.put(
        &format!("{dir}/terraform_1.5.7_linux_amd64.zip"),
        fake_terraform_zip("tampered"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    let ErrorKind::ChecksumMismatch {
        expected, found, ..
    } = &err.kind
    else {
        panic!("{err}")
    };
    assert_ne!(expected, found);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "terraform 1.5.7 (linux_amd64): checksum mismatch for terraform_1.5.7_linux_amd64.zip"
        ),
        "{text}"
    );
    assert!(
        text.contains(expected) && text.contains(found) && text.contains(&h.mirror.url.to_string()),
        "{text}"
    );
    h.assert_clean("terraform", "1.5.7", AMD64);
}

#[tokio::test]
async fn signature_from_an_untrusted_key_is_rejected() {
    let h = Harness::new().await;
    let stranger = TestKey::generate("Mallory <mallory@example.test>");
    releases::publish_terraform(
        &h.mirror,
        "1.5.7",
        &[("linux_amd64", fake_terraform_zip("x"))],
        Signing::With(&stranger, ".sig"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    let ErrorKind::SignatureInvalid {
        reason: SignatureError::Untrusted { trusted, .. },
        ..
    } = &err.kind
    else {
        panic!("{err}")
    };
    assert!(
        trusted.contains(&h.key.fingerprint)
            && trusted.contains("C874011F0AB405110D02105534365D9472D7468F"),
        "{trusted}"
    );
    assert!(err.to_string().contains("is not trusted"), "{err}");
    h.assert_clean("terraform", "1.5.7", AMD64);
}

#[tokio::test]
async fn signature_over_other_content_is_rejected() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    // A signature by the trusted key, but over a different checksum file.
    h.mirror.put(
        &format!("{dir}/terraform_1.5.7_SHA256SUMS.sig"),
        h.key.sign(b"something else\n"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    assert!(
        matches!(
            &err.kind,
            ErrorKind::SignatureInvalid {
                reason: SignatureError::Bad { .. },
                ..
            }
        ),
        "{err}"
    );
    h.assert_clean("terraform", "1.5.7", AMD64);
}

#[tokio::test]
async fn missing_signature_is_an_error_unless_disabled() {
    let h = Harness::new().await;
    releases::publish_terraform(
        &h.mirror,
        "1.5.7",
        &[("linux_amd64", fake_terraform_zip("x"))],
        Signing::None,
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    let ErrorKind::SignatureMissing { tried, .. } = &err.kind else {
        panic!("{err}")
    };
    assert!(
        tried.contains("SHA256SUMS.72D7468F.sig") && tried.contains("SHA256SUMS.sig"),
        "{tried}"
    );
    h.assert_clean("terraform", "1.5.7", AMD64);

    let opted_out = Harness::with(&[("SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK", "disabled")]).await;
    releases::publish_terraform(
        &opted_out.mirror,
        "1.5.7",
        &[("linux_amd64", fake_terraform_zip("x"))],
        Signing::None,
    );
    let installed = opted_out
        .cache()
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    assert_eq!(
        installed.manifest.verification.method,
        "sha256 (signature check disabled)"
    );
}

#[tokio::test]
async fn checksum_lines_are_matched_by_exact_file_name() {
    let h = Harness::new().await;
    let zip = fake_terraform_zip("x");
    let dir = "terraform/1.5.7";
    h.mirror.put(
        &format!("{dir}/terraform_1.5.7_linux_amd64.zip"),
        zip.clone(),
    );
    // The right hash only under a longer, similar name.
    let sums = format!(
        "{}  terraform_1.5.7_linux_amd64.zip.old\n",
        releases::sha256_hex(&zip)
    );
    releases::publish_sums(
        &h.mirror,
        &format!("{dir}/terraform_1.5.7_SHA256SUMS"),
        &sums,
        Signing::With(&h.key, ".sig"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    assert!(matches!(err.kind, ErrorKind::NoBuild { .. }), "{err}");
    assert!(err.to_string().contains("does not list terraform_1.5.7_linux_amd64.zip (it lists: terraform_1.5.7_linux_amd64.zip.old)"), "{err}");
    h.assert_clean("terraform", "1.5.7", AMD64);

    // With a wrong hash on the exact line, the similar line must not rescue it.
    let sums = format!(
        "{}  terraform_1.5.7_linux_amd64.zip.old\n{}  terraform_1.5.7_linux_amd64.zip\n",
        releases::sha256_hex(&zip),
        "0".repeat(64)
    );
    releases::publish_sums(
        &h.mirror,
        &format!("{dir}/terraform_1.5.7_SHA256SUMS"),
        &sums,
        Signing::With(&h.key, ".sig"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    assert!(
        matches!(err.kind, ErrorKind::ChecksumMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn truncated_download_fails_after_retries_and_leaves_nothing() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    h.mirror.fail_always(&artifact, Fault::Truncate(40));
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    let text = err.to_string();
    assert!(
        text.contains("terraform_1.5.7_linux_amd64.zip") && text.contains("after 4 attempt(s)"),
        "{text}"
    );
    assert!(matches!(&err.kind, ErrorKind::Http(_)), "{err}");
    assert_eq!(h.mirror.hits(&artifact), 4);
    h.assert_clean("terraform", "1.5.7", AMD64);
}

#[tokio::test]
async fn truncated_download_is_retried_from_the_start() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    h.mirror.fail_next(&artifact, [Fault::Truncate(40)]);
    let installed = h
        .cache()
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    assert_eq!(h.mirror.hits(&artifact), 2);
    let out = std::process::Command::new(&installed.path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Terraform v1.5.7\n");
}

#[tokio::test]
async fn missing_arm64_build_is_a_clear_error() {
    let h = Harness::new().await;
    // An old release whose checksum file lists amd64 only (as 0.12.5 really does).
    publish_small(&h, "0.12.5");
    let err = install_err(&h, Tool::Terraform, "0.12.5", ARM64).await;
    assert!(
        err.to_string()
            .contains("terraform 0.12.5 has no linux_arm64 build"),
        "{err}"
    );
    h.assert_clean("terraform", "0.12.5", ARM64);

    // A release whose checksum file lists arm64 but whose mirror answers 404 for it.
    let dir = releases::publish_terraform(
        &h.mirror,
        "0.12.6",
        &[("linux_arm64", fake_terraform_zip("x"))],
        Signing::With(&h.key, ".sig"),
    );
    h.mirror
        .remove(&format!("{dir}/terraform_0.12.6_linux_arm64.zip"));
    let err = install_err(&h, Tool::Terraform, "0.12.6", ARM64).await;
    let text = err.to_string();
    assert!(
        text.contains("terraform 0.12.6 has no linux_arm64 build") && text.contains("404"),
        "{text}"
    );
    assert_eq!(
        h.mirror
            .hits(&format!("{dir}/terraform_0.12.6_linux_arm64.zip")),
        1,
        "404 is never retried"
    );
    h.assert_clean("terraform", "0.12.6", ARM64);
}

#[tokio::test]
async fn unknown_version_names_the_url() {
    let h = Harness::new().await;
    let err = install_err(&h, Tool::OpenTofu, "9.9.9", AMD64).await;
    let text = err.to_string();
    assert!(
        text.contains("opentofu 9.9.9 does not exist")
            && text.contains("/opentofu/v9.9.9/tofu_9.9.9_SHA256SUMS answered 404"),
        "{text}"
    );
}

#[tokio::test]
async fn zip_with_a_parent_directory_entry_is_rejected() {
    let h = Harness::new().await;
    let evil = releases::zip(&[
        Entry::File("../terraform", b"#!/bin/sh\n"),
        Entry::File("terraform", &releases::script("x")),
    ]);
    releases::publish_terraform(
        &h.mirror,
        "1.5.7",
        &[("linux_amd64", evil)],
        Signing::With(&h.key, ".sig"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    let ErrorKind::Archive {
        reason: ExtractError::Unsafe { entry, .. },
        ..
    } = &err.kind
    else {
        panic!("{err}")
    };
    assert_eq!(entry, "../terraform");
    assert!(err.to_string().contains("contains `..`"), "{err}");
    h.assert_clean("terraform", "1.5.7", AMD64);
    assert!(
        !h.root().join("terraform/1.5.7/terraform").exists()
            && !h.dir.path().join("cache/terraform").exists()
    );
}

#[tokio::test]
async fn zip_with_a_symlink_entry_is_rejected() {
    let h = Harness::new().await;
    let evil = releases::zip(&[Entry::Symlink("terraform", "/bin/sh")]);
    releases::publish_terraform(
        &h.mirror,
        "1.5.7",
        &[("linux_amd64", evil)],
        Signing::With(&h.key, ".sig"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    h.assert_clean("terraform", "1.5.7", AMD64);
}

#[tokio::test]
async fn tar_with_a_symlink_or_hardlink_entry_is_rejected() {
    let h = Harness::new().await;
    let tofu = releases::script("OpenTofu v1.8.2");
    let with_symlink = releases::tar_gz(&[
        Entry::File("tofu", &tofu),
        Entry::Symlink("README.md", "/etc/shadow"),
    ]);
    releases::publish_opentofu(
        &h.mirror,
        "1.8.2",
        &[("linux_amd64", with_symlink)],
        Signing::With(&h.key, ".gpgsig"),
    );
    let err = install_err(&h, Tool::OpenTofu, "1.8.2", AMD64).await;
    let ErrorKind::Archive {
        reason: ExtractError::Unsafe { entry, reason },
        ..
    } = &err.kind
    else {
        panic!("{err}")
    };
    assert_eq!(
        (entry.as_str(), *reason),
        ("README.md", "is a symbolic link")
    );
    h.assert_clean("opentofu", "1.8.2", AMD64);

    let with_hardlink = releases::tar_gz(&[
        Entry::File("LICENSE", b"l"),
        Entry::Hardlink("tofu", "LICENSE"),
    ]);
    releases::publish_opentofu(
        &h.mirror,
        "1.8.3",
        &[("linux_amd64", with_hardlink)],
        Signing::With(&h.key, ".gpgsig"),
    );
    let err = install_err(&h, Tool::OpenTofu, "1.8.3", AMD64).await;
    assert!(
        err.to_string()
            .contains("unsafe entry \"tofu\" in the archive: is a hard link"),
        "{err}"
    );
    h.assert_clean("opentofu", "1.8.3", AMD64);
}

#[tokio::test]
async fn entry_above_the_size_cap_is_rejected() {
    let h = Harness::with(&[("SCALR_AGENT_SOFTWARE_MAX_SIZE_MB", "1")]).await;
    let big = vec![0u8; 3 << 20]; // compresses to a few KiB: a small artifact, a large entry
    releases::publish_terraform(
        &h.mirror,
        "1.5.7",
        &[(
            "linux_amd64",
            releases::zip(&[Entry::File("terraform", &big)]),
        )],
        Signing::With(&h.key, ".sig"),
    );
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    let ErrorKind::Archive {
        reason: ExtractError::TooLarge { size, cap, .. },
        ..
    } = &err.kind
    else {
        panic!("{err}")
    };
    assert_eq!((*size, *cap), (3 << 20, 1 << 20));
    h.assert_clean("terraform", "1.5.7", AMD64);

    // Tarballs too, where the header's size is checked before any byte is written.
    releases::publish_opentofu(
        &h.mirror,
        "1.8.2",
        &[(
            "linux_amd64",
            releases::tar_gz(&[Entry::File("tofu", &big)]),
        )],
        Signing::With(&h.key, ".gpgsig"),
    );
    let err = install_err(&h, Tool::OpenTofu, "1.8.2", AMD64).await;
    assert!(
        matches!(
            &err.kind,
            ErrorKind::Archive {
                reason: ExtractError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    h.assert_clean("opentofu", "1.8.2", AMD64);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    h.mirror
        .fail_next(&artifact, [Fault::Status(500), Fault::Status(500)]);
    h.mirror.fail_next(
        &format!("{dir}/terraform_1.5.7_SHA256SUMS"),
        [Fault::Status(503)],
    );
    h.cache()
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    assert_eq!(h.mirror.hits(&artifact), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    h.mirror.fail_next(&artifact, [Fault::RetryAfter(429, 1)]);
    let started = std::time::Instant::now();
    h.cache()
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not waited for"
    );
    assert_eq!(h.mirror.hits(&artifact), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    h.mirror.fail_next(&artifact, [Fault::Status(403)]);
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    assert!(
        err.to_string()
            .contains("answered 403 Forbidden (after 1 attempt(s))"),
        "{err}"
    );
    assert_eq!(h.mirror.hits(&artifact), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_installs_download_once() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    // Slow the download so the eight installs really overlap.
    h.mirror
        .fail_next(&artifact, [Fault::Delay(Duration::from_millis(300))]);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let cache = h.cache();
        set.spawn(async move {
            cache
                .install(Tool::Terraform, &"1.5.7".parse().unwrap(), AMD64)
                .await
                .map(|i| (i.path.clone(), i.downloaded))
        });
    }
    let results: Vec<_> = set
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(h.mirror.hits(&artifact), 1);
    assert_eq!(
        results.iter().filter(|(_, downloaded)| *downloaded).count(),
        1
    );
    assert!(results.iter().all(|(p, _)| *p == results[0].0));
}

#[tokio::test]
async fn damaged_entries_are_reinstalled() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    let first = h
        .cache()
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    let entry = h.entry("terraform", "1.5.7", AMD64);

    // Truncated executable, while `first` (a task's lease) still uses the entry: left to it.
    std::fs::write(&first.path, b"#!/bin/sh\n").unwrap();
    let err = install_err(&h, Tool::Terraform, "1.5.7", AMD64).await;
    assert!(
        matches!(err.kind, ErrorKind::DamagedInUse { .. }),
        "a leased damaged entry is not removed: {err}"
    );
    assert!(
        err.to_string().contains("leased by a running task"),
        "{err}"
    );
    assert_eq!(std::fs::read(&first.path).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        h.mirror.hits(&artifact),
        1,
        "nothing downloaded while leased"
    );
    // Once the lease ends, the next install replaces it.
    let path = first.path.clone();
    drop(first);
    let again = h
        .cache()
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    assert!(again.downloaded);
    assert_eq!(again.path, path);
    assert_eq!(
        std::fs::read(&again.path).unwrap(),
        releases::script("Terraform v1.5.7")
    );
    drop(again);

    // Missing manifest.
    std::fs::remove_file(entry.join("manifest.json")).unwrap();
    assert!(
        h.cache()
            .install(Tool::Terraform, &v("1.5.7"), AMD64)
            .await
            .unwrap()
            .downloaded
    );

    // Missing executable.
    std::fs::remove_file(entry.join("terraform")).unwrap();
    assert!(
        h.cache()
            .install(Tool::Terraform, &v("1.5.7"), AMD64)
            .await
            .unwrap()
            .downloaded
    );

    // Same size, different content, new mtime.
    std::thread::sleep(Duration::from_millis(20));
    let mut bytes = std::fs::read(entry.join("terraform")).unwrap();
    bytes[12] ^= 1;
    std::fs::write(entry.join("terraform"), &bytes).unwrap();
    assert!(
        h.cache()
            .install(Tool::Terraform, &v("1.5.7"), AMD64)
            .await
            .unwrap()
            .downloaded
    );

    assert_eq!(h.mirror.hits(&artifact), 5);
    assert!(
        !h.cache()
            .install(Tool::Terraform, &v("1.5.7"), AMD64)
            .await
            .unwrap()
            .downloaded
    );
}

#[tokio::test]
async fn opentofu_opa_and_infracost_layouts() {
    let h = Harness::new().await;
    let tofu = releases::tar_gz(&[
        Entry::File("CHANGELOG.md", b"c"),
        Entry::File("LICENSE", b"l"),
        Entry::File("README.md", b"r"),
        Entry::File("tofu", &releases::script("OpenTofu v1.8.2")),
    ]);
    releases::publish_opentofu(
        &h.mirror,
        "1.8.2",
        &[("linux_arm64", tofu)],
        Signing::With(&h.key, ".gpgsig"),
    );
    let i = h
        .cache()
        .install(Tool::OpenTofu, &v("1.8.2"), ARM64)
        .await
        .unwrap();
    assert!(i.path.ends_with("opentofu/1.8.2/linux_arm64/tofu"));
    assert_eq!(i.manifest.verification.method, "sha256+openpgp");

    releases::publish_opa(
        &h.mirror,
        "0.68.0",
        "amd64",
        &releases::script("Version: 0.68.0"),
    );
    let i = h
        .cache()
        .install(Tool::Opa, &v("0.68.0"), AMD64)
        .await
        .unwrap();
    assert_eq!(
        std::process::Command::new(&i.path).output().unwrap().stdout,
        b"Version: 0.68.0\n"
    );
    assert_eq!(i.manifest.verification.method, "sha256");

    let old = releases::tar_gz(&[Entry::File(
        "infracost-linux-amd64",
        &releases::script("Infracost v0.10.39"),
    )]);
    releases::publish_infracost(&h.mirror, "0.10.39", "amd64", &old);
    let i = h
        .cache()
        .install(Tool::Infracost, &v("0.10.39"), AMD64)
        .await
        .unwrap();
    assert!(i.path.ends_with("infracost/0.10.39/linux_amd64/infracost"));

    let new = releases::tar_gz(&[Entry::File(
        "infracost",
        &releases::script("Infracost v2.0.1"),
    )]);
    releases::publish_infracost(&h.mirror, "2.0.1", "amd64", &new);
    let i = h
        .cache()
        .install(Tool::Infracost, &v("2.0.1"), AMD64)
        .await
        .unwrap();
    assert_eq!(
        std::process::Command::new(&i.path).output().unwrap().stdout,
        b"Infracost v2.0.1\n"
    );

    // The v2 layout applied to a v0 tarball names what it looked for and what it found.
    releases::publish_infracost(&h.mirror, "2.0.2", "amd64", &old);
    let err = install_err(&h, Tool::Infracost, "2.0.2", AMD64).await;
    assert!(
        err.to_string()
            .contains("no entry \"infracost\" (found: infracost-linux-amd64)"),
        "{err}"
    );
}

#[tokio::test]
async fn prune_keeps_leased_entries_and_applies_limits() {
    let h = Harness::with(&[("SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB", "1")]).await;
    let big = |says: &str| {
        let mut s = releases::script(says);
        s.extend(std::iter::repeat_n(b'#', 700 << 10));
        releases::zip(&[Entry::File("terraform", &s)])
    };
    for version in ["1.1.0", "1.2.0", "1.3.0"] {
        releases::publish_terraform(
            &h.mirror,
            version,
            &[("linux_amd64", big(version))],
            Signing::With(&h.key, ".sig"),
        );
    }
    let cache = h.cache();
    // Each install evicts what no task holds: 1.1.0 is held (leased) while 1.2.0 is not.
    let held = cache
        .install(Tool::Terraform, &v("1.1.0"), AMD64)
        .await
        .unwrap();
    drop(
        cache
            .install(Tool::Terraform, &v("1.2.0"), AMD64)
            .await
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(20));
    let newest = cache
        .install(Tool::Terraform, &v("1.3.0"), AMD64)
        .await
        .unwrap();
    assert!(held.path.exists(), "a leased binary was evicted");
    assert!(newest.path.exists());
    assert!(
        !h.entry("terraform", "1.2.0", AMD64).exists(),
        "the unleased LRU entry stays over the limit"
    );

    // Over the limit with the oldest entry leased: the next least recently used one goes.
    drop(newest);
    let report = cache.prune().unwrap();
    assert_eq!(
        report.kept_in_use,
        ["terraform 1.1.0 linux_amd64"],
        "{report:?}"
    );
    assert_eq!(
        report.removed,
        ["terraform 1.3.0 linux_amd64 (over the size limit)"],
        "{report:?}"
    );
    assert!(held.path.exists());
    drop(held);
    let report = cache.prune().unwrap();
    assert!(report.removed.is_empty(), "under the limit now: {report:?}");

    let listed = cache.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].tool.as_str(), listed[0].version.as_str()),
        ("terraform", "1.1.0")
    );
    assert!(
        listed[0].verified.starts_with("sha256+openpgp by "),
        "{:?}",
        listed[0]
    );
}

#[tokio::test]
async fn prune_removes_entries_unused_past_the_threshold() {
    let h = Harness::with(&[("SCALR_AGENT_BINARY_CACHE_THRESHOLD_DAYS", "1")]).await;
    publish_small(&h, "1.5.7");
    publish_small(&h, "1.6.0");
    let cache = h.cache();
    drop(
        cache
            .install(Tool::Terraform, &v("1.5.7"), AMD64)
            .await
            .unwrap(),
    );
    drop(
        cache
            .install(Tool::Terraform, &v("1.6.0"), AMD64)
            .await
            .unwrap(),
    );
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(h.entry("terraform", "1.5.7", AMD64).join(".last-used"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let report = cache.prune().unwrap();
    assert_eq!(report.removed, ["terraform 1.5.7 linux_amd64 (unused)"]);
    assert!(!h.root().join("terraform/1.5.7").exists());
    assert!(h.entry("terraform", "1.6.0", AMD64).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_counts_hits_misses_failures_and_downloaded_bytes() {
    let h = Harness::new().await;
    let dir = publish_small(&h, "1.5.7");
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    let files = [
        artifact.clone(),
        format!("{dir}/terraform_1.5.7_SHA256SUMS"),
        format!("{dir}/terraform_1.5.7_SHA256SUMS.sig"),
    ];
    let release_bytes: u64 = files
        .iter()
        .map(|f| h.mirror.file(f).unwrap().len() as u64)
        .sum();
    // The first transfer is cut off after 40 bytes and retried; the installs overlap, so
    // three of them wait on the install lock for the one that downloads.
    h.mirror.fail_next(
        &artifact,
        [
            Fault::Truncate(40),
            Fault::Delay(Duration::from_millis(300)),
        ],
    );
    let cache = std::sync::Arc::new(h.cache());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let cache = cache.clone();
        set.spawn(async move {
            cache
                .install(Tool::Terraform, &v("1.5.7"), AMD64)
                .await
                .unwrap()
                .downloaded
        });
    }
    let downloaded = set.join_all().await;
    assert_eq!(downloaded.iter().filter(|d| **d).count(), 1);
    let t = cache.stats().get(Tool::Terraform);
    assert_eq!((t.hits, t.misses, t.failures), (3, 1, 0), "{t:?}");
    // Every byte received counts: the whole release once, plus the attempt that was cut off.
    assert_eq!(t.downloaded_bytes, release_bytes + 40, "{t:?}");

    // A hit downloads nothing; a failure is counted as such, with whatever it received.
    cache
        .install(Tool::Terraform, &v("1.5.7"), AMD64)
        .await
        .unwrap();
    let err = cache
        .install(Tool::Terraform, &v("9.9.9"), AMD64)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NoSuchVersion { .. }), "{err}");
    let t = cache.stats().get(Tool::Terraform);
    assert_eq!((t.hits, t.misses, t.failures), (4, 1, 1), "{t:?}");
    assert_eq!(t.downloaded_bytes, release_bytes + 40, "{t:?}");
    for other in cache.stats().snapshot() {
        if other.tool != Tool::Terraform {
            assert_eq!(
                (
                    other.hits,
                    other.misses,
                    other.failures,
                    other.downloaded_bytes
                ),
                (0, 0, 0, 0),
                "{other:?}"
            );
        }
    }
}

/// A `software install` killed mid-download (SIGKILL: no destructor runs) leaves its staging
/// directory; 16 concurrent installs beside repeated prunes all succeed; afterwards neither a
/// staging directory nor a lock file of an entry that does not exist remains.
#[tokio::test]
async fn leftovers_of_killed_installs_go_without_touching_live_ones() {
    let h = Harness::new().await;
    let versions = ["1.4.0", "1.4.1", "1.4.2", "1.4.3"];
    let mut artifacts = Vec::new();
    for version in versions.iter().chain(&["1.4.9"]) {
        let dir = publish_small(&h, version);
        artifacts.push(format!("{dir}/terraform_{version}_linux_amd64.zip"));
    }
    // The killed install waits on its download, its staging directory created.
    h.mirror
        .fail_always(&artifacts[4], Fault::Delay(Duration::from_secs(60)));
    let mut killed =
        h.agent()
            .name("killed-install")
            .spawn(&["software", "install", "terraform", "1.4.9"]);
    let tmp = h.root().join(".tmp");
    let staged = |version: &str| {
        std::fs::read_dir(&tmp)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains(version))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while staged("1.4.9") == 0 {
        assert!(std::time::Instant::now() < deadline, "no staging dir");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed.kill().await;
    assert_eq!(staged("1.4.9"), 1, "SIGKILL leaves the partial download");

    // Slow downloads so that installs, prunes and sweeps overlap.
    for a in &artifacts[..4] {
        h.mirror
            .fail_next(a, [Fault::Delay(Duration::from_millis(200))]);
    }
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let cache = h.cache();
        let version = versions[i % versions.len()];
        set.spawn(async move { cache.install(Tool::Terraform, &v(version), AMD64).await });
    }
    let pruner = {
        let cache = h.cache();
        tokio::task::spawn_blocking(move || {
            for _ in 0..20 {
                cache.prune().unwrap();
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    for r in set.join_all().await {
        let installed = r.expect("no install fails beside prunes and sweeps");
        assert!(installed.path.exists());
    }
    pruner.await.unwrap();
    h.cache().prune().unwrap();
    assert_eq!(staged(""), 0, "no staging directory is left");
    let locks: Vec<String> = std::fs::read_dir(h.root().join(".locks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        locks.iter().all(|l| !l.contains("1.4.9")),
        "the killed version's lock files are gone: {locks:?}"
    );
    for version in versions {
        assert!(h.entry("terraform", version, AMD64).exists());
    }
}
