//! What a new user meets in the first hour of `exec`: a task file named from its own directory,
//! Terraform's variable names, the reason of a failure in the log, the exit code post hooks see,
//! the stages' CA bundle under the product's names, and agent-owned shell variables.

use serde_json::json;

use crate::exec::{Exec, text};

const BIN: &str = env!("CARGO_BIN_EXE_scalr-agent");

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
    let out = tokio::process::Command::new(BIN)
        .args(["exec", "plan.json", "--out", "first.out"])
        .current_dir(&e.dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(e.h.vars.iter().cloned())
        .env("SCALR_CONTAINER_TASK_CA_CERT", &root)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
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
