//! The trust boundary (issue 9, part 1): every file the agent reads back from a task, replaced
//! by a hook with something hostile, is refused with a clear message, and nothing from outside
//! the task directory reaches `--out`, the control plane or a log; one task's hostile file never
//! stalls the daemon. (`lints.rs` checks the `taskfs` rule in the sources.)

use std::path::Path;

use serde_json::{Value, json};

use crate::support::exec::{Exec, text};

/// In the agent's own environment: `/proc/self/environ` of the agent holds it.
const ENV_CANARY: &str = "canary-agent-environ-7c1d";
/// Inside a root-only file outside the task.
const FILE_CANARY: &str = "canary-root-only-file-93ab";

/// What a hook puts in place of a file, and what the refusal says.
const ATTACKS: [(&str, &str); 7] = [
    ("environ", "a symbolic link"),
    ("rootfile", "a symbolic link"),
    ("fifo", "found a FIFO"),
    ("device", "a symbolic link"),
    ("dir", "found a directory"),
    ("hardlink", "expected 1 link, found 2 (a hard link)"),
    ("sparse", "the limit is"),
];

/// Every file the agent reads back after a plan: (where, relative to the task root, as the hook
/// names it; how the refusal names it; the sparse size past its limit).
const TARGETS: [(&str, &str, &str); 4] = [
    ("$R/agent.env", "SCALR_AGENT_ENV file agent.env", "2M"),
    (
        "$R/artifacts/plan.json",
        "plan JSON artifacts/plan.json",
        "2M",
    ),
    (
        "$R/artifacts/plan.tfplan",
        "plan file artifacts/plan.tfplan",
        "2M",
    ),
    (
        "$W/.terraform.lock.hcl",
        "lock file work/.terraform.lock.hcl",
        "17M",
    ),
];

/// A shell function `attack KIND PATH SIZE` for hooks.
fn attack_fn(root_file: &Path) -> String {
    format!(
        "attack() {{ case $1 in \
         environ) rm -rf \"$2\"; ln -s /proc/self/environ \"$2\";; \
         rootfile) rm -rf \"$2\"; ln -s {root} \"$2\";; \
         fifo) rm -rf \"$2\"; mkfifo \"$2\";; \
         device) rm -rf \"$2\"; ln -s /dev/zero \"$2\";; \
         dir) rm -rf \"$2\"; mkdir \"$2\";; \
         hardlink) touch \"$2\"; ln \"$2\" \"$2.link\";; \
         sparse) rm -rf \"$2\"; truncate -s $3 \"$2\";; \
         esac; }}; R=$(dirname \"$SCALR_AGENT_ENV\"); W=$(pwd); ",
        root = root_file.display()
    )
}

