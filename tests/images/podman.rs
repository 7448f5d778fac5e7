//! Running podman and buildah, and the images under test.

use std::process::{Command, Output};

// The test binary is not the agent: images/smoke.sh names the images in the environment.
/// The amd64 agent image under test.
#[allow(clippy::disallowed_methods)]
pub fn image() -> String {
    std::env::var("SCALR_AGENT_TEST_IMAGE")
        .unwrap_or_else(|_| "localhost/scalr-agent:dev-amd64".into())
}

/// The arm64 agent image under test.
#[allow(clippy::disallowed_methods)]
pub fn image_arm64() -> String {
    std::env::var("SCALR_AGENT_TEST_IMAGE_ARM64")
        .unwrap_or_else(|_| "localhost/scalr-agent:dev-arm64".into())
}

/// Runs `tool args`, returning its output (never panics on a non-zero exit).
pub fn tool(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} {args:?}: {e} (install podman and buildah)"))
}

pub fn podman(args: &[&str]) -> Output {
    tool("podman", args)
}

/// Runs podman and expects success; returns stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A container removed (forcibly) on drop.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

/// An image removed on drop.
pub struct Image(pub String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn version_on_both_architectures() {
    let out = podman_ok(&["run", "--rm", &image(), "version"]);
    assert!(
        out.starts_with("scalr-agent ") && out.contains("(linux_amd64)"),
        "{out}"
    );
    // The arm64 image runs under qemu-user-static.
    let out = podman_ok(&[
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        &image_arm64(),
        "version",
    ]);
    assert!(out.contains("(linux_arm64)"), "{out}");
    let arch = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        &image_arm64(),
    ]);
    assert_eq!(arch.trim(), "arm64");
}

#[test]
fn labels_user_and_entrypoint() {
    let fmt = "{{index .Labels \"org.opencontainers.image.title\"}}|{{index .Labels \"org.opencontainers.image.base.name\"}}|{{.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}";
    let out = podman_ok(&["image", "inspect", "--format", fmt, &image()]);
    let f: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(f[0], "scalr-agent", "{out}");
    assert!(!f[1].is_empty(), "base.name label: {out}");
    assert_eq!(f[3], "[\"/usr/local/bin/scalr-agent\"]", "{out}");
    assert_eq!(f[4], "[\"run\"]", "{out}");
    // The runner-image contract: user scalr with uid/gid 1000 and /bin/sh.
    let out = podman_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &image(),
        "-c",
        "id scalr; getent passwd scalr; whoami; for t in git ssh curl jq unzip; do command -v $t; done; ldd --version | head -n1",
    ]);
    assert!(out.contains("uid=1000(scalr) gid=1000(scalr)"), "{out}");
    assert!(out.contains(":/bin/sh"), "{out}");
    assert!(out.contains("root\n"), "the default user is root: {out}");
    for t in ["git", "ssh", "curl", "jq", "unzip"] {
        assert!(
            out.contains(&format!("/usr/bin/{t}\n")),
            "{t} missing: {out}"
        );
    }
}

#[test]
fn doctor_as_root_is_isolated_and_names_podman() {
    let out = podman(&["run", "--rm", &image(), "doctor"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("verdict: isolated"), "{stdout}");
    assert!(
        stdout.contains("platform: Podman (/run/.containerenv exists"),
        "{stdout}"
    );
    assert!(stdout.contains("user entries: each stage gets its own passwd entry through /usr/lib/x86_64-linux-gnu/libnss_wrapper.so"), "{stdout}");
}

#[test]
fn doctor_as_uid_1000_without_capabilities_read_only_is_degraded() {
    let out = podman(&[
        "run",
        "--rm",
        "--user",
        "1000:1000",
        "--cap-drop",
        "ALL",
        "--read-only",
        &image(),
        "doctor",
    ]);
    let stdout = text(&out.stdout);
    // `degraded` meets the default minimum: tasks run, with a warning; the exit is 0.
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("agent uid: 1000"), "{stdout}");
    assert!(stdout.contains("verdict: degraded"), "{stdout}");
    assert!(stdout.contains("run the container as root"), "{stdout}");
}

#[test]
fn cloud_run_job_and_container_apps_job_are_named() {
    let out = podman_ok(&[
        "run",
        "--rm",
        "-e",
        "CLOUD_RUN_JOB=nightly",
        &image(),
        "doctor",
    ]);
    assert!(
        out.contains("platform: CloudRunJob (CLOUD_RUN_JOB=nightly is set)"),
        "{out}"
    );
    let out = podman_ok(&[
        "run",
        "--rm",
        "-e",
        "CONTAINER_APP_JOB_NAME=agent-job",
        &image(),
        "doctor",
    ]);
    assert!(
        out.contains("platform: ContainerAppsJob (CONTAINER_APP_JOB_NAME=agent-job is set)"),
        "{out}"
    );
}
