//! `kill -9` of the real `scalr-agent run` binary mid-task, then a restart on the same data dir:
//! the task is reported errored ("agent restarted"), what was spooled arrives, and nothing of
//! the killed task keeps running.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::agent::LONG;
use crate::support::control_plane::Fault;
use crate::support::daemon::Daemon;
use crate::support::procs::{nothing_left, processes_with};

/// Whether the log of a task in the spool `dir` contains `text`.
fn in_spool(dir: &std::path::Path, text: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            std::fs::read(task.path().join("log"))
                .is_ok_and(|log| String::from_utf8_lossy(&log).contains(text))
        })
}

#[tokio::test]
async fn kill_9_mid_task_then_restart_reports_errored_flushes_and_leaves_no_process() {
    let d = Daemon::new().await;
    let cp = &d.cp;
    // A sleep of a unique number of seconds: its command line (and the hook shell's) is the
    // marker to look for.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("3{:08}", nanos / 10);
    let hook = format!(
        "echo hook-started; sleep 1; echo spooled-line; sleep {marker}; echo never-printed"
    );
    let mut doc = d.doc("crash-1", "crash", &hook);
    doc["run"]["id"] = "run-crash".into();
    d.enqueue_doc("crash-1", doc);
    let agent = || d.agent("crash-agent").env("SCALR_AGENT_LOG_FORMAT", "json");

    let mut first = agent().run();
    cp.wait_for("the hook started", LONG, |i| {
        String::from_utf8_lossy(&i.tasks["crash-1"].log).contains("hook-started")
    })
    .await;
    // From now on every log chunk is refused: the next line only reaches the spool.
    cp.fail_next("log", std::iter::repeat_n(Fault::Status(503), 100_000));
    let spool = d.h.data_dir().join("spool");
    first
        .until("the next line in the spool", || {
            in_spool(&spool, "spooled-line")
        })
        .await;
    assert!(
        !processes_with(&marker).is_empty(),
        "the hook's sleep is running"
    );
    let log = String::from_utf8_lossy(&cp.task("crash-1").log).into_owned();
    assert!(!log.contains("spooled-line"), "{log}");
    first.kill().await; // SIGKILL
    assert!(cp.task("crash-1").finishes.is_empty());

    // The killed task's processes go away by themselves (parent-death signal to the helper).
    nothing_left(&marker, Duration::from_secs(5)).await;

    cp.lock().faults.clear();
    let mut second = agent().run();
    let f = cp.wait_finished("crash-1", LONG).await;
    let log = String::from_utf8_lossy(&cp.task("crash-1").log).into_owned();
    assert_eq!(f["status"], "errored", "{f:#}\n{log}");
    assert!(
        f["error"]
            .as_str()
            .is_some_and(|e| e.contains("agent restarted")),
        "{f:#}"
    );
    assert_eq!(f["log_size"].as_u64(), Some(log.len() as u64));
    let started = log.find("hook-started").expect("first line kept");
    let spooled = log.find("spooled-line").unwrap_or_else(|| panic!("{log}"));
    assert!(started < spooled, "{log}");
    assert!(!log.contains("never-printed"), "{log}");
    assert_eq!(cp.task("crash-1").finishes.len(), 1);
    assert!(processes_with(&marker).is_empty());

    let status = second.stop().await;
    assert!(status.success(), "{status:?}");

    // The agent's own log: JSON lines; from registration on they name the agent and its pool.
    let err = second.stderr();
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ready = lines
        .iter()
        .position(|l| l["event"] == "ready to receive tasks")
        .unwrap_or_else(|| panic!("{err}"));
    // The process's own start-up times: since `main` began, and since the kernel made the
    // process (clock-tick resolution), which is never shorter; neither longer than this test.
    let age = lines[ready]["process_age_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{err}"));
    let startup = lines[ready]["startup_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(age < 600_000, "{age} ms");
    assert!(
        startup <= age + 20,
        "startup {startup} ms, process age {age} ms"
    );
    for l in &lines[ready..] {
        assert_eq!(l["agent"], "crash-agent", "{l}");
        assert_eq!(l["pool"], "test-pool", "{l}");
        assert_eq!(l["pool_id"], "apool-1", "{l}");
        assert!(
            l["agent_id"]
                .as_str()
                .is_some_and(|s| s.starts_with("agt-")),
            "{l}"
        );
    }
}
