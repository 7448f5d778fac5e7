//! Builds on top of the agent image: the extension example (a package, a CA certificate, the
//! entrypoint kept) and the runner's verified downloads (a pinned SHA-256 that does not match
//! fails the build; one that matches passes).

use std::path::Path;
use std::process::Command;

use crate::podman::{Image, image, podman_ok, text, tool};
use crate::support::mirror::Mirror;
use crate::support::releases;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bud(args: &[&str]) -> std::process::Output {
    let mut all = vec!["bud", "--isolation", "chroot", "--layers=false"];
    all.extend_from_slice(args);
    tool("buildah", &all)
}

#[test]
fn the_extension_example_builds_and_still_runs_the_agent() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(ROOT).join("images/examples/extend/Dockerfile"),
        ctx.path().join("Dockerfile"),
    )
    .unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=Smoke Test Company CA"])
        .arg("-keyout")
        .arg(ctx.path().join("ca.key"))
        .arg("-out")
        .arg(ctx.path().join("company-ca.crt"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tag = format!("localhost/scalr-agent-extended:{}", std::process::id());
    let _img = Image(tag.clone());
    let agent_arg = format!("AGENT_IMAGE={}", image());
    let out = bud(&[
        "--build-arg",
        &agent_arg,
        "-t",
        &tag,
        ctx.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let version = podman_ok(&["run", "--rm", &tag, "version"]);
    assert!(version.starts_with("scalr-agent "), "{version}");
    let fmt = "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.User}}";
    assert_eq!(
        podman_ok(&["image", "inspect", "--format", fmt, &tag]),
        podman_ok(&["image", "inspect", "--format", fmt, &image()]),
        "ENTRYPOINT, CMD and USER are the agent image's"
    );
    let pem = std::fs::read_to_string(ctx.path().join("company-ca.crt")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let check = podman_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &tag,
        "-c",
        "make --version | head -n1; tr -d '\\n' < /etc/ssl/certs/ca-certificates.crt",
    ]);
    assert!(check.starts_with("GNU Make"), "{check}");
    assert!(check.contains(&body), "the CA is not in the system bundle");
    // The doctor of the extended image still runs (exit 0 as root).
    podman_ok(&["run", "--rm", &tag, "doctor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_whose_sha256_does_not_match_fails_the_runner_build() {
    // A fake Google Cloud CLI tarball served on 127.0.0.1 (buildah's chroot isolation shares
    // the host's network).
    let mirror = Mirror::start().await;
    let tarball = releases::tar_gz(&[releases::Entry::File(
        "google-cloud-sdk/bin/gcloud",
        b"#!/bin/sh\necho fake gcloud\n",
    )]);
    mirror.put(
        "gcloud/google-cloud-cli-535.0.0-linux-x86_64.tar.gz",
        tarball.clone(),
    );
    let url = format!("GCLOUD_URL={}gcloud", mirror.url);
    let agent_arg = format!("AGENT_IMAGE={}", image());
    let dockerfile = format!("{ROOT}/Dockerfile.agent-runner");
    let tag = format!(
        "localhost/scalr-agent-runner-downloads:{}",
        std::process::id()
    );
    let _img = Image(tag.clone());
    let common = [
        "--platform",
        "linux/amd64",
        "--target",
        "downloads",
        "-f",
        dockerfile.as_str(),
    ];
    // The pinned (real) SHA-256 of the vendor's file does not match the served bytes.
    let mut args: Vec<&str> = common.to_vec();
    args.extend([
        "--build-arg",
        agent_arg.as_str(),
        "--build-arg",
        url.as_str(),
        "-t",
        tag.as_str(),
        ROOT,
    ]);
    // Blocking here is fine: the mirror is served by the runtime's other worker.
    let out = bud(&args);
    let log = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "the build passed:\n{log}");
    assert!(
        log.contains(&format!(
            "sha256 mismatch for {}gcloud/google-cloud-cli-535.0.0-linux-x86_64.tar.gz: expected 4ebee5d68283102673b97dabb1ffc069c8d2539693de2f96a60448aabb8afd37, found {}",
            mirror.url,
            releases::sha256_hex(&tarball)
        )),
        "{log}"
    );
    // Pinned to the served bytes, the same build passes and unpacks the file.
    let sum = format!("GCLOUD_SHA256_AMD64={}", releases::sha256_hex(&tarball));
    let mut args: Vec<&str> = common.to_vec();
    args.extend([
        "--build-arg",
        agent_arg.as_str(),
        "--build-arg",
        url.as_str(),
        "--build-arg",
        sum.as_str(),
        "-t",
        tag.as_str(),
        ROOT,
    ]);
    let out = bud(&args);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let ls = podman_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &tag,
        "-c",
        "/opt/vendor/google-cloud-sdk/bin/gcloud",
    ]);
    assert_eq!(ls.trim(), "fake gcloud");
}

#[test]
#[allow(clippy::disallowed_methods)] // The runner image's name comes from images/smoke.sh.
fn the_runner_image_has_its_tools_and_labels() {
    let runner = std::env::var("SCALR_AGENT_TEST_RUNNER_IMAGE")
        .unwrap_or_else(|_| "localhost/scalr-agent-runner:dev".into());
    let out = podman_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &runner,
        "-c",
        "python3 --version; aws --version; kubectl version --client; scalr-agent version",
    ]);
    for want in [
        "Python 3.",
        "aws-cli/2.",
        "Client Version: v1.",
        "scalr-agent ",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let fmt = "{{index .Labels \"org.opencontainers.image.base.name\"}} {{index .Labels \"kubectl.version\"}} {{index .Labels \"aws-cli.version\"}}";
    let labels = podman_ok(&["image", "inspect", "--format", fmt, &runner]);
    assert!(labels.starts_with(&image()), "{labels}");
}
