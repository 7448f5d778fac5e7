//! Scale-out on queue depth with the launchers' own code (deploy/launcher, the function the ECS
//! Lambda and the Cloud Run launcher call), pointed at a local runner: 30 tasks on the fake
//! control plane, `python3 -m scalr_launcher.local` reads the queue depth with the queue token
//! and starts `scalr-agent run` in single mode as local processes (real plans with the real
//! Terraform 1.0.3). Every task runs exactly once, every agent exits 0 and deregisters, nothing
//! is left in their data directories.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::control_plane::ControlPlane;
use crate::support::exec::Exec;
use crate::support::procs;
use crate::support::queue_depth::{self, QUEUE_TOKEN};
use crate::support::releases;

const TASKS: usize = 30;
const MAX_AGENTS: usize = 6;

fn launcher_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/launcher")
}

fn enqueue_plans(cp: &ControlPlane, e: &Exec) {
    let archive = releases::tar_gz(&[releases::Entry::File(
        "main.tf",
        include_bytes!("../../examples/hello/main.tf"),
    )]);
    for n in 0..TASKS {
        let id = format!("scale-{n:02}");
        let mut doc = e.task(&id);
        doc["configuration"] = json!({"archive": {"url": format!("{}inputs/configuration", cp.url), "sha256": releases::sha256_hex(&archive)}});
        cp.enqueue_doc(&id, doc);
        cp.lock()
            .tasks
            .get_mut(&id)
            .unwrap()
            .inputs
            .insert("configuration".into(), archive.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_starts_single_mode_agents_until_every_task_ran_once() {
    let e = Exec::new().await;
    let cp = ControlPlane::start().await;
    enqueue_plans(&cp, &e);
    assert_eq!(queue_depth::counts(&cp.lock()), (TASKS, 0));

    let token_file = e.dir.join("queue-token");
    std::fs::write(&token_file, format!("{QUEUE_TOKEN}\n")).unwrap();
    let agents = e.dir.join("agents");
    let per_agent_data = format!("SCALR_AGENT_DATA_DIR={}/{{n}}", agents.display());
    let launcher =
        e.h.agent()
            .env_remove("SCALR_AGENT_DATA_DIR")
            .env("PYTHONPATH", launcher_dir())
            // The launcher is imported from the source tree: no bytecode written there.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("SCALR_URL", cp.url.as_str())
            .env("SCALR_AGENT_TOKEN", "pool-token")
            // An agent started for a task another one took gives up quickly.
            .env("SCALR_AGENT_SINGLE_WAIT_TIMEOUT", "2s")
            .env("SCALR_AGENT_STATE_PERSISTENCE_ENABLED", "false")
            .wrapped(
                "python3",
                &[
                    "-m",
                    "scalr_launcher.local",
                    "--scalr-url",
                    cp.url.as_str(),
                    "--queue-token-file",
                    token_file.to_str().unwrap(),
                    "--max-agents",
                    &MAX_AGENTS.to_string(),
                    "--interval",
                    "0.3",
                    "--until-empty",
                    "--timeout",
                    "400",
                    "--per-agent",
                    &per_agent_data,
                    "--per-agent",
                    "SCALR_AGENT_TASK_UID_RANGE=3{n:02d}00-3{n:02d}09",
                    "--",
                ],
            );
    let out = tokio::time::timeout(Duration::from_secs(420), launcher.output(&["run"]))
        .await
        .expect("the launcher finished");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "launcher: {}\n{stderr}", out.status);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("the launcher's summary");

    let i = cp.lock();
    for n in 0..TASKS {
        let id = format!("scale-{n:02}");
        let t = &i.tasks[&id];
        assert_eq!(
            t.handed_to.len(),
            1,
            "{id} handed out once: {:?}",
            t.handed_to
        );
        assert_eq!(t.finishes.len(), 1, "{id} finished once");
        assert_eq!(
            t.finishes[0]["status"],
            "succeeded",
            "{id}: {}",
            String::from_utf8_lossy(&t.log)
        );
    }
    // One task per single-mode agent: 30 different agents.
    let mut holders: Vec<&String> = i.tasks.values().map(|t| &t.handed_to[0]).collect();
    holders.sort();
    holders.dedup();
    assert_eq!(holders.len(), TASKS);
    assert_eq!(queue_depth::counts(&i), (0, 0));
    let started = summary["started"].as_u64().unwrap() as usize;
    assert!(started >= TASKS, "{summary}");
    let codes = summary["exit_codes"].as_array().unwrap();
    assert_eq!(codes.len(), started, "every agent exited: {summary}");
    assert!(codes.iter().all(|c| c == 0), "{summary}\n{stderr}");
    assert_eq!(i.registrations.len(), started);
    assert_eq!(
        i.deregistrations as usize, started,
        "every agent deregistered"
    );
    assert!(i.sessions.is_empty());
    drop(i);
    // No process left that runs from the test's directories (agents, tools, the launcher).
    let left = procs::processes_with(&e.h.dir.path().display().to_string());
    assert!(left.is_empty(), "{left:?}");
    // Nothing of a task left in any agent's data directory.
    for dir in std::fs::read_dir(&agents).unwrap().flatten() {
        let tasks = dir.path().join("tasks");
        if tasks.exists() {
            let left: Vec<_> = std::fs::read_dir(&tasks).unwrap().flatten().collect();
            assert!(left.is_empty(), "{}: {left:?}", tasks.display());
        }
    }
}

#[tokio::test]
async fn queue_depth_needs_the_queue_token_which_cannot_take_tasks() {
    let cp = ControlPlane::start().await;
    cp.enqueue("q1");
    cp.enqueue("q2");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = cp.url.join("api/agent/v1/queue").unwrap();
    let get = |token: &'static str| http.get(url.clone()).bearer_auth(token).send();
    let answer: Value =
        serde_json::from_str(&get(QUEUE_TOKEN).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(answer["pending"], 2);
    assert_eq!(answer["running"], 0);
    for other in ["pool-token", "session-1", ""] {
        assert_eq!(get(other).await.unwrap().status(), 401, "{other:?}");
    }
    // The queue token is not a pool token: it cannot register, so it never holds a task.
    let register = http
        .post(cp.url.join("api/agent/v1/register").unwrap())
        .bearer_auth(QUEUE_TOKEN)
        .body(json!({"name": "x", "version": "0", "os": "linux", "cpu_platform": "linux_amd64", "driver": "local", "runtime": "vm", "concurrency": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 401);
    // A leased task counts as running; one whose lease expired unacknowledged as pending again.
    {
        let mut i = cp.lock();
        let id = i.queue.pop_front().unwrap();
        i.tasks.get_mut(&id).unwrap().leased_at = Some(std::time::Instant::now());
    }
    assert_eq!(queue_depth::counts(&cp.lock()), (1, 1));
    {
        let mut i = cp.lock();
        i.lease = Duration::ZERO;
    }
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(queue_depth::counts(&cp.lock()), (2, 0));
}
