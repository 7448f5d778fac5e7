//! The real `run` command in the container: registration with the fake control plane on the
//! host's loopback (`--network host`), a real Terraform 1.0.3 plan from the tests' mirror with
//! a `git clone` over ssh from a hook under the task's uid, then `podman stop` during a second
//! task: its final status is delivered, the agent exits 0 inside the window, nothing is left.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::podman::{Container, image, podman, podman_ok};
use crate::support::control_plane::ControlPlane;
use crate::support::keys::TestKey;
use crate::support::mirror::Mirror;
use crate::support::releases::{self, Signing};
use crate::support::sshd::{Sshd, clone_hook};
use crate::support::terraform;

const MAIN_TF: &[u8] = include_bytes!("../../examples/hello/main.tf");
/// The stop window the container is given (`podman stop -t`): the engine's default, like
/// Cloud Run's. The agent runs with grace 4 s + report 4 s (see images/README.md).
const STOP_WINDOW: Duration = Duration::from_secs(10);

fn task(cp: &ControlPlane, id: &str, archive: &[u8], hook: &str, vars: &[Value]) -> Value {
    let mut variables = vec![
        json!({"key": "greeting", "value": "Hello", "category": "terraform"}),
        json!({"key": "replicas", "value": "2", "category": "terraform"}),
        json!({"key": "tags", "value": "{ owner = \"team-a\" }", "category": "terraform", "hcl": true}),
    ];
    variables.extend(vars.iter().cloned());
    json!({
        "id": id,
        "action": "plan",
        "run": {"id": format!("run-{id}"), "mode": "apply", "source": "api"},
        "workspace": {"id": "ws-1", "name": "hello", "iac_platform": "terraform", "iac_version": "1.0.3",
                      "hooks": {"pre_init": hook}},
        "environment": {"id": "env-1", "name": "test"},
        "control_plane": {"hostname": "localhost", "run_token": "run-token-0123456789"},
        "configuration": {"archive": {"url": format!("{}inputs/configuration", cp.url), "sha256": releases::sha256_hex(archive)}},
        "variables": variables,
    })
}

/// Processes on the host still in the container's cgroup (anything a stage left behind would
/// be there, whatever its parent).
fn processes_of(container_id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cgroup) = std::fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        if cgroup.contains(container_id) {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            found.push(status.lines().take(3).collect::<Vec<_>>().join(" "));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_in_the_container_plans_clones_over_ssh_and_stops_in_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::start().await;
    let key = TestKey::generate("Test Mirror <mirror@example.test>");
    let key_file = dir.path().join("mirror.asc");
    key.write_public(&key_file);
    let zip = std::fs::read(terraform::real_terraform_zip()).unwrap();
    releases::publish_terraform(
        &mirror,
        "1.0.3",
        &[("linux_amd64", zip)],
        Signing::With(&key, ".sig"),
    );
    let cp = ControlPlane::start().await;
    let sshd = Sshd::start(dir.path());
    let archive = releases::tar_gz(&[releases::Entry::File("main.tf", MAIN_TF)]);
    let ssh_vars = [
        json!({"key": "SSH_KEY", "value": sshd.client_key.trim(), "category": "shell", "sensitive": true}),
        json!({"key": "SSH_KNOWN_HOSTS", "value": sshd.known_hosts, "category": "shell"}),
    ];
    cp.enqueue_with_configuration(
        "c-plan",
        task(&cp, "c-plan", &archive, &clone_hook(&sshd), &ssh_vars),
        &archive,
    );

    let name = format!("scalr-agent-smoke-{}", std::process::id());
    let container = Container(name.clone());
    let env = [
        format!("SCALR_URL={}", cp.url),
        "SCALR_AGENT_TOKEN=pool-token".into(),
        "SCALR_AGENT_NAME=smoke".into(),
        format!("SCALR_AGENT_SOFTWARE_MIRROR_URL={}", mirror.url),
        "SCALR_AGENT_SOFTWARE_TRUSTED_KEYS=/etc/scalr-agent/mirror.asc".into(),
        "SCALR_AGENT_WORKER_ON_STOP_ACTION=grace-shutdown".into(),
        "SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT=4s".into(),
        "SCALR_AGENT_WORKER_REPORT_TIMEOUT=4s".into(),
    ];
    let mut args: Vec<String> = ["run", "-d", "--name", name.as_str(), "--network", "host"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push("-v".into());
    args.push(format!(
        "{}:/etc/scalr-agent/mirror.asc:ro",
        key_file.display()
    ));
    for e in &env {
        args.push("-e".into());
        args.push(e.clone());
    }
    args.push(image());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&args);

    let logs = || crate::podman::text(&podman(&["logs", &name]).stderr);
    let finish = tokio::time::timeout(
        Duration::from_secs(300),
        cp.wait_finished("c-plan", Duration::from_secs(300)),
    )
    .await
    .unwrap_or_else(|_| panic!("no finish; agent logs:\n{}", logs()));
    let plan = cp.task("c-plan");
    let log = String::from_utf8_lossy(&plan.log).into_owned();
    assert_eq!(
        finish["status"],
        "succeeded",
        "{finish:#}\n{log}\n{}\n{}",
        logs(),
        sshd.log()
    );
    assert!(
        log.contains("id-un=scalr-task") && log.contains("whoami=scalr-task"),
        "{log}"
    );
    assert!(
        log.contains("module says: hello from the private module"),
        "{log}"
    );
    assert!(
        log.contains("Changes to Outputs") || log.contains("No changes"),
        "{log}"
    );
    assert!(!log.contains("run-token-0123456789"), "{log}");
    let reg = cp.lock().registrations[0].clone();
    assert_eq!(reg["runtime"], "podman", "{reg:#}");
    assert_eq!(reg["isolation"]["verdict"], "isolated", "{reg:#}");

    // No zombie inside the container after a whole task.
    let top = podman_ok(&["top", &name, "pid", "ppid", "state", "comm"]);
    assert!(
        !top.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(2) == Some("Z")),
        "{top}"
    );

    // A second task that runs until the container is stopped.
    let hook = "echo sleeping-now; sleep 300";
    cp.enqueue_with_configuration("c-stop", task(&cp, "c-stop", &archive, hook, &[]), &archive);
    cp.wait_for("the second task's hook", Duration::from_secs(120), |i| {
        i.tasks
            .get("c-stop")
            .is_some_and(|t| String::from_utf8_lossy(&t.log).contains("sleeping-now"))
    })
    .await;
    let id = podman_ok(&["inspect", "--format", "{{.Id}}", &name])
        .trim()
        .to_string();
    assert!(
        !processes_of(&id).is_empty(),
        "the container's processes are not found by cgroup"
    );
    let started = Instant::now();
    let window = STOP_WINDOW.as_secs().to_string();
    podman_ok(&["stop", "-t", &window, &name]);
    let took = started.elapsed();
    let state = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(state.trim(), "0", "exit code; agent logs:\n{}", logs());
    assert!(took < STOP_WINDOW, "the stop took {took:?}");
    let finish = cp.wait_finished("c-stop", Duration::from_secs(5)).await;
    assert_eq!(finish["status"], "canceled", "{finish:#}\n{}", logs());
    assert_eq!(cp.lock().deregistrations, 1);
    let left = processes_of(&id);
    assert!(left.is_empty(), "processes of the container left: {left:?}");
    drop(container);
}
