//! The real `scalr-agent run` binary, with the real runner and sandbox, against the fake control
//! plane: cancellation from the control plane and the stop actions, seen from inside the task
//! (a workspace hook that traps signals and prints which one arrived, so the marker lands in
//! the task's log) and from `/proc` (nothing of the task left running). Then the agent as PID 1
//! of a new PID namespace, reaping an orphan. Timing only ever bounds a poll; the hooks wait
//! for signals, never for the clock.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::procs::{marker, processes_with, stat, zombie_children};

/// Each hook prints which of these arrived.
const TRAPS: &str = "trap 'echo hook-got-INT; exit 130' INT; trap 'echo hook-got-TERM' TERM;";

/// Waits until no process's command line contains `marker`.
async fn nothing_left(marker: &str) {
    crate::support::procs::nothing_left(marker, crate::support::agent::LONG).await
}

/// The record of the pre-init hook in a finish's result.
fn hook_step(finish: &Value) -> Value {
    finish["result"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "pre-init hook"))
        .unwrap_or_else(|| panic!("no hook step in {finish:#}"))
        .clone()
}

#[tokio::test]
async fn graceful_cancel_interrupts_the_tool_and_reports_canceled_once() {
    let s = Daemon::new().await;
    let m = marker();
    s.enqueue(
        "soft",
        &format!("{TRAPS} echo hook-started; sleep {m}; echo never-printed"),
    );
    let mut agent = s.start("cancel-agent", &[]);
    s.wait_log(&agent, "soft", "hook-started").await;
    // The sleep has exec'd: a SIGINT now reaches a sleep with default dispositions (one that
    // arrives between the shell's fork and the child's reset of the traps is swallowed by the
    // child, which then sleeps on).
    agent
        .until("the hook's sleep", || {
            processes_with(&m)
                .iter()
                .any(|(_, cmd)| cmd.starts_with("sleep"))
        })
        .await;
    s.cp.signal("soft", "cancel");
    let f = s.finished(&agent, "soft").await;
    let log = s.log("soft");
    assert_eq!(f["status"], "canceled", "{f:#}\n{log}");
    assert!(log.contains("hook-got-INT"), "{log}");
    assert!(
        !log.contains("hook-got-TERM") && !log.contains("never-printed"),
        "{log}"
    );
    // The hook ended by its trap (SIGINT), long before the 600 s grace would kill it.
    let step = hook_step(&f);
    assert_eq!(step["status"], "canceled", "{step:#}");
    assert_eq!(step["exit_code"], 130, "{step:#}");
    nothing_left(&m).await;

    agent.signal(Signal::SIGTERM);
    assert!(agent.exit().await.success(), "{}", agent.stderr());
    assert_eq!(s.cp.task("soft").finishes.len(), 1);
}

#[tokio::test]
async fn forced_cancel_kills_the_whole_tree_and_reports_canceled_once() {
    let s = Daemon::new().await;
    let m = marker();
    // A daemon in its own session and a background job; the shell ignores SIGINT and SIGTERM.
    s.enqueue(
        "hard",
        &format!(
            "trap 'echo hook-got-INT' INT; trap 'echo hook-got-TERM' TERM; \
             setsid sleep {m} & sleep {m} & echo hook-started; wait; wait; echo never-printed"
        ),
    );
    let mut agent = s.start("force-cancel-agent", &[]);
    s.wait_log(&agent, "hard", "hook-started").await;
    // The daemon sleep leads its own session (once `setsid` has exec'd it).
    agent
        .until("a sleep in its own session", || {
            processes_with(&m).iter().any(|(pid, cmd)| {
                cmd.starts_with("sleep") && stat(*pid).is_some_and(|s| s.2 == *pid)
            })
        })
        .await;

    s.cp.signal("hard", "force-cancel");
    let f = s.finished(&agent, "hard").await;
    let log = s.log("hard");
    assert_eq!(f["status"], "canceled", "{f:#}\n{log}");
    // SIGKILL at once, nothing before it.
    assert!(
        !log.contains("hook-got-INT") && !log.contains("hook-got-TERM"),
        "{log}"
    );
    assert!(!log.contains("never-printed"), "{log}");
    let step = hook_step(&f);
    assert_eq!(step["status"], "canceled", "{step:#}");
    assert_eq!(step["signal"], 9, "{step:#}");
    nothing_left(&m).await;

    agent.signal(Signal::SIGTERM);
    assert!(agent.exit().await.success(), "{}", agent.stderr());
    assert_eq!(s.cp.task("hard").finishes.len(), 1);
}

