//! Protocol v1.1 (`docs/protocol.md`) against the fake control plane: no final status lost on
//! `409 log_incomplete`, acknowledged log bytes never sent again, a hung chunk bounded by its
//! deadline, the signal budget (one cancel through the real `scalr-agent run`, and 48 tasks
//! canceled at once across three agents), idempotent acquisition, nothing sent once a task is
//! gone, the 403 wording, and a v1 server getting the v1 behaviour.

use std::time::{Duration, Instant};

use scalr_agent::agent::AgentError;
use scalr_agent::control::ControlError;
use sha2::{Digest, Sha256};

use crate::support::control_plane::{ControlPlane, Fault, Version};
use crate::support::daemon::{Daemon, Rig};
use crate::support::executor::{FakeExecutor, Script};
use crate::support::procs::{marker, processes_with};

const LONG: Duration = Duration::from_secs(60);
/// The signal budget: at most 2 requests per task per second over any 5 s window.
const WINDOW: Duration = Duration::from_secs(5);
const BUDGET: usize = 10;

/// A log of `n` chunks of assorted sizes (about 60 KB each).
fn chunks(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|c| (0..(60_000 + c * 977)).map(|i| (i * 7 + c) as u8).collect())
        .collect()
}

/// The log chunks a task's server received never overlap: nothing acknowledged was re-sent.
fn assert_contiguous(cp: &ControlPlane, id: &str) {
    let t = cp.task(id);
    let mut next = 0u64;
    for &(offset, len) in t.log_puts.iter().filter(|(_, len)| *len > 0) {
        assert_eq!(
            offset, next,
            "a chunk re-sent acknowledged bytes: {:?}",
            t.log_puts
        );
        next += len as u64;
    }
    assert_eq!(next, t.log.len() as u64);
}

#[tokio::test]
async fn a_lost_log_tail_is_sent_again_from_the_committed_offset_then_one_final() {
    let rig = Rig::new().await;
    let script = Script {
        chunks: chunks(5),
        pause: Duration::from_millis(5),
        ..Script::default()
    };
    // The whole log was acknowledged; then a failover loses everything past byte 70 000.
    rig.cp.fail_next("finish", [Fault::LoseLogTail(70_000)]);
    rig.queue("t1", script.clone());
    let a = rig.start("agent-a", &[]);
    let f = rig.cp.wait_finished("t1", LONG).await;
    a.stop().await.unwrap();

    let expected = FakeExecutor::expected_log(&script);
    let t = rig.cp.task("t1");
    assert_eq!(f["status"], "succeeded");
    assert_eq!(t.finishes.len(), 1, "{:#?}", t.finishes);
    assert_eq!(
        t.finish_calls, 2,
        "refused once (log_incomplete), then accepted"
    );
    assert_eq!(t.log, expected, "the log is whole and in order");
    assert_eq!(f["log_size"], expected.len());
    assert_eq!(f["log_sha256"], hex::encode(Sha256::digest(&expected)));
    // Only the missing bytes went again, from the server's offset.
    let rewind = t
        .log_puts
        .windows(2)
        .find(|w| w[1].0 < w[0].0 + w[0].1 as u64)
        .map(|w| w[1].0);
    assert_eq!(rewind, Some(70_000), "{:?}", t.log_puts);
    let sent: usize = t.log_puts.iter().map(|(_, len)| len).sum();
    assert_eq!(sent, 2 * expected.len() - 70_000, "{:?}", t.log_puts);
    assert!(
        std::fs::read_dir(rig.dir.path().join("spool"))
            .unwrap()
            .next()
            .is_none(),
        "the spool is removed once the finish is accepted"
    );
}

#[tokio::test]
async fn acknowledged_log_chunks_are_never_sent_again() {
    let rig = Rig::new().await;
    rig.queue(
        "t1",
        Script {
            chunks: chunks(30),
            pause: Duration::from_millis(2),
            ..Script::default()
        },
    );
    let a = rig.start("agent-a", &[]);
    let f = rig.cp.wait_finished("t1", LONG).await;
    a.stop().await.unwrap();
    assert_eq!(f["status"], "succeeded");
    assert_eq!(rig.cp.task("t1").finish_calls, 1);
    // About 1.8 MB of log: before v1.1 its first MiB went a second time before the finish.
    assert!(rig.cp.task("t1").log.len() > 1 << 20);
    assert_contiguous(&rig.cp, "t1");
}

/// Queues `t1` (the default script), runs a daemon until `t1` finished, stops it; returns the
/// finish and how long it took from the daemon's start.
async fn run_t1_timed(rig: &Rig) -> (serde_json::Value, Duration) {
    rig.cp.enqueue("t1");
    let started = Instant::now();
    let a = rig.start("agent-a", &[]);
    let f = rig.cp.wait_finished("t1", LONG).await;
    let took = started.elapsed();
    a.stop().await.unwrap();
    (f, took)
}