/// Fails if a canary is in any file under `dir` or in `extra`.
fn assert_no_canary(dir: &Path, extra: &[&str]) {
    for text in extra {
        for canary in [ENV_CANARY, FILE_CANARY] {
            assert!(!text.contains(canary), "{canary} leaked:\n{text}");
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        let t = String::from_utf8_lossy(&bytes);
        for canary in [ENV_CANARY, FILE_CANARY] {
            assert!(
                !t.contains(canary),
                "{canary} leaked into {}",
                path.display()
            );
        }
    }
}

/// Round `round` gives target `j` the attack `(round + j) % 7`: seven rounds put every attack
/// on every target. Odd rounds run with `openat2` denied (the per-component walk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_back_file_refuses_every_attack() {
    let e = Exec::new().await;
    let root_file = e.h.dir.path().join("root-only");
    std::fs::write(&root_file, FILE_CANARY).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let runs = (0..ATTACKS.len()).map(|round| {
        let mut hook = attack_fn(&root_file);
        for (j, (path, _, size)) in TARGETS.iter().enumerate() {
            let (kind, _) = ATTACKS[(round + j) % ATTACKS.len()];
            hook.push_str(&format!("attack {kind} \"{path}\" {size}; "));
        }
        let mut task = e.task(&format!("trust-{round}"));
        task["workspace"]["hooks"] =
            json!({ "post_plan": hook, "pre_plan": "echo \"pin=$pin code=$code\"" });
        // Short secrets (docs/task-spec.md): 2 characters are named in a warning, not masked;
        // 3 are masked.
        let vars = task["variables"].as_array_mut().unwrap();
        vars.push(json!({"key": "pin", "value": "42", "category": "shell", "sensitive": true}));
        vars.push(json!({"key": "code", "value": "xyz", "category": "shell", "sensitive": true}));
        let deny = if round % 2 == 1 { "openat2" } else { "" };
        let e = &e;
        async move {
            let extra = [
                ("SCALR_AGENT_CANARY", ENV_CANARY),
                ("SCALR_AGENT_TASK_ARTIFACT_LIMIT_MB", "1"),
                ("SCALR_AGENT_TASK_RLIMIT_FSIZE_MB", "64"),
                ("SCALR_AGENT_SANDBOX_TEST_DENY", deny),
            ];
            (round, e.run(&task, &extra).await)
        }
    });
    for (round, (out, result, dir)) in futures_util::future::join_all(runs).await {
        let log = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert_eq!(
            result["status"], "failed",
            "round {round}: {result:#}\n{log}"
        );
        let errors = result["errors"].to_string();
        for (j, (_, name, _)) in TARGETS.iter().enumerate() {
            let (kind, says) = ATTACKS[(round + j) % ATTACKS.len()];
            let line = log
                .lines()
                .find(|l| l.starts_with("Error: ") && l.contains(name))
                .unwrap_or_else(|| panic!("round {round}: no refusal of {name} ({kind}):\n{log}"));
            assert!(line.contains(says), "round {round} {kind}: {line}");
            assert!(errors.contains(name), "round {round}: {errors}");
        }
        let artifacts = &result["artifacts"];
        for field in ["plan_file", "plan_json", "lock_file"] {
            assert!(artifacts[field].is_null(), "round {round}: {artifacts:#}");
        }
        for file in ["plan.json", "plan.tfplan", "terraform.lock.hcl"] {
            assert!(!dir.join(file).exists(), "round {round}: {file} in --out");
        }
        assert!(log.contains("pin=42 code=***"), "{log}");
        assert!(
            log.contains("Warning: sensitive variable \"pin\" is not masked in this log: its value has 2 character(s), fewer than the 3 the masker needs"),
            "{log}"
        );
        assert!(!log.contains("variable \"code\""), "{log}");
        let walked = stderr.contains("openat2 is unavailable");
        assert_eq!(walked, round % 2 == 1, "round {round}: the walk\n{stderr}");
        let task_log = std::fs::read_to_string(dir.join("task.log")).unwrap();
        assert_no_canary(&dir, &[&log, &stderr, &task_log]);
    }
}

/// Policy files (`scalr-policy.hcl`, `.rego`) are read through `taskfs` too: a `.rego` that is
/// a directory and a policy file past its limit are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_files_are_refused_by_name() {
    let e = Exec::new().await;
    crate::support::releases::publish_opa(
        &e.h.mirror,
        "0.68.0",
        "amd64",
        crate::support::standins::OPA.as_bytes(),
    );
    let policies = e.dir.join("policies");
    std::fs::create_dir_all(policies.join("deny_all.rego")).unwrap();
    std::fs::write(
        policies.join("scalr-policy.hcl"),
        "policy \"deny_all\" {\n  enabled = true\n  enforcement_level = \"hard-mandatory\"\n}\n",
    )
    .unwrap();
    let plan = e.dir.join("plan.json");
    std::fs::write(&plan, "{}").unwrap();
    let task = |id: &str| {
        let mut t: Value = e.task(id);
        t["action"] = json!("policy-check");
        t["tools"] = json!({"opa": "0.68.0"});
        t["policies"] = json!({"directory": "policies"});
        t["plan_artifacts"] = json!({"plan_json": plan});
        t
    };
    let (out, result, _) = e.run(&task("policy-dir"), &[]).await;
    let log = text(&out.stdout);
    assert!(
        log.contains("Error: policy file policies/deny_all.rego refused: expected a regular file, found a directory"),
        "{log}\n{result:#}"
    );
    assert_ne!(result["status"], "succeeded");

    std::fs::remove_dir(policies.join("deny_all.rego")).unwrap();
    let mut big = "# padding\n".repeat(120_000);
    big.push_str("policy \"deny_all\" {}\n");
    std::fs::write(policies.join("scalr-policy.hcl"), big).unwrap();
    let (out, result, _) = e.run(&task("policy-big"), &[]).await;
    let log = text(&out.stdout);
    assert!(
        log.contains("policy file policies/scalr-policy.hcl refused: the limit is 1048576 bytes, found 1200021 bytes"),
        "{log}\n{result:#}"
    );
}

