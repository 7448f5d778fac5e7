//! `run` with the real task runner: a plan on one agent and its apply on another, with the real
//! Terraform 1.0.3, through the fake control plane.

use std::sync::Arc;
use std::time::Duration;

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
        &config,
        Launcher::new(BIN),
    )));
    let shutdown = CancellationToken::new();
    (
        tokio::spawn(scalr_agent::agent::run(config, executor, shutdown.clone())),
        shutdown,
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
    doc["configuration"] = json!({"archive": {"url": format!("{}inputs/configuration", cp.url), "sha256": releases::sha256_hex(&archive)}});
    cp.enqueue_doc("d-plan", doc.clone());
    cp.lock()
        .tasks
        .get_mut("d-plan")
        .unwrap()
        .inputs
        .insert("configuration".into(), archive.clone());

    let (a, stop_a) = agent(&cp, &e, "agent-a");
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
    let (b, stop_b) = agent(&cp, &e, "agent-b");
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
