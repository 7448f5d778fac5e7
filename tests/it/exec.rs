//! `scalr-agent exec`: real Terraform 1.0.3 plan and apply through the runner and the sandbox,
//! hooks, environment, masking, tree kill, bad input.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::exec::{Exec, assert_first_error, text};
use crate::support::procs::{processes_with, sigterm_exec};
use crate::support::releases;

fn step_names(result: &Value) -> Vec<String> {
    result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn plan_then_apply_with_real_terraform() {
    let e = Exec::new().await;
    let (out, result, dir) = e.run(&e.task("plan-1"), &[]).await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", text(&out.stderr));
    assert_eq!(result["status"], "succeeded", "{result:#}");
    assert_eq!(step_names(&result), ["init", "plan", "show"]);
    assert_eq!(result["artifacts"]["has_changes"], true);
    // The plan exits 2 (changes): a succeeded step of kind `plan`.
    let plan = &result["steps"][1];
    assert_eq!(
        (&plan["kind"], &plan["status"], &plan["exit_code"]),
        (&json!("plan"), &json!("succeeded"), &json!(2)),
        "{plan:#}"
    );
    assert!(
        log.contains("Initializing...") && log.contains("Planning..."),
        "{log}"
    );
    let plan: Value =
        serde_json::from_slice(&std::fs::read(dir.join("plan.json")).unwrap()).unwrap();
    let outputs = &plan["planned_values"]["outputs"];
    assert_eq!(
        outputs["message"]["value"], "Hello from run run-42",
        "{plan:#}"
    );
    assert_eq!(outputs["double"]["value"], 42);
    assert_eq!(outputs["owner"]["value"], "team-a");
    assert_eq!(std::fs::read_to_string(dir.join("task.log")).unwrap(), log);

    let mut apply = e.task("apply-1");
    apply["action"] = json!("apply");
    apply["plan_artifacts"] = json!({"plan_file": dir.join("plan.tfplan")});
    let (out, result, _) = e.run(&apply, &[]).await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert_eq!(step_names(&result), ["init", "apply"]);
    assert!(
        log.contains("Apply complete!") && log.contains("message = \"Hello from run run-42\""),
        "{log}"
    );

    // A dry run never applies.
    apply["id"] = json!("apply-dry");
    apply["run"]["mode"] = json!("dry");
    let (out, result, _) = e.run(&apply, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(result["status"], "errored");
    assert_first_error(&result, "run mode `dry` never applies");
    assert!(result["steps"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn hooks_order_exit_codes_and_agent_env() {
    let e = Exec::new().await;
    let hooks_dir = e.dir.join("agent-hooks");
    std::fs::create_dir_all(&hooks_dir).unwrap();
    std::fs::write(
        hooks_dir.join("pre-plan"),
        "#!/bin/sh\necho \"agent pre-plan sees FROM_HOOK=$FROM_HOOK\"\n",
    )
    .unwrap();
    let mut task = e.task("hooks-1");
    // Without `replicas` the plan fails (no input allowed): post-plan must still run.
    task["variables"].as_array_mut().unwrap().remove(1);
    task["workspace"]["hooks"] = json!({
        "pre_init": "echo pre-init ran; echo FROM_HOOK=hello >> \"$SCALR_AGENT_ENV\"; echo 'not a valid line' >> \"$SCALR_AGENT_ENV\"",
        "pre_plan": "echo \"workspace pre-plan sees FROM_HOOK=$FROM_HOOK exit=${SCALR_TERRAFORM_EXIT_CODE:-unset}\"",
        "post_plan": "echo \"post-plan exit=$SCALR_TERRAFORM_EXIT_CODE\"",
    });
    let (out, result, _) = e
        .run(
            &task,
            &[("SCALR_AGENT_HOOKS_DIR", hooks_dir.to_str().unwrap())],
        )
        .await;
    let log = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(result["status"], "failed");
    assert_eq!(
        step_names(&result),
        [
            "pre-init hook",
            "init",
            "agent pre-plan hook",
            "pre-plan hook",
            "plan",
            "post-plan hook"
        ]
    );
    let pos = |s: &str| {
        log.find(s)
            .unwrap_or_else(|| panic!("{s:?} not in log:\n{log}"))
    };
    assert!(pos("pre-init ran") < pos("agent pre-plan sees FROM_HOOK=hello"));
    assert!(pos("agent pre-plan sees") < pos("workspace pre-plan sees FROM_HOOK=hello exit=unset"));
    assert!(pos("No value for required variable") < pos("post-plan exit=1"));
    assert!(
        log.contains("SCALR_AGENT_ENV line 2 ignored: expected KEY=VALUE"),
        "{log}"
    );

    // A failing pre hook stops the task before its operation; no post hook runs.
    let mut task = e.task("hooks-2");
    task["workspace"]["hooks"] =
        json!({"pre_plan": "echo failing; exit 7", "post_plan": "echo post-plan ran"});
    let (out, result, _) = e.run(&task, &[]).await;
    assert_eq!(step_names(&result), ["init", "pre-plan hook"]);
    assert_eq!(result["steps"][1]["exit_code"], 7);
    assert_first_error(&result, "pre-plan hook failed (exit code 7)");
    assert!(!text(&out.stdout).contains("post-plan ran"));
}

#[tokio::test]
async fn secrets_are_masked_and_the_agent_environment_never_reaches_children() {
    let e = Exec::new().await;
    let mut task = e.task("mask-1");
    task["variables"].as_array_mut().unwrap().push(json!({"key": "DB_PASSWORD", "value": "split-secret-value-42", "category": "shell", "sensitive": true}));
    task["workspace"]["hooks"] = json!({
        "pre_init": "printf 'password: split-secr'; sleep 0.4; printf 'et-value-42 done\\n'; echo \"token $SCALR_TOKEN\"; env | sort",
    });
    let (out, result, dir) = e
        .run(
            &task,
            &[
                ("SCALR_AGENT_CANARY", "canary-agent-value"),
                ("AWS_SECRET_ACCESS_KEY", "canary-aws-value"),
                ("SCALR_AGENT_TOKEN", "canary-pool-token"),
            ],
        )
        .await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("password: *** done"), "{log}");
    assert!(log.contains("token ***"), "{log}");
    for leaked in [
        "split-secret-value-42",
        "run-token-0123456789",
        "canary-agent-value",
        "canary-aws-value",
        "canary-pool-token",
    ] {
        assert!(!log.contains(leaked), "{leaked} leaked:\n{log}");
        assert!(
            !std::fs::read_to_string(dir.join("result.json"))
                .unwrap()
                .contains(leaked)
        );
    }
    // The run variables are there, also as Terraform variables.
    for expected in [
        "SCALR_RUN_ID=run-42",
        "TF_VAR_SCALR_RUN_ID=run-42",
        "SCALR_WORKSPACE_NAME=hello",
        "TF_IN_AUTOMATION=1",
        "TF_TOKEN_scalr_example_test=***",
        "DB_PASSWORD=***",
    ] {
        assert!(log.contains(expected), "{expected} missing:\n{log}");
    }
    assert_eq!(result["status"], "succeeded");
}

#[tokio::test]
async fn terraform_rc_is_used_by_terraform_and_merged_with_credentials() {
    let e = Exec::new().await;
    // A filesystem mirror holding a provider for a registry that does not exist: only the CLI
    // configuration can make `init` find it.
    let mirror = e.dir.join("providers");
    let pdir = mirror.join("example.test/acme/hello/1.0.0/linux_amd64");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("terraform-provider-hello_v1.0.0"),
        "#!/bin/sh\nexit 1\n",
    )
    .unwrap();
    std::fs::write(e.dir.join("config/versions.tf"), "terraform {\n  required_providers {\n    hello = { source = \"example.test/acme/hello\" }\n  }\n}\n").unwrap();
    let rc = format!(
        "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n    include = [\"example.test/*/*\"]\n  }}\n}}\n",
        mirror.display()
    );
    let mut task = e.task("rc-1");
    task["variables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "SCALR_TERRAFORM_RC", "value": rc, "category": "shell"}));
    task["workspace"]["hooks"] = json!({"pre_init": "cat \"$TF_CLI_CONFIG_FILE\"; echo \"rc var: ${SCALR_TERRAFORM_RC:-absent}\""});
    // Landlock hides everything outside the task unless the operator lists it.
    let (out, _result, _) = e
        .run(
            &task,
            &[("SCALR_AGENT_TASK_READ_PATHS", mirror.to_str().unwrap())],
        )
        .await;
    let log = text(&out.stdout);
    assert!(
        log.contains("Installing example.test/acme/hello v1.0.0"),
        "{log}"
    );
    assert!(
        log.contains("Installed example.test/acme/hello v1.0.0 (unauthenticated)"),
        "{log}"
    );
    assert!(
        log.contains("filesystem_mirror") && log.contains("credentials \"scalr.example.test\""),
        "{log}"
    );
    assert!(log.contains("token = \"***\""), "{log}");
    assert!(log.contains("rc var: absent"), "{log}");
}

#[tokio::test]
async fn a_hook_timeout_kills_every_process_it_started() {
    let e = Exec::new().await;
    let marker = format!("77{}", std::process::id() % 100000);
    let mut task = e.task("timeout-1");
    task["workspace"]["hook_timeout"] = json!(1);
    task["workspace"]["hooks"] = json!({
        "pre_init": format!("trap '' INT; sleep {marker}1 & setsid sh -c 'sleep {marker}2 & sleep {marker}3' & (setsid sleep {marker}4 &); sleep {marker}5"),
    });
    let (out, result, _) = e.run(&task, &[("SCALR_AGENT_CANCEL_GRACE", "500ms")]).await;
    let log = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(result["steps"][0]["status"], "timed_out", "{result:#}");
    // sleep 1 and 5 (in the hook's group, ignoring SIGINT like it), the setsid shell with
    // sleeps 2 and 3, and sleep 4 in a session of its own: all killed after the grace.
    let killed = result["steps"][0]["leftovers_killed"].as_u64().unwrap();
    assert!(killed >= 5, "leftovers_killed {killed}: {result:#}");
    assert!(
        log.contains("pre-init hook timed out after 1s; interrupting it")
            && log.contains("did not stop within 500ms; killing it"),
        "{log}"
    );
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
}

#[tokio::test]
async fn bad_input_is_reported_clearly() {
    let e = Exec::new().await;
    // Unknown and missing fields, with their paths.
    let mut task = e.task("bad-1");
    task["colour"] = json!("blue");
    task["workspace"]["hookz"] = json!({});
    task.as_object_mut().unwrap().remove("environment");
    let (out, _, _) = e.run(&task, &[]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("colour: unknown field"), "{err}");
    assert!(err.contains("environment: required, but missing"), "{err}");
    assert!(
        err.contains("workspace.hookz: unknown field (expected one of: id, name,"),
        "{err}"
    );

    // A working directory escaping the configuration.
    let mut task = e.task("bad-2");
    task["workspace"]["working_directory"] = json!("../..");
    let (_, result, _) = e.run(&task, &[]).await;
    assert_first_error(
        &result,
        "workspace.working_directory \"../..\": must not contain `..`",
    );

    // An archive with a `../` entry.
    let archive = releases::tar_gz(&[releases::Entry::File("../evil.tf", b"x")]);
    std::fs::write(e.dir.join("config.tar.gz"), &archive).unwrap();
    let mut task = e.task("bad-3");
    task["configuration"] =
        json!({"archive": {"path": "config.tar.gz", "sha256": releases::sha256_hex(&archive)}});
    let (_, result, _) = e.run(&task, &[]).await;
    assert_first_error(
        &result,
        "unsafe entry \"../evil.tf\" in the archive: contains `..`",
    );

    // An unknown tool version.
    let mut task = e.task("bad-4");
    task["workspace"]["iac_version"] = json!("9.8.7");
    let (_, result, _) = e.run(&task, &[]).await;
    assert_eq!(result["status"], "errored");
    assert_first_error(&result, "terraform 9.8.7 does not exist");

    // A hook line that is not valid shell.
    let mut task = e.task("bad-5");
    task["workspace"]["hooks"] = json!({"post_plan": "echo (unbalanced"});
    let (_, result, _) = e.run(&task, &[]).await;
    let msg = result["errors"][0].as_str().unwrap();
    assert!(
        msg.starts_with("workspace.hooks.post_plan: not valid shell"),
        "{result:#}"
    );
    assert!(result["steps"].as_array().unwrap().is_empty());
}

#[allow(dead_code)]
fn exists(p: &Path) -> bool {
    p.exists()
}

#[tokio::test]
async fn cost_estimate_and_policy_check_through_stand_in_tools() {
    use crate::support::standins;
    let e = Exec::new().await;
    releases::publish_opa(&e.h.mirror, "0.68.0", "amd64", standins::OPA.as_bytes());
    let tarball = releases::tar_gz(&[releases::Entry::File(
        "infracost-linux-amd64",
        standins::INFRACOST.as_bytes(),
    )]);
    releases::publish_infracost(&e.h.mirror, "0.10.39", "amd64", &tarball);

    let mut plan = e.task("cost-1");
    plan["tools"] = json!({"infracost": "0.10.39"});
    plan["cost_estimation"] = json!({"api_key": "ico-secret-key-123"});
    let (out, result, dir) = e.run(&plan, &[]).await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        step_names(&result),
        ["init", "plan", "show", "cost estimate"]
    );
    assert_eq!(
        result["cost_estimate"],
        json!({"currency": "USD", "prior_monthly_cost": "0", "proposed_monthly_cost": "30", "delta_monthly_cost": "30"})
    );
    assert_eq!(result["artifacts"]["cost_estimate"], "cost-estimate.json");
    assert!(
        log.contains("Cost estimate: 30 USD per month (was 0, change 30)"),
        "{log}"
    );

    let policies = e.dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("scalr-policy.hcl"), "version = \"v1\"\npolicy \"greeting\" {\n  enabled = true\n  enforcement_level = \"soft-mandatory\"\n}\npolicy \"budget\" {\n  enforcement_level = \"hard-mandatory\"\n}\npolicy \"disabled\" {\n  enabled = false\n}\n").unwrap();
    std::fs::write(policies.join("greeting.rego"), "package terraform.greeting\n\n# stand-in: deny if input contains Hello from run => greetings must be formal\ndeny[msg] {\n  contains(input.tfplan.planned_values.outputs.message.value, \"Hello\")\n  msg := \"greetings must be formal\"\n}\n").unwrap();
    std::fs::write(policies.join("budget.rego"), "package terraform.budget\n\n# stand-in: deny if input contains \"proposed_monthly_cost\":\"9999\" => over budget\ndeny[msg] {\n  to_number(input.tfrun.cost_estimate.proposed_monthly_cost) > 1000\n  msg := \"over budget\"\n}\n").unwrap();
    let mut check = e.task("policy-1");
    check["action"] = json!("policy-check");
    check["tools"] = json!({"opa": "0.68.0"});
    check["policies"] = json!({"directory": "policies"});
    check["plan_artifacts"] = json!({"plan_json": dir.join("plan.json"), "cost_estimate": dir.join("cost-estimate.json")});
    let (out, result, check_dir) = e.run(&check, &[]).await;
    let log = text(&out.stdout);
    assert!(
        out.status.success(),
        "a soft failure does not fail the task: {log}"
    );
    assert_eq!(
        result["policy_check"]["status"], "soft_failed",
        "{result:#}"
    );
    assert_eq!(
        result["policy_check"]["policies"][0],
        json!({"name": "greeting", "enforcement_level": "soft-mandatory", "passed": false, "messages": ["greetings must be formal"]})
    );
    assert_eq!(result["policy_check"]["policies"][1]["passed"], true);
    assert_eq!(
        result["policy_check"]["policies"].as_array().unwrap().len(),
        2,
        "disabled policies are skipped"
    );
    let input: Value =
        serde_json::from_slice(&std::fs::read(check_dir.join("policy-check.json")).unwrap())
            .unwrap();
    assert_eq!(input["status"], "soft_failed");

    // The same policy at hard-mandatory fails the task.
    std::fs::write(
        policies.join("scalr-policy.hcl"),
        "policy \"greeting\" {\n  enforcement_level = \"hard-mandatory\"\n}\n",
    )
    .unwrap();
    check["id"] = json!("policy-2");
    let (out, result, _) = e.run(&check, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(result["policy_check"]["status"], "hard_failed");
}

#[tokio::test]
async fn a_cancel_while_the_tool_downloads_stops_at_once_and_leaves_nothing() {
    use std::time::{Duration, Instant};
    let e = Exec::new().await;
    let zip = "terraform/1.0.3/terraform_1.0.3_linux_amd64.zip";
    // The download hangs far longer than the test waits.
    e.h.mirror.fail_always(
        zip,
        crate::support::mirror::Fault::Delay(Duration::from_secs(600)),
    );
    let task = e.task("cancel-prep");
    let run = e.run(&task, &[]);
    let canceller = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while e.h.mirror.hits(zip) == 0 {
            assert!(Instant::now() < deadline, "the download never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sigterm_exec("cancel-prep");
        Instant::now()
    };
    let ((out, result, _), signalled) = tokio::join!(run, canceller);
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "exec waited for the download"
    );
    assert_eq!(result["status"], "canceled", "{}", text(&out.stdout));
    assert_eq!(result["steps"], json!([]));
    assert!(
        text(&out.stdout).contains("Canceled while preparing the task"),
        "{}",
        text(&out.stdout)
    );
    e.h.assert_clean(
        "terraform",
        "1.0.3",
        scalr_agent::software::catalog::Platform::LinuxAmd64,
    );
    let tasks = e.h.dir.path().join("data/tasks");
    let left: Vec<_> = std::fs::read_dir(&tasks)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "task directories left: {left:?}");
}
