//! The daemon against the fake control plane, with the fake executor: registration,
//! heartbeats, logs despite faults, exactly-once finish, cancellation, single mode, slots,
//! crash recovery, several agents, malformed answers, drain and 401s.

use std::time::Duration;

use scalr_agent::agent::executor::Artifact;
use scalr_agent::agent::{self, AgentError};
use scalr_agent::control::ControlError;

use crate::support::control_plane::{Fault, task_doc};
use crate::support::daemon::Rig;
use crate::support::executor::{FakeExecutor, Script};

const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn registers_heartbeats_and_runs_a_task_once() {
    let rig = Rig::new().await;
    rig.cp.enqueue("t1");
    let a = rig.start("agent-a", &[("SCALR_AGENT_CONCURRENCY", "2")]);
    let finish = rig.cp.wait_finished("t1", LONG).await;
    assert_eq!(finish["status"], "succeeded");
    let t = rig.cp.task("t1");
    assert_eq!(t.log, FakeExecutor::expected_log(&Script::default()));
    assert_eq!(t.finish_calls, 1);
    assert_eq!(
        rig.exec.seen.lock().unwrap().inputs["t1"],
        ["configuration.tar.gz"]
    );
    rig.cp
        .wait_for("two heartbeats", LONG, |i| i.heartbeats.len() >= 2)
        .await;
    {
        let i = rig.cp.lock();
        let r = &i.registrations[0];
        assert_eq!(r["name"], "agent-a");
        assert_eq!(r["driver"], "local");
        assert_eq!(r["concurrency"], 2);
        assert!(matches!(
            r["cpu_platform"].as_str(),
            Some("linux_amd64" | "linux_arm64")
        ));
        let last = i.heartbeats.last().unwrap();
        assert_eq!(last["status"], "idle");
        assert_eq!(last["free_slots"], 2);
    }
    a.stop().await.unwrap();
    assert_eq!(rig.cp.lock().deregistrations, 1);
}

