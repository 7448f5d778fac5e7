//! `run` with the real task runner: a plan on one agent and its apply on another, with the real
//! Terraform 1.0.3, through the fake control plane; the plan's steps reach the control plane
//! as they happen and the metrics.

use std::sync::Arc;
use std::time::Duration;

use scalr_agent::agent::Metrics;
use scalr_agent::agent::runner_executor::RunnerExecutor;
use scalr_agent::config::{Config, Needs};
use scalr_agent::sandbox::stage::Launcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::exec::Exec;
use crate::support::control_plane::ControlPlane;
use crate::support::releases;

const BIN: &str = env!("CARGO_BIN_EXE_scalr-agent");
const LONG: Duration = Duration::from_secs(60);

fn agent(
    cp: &ControlPlane,
    e: &Exec,
    name: &str,
) -> (
    tokio::task::JoinHandle<Result<(), scalr_agent::agent::AgentError>>,
    CancellationToken,
    Arc<Metrics>,
) {
    let mut vars = e.h.vars.clone();
    vars.retain(|(k, _)| k != "SCALR_AGENT_DATA_DIR");
    vars.extend([
        ("SCALR_URL".to_string(), cp.url.to_string()),
        ("SCALR_AGENT_TOKEN".to_string(), "pool-token".to_string()),
        ("SCALR_AGENT_NAME".to_string(), name.to_string()),
        (
            "SCALR_AGENT_DATA_DIR".to_string(),
            e.dir.join(name).display().to_string(),
        ),
    ]);
    let config = Config::from_vars(vars, Needs::ControlPlane).unwrap();
    let executor = Arc::new(RunnerExecutor::new(scalr_agent::exec::runner(
        &config.exec(),
        Launcher::new(BIN),
    )));
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new(config.agent.concurrency.get()));
    (
        tokio::spawn(scalr_agent::agent::run_with_metrics(
            config.agent,
            executor,
            shutdown.clone(),
            metrics.clone(),
        )),
        shutdown,
        metrics,
    )
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

    let (a, stop_a, metrics) = agent(&cp, &e, "agent-a");
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
    let text = metrics.render();
    for kind in ["init", "hook", "plan", "show"] {
        assert!(
            text.contains(&format!(
                "scalr_agent_step_duration_seconds_count{{kind=\"{kind}\",status=\"succeeded\"}} 1"
            )),
            "{text}"
        );
    }
    stop_a.cancel();
    a.await.unwrap().unwrap();

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
    let (b, stop_b, _) = agent(&cp, &e, "agent-b");
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
    stop_b.cancel();
    b.await.unwrap().unwrap();
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
