//! What a new user meets in the first hour of `exec`: a task file named from its own directory,
//! Terraform's variable names, the reason of a failure in the log, the exit code post hooks see,
//! the stages' CA bundle under the product's names, agent-owned shell variables, and a data
//! directory task uids cannot reach (`exec`, `run` and `doctor` stop, naming it).

use serde_json::json;

use crate::support::agent::AgentBuilder;
use crate::support::exec::{Exec, text};
use crate::support::releases;

/// One public root of the machine's ca-certificates.
fn some_public_root() -> std::path::PathBuf {
    std::fs::read_dir("/usr/share/ca-certificates/mozilla")
        .expect("ca-certificates is installed")
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "crt"))
        .unwrap()
}

#[tokio::test]
async fn a_task_named_from_its_directory_with_dash_variables_the_ca_and_the_plans_exit_code() {
    let e = Exec::new().await;
    std::fs::write(
        e.dir.join("config/dash.tf"),
        "variable \"dash-name\" {\n  type = string\n}\noutput \"dash\" {\n  value = var.dash-name\n}\n",
    )
    .unwrap();
    let root = some_public_root();
    let root_pem = std::fs::read_to_string(&root).unwrap();
    let first_line = root_pem
        .lines()
        .nth(1)
        .expect("a PEM body line")
        .to_string();
    let mut task = e.task("first-1");
    task["variables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "dash-name", "value": "dashed", "category": "terraform"}));
    task["workspace"]["hooks"] = json!({
        "pre_plan": format!("grep -c -F '{first_line}' \"$SSL_CERT_FILE\" | sed 's/^/task CA lines: /'"),
        "post_plan": "echo \"post-plan exit=$SCALR_TERRAFORM_EXIT_CODE\"",
    });
    std::fs::write(
        e.dir.join("plan.json"),
        serde_json::to_vec_pretty(&task).unwrap(),
    )
    .unwrap();
    // `cd <dir> && scalr-agent exec plan.json`: the task file has no directory part.
    let out =
        e.h.agent()
            .current_dir(&e.dir)
            .env("SCALR_CONTAINER_TASK_CA_CERT", &root)
            .output(&["exec", "plan.json", "--out", "first.out"])
            .await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", text(&out.stderr));
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.dir.join("first.out/result.json")).unwrap())
            .unwrap();
    let plan_step = result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "plan")
        .unwrap();
    assert_eq!(plan_step["exit_code"], 2, "{result:#}");
    // The post-plan hook sees what result.json records.
    assert!(log.contains("post-plan exit=2"), "{log}");
    // The stages' bundle holds the legacy-named task CA (the system bundle may hold it too).
    assert!(log.contains("task CA lines: "), "{log}");
    assert!(!log.contains("task CA lines: 0"), "{log}");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.dir.join("first.out/plan.json")).unwrap()).unwrap();
    assert_eq!(
        plan["planned_values"]["outputs"]["dash"]["value"], "dashed",
        "{plan:#}"
    );
}

#[tokio::test]
async fn the_log_says_why_a_task_failed() {
    let e = Exec::new().await;
    let mut task = e.task("why-1");
    task["workspace"]["hooks"] = json!({"pre_plan": "echo about to fail; exit 7"});
    let (out, result, dir) = e.run(&task, &[]).await;
    let log = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(result["status"], "failed");
    let reason = result["errors"][0].as_str().unwrap();
    assert!(reason.contains("exit code 7"), "{result:#}");
    // The reason is in the log, after the hook's own output and before the final line.
    let why = log
        .find(&format!("Error: {reason}"))
        .unwrap_or_else(|| panic!("the reason is in the log: {log}"));
    assert!(log.find("about to fail").unwrap() < why, "{log}");
    assert!(why < log.find("Task why-1: failed").unwrap(), "{log}");
    assert_eq!(std::fs::read_to_string(dir.join("task.log")).unwrap(), log);
}

