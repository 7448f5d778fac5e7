//! The `scalr-agent` binary itself: exit codes, output, and installs across processes.

use std::process::Output;
use std::time::Duration;

use crate::support::agent::AgentBuilder;
use crate::support::harness::Harness;
use crate::support::mirror::Fault;
use crate::support::releases::{self, Entry, Signing};

/// Runs the binary with exactly these variables (plus PATH), never the test's environment.
async fn agent(args: &[&str], vars: &[(String, String)]) -> Output {
    AgentBuilder::new(vars).output(args).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn version_prints_name_version_and_platform() {
    let out = agent(&["version"], &[]).await;
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("scalr-agent {} (linux_amd64)\n", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn bad_configuration_exits_64_listing_every_problem() {
    let vars = [
        ("SCALR_AGENT_LOG_FORMAT", "yaml"),
        ("SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB", "-1"),
        ("SCALR_AGENT_TERRAFORM_MIRROR_URL", "not a url"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let out = agent(&["software", "list"], &vars).await;
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid configuration (3 problem(s))"),
        "{err}"
    );
    assert!(
        err.contains("SCALR_AGENT_LOG_FORMAT=\"yaml\": expected `plain`, `dev` or `json`"),
        "{err}"
    );
    assert!(
        err.contains("SCALR_AGENT_BINARY_CACHE_SIZE_LIMIT_MB=\"-1\": expected a whole number"),
        "{err}"
    );
    assert!(err.contains("SCALR_AGENT_TERRAFORM_MIRROR_URL=\"not a url\": expected an absolute http:// or https:// URL"), "{err}");
}

#[tokio::test]
async fn usage_errors_exit_2_and_say_what_is_expected() {
    let out = agent(&["software", "install", "terragrunt", "1.0.0"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(
        "unknown tool \"terragrunt\": expected one of opentofu, terraform, opa, infracost"
    ));
    let out = agent(&["software", "install", "terraform", "1.0"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid version \"1.0\""));
    let out = agent(
        &[
            "software",
            "install",
            "terraform",
            "1.0.0",
            "--platform",
            "darwin_arm64",
        ],
        &[],
    )
    .await;
    assert!(text(&out.stderr).contains("expected linux_amd64 or linux_arm64"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_list_and_prune_from_the_command_line() {
    let h = Harness::new().await;
    let zip = releases::zip(&[Entry::File(
        "terraform",
        &releases::script("Terraform v1.5.7"),
    )]);
    let dir = releases::publish_terraform(
        &h.mirror,
        "1.5.7",
        &[("linux_amd64", zip)],
        Signing::With(&h.key, ".sig"),
    );
    let artifact = format!("{dir}/terraform_1.5.7_linux_amd64.zip");
    h.mirror
        .fail_next(&artifact, [Fault::Delay(Duration::from_millis(300))]);

    // Three processes at once share one download through the cache's file lock.
    let runs = futures_util::future::join_all(
        (0..3).map(|_| agent(&["software", "install", "terraform", "1.5.7"], &h.vars)),
    )
    .await;
    let expected = format!(
        "{}\n",
        h.entry(
            "terraform",
            "1.5.7",
            scalr_agent::software::catalog::Platform::LinuxAmd64
        )
        .join("terraform")
        .display()
    );
    for out in &runs {
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected);
    }
    assert_eq!(h.mirror.hits(&artifact), 1);

    let out = agent(&["software", "list"], &h.vars).await;
    let listing = text(&out.stdout);
    assert!(listing.starts_with("TOOL"), "{listing}");
    assert!(
        listing.contains("terraform  1.5.7          linux_amd64")
            && listing.contains(&format!("sha256+openpgp by {}", h.key.fingerprint)),
        "{listing}"
    );

    let out = agent(&["software", "list", "--json"], &h.vars).await;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["version"], "1.5.7");
    assert!(rows[0]["last_used"].as_str().unwrap().ends_with('Z'));

    let out = agent(&["software", "prune"], &h.vars).await;
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with("freed 0 B"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn failures_exit_1_with_the_reason_and_json_logs() {
    let mut h = Harness::new().await;
    h.vars
        .push(("SCALR_AGENT_LOG_FORMAT".into(), "json".into()));
    h.vars.push(("SCALR_AGENT_NAME".into(), "agent-7".into()));
    let out = agent(
        &[
            "software",
            "install",
            "opa",
            "0.1.0",
            "--platform",
            "linux_arm64",
        ],
        &h.vars,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: opa 0.1.0 (linux_arm64): opa 0.1.0 has no linux_arm64 build"),
        "{err}"
    );
    let first = err.lines().next().unwrap();
    let line: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["agent"], "agent-7");
    assert_eq!(line["level"], "info");
    assert_eq!(line["event"], "installing");
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
}
