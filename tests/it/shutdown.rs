//! The real `scalr-agent run` binary, with the real runner and sandbox, against the fake control
//! plane: cancellation from the control plane and the stop actions, seen from inside the task
//! (a workspace hook that traps signals and prints which one arrived, so the marker lands in
//! the task's log) and from `/proc` (nothing of the task left running). Then the agent as PID 1
//! of a new PID namespace, reaping an orphan. Timing only ever bounds a poll; the hooks wait
//! for signals, never for the clock.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::crash::processes_with;
use crate::harness::Harness;
use crate::support::control_plane::ControlPlane;
use crate::support::releases::{self, Entry, Signing};

const BIN: &str = env!("CARGO_BIN_EXE_scalr-agent");
const LONG: Duration = Duration::from_secs(120);
const TRIVIAL_TOOL: &str = "#!/bin/sh\n[ \"$1\" = show ] && echo '{}'\nexit 0\n";
/// Each hook prints which of these arrived.
const TRAPS: &str = "trap 'echo hook-got-INT; exit 130' INT; trap 'echo hook-got-TERM' TERM;";

/// A number no other process's command line contains: the seconds of a hook's `sleep`, or a
/// no-op word in its command line.
pub(crate) fn marker() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
    format!("5{:06}{n:02}", nanos / 1000 % 1_000_000)
}

/// A mirror with a stand-in Terraform, a fake control plane, and the agents' output files.
pub(crate) struct Setup {
    pub(crate) h: Harness,
    pub(crate) cp: ControlPlane,
    archive: Vec<u8>,
}

/// A running `scalr-agent run` (or `unshare ... scalr-agent run`) child process.
pub(crate) struct Agent {
    child: tokio::process::Child,
    stderr: PathBuf,
}

impl Setup {
    pub(crate) async fn new() -> Setup {
        let h = Harness::new().await;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let zip = releases::zip(&[Entry::File("terraform", TRIVIAL_TOOL.as_bytes())]);
        releases::publish_terraform(
            &h.mirror,
            "1.9.9",
            &[("linux_amd64", zip)],
            Signing::With(&h.key, ".sig"),
        );
        let archive = releases::tar_gz(&[Entry::File("main.tf", b"output \"x\" { value = 1 }\n")]);
        Setup {
            h,
            cp: ControlPlane::start().await,
            archive,
        }
    }

    /// Queues a plan task whose pre-init hook is `hook`.
    pub(crate) fn enqueue(&self, id: &str, hook: &str) {
        let doc = json!({
            "id": id, "action": "plan",
            "run": {"id": format!("run-{id}"), "mode": "apply", "source": "api"},
            "workspace": {"id": "ws", "name": "shutdown", "iac_platform": "terraform",
                          "iac_version": "1.9.9", "hooks": {"pre_init": hook}},
            "environment": {"id": "env", "name": "test"},
            "control_plane": {"hostname": "scalr.example.test", "run_token": "run-token"},
            "configuration": {"archive": {"url": format!("{}inputs/configuration", self.cp.url),
                                          "sha256": releases::sha256_hex(&self.archive)}},
        });
        self.cp.enqueue_doc(id, doc);
        self.cp
            .lock()
            .tasks
            .get_mut(id)
            .unwrap()
            .inputs
            .insert("configuration".into(), self.archive.clone());
    }

    /// Starts `scalr-agent run` with these extra variables.
    pub(crate) fn start(&self, name: &str, extra: &[(&str, &str)]) -> Agent {
        self.start_with(BIN, &["run"], name, extra)
    }

    /// Starts `program args...`, which runs the agent, with the agent's variables.
    #[allow(clippy::disallowed_methods)]
    fn start_with(
        &self,
        program: &str,
        args: &[&str],
        name: &str,
        extra: &[(&str, &str)],
    ) -> Agent {
        let stderr = self.h.dir.path().join(format!("{name}.stderr"));
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(self.h.vars.iter().cloned())
            .env("SCALR_URL", self.cp.url.as_str())
            .env("SCALR_AGENT_TOKEN", "pool-token")
            .env("SCALR_AGENT_NAME", name)
            .env("SCALR_AGENT_WORKER_REPORT_TIMEOUT", "60s")
            .env("SCALR_AGENT_CANCEL_GRACE", "600s");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Agent { child, stderr }
    }