/// The real `scalr-agent run` with two slots: one task's hook turns its `SCALR_AGENT_ENV` into
/// a FIFO nobody writes (and its plan JSON into a link to the agent's environment); the agent
/// refuses both without blocking, while another task's log keeps arriving, heartbeats continue
/// and `/healthz` answers. Then SIGTERM stops the agent with a third task still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_task_never_stalls_the_daemon() {
    use crate::support::daemon::Daemon;
    use crate::support::procs::marker;
    use nix::sys::signal::Signal;
    let s = Daemon::new().await;
    let fifo = "rm -f \"$SCALR_AGENT_ENV\"; mkfifo \"$SCALR_AGENT_ENV\"; \
                ln -s /proc/self/environ \"$(dirname \"$SCALR_AGENT_ENV\")/artifacts/plan.json\"; \
                echo fifo-made";
    s.enqueue("hostile", fifo);
    let talker = "i=0; while [ $i -lt 40 ]; do echo talker-line-$i; i=$((i+1)); sleep 0.05; done";
    s.enqueue("talker", talker);
    let mut agent = s.start(
        "trusting",
        &[
            ("SCALR_AGENT_CONCURRENCY", "2"),
            ("SCALR_AGENT_WORKER_ON_STOP_ACTION", "grace-shutdown"),
            ("SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT", "3s"),
            ("SCALR_AGENT_HEALTH_ADDR", "127.0.0.1:0"),
            ("SCALR_AGENT_CANARY", ENV_CANARY),
        ],
    );
    let hostile = s.finished(&agent, "hostile").await;
    let log = s.log("hostile");
    assert_eq!(hostile["status"], "failed", "{hostile:#}\n{log}");
    assert!(
        log.contains(
            "Error: SCALR_AGENT_ENV file agent.env refused: expected a regular file, found a FIFO"
        ),
        "{log}"
    );
    assert!(
        log.contains("Error: plan JSON artifacts/plan.json refused: a symbolic link"),
        "{log}"
    );
    let talked = s.finished(&agent, "talker").await;
    assert_eq!(talked["status"], "succeeded", "{talked:#}");
    assert!(s.log("talker").contains("talker-line-39"));

    // Still alive and well: heartbeats continue, /healthz answers.
    let beats = s.cp.lock().heartbeats.len();
    agent
        .until("another heartbeat", || s.cp.lock().heartbeats.len() > beats)
        .await;
    let (code, body) = crate::support::daemon::get(agent.health_addr().await, "/healthz").await;
    assert_eq!(code, 200, "/healthz: {body}");

    // Nothing of the agent's environment reached the control plane.
    {
        let cp = s.cp.lock();
        for (id, t) in cp.tasks.iter() {
            let mut all = format!("{:?} {:?}", t.finishes, t.steps);
            all.push_str(&String::from_utf8_lossy(&t.log));
            for bytes in t.artifacts.values() {
                all.push_str(&String::from_utf8_lossy(bytes));
            }
            assert!(!all.contains(ENV_CANARY), "{id} leaked the canary");
        }
    }

    let m = marker();
    s.enqueue("sleeper", &format!("echo sleeping; sleep {m}"));
    s.wait_log(&agent, "sleeper", "sleeping").await;
    agent.signal(Signal::SIGTERM);
    let status = agent.exit().await;
    assert!(status.success(), "{status:?}\n{}", agent.stderr());
    assert!(!agent.stderr().contains(ENV_CANARY));
    let sleeper = s.finished(&agent, "sleeper").await;
    assert_eq!(sleeper["status"], "canceled", "{sleeper:#}");
}

/// The cost estimate is read back too: a (hostile) Infracost that prints its JSON and then
/// swaps its output file for a link to the agent's environment gets the estimate refused, the
/// task failed, and nothing of the agent's environment in `--out` or the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_estimate_swapped_for_a_link_is_refused() {
    use crate::support::{releases, standins};
    let e = Exec::new().await;
    let hostile = format!(
        "{}\nR=$(dirname \"$SCALR_AGENT_ENV\"); rm -f \"$R/artifacts/cost-estimate.json\"; \
         ln -s /proc/self/environ \"$R/artifacts/cost-estimate.json\"\n",
        standins::INFRACOST.trim_end()
    );
    let tarball = releases::tar_gz(&[releases::Entry::File(
        "infracost-linux-amd64",
        hostile.as_bytes(),
    )]);
    releases::publish_infracost(&e.h.mirror, "0.10.39", "amd64", &tarball);
    let mut plan = e.task("cost-hostile");
    plan["tools"] = json!({"infracost": "0.10.39"});
    plan["cost_estimation"] = json!({"api_key": "ico-secret-key-123"});
    let (out, result, dir) = e.run(&plan, &[("SCALR_AGENT_CANARY", ENV_CANARY)]).await;
    let log = text(&out.stdout);
    assert_eq!(result["status"], "failed", "{result:#}\n{log}");
    assert!(
        log.contains("Error: cost estimate artifacts/cost-estimate.json refused: a symbolic link"),
        "{log}"
    );
    assert!(result["artifacts"]["cost_estimate"].is_null());
    assert!(!dir.join("cost-estimate.json").exists());
    let task_log = std::fs::read_to_string(dir.join("task.log")).unwrap();
    assert_no_canary(&dir, &[&log, &text(&out.stderr), &task_log]);
}
