//! `run` with the real task runner: a plan on one agent and its apply on another, with the real
//! Terraform 1.0.3, through the fake control plane; the plan's steps reach the control plane
//! as they happen and the metrics.

use std::time::Duration;

use serde_json::json;

use crate::support::agent::{Agent, AgentBuilder};
use crate::support::control_plane::ControlPlane;
use crate::support::exec::Exec;
use crate::support::releases;

const LONG: Duration = Duration::from_secs(60);

/// `scalr-agent run` named `name` with a data directory of its own and a health listener.
fn agent(cp: &ControlPlane, e: &Exec, name: &str) -> AgentBuilder {
    e.h.agent()
        .control_plane(cp, name)
        .data_dir(&e.dir.join(name))
        .env("SCALR_AGENT_HEALTH_ADDR", "127.0.0.1:0")
}

/// The agent's `/metrics` text.
async fn metrics(agent: &Agent) -> String {
    let (code, text) = crate::support::daemon::get(agent.health_addr().await, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    text
}

/// SIGTERM, and the agent exits 0.
async fn stop(mut agent: Agent) {
    let status = agent.stop().await;
    assert!(status.success(), "{status:?}\n{}", agent.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_on_one_agent_and_apply_on_another() {
    let e = Exec::new().await;
    let cp = ControlPlane::start().await;
    let archive = releases::tar_gz(&[releases::Entry::File(
        "main.tf",
        include_bytes!("../../examples/hello/main.tf"),
    )]);
    let mut doc = e.task("d-plan");
    // A hook whose command line holds a secret: its step report shows it masked.
    doc["workspace"]["hooks"] = json!({"pre_plan": "echo run-token-0123456789 > /dev/null"});
    doc["configuration"] = json!({"archive": {"url": format!("{}inputs/configuration", cp.url), "sha256": releases::sha256_hex(&archive)}});
    cp.enqueue_doc("d-plan", doc.clone());
    cp.lock()
        .tasks
        .get_mut("d-plan")
        .unwrap()
        .inputs
        .insert("configuration".into(), archive.clone());

    let a = agent(&cp, &e, "agent-a").run();
    let finish = cp.wait_finished("d-plan", LONG).await;
    assert_eq!(
        finish["status"],
        "succeeded",
        "{finish:#}\n{}",
        String::from_utf8_lossy(&cp.task("d-plan").log)
    );
    let plan = cp.task("d-plan");
    let log = String::from_utf8_lossy(&plan.log);
    assert!(
        log.contains("Planning...") && !log.contains("run-token-0123456789"),
        "{log}"
    );
    let plan_file = plan
        .artifacts
        .get("plan-file")
        .expect("the plan file was uploaded")
        .clone();
    assert!(plan.artifacts.contains_key("plan-json"));
    assert_plan_steps(&plan);
    let text = metrics(&a).await;
    for kind in ["init", "hook", "plan", "show"] {
        assert!(
            text.contains(&format!(
                "scalr_agent_step_duration_seconds_count{{kind=\"{kind}\",status=\"succeeded\"}} 1"
            )),
            "{text}"
        );
    }
    stop(a).await;

    let mut apply = doc;
    apply["id"] = json!("d-apply");
    apply["action"] = json!("apply");
    apply["plan_artifacts"] = json!({"plan_file": "plan.tfplan"});
    cp.enqueue_doc("d-apply", apply);
    {
        let mut i = cp.lock();
        let t = i.tasks.get_mut("d-apply").unwrap();
        t.inputs.insert("configuration".into(), archive);
        t.inputs.insert("plan-file".into(), plan_file);
    }
    let b = agent(&cp, &e, "agent-b").run();
    let finish = cp.wait_finished("d-apply", LONG).await;
    let log = String::from_utf8_lossy(&cp.task("d-apply").log).into_owned();
    assert_eq!(finish["status"], "succeeded", "{finish:#}\n{log}");
    assert!(
        log.contains("Apply complete!") && log.contains("message = \"Hello from run run-42\""),
        "{log}"
    );
    assert_ne!(
        cp.task("d-plan").handed_to,
        cp.task("d-apply").handed_to,
        "plan and apply ran on different agents"
    );
    stop(b).await;
}

/// The plan's steps reached the control plane in order, each started then finished, with
/// masked commands, before the finish.
fn assert_plan_steps(plan: &crate::support::control_plane::TaskRec) {
    let seen: Vec<(u64, &str, &str, &str)> = plan
        .steps
        .iter()
        .map(|s| {
            (
                s["index"].as_u64().unwrap(),
                s["step"].as_str().unwrap(),
                s["kind"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, "init", "init", "running"),
            (0, "init", "init", "succeeded"),
            (1, "pre-plan hook", "hook", "running"),
            (1, "pre-plan hook", "hook", "succeeded"),
            (2, "plan", "plan", "running"),
            (2, "plan", "plan", "succeeded"),
            (3, "show", "show", "running"),
            (3, "show", "show", "succeeded"),
        ],
        "{:#?}",
        plan.steps
    );
    let (started, finished): (Vec<_>, Vec<_>) =
        plan.steps.iter().partition(|s| s["status"] == "running");
    for s in &started {
        assert!(
            s["exit_code"].is_null() && s["duration_ms"].is_null(),
            "{s}"
        );
    }
    // `plan -detailed-exitcode` exits 2 when there are changes: a success.
    let codes: Vec<_> = finished.iter().map(|s| s["exit_code"].clone()).collect();
    assert_eq!(codes, [json!(0), json!(0), json!(2), json!(0)]);
    for s in &finished {
        assert!(s["duration_ms"].is_u64(), "{s}");
    }
    assert!(
        finished[0]["command"]
            .as_str()
            .unwrap()
            .starts_with("terraform init"),
        "{}",
        finished[0]
    );
    assert_eq!(
        finished[1]["command"], "sh -c echo *** > /dev/null",
        "the hook's command is masked"
    );
    let all = serde_json::to_string(&plan.steps).unwrap();
    assert!(!all.contains("run-token-0123456789"), "{all}");
    // The fake refuses every task call after the finish, and counted the reports before it.
    assert_eq!(plan.steps_at_finish, Some(plan.steps.len()));
    // The final result carries the same steps.
    let result_steps = plan.finishes[0]["result"]["steps"].as_array().unwrap();
    let names: Vec<_> = result_steps
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["init", "pre-plan hook", "plan", "show"]);
}