#[tokio::test]
async fn drain_lets_the_running_task_finish_and_takes_no_new_task() {
    let s = Daemon::new().await;
    let m = marker();
    // The hook runs until the test sends it SIGUSR1.
    s.enqueue(
        "running",
        &format!(
            "{TRAPS} trap 'released=1' USR1; : {m}; echo hook-started; \
             while [ -z \"$released\" ]; do sleep 0.1; done; echo hook-finished"
        ),
    );
    let mut agent = s.start(
        "drain-agent",
        &[
            ("SCALR_AGENT_WORKER_ON_STOP_ACTION", "drain"),
            ("SCALR_AGENT_WORKER_DRAIN_TIMEOUT", "600s"),
        ],
    );
    s.wait_log(&agent, "running", "hook-started").await;
    // The one slot is busy, so this task waits in the queue; after the stop signal the freed
    // slot must not take it.
    s.enqueue("queued", "true");
    agent.signal(Signal::SIGTERM);
    s.wait_draining(&agent).await;
    // The hook's shell leads the stage's session (its short-lived children do not).
    let shell = processes_with(&m)
        .into_iter()
        .find(|(pid, _)| stat(*pid).is_some_and(|s| s.2 == *pid))
        .expect("the hook's shell runs");
    kill(Pid::from_raw(shell.0 as i32), Signal::SIGUSR1).unwrap();

    let status = agent.exit().await;
    assert!(status.success(), "{status:?}\n{}", agent.stderr());
    let f = s.finished(&agent, "running").await;
    let log = s.log("running");
    assert_eq!(f["status"], "succeeded", "{f:#}\n{log}");
    assert!(log.contains("hook-finished"), "{log}");
    assert!(!log.contains("hook-got-"), "the tool got a signal: {log}");
    assert!(
        s.cp.task("queued").handed_to.is_empty(),
        "a draining agent took a task"
    );
    assert_eq!(s.cp.lock().deregistrations, 1);
    nothing_left(&m).await;
}

#[tokio::test]
async fn grace_shutdown_forwards_sigterm_then_kills_the_survivors_and_reports() {
    let s = Daemon::new().await;
    let m = marker();
    // The shell survives SIGTERM (it only prints it); its sleep does not.
    s.enqueue(
        "stubborn",
        &format!("{TRAPS} echo hook-started; while :; do sleep {m} & wait $!; done"),
    );
    let grace = Duration::from_secs(3);
    let mut agent = s.start(
        "grace-agent",
        &[
            ("SCALR_AGENT_WORKER_ON_STOP_ACTION", "grace-shutdown"),
            ("SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT", "3s"),
        ],
    );
    s.wait_log(&agent, "stubborn", "hook-started").await;
    let stopped_at = Instant::now();
    agent.signal(Signal::SIGTERM);
    s.wait_log(&agent, "stubborn", "hook-got-TERM").await;
    let status = agent.exit().await;
    assert!(status.success(), "{status:?}\n{}", agent.stderr());
    assert!(
        stopped_at.elapsed() >= grace,
        "the survivors were killed before the grace timeout"
    );
    let f = s.finished(&agent, "stubborn").await;
    let log = s.log("stubborn");
    assert_eq!(f["status"], "canceled", "{f:#}\n{log}");
    assert!(
        log.contains("The agent is shutting down: terminating pre-init hook"),
        "{log}"
    );
    assert!(!log.contains("hook-got-INT"), "{log}");
    // The shell was still there after the grace timeout: SIGKILL ended it.
    let step = hook_step(&f);
    assert_eq!(step["status"], "canceled", "{step:#}");
    assert_eq!(step["signal"], 9, "{step:#}");
    nothing_left(&m).await;
}

#[tokio::test]
async fn force_shutdown_kills_at_once_and_still_reports() {
    let s = Daemon::new().await;
    let m = marker();
    s.enqueue(
        "victim",
        &format!("{TRAPS} echo hook-started; sleep {m} & wait $!; echo hook-ended"),
    );
    // Were anything but an immediate SIGKILL used, the 600 s graces would hold the agent.
    let mut agent = s.start(
        "force-agent",
        &[
            ("SCALR_AGENT_WORKER_ON_STOP_ACTION", "force-shutdown"),
            ("SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT", "600s"),
        ],
    );
    s.wait_log(&agent, "victim", "hook-started").await;
    agent.signal(Signal::SIGTERM);
    let status = agent.exit().await;
    assert!(status.success(), "{status:?}\n{}", agent.stderr());
    let f = s.finished(&agent, "victim").await;
    let log = s.log("victim");
    assert_eq!(f["status"], "canceled", "{f:#}\n{log}");
    assert!(
        !log.contains("hook-got-") && !log.contains("hook-ended"),
        "{log}"
    );
    let step = hook_step(&f);
    assert_eq!(step["signal"], 9, "{step:#}");
    nothing_left(&m).await;
}