    pub(crate) fn log(&self, id: &str) -> String {
        String::from_utf8_lossy(&self.cp.task(id).log).into_owned()
    }

    /// Waits until the task's log contains `text`.
    pub(crate) async fn wait_log(&self, agent: &Agent, id: &str, text: &str) {
        until(&format!("{text:?} in the log of {id}"), agent, || {
            self.log(id).contains(text)
        })
        .await;
    }

    /// Waits for the task's one finish; returns it after checking it is the only one.
    pub(crate) async fn finished(&self, agent: &Agent, id: &str) -> Value {
        until(&format!("{id} finished"), agent, || {
            !self.cp.task(id).finishes.is_empty()
        })
        .await;
        let t = self.cp.task(id);
        assert_eq!(t.finishes.len(), 1, "{:#?}", t.finishes);
        assert_eq!(
            t.finishes[0]["log_size"].as_u64(),
            Some(t.log.len() as u64),
            "the whole log arrived"
        );
        t.finishes[0].clone()
    }

    /// Waits until the agent reports itself draining.
    async fn wait_draining(&self, agent: &Agent) {
        until("a draining heartbeat", agent, || {
            self.cp
                .lock()
                .heartbeats
                .iter()
                .any(|h| h["status"] == "draining")
        })
        .await;
    }
}

impl Agent {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("the agent runs") as i32)
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub(crate) async fn exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(LONG, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the agent did not exit\n{}", self.stderr()),
        }
    }
}

/// Polls `cond` until it holds; fails after [`LONG`] with the agent's log.
pub(crate) async fn until(what: &str, agent: &Agent, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no process's command line contains `marker`.
pub(crate) async fn nothing_left(marker: &str) {
    let deadline = Instant::now() + LONG;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes survive: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The record of the pre-init hook in a finish's result.
fn hook_step(finish: &Value) -> Value {
    finish["result"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "pre-init hook"))
        .unwrap_or_else(|| panic!("no hook step in {finish:#}"))
        .clone()
}

/// `(state, parent, session)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat[stat.rfind(')')? + 2..].split(' ');
    let state = f.next()?.chars().next()?;
    let parent = f.next()?.parse().ok()?;
    let _group = f.next()?;
    Some((state, parent, f.next()?.parse().ok()?))
}

#[tokio::test]
async fn graceful_cancel_interrupts_the_tool_and_reports_canceled_once() {
    let s = Setup::new().await;
    let m = marker();
    s.enqueue(
        "soft",
        &format!("{TRAPS} echo hook-started; sleep {m}; echo never-printed"),
    );
    let mut agent = s.start("cancel-agent", &[]);
    s.wait_log(&agent, "soft", "hook-started").await;
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
    let s = Setup::new().await;
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
    until("a sleep in its own session", &agent, || {
        processes_with(&m)
            .iter()
            .any(|(pid, cmd)| cmd.starts_with("sleep") && stat(*pid).is_some_and(|s| s.2 == *pid))
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
    let s = Setup::new().await;
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
    let s = Setup::new().await;
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
    let s = Setup::new().await;
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
    let s = Setup::new().await;
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

/// Pids whose parent is `parent` and that are zombies.
fn zombie_children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, pp, _)| pp == parent && state == 'Z'))
        .collect()
}

#[tokio::test]
async fn as_pid_1_the_agent_reaps_orphans() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (a new PID namespace); run the tests as root, as CI does"
    );
    let s = Setup::new().await;
    let m = marker();
    s.enqueue(
        "orphaning",
        // The sleep lets go of the step's output, or the step would wait for it.
        &format!("sleep {m} >/dev/null 2>&1 & echo hook-started; wait"),
    );
    // `--kill-child`: if the test dies, so does the namespace.
    let mut unshare = s.start_with(
        "/usr/bin/unshare",
        &[
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            BIN,
            "run",
        ],
        "pid1-agent",
        &[],
    );
    let outer = unshare.child.id().unwrap();
    let mut agent_pid = 0;
    until("the agent in its namespace", &unshare, || {
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
    until("the hook's shell and its sleep", &unshare, || {
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
    until("the sleep re-parented to the agent", &unshare, || {
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
    until("the orphan reaped", &unshare, || {
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