#[tokio::test]
async fn a_hung_chunk_holds_back_the_finish_only_for_its_deadline() {
    let rig = Rig::new().await;
    // The first chunk hangs (the server holds it for a minute before answering).
    rig.cp
        .fail_next("log", [Fault::Delay(Duration::from_secs(60))]);
    let (f, took) = run_t1_timed(&rig).await;
    assert_eq!(f["status"], "succeeded");
    assert_eq!(
        rig.cp.task("t1").log,
        FakeExecutor::expected_log(&Script::default())
    );
    assert!(
        rig.cp.task_hits("t1", "log") >= 2,
        "the hung chunk was sent again"
    );
    // The deadline of a small chunk is 5 s; the ordinary request timeout (30 s) is far off.
    assert!(
        took < Duration::from_secs(15),
        "the finish came after {took:?}"
    );
}

#[tokio::test]
async fn a_cancel_ignored_for_the_whole_grace_stays_within_the_signal_budget() {
    let s = Daemon::new().await;
    let m = marker();
    s.enqueue(
        "stubborn",
        &format!("trap '' INT; echo hook-started; sleep {m}; echo never-printed"),
    );
    let mut agent = s.start("budget-agent", &[("SCALR_AGENT_CANCEL_GRACE", "8s")]);
    s.wait_log(&agent, "stubborn", "hook-started").await;
    let canceled = Instant::now();
    s.cp.signal("stubborn", "cancel");
    let f = s.finished(&agent, "stubborn").await;
    let took = canceled.elapsed();
    assert_eq!(f["status"], "canceled", "{f:#}");
    assert!(
        took >= Duration::from_secs(8),
        "the grace ran out: {took:?}"
    );
    assert!(!s.log("stubborn").contains("never-printed"));
    let polls = s.cp.task_hits("stubborn", "signal");
    let worst = s.cp.max_in_window("stubborn", "signal", WINDOW);
    assert!(
        worst <= BUDGET,
        "{worst} signal polls within 5 s ({polls} in all)"
    );
    // Every poll carried a cursor, and after the cancel the agent asked past it.
    let cursors = s.cp.task("stubborn").signal_cursors;
    assert!(cursors.iter().all(Option::is_some), "{cursors:?}");
    assert_eq!(cursors.last(), Some(&Some(1)), "{cursors:?}");
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(agent.exit().await.success(), "{}", agent.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_eight_tasks_canceled_at_once_stay_within_the_signal_budget() {
    let rig = Rig::new().await;
    *rig.exec.default.lock().unwrap() = Script {
        work: Duration::from_secs(120),
        // The tool ignores SIGINT: only the kill after the grace ends it.
        cancel_takes: Duration::from_secs(120),
        ..Script::default()
    };
    let agents = rig.start_several(
        3,
        &[
            ("SCALR_AGENT_CONCURRENCY", "16"),
            ("SCALR_AGENT_CANCEL_GRACE", "6s"),
        ],
    );
    let ids: Vec<String> = (0..48).map(|n| format!("t{n}")).collect();
    for id in &ids {
        rig.cp.enqueue(id);
    }
    rig.wait_seen("48 tasks running", LONG, |s| s.started.len() == 48)
        .await;
    for id in &ids {
        rig.cp.signal(id, "cancel");
    }
    rig.wait_seen("48 tasks canceled", LONG, |s| s.canceled.len() == 48)
        .await;
    // The grace passes with every tool ignoring the cancel; then the force-cancel.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for id in &ids {
        rig.cp.signal(id, "force-cancel");
    }
    for id in &ids {
        let f = rig.cp.wait_finished(id, LONG).await;
        assert_eq!(f["status"], "canceled", "{id}: {f:#}");
    }
    let mut total = 0;
    for id in &ids {
        let worst = rig.cp.max_in_window(id, "signal", WINDOW);
        assert!(worst <= BUDGET, "{id}: {worst} signal polls within 5 s");
        total += rig.cp.task_hits(id, "signal");
        assert_eq!(rig.cp.task(id).finishes.len(), 1);
    }
    eprintln!("signal polls of 48 canceled tasks: {total}");
    for a in agents {
        a.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_retried_acquire_after_a_lost_answer_gets_the_same_task_at_once() {
    let rig = Rig::new().await;
    // The server hands the task out, then the answer is lost on the way.
    rig.cp.fail_next("acquire", [Fault::DropAfter]);
    let (f, took) = run_t1_timed(&rig).await;
    assert_eq!(f["status"], "succeeded");
    let t = rig.cp.task("t1");
    assert_eq!(t.handed_to.len(), 1, "handed out once: {:?}", t.handed_to);
    // Not after the 30 s lease of the lost answer.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let i = rig.cp.lock();
    let first = i.acquires[0]["request_id"].as_str().unwrap().to_string();
    assert_eq!(
        i.acquires[1]["request_id"],
        first.as_str(),
        "the retry repeats the id"
    );
    assert!(
        i.acquires
            .iter()
            .skip(2)
            .all(|a| a["request_id"] != first.as_str()),
        "a new acquire is a new request"
    );
}

#[tokio::test]
async fn nothing_is_sent_for_a_task_once_it_is_gone() {
    let rig = Rig::new().await;
    rig.queue(
        "t1",
        Script {
            chunks: (0..400)
                .map(|n| format!("line {n}\n").into_bytes())
                .collect(),
            pause: Duration::from_millis(50),
            work: Duration::from_secs(60),
            cancel_takes: Duration::from_secs(60),
            steps: vec![(
                "init",
                scalr_agent::task::result::StepKind::Init,
                scalr_agent::task::result::StepStatus::Succeeded,
            )],
            ..Script::default()
        },
    );
    let a = rig.start("agent-a", &[]);
    rig.cp
        .wait_for("some log", LONG, |i| i.tasks["t1"].log.len() > 20)
        .await;
    rig.cp.withdraw("t1");
    rig.wait_seen("the task killed", LONG, |s| {
        s.killed.contains(&"t1".to_string())
    })
    .await;
    // Time for anything the agent would still send (signal polls, chunks, steps, a finish).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = rig
        .cp
        .requests_after_refusal("t1", Duration::from_millis(500));
    assert!(late.is_empty(), "sent after the 410: {late:?}");
    assert!(rig.cp.task("t1").finishes.is_empty());
    a.stop().await.unwrap();
    assert!(
        std::fs::read_dir(rig.dir.path().join("spool"))
            .unwrap()
            .next()
            .is_none(),
        "the spool of a task gone is dropped"
    );
}

#[tokio::test]
async fn a_403_on_registration_is_reported_as_403() {
    let rig = Rig::new().await;
    rig.cp.fail_next("register", [Fault::Status(403)]);
    let a = rig.start("agent-a", &[]);
    let err = tokio::time::timeout(LONG, a.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            AgentError::Control(ControlError::PoolTokenRejected { .. })
        ),
        "{err:?}"
    );
    assert!(
        text.contains("403 Forbidden") && !text.contains("401"),
        "{text}"
    );
}

#[tokio::test]
async fn a_v1_server_gets_the_v1_behaviour() {
    let rig = Rig::new().await;
    rig.cp.lock().version = Version::V1;
    rig.queue(
        "t1",
        Script {
            work: Duration::from_secs(60),
            cancel_takes: Duration::from_secs(6),
            ..Script::default()
        },
    );
    let a = rig.start("agent-a", &[]);
    rig.wait_seen("started", LONG, |s| !s.started.is_empty())
        .await;
    // A v1 server answers the current signal to every poll at once.
    rig.cp.signal("t1", "cancel");
    let f = rig.cp.wait_finished("t1", LONG).await;
    a.stop().await.unwrap();
    assert_eq!(f["status"], "canceled");
    let t = rig.cp.task("t1");
    assert!(
        t.signal_cursors.iter().all(Option::is_none),
        "no cursor to a v1 server"
    );
    let worst = rig.cp.max_in_window("t1", "signal", WINDOW);
    assert!(worst <= BUDGET, "{worst} signal polls within 5 s");
    let i = rig.cp.lock();
    assert_eq!(
        i.registrations[0]["protocol"], "1.1",
        "the agent offers v1.1"
    );
    assert!(
        i.acquires.iter().all(|a| a.get("request_id").is_none()),
        "no acquire ids to a v1 server"
    );
    // The log and the finish are v1's (the extra finish field is ignored by a v1 server).
    assert_eq!(t.log, FakeExecutor::expected_log(&Script::default()));
    assert_eq!(t.finishes.len(), 1);
}

/// The lease of the lease tests, with the fake's 200 ms heartbeats.
const LEASE: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_millis(200);

/// Kills what is left of a hook whose agent was killed.
fn kill_leftovers(marker: &str) {
    for (pid, _) in processes_with(marker) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn a_dead_agent_s_run_is_ended_by_the_server_within_the_lease() {
    let s = Daemon::new().await;
    s.cp.lock().lease = LEASE;
    let m = marker();
    s.enqueue("orphan", &format!("echo hook-started; sleep {m}"));
    let mut agent = s.start("doomed-agent", &[]);
    s.wait_log(&agent, "orphan", "hook-started").await;
    // kill -9, and the disk is thrown away (Fargate, Cloud Run): nobody will finish it.
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let died = Instant::now();
    let _ = agent.exit().await;
    std::fs::remove_dir_all(s.h.data_dir()).unwrap();
    s.cp.wait_for("the server ended the run", LONG, |i| {
        i.tasks["orphan"].ended_by_server.is_some()
    })
    .await;
    let ended = s.cp.task("orphan").ended_by_server.unwrap();
    let took = ended.duration_since(died);
    eprintln!("agent death to run ended: {took:?} (lease {LEASE:?})");
    // The last renewal came before the death: the lease ran out at most `LEASE` later; the
    // fake checks expiry every 20 ms.
    assert!(
        took <= LEASE + HEARTBEAT + Duration::from_millis(300),
        "{took:?}"
    );
    // Another agent takes the pool over; no second final from anyone.
    let mut other = s.start("second-agent", &[]);
    s.cp.wait_for("the second agent beats", LONG, |i| i.heartbeats.len() > 40)
        .await;
    let t = s.cp.task("orphan");
    assert_eq!(t.finishes.len(), 1, "{:#?}", t.finishes);
    assert_eq!(t.finishes[0]["status"], "errored");
    assert_eq!(t.finishes[0]["error"], "agent lost");
    assert_eq!(t.finish_calls, 0, "no agent sent a final");
    // Its token is revoked.
    assert!(t.withdrawn);
    other.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(other.exit().await.success(), "{}", other.stderr());
    kill_leftovers(&m);
}

#[tokio::test]
async fn a_network_cut_past_the_lease_stops_the_tool_before_expiry_and_nothing_follows() {
    let s = Daemon::new().await;
    s.cp.lock().lease = LEASE;
    let m = marker();
    // The tool ignores SIGINT for the whole grace (600 s here): only the fence's kill stops it.
    s.enqueue(
        "cut",
        &format!("trap '' INT; echo hook-started; sleep {m}; echo never-printed"),
    );
    let mut agent = s.start("cut-agent", &[]);
    s.wait_log(&agent, "cut", "hook-started").await;
    s.cp.cut(LEASE + Duration::from_secs(10));
    let cut = Instant::now();
    // The tool is stopped...
    agent
        .until("the tool stopped", || processes_with(&m).is_empty())
        .await;
    let stopped = Instant::now();
    // ...before the server's lease runs out.
    s.cp.wait_for("the server ended the run", LONG, |i| {
        i.tasks["cut"].ended_by_server.is_some()
    })
    .await;
    let expired = s.cp.task("cut").ended_by_server.unwrap();
    assert!(
        stopped < expired,
        "the tool outlived the lease: stopped {:?}, expired {:?} after the cut",
        stopped - cut,
        expired - cut
    );
    // Then the network comes back: nothing is sent for the task.
    s.cp.wait_for("the network back and some beats", LONG, |i| {
        i.cut_until
            .is_some_and(|u| Instant::now() > u + Duration::from_secs(2))
    })
    .await;
    let late: Vec<_> =
        s.cp.lock()
            .task_requests
            .get("cut")
            .into_iter()
            .flatten()
            .filter(|(_, at)| *at > expired)
            .map(|(e, _)| e.clone())
            .collect();
    assert!(late.is_empty(), "sent after the lease expired: {late:?}");
    let t = s.cp.task("cut");
    assert_eq!(t.finish_calls, 0);
    assert_eq!(t.finishes.len(), 1);
    assert_eq!(t.finishes[0]["error"], "agent lost");
    assert!(
        agent.stderr().contains("lease could not be renewed"),
        "{}",
        agent.stderr()
    );
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(agent.exit().await.success(), "{}", agent.stderr());
}

#[tokio::test]
async fn a_cut_shorter_than_the_fence_loses_nothing() {
    let rig = Rig::new().await;
    rig.cp.lock().lease = LEASE;
    let script = Script {
        chunks: (0..60)
            .map(|n| format!("line {n}\n").into_bytes())
            .collect(),
        pause: Duration::from_millis(50),
        ..Script::default()
    };
    rig.queue("t1", script.clone());
    let a = rig.start("agent-a", &[]);
    rig.cp
        .wait_for("some log", LONG, |i| !i.tasks["t1"].log.is_empty())
        .await;
    // Shorter than lease − 2 heartbeats (2.6 s): the task goes on, nothing is lost.
    rig.cp.cut(Duration::from_secs(2));
    let f = rig.cp.wait_finished("t1", LONG).await;
    a.stop().await.unwrap();
    assert_eq!(f["status"], "succeeded", "{f:#}");
    let t = rig.cp.task("t1");
    assert!(t.ended_by_server.is_none());
    assert_eq!(t.log, FakeExecutor::expected_log(&script));
    assert!(rig.exec.seen.lock().unwrap().canceled.is_empty());
}