#[tokio::test]
async fn log_arrives_byte_for_byte_and_finish_once_despite_faults() {
    let rig = Rig::new().await;
    let chunks: Vec<Vec<u8>> = (0..40u32)
        .map(|n| {
            (0..(n * 997 % 70_000 + 1))
                .map(|i| (i * 31 + n) as u8)
                .collect()
        })
        .collect();
    let script = Script {
        chunks,
        pause: Duration::from_millis(5),
        ..Script::default()
    };
    rig.cp.fail_next(
        "log",
        [
            Fault::Status(503),
            Fault::DropAfter,
            Fault::Status(500),
            Fault::DropAfter,
            Fault::Delay(Duration::from_millis(300)),
            Fault::DropAfter,
        ],
    );
    rig.cp.fail_next(
        "finish",
        [Fault::Status(502), Fault::DropAfter, Fault::DropAfter],
    );
    rig.cp
        .fail_next("heartbeat", [Fault::Status(503), Fault::Status(503)]);
    rig.queue("t1", script.clone());
    let a = rig.start("agent-a", &[]);
    let finish = rig.cp.wait_finished("t1", LONG).await;
    assert_eq!(finish["status"], "succeeded");
    let t = rig.cp.task("t1");
    assert!(
        t.log == FakeExecutor::expected_log(&script),
        "the log differs"
    );
    assert_eq!(t.finishes.len(), 1);
    rig.cp
        .wait_for("finish retried after the lost answers", LONG, |i| {
            i.tasks["t1"].finish_calls >= 3
        })
        .await;
    a.stop().await.unwrap();
    assert_eq!(rig.cp.task("t1").finishes.len(), 1);
    assert!(
        std::fs::read_dir(rig.dir.path().join("spool"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn graceful_and_forced_cancellation_reach_the_executor() {
    let rig = Rig::new().await;
    let slow = Script {
        work: Duration::from_secs(60),
        cancel_takes: Duration::from_secs(60),
        ..Script::default()
    };
    rig.queue(
        "soft",
        Script {
            cancel_takes: Duration::from_millis(50),
            ..slow.clone()
        },
    );
    rig.queue("hard", slow);
    let a = rig.start("agent-a", &[("SCALR_AGENT_CONCURRENCY", "2")]);
    rig.wait_seen("both started", LONG, |s| s.started.len() == 2)
        .await;
    rig.cp.signal("soft", "cancel");
    let f = rig.cp.wait_finished("soft", Duration::from_secs(5)).await;
    assert_eq!(f["status"], "canceled");
    rig.cp.signal("hard", "cancel");
    rig.wait_seen("graceful cancel seen", LONG, |s| s.canceled.len() == 2)
        .await;
    rig.cp.signal("hard", "force-cancel");
    let f = rig.cp.wait_finished("hard", Duration::from_secs(5)).await;
    assert_eq!(f["status"], "canceled");
    {
        let seen = rig.exec.seen.lock().unwrap();
        assert_eq!(seen.canceled, ["soft", "hard"]);
        assert_eq!(seen.killed, ["hard"]);
    }
    a.stop().await.unwrap();
}

#[tokio::test]
async fn single_mode_runs_exactly_one_task_then_exits() {
    let rig = Rig::new().await;
    rig.cp.enqueue("t1");
    rig.cp.enqueue("t2");
    let a = rig.start(
        "agent-a",
        &[("SCALR_SINGLE", "true"), ("SCALR_AGENT_CONCURRENCY", "3")],
    );
    tokio::time::timeout(LONG, a.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(rig.cp.task("t1").finishes.len(), 1);
    assert!(rig.cp.task("t2").handed_to.is_empty());
    assert_eq!(rig.exec.seen.lock().unwrap().started, ["t1"]);
    assert_eq!(rig.cp.lock().deregistrations, 1);

    // With nothing queued, single mode gives up after its wait bound.
    let b = rig.start(
        "agent-b",
        &[
            ("SCALR_AGENT_SINGLE", "1"),
            ("SCALR_AGENT_SINGLE_WAIT_TIMEOUT", "300ms"),
        ],
    );
    rig.cp.lock().queue.clear();
    tokio::time::timeout(LONG, b.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn slots_bound_concurrency() {
    let rig = Rig::new().await;
    *rig.exec.default.lock().unwrap() = Script {
        work: Duration::from_millis(150),
        ..Script::default()
    };
    for n in 0..7 {
        rig.cp.enqueue(&format!("t{n}"));
    }
    let a = rig.start("agent-a", &[("SCALR_AGENT_CONCURRENCY", "2")]);
    for n in 0..7 {
        rig.cp.wait_finished(&format!("t{n}"), LONG).await;
    }
    assert_eq!(rig.exec.seen.lock().unwrap().max_concurrent, 2);
    assert!(
        rig.cp
            .lock()
            .heartbeats
            .iter()
            .all(|h| h["free_slots"].as_u64().unwrap() <= 2)
    );
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_crash_mid_task_is_reported_errored_after_restart_with_the_spooled_log() {
    let rig = Rig::new().await;
    rig.queue(
        "t1",
        Script {
            chunks: vec![b"first part\n".to_vec(), b"second part\n".to_vec()],
            pause: Duration::from_millis(100),
            work: Duration::from_secs(60),
            ..Script::default()
        },
    );
    let a = rig.start("agent-a", &[]);
    rig.cp
        .wait_for("both chunks written", LONG, |i| {
            i.tasks["t1"].log.len() >= 11
        })
        .await;
    // From now on the server loses log chunks: the rest is only in the spool.
    rig.cp
        .fail_next("log", std::iter::repeat_n(Fault::Status(503), 8));
    let spooled = rig.dir.path().join("spool/t1/log");
    crate::support::wait::until("the second chunk in the spool", LONG, || {
        std::fs::read(&spooled).is_ok_and(|l| String::from_utf8_lossy(&l).contains("second part"))
    })
    .await;
    a.handle.abort(); // The process "dies": nothing runs any more, the disk stays.
    let _ = a.handle.await;
    assert!(rig.cp.task("t1").finishes.is_empty());

    let b = rig.start("agent-a", &[]);
    let f = rig.cp.wait_finished("t1", LONG).await;
    assert_eq!(f["status"], "errored");
    assert_eq!(f["error"], "agent restarted");
    let log = String::from_utf8(rig.cp.task("t1").log).unwrap();
    assert!(log.starts_with("first part\nsecond part\n"), "{log}");
    assert!(
        log.contains("the agent restarted while this task was running"),
        "{log}"
    );
    b.stop().await.unwrap();
    assert!(
        std::fs::read_dir(rig.dir.path().join("spool"))
            .unwrap()
            .next()
            .is_none()
    );
    // The restarted agent took its own name back (state file), not a conflict.
    let previous = rig.cp.lock().registrations[1]["previous_agent_id"].clone();
    assert!(
        previous.as_str().is_some_and(|p| p.starts_with("agt-")),
        "{previous}"
    );
}

#[tokio::test]
async fn three_agents_run_thirty_tasks_each_exactly_once() {
    let rig = Rig::new().await;
    for n in 0..30 {
        rig.cp.enqueue(&format!("t{n}"));
    }
    let agents = rig.start_several(3, &[("SCALR_AGENT_CONCURRENCY", "2")]);
    for n in 0..30 {
        rig.cp.wait_finished(&format!("t{n}"), LONG).await;
    }
    for a in agents {
        a.stop().await.unwrap();
    }
    let mut started = rig.exec.seen.lock().unwrap().started.clone();
    started.sort();
    started.dedup();
    assert_eq!(started.len(), 30);
    assert_eq!(rig.exec.seen.lock().unwrap().started.len(), 30);
    let i = rig.cp.lock();
    for (id, t) in &i.tasks {
        assert_eq!(t.handed_to.len(), 1, "{id}");
        assert_eq!(t.finishes.len(), 1, "{id}");
    }
    let agents_used: std::collections::HashSet<_> =
        i.tasks.values().map(|t| t.handed_to[0].clone()).collect();
    assert!(agents_used.len() >= 2, "{agents_used:?}");
}

#[tokio::test]
async fn malformed_answers_fail_that_task_and_the_agent_keeps_serving() {
    let rig = Rig::new().await;
    rig.cp.fail_next(
        "acquire",
        [Fault::Raw("{not json".into()), Fault::Raw("[]".into())],
    );
    let mut bad = task_doc("bad-action");
    bad["action"] = "destroy-everything".into();
    rig.cp.enqueue_doc("bad-action", bad);
    rig.cp
        .enqueue_doc("bad-json", serde_json::Value::String("{\"id\": ".into()));
    let mut big = task_doc("too-big");
    big["run"]["source"] = "x".repeat(2 << 20).into();
    rig.cp.enqueue_doc("too-big", big);
    rig.cp.enqueue("good");
    let a = rig.start("agent-a", &[]);
    let f = rig.cp.wait_finished("bad-action", LONG).await;
    assert_eq!(f["status"], "errored");
    assert!(f["error"].as_str().unwrap().contains("action"), "{f}");
    let f = rig.cp.wait_finished("bad-json", LONG).await;
    assert!(
        f["error"].as_str().unwrap().contains("not valid JSON"),
        "{f}"
    );
    let f = rig.cp.wait_finished("too-big", LONG).await;
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("larger than the 1048576-byte limit"),
        "{f}"
    );
    assert!(String::from_utf8_lossy(&rig.cp.task("too-big").log).contains("larger than"));
    assert_eq!(
        rig.cp.wait_finished("good", LONG).await["status"],
        "succeeded"
    );
    assert_eq!(rig.exec.seen.lock().unwrap().started, ["good"]);
    a.stop().await.unwrap();
}

#[tokio::test]
async fn drain_lets_the_running_task_finish_and_grace_shutdown_cancels() {
    let rig = Rig::new().await;
    rig.queue(
        "t1",
        Script {
            work: Duration::from_millis(700),
            ..Script::default()
        },
    );
    let a = rig.start("agent-a", &[("SCALR_AGENT_WORKER_ON_STOP_ACTION", "drain")]);
    rig.wait_seen("started", LONG, |s| !s.started.is_empty())
        .await;
    rig.cp.enqueue("t2");
    a.stop().await.unwrap();
    assert_eq!(rig.cp.task("t1").finishes[0]["status"], "succeeded");
    assert!(
        rig.cp.task("t2").handed_to.is_empty(),
        "a draining agent took a task"
    );
    assert!(rig.exec.seen.lock().unwrap().canceled.is_empty());
    assert!(rig.exec.seen.lock().unwrap().terminated.is_empty());

    rig.cp.lock().queue.clear();
    rig.queue(
        "t3",
        Script {
            work: Duration::from_secs(60),
            ..Script::default()
        },
    );
    let b = rig.start(
        "agent-a",
        &[("SCALR_AGENT_WORKER_ON_STOP_ACTION", "grace-shutdown")],
    );
    rig.wait_seen("t3 started", LONG, |s| {
        s.started.contains(&"t3".to_string())
    })
    .await;
    b.stop().await.unwrap();
    assert_eq!(rig.cp.task("t3").finishes[0]["status"], "canceled");
    // Grace-shutdown terminates (SIGTERM); the control plane's cancel (SIGINT) is not used.
    assert_eq!(rig.exec.seen.lock().unwrap().terminated, ["t3"]);
    assert!(rig.exec.seen.lock().unwrap().canceled.is_empty());
}

#[tokio::test]
async fn a_rejected_session_re_registers_and_a_revoked_pool_token_stops() {
    let rig = Rig::new().await;
    let a = rig.start("agent-a", &[]);
    rig.cp
        .wait_for("registered", LONG, |i| i.registrations.len() == 1)
        .await;
    rig.cp.restart();
    rig.cp.enqueue("t1");
    assert_eq!(
        rig.cp.wait_finished("t1", LONG).await["status"],
        "succeeded"
    );
    assert!(rig.cp.lock().registrations.len() >= 2);
    rig.cp.revoke_pool_token();
    rig.cp.revoke_sessions();
    let err = tokio::time::timeout(LONG, a.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Control(ControlError::PoolTokenRejected { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("SCALR_AGENT_TOKEN"), "{err}");

    // A name already connected is a conflict, not a takeover.
    let rig = Rig::new().await;
    let a = rig.start(
        "twin",
        &[("SCALR_AGENT_STATE_PERSISTENCE_ENABLED", "false")],
    );
    rig.cp
        .wait_for("registered", LONG, |i| i.registrations.len() == 1)
        .await;
    let other = crate::support::dirs::tempdir();
    let b = rig.start_in(other.path(), "twin", &[]);
    let err = tokio::time::timeout(LONG, b.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("already connected"), "{err}");
    a.stop().await.unwrap();
}

#[tokio::test]
async fn step_reports_arrive_in_order_before_the_finish_despite_faults() {
    use scalr_agent::task::result::{StepKind, StepStatus};
    let rig = Rig::new().await;
    // Outages are retried (by the HTTP client, then by the reporter); a refusal skips that
    // one report: the first report meets five 503s, then a 422.
    rig.cp.fail_next(
        "steps",
        [
            Fault::Status(503),
            Fault::Status(503),
            Fault::Status(503),
            Fault::Status(503),
            Fault::Status(503),
            Fault::Status(422),
        ],
    );
    rig.queue(
        "t1",
        Script {
            steps: vec![
                ("init", StepKind::Init, StepStatus::Succeeded),
                ("plan", StepKind::Plan, StepStatus::Failed),
            ],
            status: agent::executor::FinalStatus::Failed,
            ..Script::default()
        },
    );
    let a = rig.start("agent-a", &[]);
    let finish = rig.cp.wait_finished("t1", LONG).await;
    assert_eq!(finish["status"], "failed");
    let t = rig.cp.task("t1");
    let seen: Vec<(&str, &str, u64)> = t
        .steps
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
                s["index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("init", "succeeded", 0),
            ("plan", "running", 1),
            ("plan", "failed", 1)
        ],
        "{:#?}",
        t.steps
    );
    assert_eq!(t.steps[2]["kind"], "plan");
    assert_eq!(t.steps[2]["exit_code"], 1);
    assert_eq!(t.steps[2]["command"], "fake plan");
    assert_eq!(
        t.steps_at_finish,
        Some(3),
        "every step report came before the finish"
    );
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_artifact_is_streamed_and_sent_again_whole_after_a_cut() {
    let rig = Rig::new().await;
    // 50 MiB where every 8-byte word holds its own offset: a lost, repeated or reordered
    // piece cannot go unnoticed.
    const SIZE: u64 = 50 << 20;
    let plan: Vec<u8> = (0..SIZE / 8).flat_map(|i| (i * 8).to_le_bytes()).collect();
    let plan_path = rig.dir.path().join("plan.tfplan");
    std::fs::write(&plan_path, &plan).unwrap();
    // The first upload is cut off after 8 MiB, the second is answered 503.
    rig.cp
        .fail_next("artifacts", [Fault::CutUpload(8 << 20), Fault::Status(503)]);
    rig.queue(
        "t1",
        Script {
            artifacts: vec![(Artifact::PlanFile, plan_path)],
            ..Script::default()
        },
    );
    let a = rig.start_in(&rig.dir.path().join("data"), "agent-a", &[]);
    let finish = rig.cp.wait_finished("t1", Duration::from_secs(60)).await;
    assert_eq!(finish["status"], "succeeded");
    let got = rig.cp.task("t1").artifacts.remove("plan-file").unwrap();
    assert_eq!(got.len() as u64, SIZE);
    assert!(
        got == plan,
        "the uploaded plan file differs from the original"
    );
    {
        let i = rig.cp.lock();
        assert_eq!(i.cut_uploads.len(), 1);
        assert!(
            (8 << 20..SIZE as usize).contains(&i.cut_uploads[0]),
            "{:?}",
            i.cut_uploads
        );
        // Every attempt declared the size up front.
        assert_eq!(i.artifact_lengths, [Some(SIZE); 3]);
    }
    a.stop().await.unwrap();
}

/// Faults enough for every attempt a test can make: the endpoint keeps failing.
fn always(fault: Fault) -> Vec<Fault> {
    vec![fault; 100_000]
}

#[tokio::test]
async fn a_refused_artifact_is_noted_in_the_finish_which_still_arrives_once() {
    let rig = Rig::new().await;
    let files = rig.dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("plan"), b"a plan too large for the server").unwrap();
    std::fs::write(files.join("json"), b"{}").unwrap();
    // `plan-file` goes first (by name) and is refused as too large; `plan-json` is taken.
    rig.cp.fail_next("artifacts", [Fault::Status(413)]);
    rig.queue(
        "t1",
        Script {
            artifacts: vec![
                (Artifact::PlanFile, files.join("plan")),
                (Artifact::PlanJson, files.join("json")),
            ],
            ..Script::default()
        },
    );
    let a = rig.start_in(&rig.dir.path().join("data"), "agent-a", &[]);
    let finish = rig.cp.wait_finished("t1", LONG).await;
    assert_eq!(finish["status"], "succeeded");
    let error = finish["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("artifact plan-file not uploaded") && error.contains("413"),
        "{finish}"
    );
    assert!(!error.contains("plan-json"), "{finish}");
    a.stop().await.unwrap();
    let t = rig.cp.task("t1");
    assert_eq!(t.finishes.len(), 1);
    assert_eq!(t.finish_calls, 1);
    assert_eq!(t.artifacts.keys().collect::<Vec<_>>(), ["plan-json"]);
    assert_eq!(t.artifacts["plan-json"], b"{}");
    assert!(
        std::fs::read_dir(rig.dir.path().join("data/spool"))
            .unwrap()
            .next()
            .is_none(),
        "the spool was not removed after the finish"
    );
}

/// Queues `t1`, one succeeded `init` step then `work`, while every step report is answered 503.
fn queue_with_failing_step_reports(rig: &Rig, work: Duration) {
    use scalr_agent::task::result::{StepKind, StepStatus};
    rig.cp.fail_next("steps", always(Fault::Status(503)));
    rig.queue(
        "t1",
        Script {
            steps: vec![("init", StepKind::Init, StepStatus::Succeeded)],
            work,
            ..Script::default()
        },
    );
}

#[tokio::test]
async fn failing_step_reports_hold_back_the_finish_only_briefly() {
    let rig = Rig::new().await;
    queue_with_failing_step_reports(&rig, Script::default().work);
    // The report timeout is 5 s: the flush limit derived from it is well under it (and far
    // under the 30 s it used to be).
    let a = rig.start("agent-a", &[]);
    rig.wait_seen("t1 started", LONG, |s| !s.started.is_empty())
        .await;
    let finish = rig.cp.wait_finished("t1", Duration::from_secs(15)).await;
    assert_eq!(finish["status"], "succeeded");
    let t = rig.cp.task("t1");
    assert_eq!(t.steps_at_finish, Some(0), "a step report got through");
    assert_eq!(t.finishes.len(), 1);
    assert!(rig.cp.hits("steps") > 0);
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_stop_gives_up_failing_step_reports_and_the_finish_fits_the_report_timeout() {
    let rig = Rig::new().await;
    queue_with_failing_step_reports(&rig, Duration::from_secs(600));
    let mut config = rig.config(
        "agent-a",
        &[("SCALR_AGENT_WORKER_ON_STOP_ACTION", "grace-shutdown")],
    );
    // A flush far longer than the report timeout (5 s): only the stop can cut it short.
    config.agent.step_flush_limit = Some(Duration::from_secs(600));
    let a = rig.run(config);
    rig.cp
        .wait_for("a step report attempted", LONG, |i| {
            i.hits.get("steps").copied().unwrap_or(0) > 0
        })
        .await;
    a.stop().await.unwrap();
    let t = rig.cp.task("t1");
    assert_eq!(t.finishes.len(), 1, "the finish was lost");
    assert_eq!(t.finishes[0]["status"], "canceled");
    assert_eq!(t.steps_at_finish, Some(0));
    assert_eq!(rig.exec.seen.lock().unwrap().terminated, ["t1"]);
}

#[tokio::test]
async fn a_task_acquired_as_the_agent_stops_is_stopped_and_reported() {
    for action in ["grace-shutdown", "force-shutdown"] {
        let rig = Rig::new().await;
        // The acknowledgement is slow: the stop arrives between the acquisition and the
        // moment the task is acknowledged, spooled and started.
        rig.cp
            .fail_next("ack", [Fault::Delay(Duration::from_secs(2))]);
        rig.queue(
            "t1",
            Script {
                work: Duration::from_secs(600),
                cancel_takes: Duration::from_secs(600),
                ..Script::default()
            },
        );
        let a = rig.start(
            "agent-a",
            &[
                ("SCALR_AGENT_WORKER_ON_STOP_ACTION", action),
                ("SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT", "600s"),
            ],
        );
        rig.cp
            .wait_for("the ack sent", LONG, |i| {
                i.hits.get("ack").copied().unwrap_or(0) > 0
            })
            .await;
        a.stop().await.unwrap();
        let t = rig.cp.task("t1");
        assert_eq!(t.finishes.len(), 1, "{action}: the task was not reported");
        assert_eq!(t.finishes[0]["status"], "canceled", "{action}");
        assert!(
            String::from_utf8_lossy(&t.log).contains("before the task started")
                || String::from_utf8_lossy(&t.log).contains("killed before it started"),
            "{action}: {}",
            String::from_utf8_lossy(&t.log)
        );
        // Stopped before it started: the tools never ran.
        assert!(rig.exec.seen.lock().unwrap().started.is_empty(), "{action}");
    }
}

#[tokio::test]
async fn a_silent_control_plane_cannot_stretch_the_stop_window() {
    let rig = Rig::new().await;
    rig.queue(
        "t1",
        Script {
            work: Duration::from_secs(600),
            ..Script::default()
        },
    );
    let (grace, report) = (Duration::from_secs(2), Duration::from_secs(3));
    let a = rig.start(
        "agent-a",
        &[
            ("SCALR_AGENT_WORKER_ON_STOP_ACTION", "grace-shutdown"),
            ("SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT", "2s"),
            ("SCALR_AGENT_WORKER_REPORT_TIMEOUT", "3s"),
        ],
    );
    rig.wait_seen("t1 started", LONG, |s| !s.started.is_empty())
        .await;
    // From now on the control plane holds every finish and the deregistration for a minute.
    rig.cp
        .fail_next("finish", always(Fault::Delay(Duration::from_secs(60))));
    rig.cp
        .fail_next("deregister", always(Fault::Delay(Duration::from_secs(60))));
    let stopped = std::time::Instant::now();
    a.stop().await.unwrap();
    let took = stopped.elapsed();
    // Slack for a loaded machine; before, the finish and the deregistration each took their
    // own windows (and the deregistration retried 30 s attempts).
    let bound = grace + report + Duration::from_secs(4);
    assert!(took < bound, "the stop took {took:?}, over {bound:?}");
    assert!(
        rig.cp.hits("finish") > 0,
        "the finish was not even attempted"
    );
    assert!(rig.cp.task("t1").finishes.is_empty());
    // The report was not lost: it waits in the spool for the next start.
    assert_eq!(
        std::fs::read_dir(rig.dir.path().join("spool"))
            .unwrap()
            .count(),
        1
    );
}