#[tokio::test]
async fn a_workspace_cannot_replace_the_cli_configuration() {
    let e = Exec::new().await;
    let mut task = e.task("rc-1");
    task["variables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "TF_CLI_CONFIG_FILE", "value": "/tmp/x.tfrc", "category": "shell"}));
    let (out, _, _) = e.run(&task, &[]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("variables[3].key: the shell variable TF_CLI_CONFIG_FILE would replace the agent's CLI configuration")
            && err.contains("SCALR_TERRAFORM_RC"),
        "{err}"
    );
}

/// A data directory under a 0700 directory (a checkout in root's home): task uids cannot
/// traverse it. `exec`, `run` and `doctor` stop with exit 64 naming it and the fix, and leave
/// its mode alone; under 0711 the same task runs.
#[tokio::test]
async fn a_data_dir_task_uids_cannot_reach_stops_exec_run_and_doctor_naming_the_directory() {
    use std::os::unix::fs::PermissionsExt;
    let e = Exec::new().await;
    let home = e.h.dir.path().join("home");
    let data = home.join("checkout/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data_var = ("SCALR_AGENT_DATA_DIR", data.to_str().unwrap());
    let named = |err: &str| {
        err.contains(&format!(
            "task uids cannot reach the task directories under {}: {} (mode 700) does not let \
             other users traverse it",
            data.display(),
            home.display()
        )) && err.contains(&format!("chmod o+x {}", home.display()))
            && err.contains("SCALR_AGENT_DATA_DIR")
    };

    let (out, result, _) = e.run(&e.task("reach-1"), &[data_var]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}\n{}", text(&out.stdout));
    assert!(named(&err), "{err}");
    assert!(result.is_null(), "nothing ran: {result:#}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&home),
        0o700,
        "the agent changed a mode above its data dir"
    );

    let cp = crate::support::control_plane::ControlPlane::start().await;
    let out =
        e.h.agent()
            .control_plane(&cp, "reach-agent")
            .envs(&[data_var])
            .output(&["run"])
            .await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(named(&text(&out.stderr)), "{}", text(&out.stderr));
    assert!(cp.lock().registrations.is_empty(), "run registered");

    let out =
        e.h.agent()
            .envs(&[data_var])
            .output(&["doctor", "--json"])
            .await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unreachable"], true, "{report:#}");
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| named(p.as_str().unwrap())),
        "{report:#}"
    );
    let out = e.h.agent().envs(&[data_var]).output(&["doctor"]).await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{report}");
    assert!(
        report.contains("data directory: task uids CANNOT reach it")
            && report.contains("tasks FAIL: task uids cannot reach the data directory"),
        "{report}"
    );

    // Traversable, not listable: enough.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o711)).unwrap();
    let (out, result, _) = e.run(&e.task("reach-2"), &[data_var]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(result["status"], "succeeded", "{result:#}");
    let out =
        e.h.agent()
            .envs(&[data_var])
            .output(&["doctor", "--json"])
            .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unreachable"], false, "{report:#}");
    assert_eq!(
        report["data_dir"],
        "task uids can traverse to the task directories and the software cache"
    );
}

/// An agent that cannot switch uids runs stages as itself: the check is skipped, and says so.
#[tokio::test]
async fn without_uid_switching_the_reach_check_is_skipped_and_said() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::support::dirs::tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let data = home.join("data");
    let out = AgentBuilder::new(&[])
        .env("SCALR_AGENT_DATA_DIR", &data)
        .wrapped(
            "/usr/bin/setpriv",
            &["--reuid=65534", "--regid=65534", "--clear-groups"],
        )
        .output(&["doctor", "--json"])
        .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["unreachable"], false, "{report:#}");
    assert_eq!(
        report["data_dir"],
        "not checked: the agent cannot switch uids, so stages run as its own uid"
    );
}

#[tokio::test]
async fn a_bad_task_is_refused_before_any_tool_is_downloaded() {
    let e = Exec::new().await;
    let mut bad_hook = e.task("early-1");
    bad_hook["workspace"]["hooks"] = json!({"pre_plan": "if then fi ("});
    let mut bad_dir = e.task("early-2");
    bad_dir["workspace"]["working_directory"] = json!("../..");
    let archive = releases::tar_gz(&[releases::Entry::File("../evil.tf", b"x")]);
    std::fs::write(e.dir.join("early.tar.gz"), &archive).unwrap();
    let mut bad_archive = e.task("early-3");
    bad_archive["configuration"] =
        json!({"archive": {"path": "early.tar.gz", "sha256": releases::sha256_hex(&archive)}});
    for (task, expected) in [
        (bad_hook, "workspace.hooks.pre_plan: not valid shell"),
        (
            bad_dir,
            "workspace.working_directory \"../..\": must not contain `..`",
        ),
        (
            bad_archive,
            "unsafe entry \"../evil.tf\" in the archive: contains `..`",
        ),
    ] {
        let (out, result, _) = e.run(&task, &[]).await;
        let log = text(&out.stdout);
        assert_eq!(result["status"], "errored", "{result:#}");
        let error = result["errors"][0].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{result:#}");
        assert!(!log.contains("Preparing terraform"), "{log}");
        assert_eq!(
            e.h.mirror.requests(),
            0,
            "{}: a tool was downloaded for a task refused for its own input",
            task["id"]
        );
    }
    // The same mirror serves a good task: the count does move.
    let (out, result, _) = e.run(&e.task("early-ok"), &[]).await;
    assert_eq!(result["status"], "succeeded", "{}", text(&out.stdout));
    assert!(e.h.mirror.requests() > 0);
}