#[tokio::test]
async fn a_second_signal_during_drain_exits_at_once() {
    let s = Daemon::new().await;
    let m = marker();
    s.enqueue(
        "long",
        &format!("{TRAPS} echo hook-started; sleep {m}; echo never-printed"),
    );
    let mut agent = s.start(
        "impatient-agent",
        &[
            ("SCALR_AGENT_WORKER_ON_STOP_ACTION", "drain"),
            ("SCALR_AGENT_WORKER_DRAIN_TIMEOUT", "600s"),
        ],
    );
    s.wait_log(&agent, "long", "hook-started").await;
    agent.signal(Signal::SIGTERM);
    s.wait_draining(&agent).await;
    agent.signal(Signal::SIGTERM);
    let status = agent.exit().await;
    assert_eq!(status.code(), Some(130), "{}", agent.stderr());
    // The helpers' parent-death signal takes the task's processes down; its report waits in
    // the spool for the next start.
    nothing_left(&m).await;
    assert!(s.cp.task("long").finishes.is_empty());
    assert!(!s.log("long").contains("hook-got-"), "{}", s.log("long"));
}

#[tokio::test]
async fn as_pid_1_the_agent_reaps_orphans() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (a new PID namespace); run the tests as root, as CI does"
    );
    let s = Daemon::new().await;
    let m = marker();
    s.enqueue(
        "orphaning",
        // The sleep lets go of the step's output, or the step would wait for it.
        &format!("sleep {m} >/dev/null 2>&1 & echo hook-started; wait"),
    );
    // `--kill-child`: if the test dies, so does the namespace.
    let mut unshare = s
        .agent("pid1-agent")
        .env("SCALR_AGENT_WORKER_REPORT_TIMEOUT", "60s")
        .env("SCALR_AGENT_CANCEL_GRACE", "600s")
        .wrapped(
            "/usr/bin/unshare",
            &["--pid", "--fork", "--mount-proc", "--kill-child"],
        )
        .run();
    let outer = unshare.pid();
    let mut agent_pid = 0;
    unshare
        .until("the agent in its namespace", || {
            let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                .unwrap_or_default();
            agent_pid = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            agent_pid != 0
        })
        .await;
    let status = std::fs::read_to_string(format!("/proc/{agent_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "the agent is not PID 1: {nspid}");

    s.wait_log(&unshare, "orphaning", "hook-started").await;
    // The hook's shell and its sleep (once the background child has exec'd it).
    let (mut shell, mut sleep) = (0, 0);
    unshare
        .until("the hook's shell and its sleep", || {
            let procs = processes_with(&m);
            let find = |prefix: &str| {
                procs
                    .iter()
                    .find(|(_, cmd)| cmd.starts_with(prefix))
                    .map(|p| p.0)
            };
            shell = find("/bin/sh -c ").unwrap_or(0);
            sleep = find("sleep ").unwrap_or(0);
            procs.len() == 2 && shell != 0 && sleep != 0
        })
        .await;
    let helper = stat(shell).unwrap().1;
    let helper_cmd = std::fs::read(format!("/proc/{helper}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&helper_cmd).contains("__stage"),
        "the hook's parent is not its stage helper"
    );

    // The helper dies (as under the OOM killer): the hook's shell gets its parent-death
    // signal and the sleep is orphaned to PID 1, the agent.
    kill(Pid::from_raw(helper as i32), Signal::SIGKILL).unwrap();
    unshare
        .until("the sleep re-parented to the agent", || {
            stat(sleep).is_some_and(|s| s.1 == agent_pid)
        })
        .await;
    // The task learns of its helper's death from the helper's real exit status, which the
    // reaper left to tokio.
    let f = s.finished(&unshare, "orphaning").await;
    let log = s.log("orphaning");
    assert_eq!(f["status"], "errored", "{f:#}\n{log}");
    assert!(
        log.contains("the helper exited (signal: 9"),
        "the helper's exit status was lost: {log}"
    );

    // The orphan exits; PID 1 must reap it, and leave no zombie at all.
    kill(Pid::from_raw(sleep as i32), Signal::SIGTERM).unwrap();
    unshare
        .until("the orphan reaped", || {
            processes_with(&m).is_empty() && zombie_children(agent_pid).is_empty()
        })
        .await;
    assert!(
        unshare
            .stderr()
            .contains("running as PID 1: reaping orphaned processes"),
        "{}",
        unshare.stderr()
    );

    kill(Pid::from_raw(agent_pid as i32), Signal::SIGTERM).unwrap();
    let status = unshare.exit().await;
    assert!(status.success(), "{status:?}\n{}", unshare.stderr());
}
