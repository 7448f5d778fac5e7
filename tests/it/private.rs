//! The trust boundary by permission (`trust` holds the task-file attacks), as root with real
//! agents: tasks kept apart without Landlock, uids dedicated across agent processes, nothing of
//! a task left after it (task directories, IPC objects, temporary files, crashed agents'
//! leftovers), `--out` reuse, and a memory-hungry hook killed instead of the agent.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::agent::Agent;
use crate::support::control_plane::ControlPlane;
use crate::support::exec::{Exec, text};
use crate::support::procs::{processes_with, sigterm_exec};
use crate::support::releases::{self, Entry};

const LONG: Duration = Duration::from_secs(120);

/// `scalr-agent run` with the exec fixture's environment plus `extra`.
fn start_daemon(e: &Exec, cp: &ControlPlane, extra: &[(&str, &str)]) -> Agent {
    e.h.agent()
        .control_plane(cp, "trust-agent")
        .envs(extra)
        .run()
}

/// Queues a daemon task of a trivial configuration with `hook` as its pre-init hook.
fn enqueue(cp: &ControlPlane, id: &str, hook: &str) {
    let archive = releases::tar_gz(&[Entry::File("main.tf", b"output \"x\" { value = 1 }\n")]);
    let doc = json!({
        "id": id, "action": "plan",
        "run": {"id": format!("run-{id}"), "mode": "apply", "source": "api"},
        "workspace": {"id": "ws", "name": id, "iac_platform": "terraform", "iac_version": "1.0.3",
                      "hooks": {"pre_init": hook}},
        "environment": {"id": "env", "name": "test"},
        "control_plane": {"hostname": "scalr.example.test", "run_token": format!("run-token-{id}")},
        "configuration": {"archive": {"url": format!("{}inputs/configuration", cp.url),
                                      "sha256": releases::sha256_hex(&archive)}},
    });
    cp.enqueue_with_configuration(id, doc, &archive);
}

/// A directory task uids may read (`SCALR_AGENT_TASK_READ_PATHS`), where `go` releases hooks.
fn go_dir(e: &Exec) -> PathBuf {
    let dir = e.h.dir.path().join("go");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn wait_hook(go: &Path, marker: &str) -> String {
    format!(
        ": {marker}; echo \"uid $(id -u)\"; while [ ! -e {go}/go ]; do sleep 0.1; done",
        go = go.display()
    )
}

/// The uid of the running hook shell whose command line holds `marker`.
async fn hook_uid(marker: &str) -> u32 {
    let deadline = Instant::now() + LONG;
    loop {
        for (pid, _) in processes_with(marker) {
            {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                // A process carrying the marker may still be root for an instant before the
                // stage drops to the task's uid: wait for the hook itself (a hook that really
                // ran as root never satisfies this and fails the test by the deadline).
                let uid = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|u| u.split_whitespace().next()?.parse::<u32>().ok());
                if let Some(uid) = uid.filter(|u| *u != 0) {
                    return uid;
                }
            }
        }
        assert!(Instant::now() < deadline, "the hook {marker} never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pids running with `uid` as their real uid.
fn uid_processes(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok())
                == Some(uid)
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn task_dirs(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("tasks"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn ipc_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for kind in ["shm", "sem", "msg"] {
        let t = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap();
        let mut lines = t.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let col = header.iter().position(|c| *c == "uid").unwrap();
        for l in lines {
            if l.split_whitespace().nth(col) == Some(&uid.to_string()) {
                found.push(format!("{kind}: {l}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn two_execs_and_a_daemon_on_one_data_dir_get_three_distinct_uids() {
    let e = Exec::with(&[("SCALR_AGENT_TASK_UID_RANGE", "21000-21019")]).await;
    let go = go_dir(&e);
    let read = (
        "SCALR_AGENT_TASK_READ_PATHS",
        go.to_str().unwrap().to_string(),
    );
    let tag = format!("uids{}", std::process::id());
    let cp = ControlPlane::start().await;
    enqueue(&cp, "uid-daemon", &wait_hook(&go, &format!("{tag}-d")));
    let mut daemon = start_daemon(&e, &cp, &[(read.0, &read.1)]);
    let mut one = e.task("uid-exec-1");
    one["workspace"]["hooks"] = json!({"pre_init": wait_hook(&go, &format!("{tag}-1"))});
    let mut two = e.task("uid-exec-2");
    two["workspace"]["hooks"] = json!({"pre_init": wait_hook(&go, &format!("{tag}-2"))});
    let extra = [(read.0, read.1.as_str())];
    let (a, b, seen) = tokio::join!(e.run(&one, &extra), e.run(&two, &extra), async {
        let uids = [
            hook_uid(&format!("{tag}-d")).await,
            hook_uid(&format!("{tag}-1")).await,
            hook_uid(&format!("{tag}-2")).await,
        ];
        // All three hooks are running now, each under its uid.
        std::fs::write(go.join("go"), "").unwrap();
        uids
    });
    let f = cp.wait_finished("uid-daemon", LONG).await;
    assert_eq!(f["status"], "succeeded", "{f:#}");
    let (ra, rb) = (&a.1, &b.1);
    assert_eq!(ra["status"], "succeeded", "{}", text(&a.0.stdout));
    assert_eq!(rb["status"], "succeeded", "{}", text(&b.0.stdout));
    let daemon_uid = f["result"]["isolation"]["uid"].as_u64().unwrap() as u32;
    let uids = [
        daemon_uid,
        ra["isolation"]["uid"].as_u64().unwrap() as u32,
        rb["isolation"]["uid"].as_u64().unwrap() as u32,
    ];
    assert_eq!(uids, seen, "the results name the uids the hooks ran under");
    assert!(
        uids[0] != uids[1] && uids[1] != uids[2] && uids[0] != uids[2],
        "one uid for two tasks at once: {uids:?}"
    );
    daemon.kill().await;
}

#[tokio::test]
async fn without_landlock_a_task_cannot_reach_another_tasks_files_or_the_cache_locks() {
    let e = Exec::with(&[("SCALR_AGENT_TASK_UID_RANGE", "21020-21039")]).await;
    let go = go_dir(&e);
    let deny = ("SCALR_AGENT_SANDBOX_TEST_DENY", "landlock");
    let data = e.h.dir.path().join("data");
    let cp = ControlPlane::start().await;
    let victim_hook = format!(
        "echo canary-victim-home > \"$HOME/secret\"; echo canary-victim-log; {}",
        wait_hook(&go, &format!("victim{}", std::process::id()))
    );
    enqueue(&cp, "victim", &victim_hook);
    let mut daemon = start_daemon(&e, &cp, &[deny]);
    let victim_uid = hook_uid(&format!("victim{}", std::process::id())).await;

    // As root: the victim's paths (the attacker gets them spelled out: nothing is listable).
    let root = task_dirs(&data)
        .into_iter()
        .find(|n| n.starts_with("victim."))
        .map(|n| data.join("tasks").join(n))
        .expect("the victim's task root");
    let spool = data.join("spool/victim");
    let inputs = data.join("tasks/victim/inputs");
    let token: Value =
        serde_json::from_slice(&std::fs::read(spool.join("meta.json")).unwrap()).unwrap();
    let token = token["task_token"].as_str().unwrap().to_string();
    let locks = e.h.dir.path().join("cache/binaries/.locks");
    let lock_files: Vec<PathBuf> = std::fs::read_dir(&locks)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!lock_files.is_empty());
    for (path, want) in [
        (data.clone(), 0o711),
        (data.join("tasks"), 0o711),
        (data.join("spool"), 0o700),
        (spool.clone(), 0o700),
        (spool.join("meta.json"), 0o600),
        (spool.join("log"), 0o600),
        (data.join("tasks/victim"), 0o700),
        (root.clone(), 0o700),
        (locks.clone(), 0o700),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    for l in &lock_files {
        assert_eq!(mode(l), 0o600, "{}", l.display());
    }
    assert_eq!(std::fs::metadata(&root).unwrap().uid(), victim_uid);

    let mut script = String::new();
    for dir in [
        &data,
        &data.join("tasks"),
        &data.join("spool"),
        &spool,
        &data.join("tasks/victim"),
        &inputs,
        &root,
        &root.join("home"),
    ] {
        script += &format!(
            "ls {d} >/dev/null 2>&1; echo \"list {d} rc=$?\"; ",
            d = dir.display()
        );
    }
    for file in [
        spool.join("meta.json"),
        spool.join("log"),
        inputs.join("configuration.tar.gz"),
        root.join("home/secret"),
        root.join("cli.tfrc"),
        data.join(".agent.state"),
    ] {
        script += &format!("cat {f}; echo \"read {f} rc=$?\"; ", f = file.display());
    }
    script += &format!(
        "echo x >> {f}; echo \"write {f} rc=$?\"; ",
        f = spool.join("log").display()
    );
    for l in &lock_files {
        script += &format!(
            "flock -n -x {f} true; echo \"flock {f} rc=$?\"; ",
            f = l.display()
        );
    }
    let mut attacker = e.task("attacker");
    attacker["workspace"]["hooks"] = json!({ "pre_init": script });
    let (out, result, _) = e.run(&attacker, &[deny]).await;
    let log = text(&out.stdout);
    // The cached Terraform still runs under the attacker's own task uid.
    assert_eq!(result["status"], "succeeded", "{log}");
    assert_ne!(result["isolation"]["uid"], json!(victim_uid));
    let attempts: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["list ", "read ", "write ", "flock "]
                .iter()
                .any(|p| l.starts_with(p))
                && l.contains(" rc=")
        })
        .collect();
    assert_eq!(attempts.len(), 8 + 6 + 1 + lock_files.len(), "{log}");
    for a in &attempts {
        assert!(!a.ends_with(" rc=0"), "{a}\n{log}");
    }
    for canary in ["canary-victim-home", "canary-victim-log", token.as_str()] {
        assert!(!log.contains(canary), "{canary} leaked:\n{log}");
    }

    std::fs::write(go.join("go"), "").unwrap();
    let f = cp.wait_finished("victim", LONG).await;
    assert_eq!(f["status"], "succeeded", "{f:#}");
    let victim_log = String::from_utf8_lossy(&cp.task("victim").log).into_owned();
    assert!(victim_log.contains("canary-victim-log"), "{victim_log}");
    daemon.kill().await;
}

#[tokio::test]
async fn nothing_of_an_exec_task_outlives_it_and_out_can_be_reused() {
    let e = Exec::with(&[("SCALR_AGENT_TASK_UID_RANGE", "21040-21059")]).await;
    let data = e.h.dir.path().join("data");
    let n = std::process::id();
    let hook = format!(
        "ipcmk -M 4096 && ipcmk -Q && ipcmk -S 2 && echo t > /tmp/trust-{n} && mkdir /var/tmp/trust-dir-{n} \
         && echo t > /var/tmp/trust-dir-{n}/f && ln -s /etc/passwd /tmp/trust-link-{n} && echo t > /dev/shm/trust-{n} \
         && echo left-behind; \
         python3 -c 'import ctypes,os; c=ctypes.CDLL(None, use_errno=True); print(\"mq_open\", c.mq_open(b\"/trust-q\", os.O_CREAT|os.O_RDWR, 0o600, None), ctypes.get_errno())'"
    );
    let mut task = e.task("leftovers");
    task["workspace"]["hooks"] = json!({ "pre_init": hook });
    let deny = [("SCALR_AGENT_SANDBOX_TEST_DENY", "landlock")];
    let (out, result, dir) = e.run(&task, &deny).await;
    let log = text(&out.stdout);
    assert_eq!(result["status"], "succeeded", "{log}");
    assert!(log.contains("left-behind"), "{log}");
    // POSIX message queues cannot be created: the stage filter denies mq_open (EPERM).
    assert!(log.contains("mq_open -1 1"), "{log}");
    assert!(
        log.contains("Removed what the task left under its uid: 3 IPC objects, "),
        "{log}"
    );
    let uid = result["isolation"]["uid"].as_u64().unwrap() as u32;
    assert_eq!(ipc_of(uid), Vec::<String>::new());
    for p in [
        format!("/tmp/trust-{n}"),
        format!("/tmp/trust-link-{n}"),
        format!("/var/tmp/trust-dir-{n}"),
        format!("/dev/shm/trust-{n}"),
    ] {
        assert!(std::fs::symlink_metadata(&p).is_err(), "{p} left");
    }
    assert!(Path::new("/etc/passwd").exists());
    assert_eq!(task_dirs(&data), Vec::<String>::new());
    for name in ["plan.tfplan", "plan.json", "result.json", "task.log"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    // The lease is clean: the next task may take the uid.
    assert_eq!(
        std::fs::read_to_string(data.join("uids").join(uid.to_string())).unwrap(),
        ""
    );

    // The same command again, into the same --out: it replaces what the first wrote.
    let (again, result, _) = e.run(&e.task("leftovers"), &[]).await;
    assert_eq!(result["status"], "succeeded", "{}", text(&again.stdout));
    // A file `exec` did not write is never deleted: the run is refused, naming it.
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let (refused, _, _) = e.run(&e.task("leftovers"), &[]).await;
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(
        err.contains("\"notes.txt\"") && err.contains("does not write"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(dir.join("result.json").exists());
}

#[tokio::test]
async fn a_cancelled_exec_and_a_killed_daemon_leave_nothing_behind() {
    let e = Exec::with(&[("SCALR_AGENT_TASK_UID_RANGE", "21060-21079")]).await;
    let data = e.h.dir.path().join("data");
    let n = std::process::id();
    // Cancelled exec: SIGTERM while the hook runs.
    let mut task = e.task("trust-cancel");
    task["workspace"]["hooks"] =
        json!({"pre_init": format!("ipcmk -M 4096; : cancel{n}; sleep 3600")});
    let run = e.run(&task, &[]);
    let cancel = async {
        let uid = hook_uid(&format!("cancel{n}")).await;
        let deadline = Instant::now() + LONG;
        while ipc_of(uid).is_empty() {
            assert!(Instant::now() < deadline, "the hook made no IPC object");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sigterm_exec("trust-cancel");
    };
    let ((out, result, _), ()) = tokio::join!(run, cancel);
    assert_eq!(result["status"], "canceled", "{}", text(&out.stdout));
    let uid = result["isolation"]["uid"].as_u64().unwrap() as u32;
    assert_eq!(ipc_of(uid), Vec::<String>::new());
    assert_eq!(task_dirs(&data), Vec::<String>::new());

    // A daemon task cancelled by the control plane: once delivered, nothing of it remains.
    let cp = ControlPlane::start().await;
    enqueue(
        &cp,
        "canceled",
        &format!("ipcmk -M 4096; : canceled{n}; sleep 3600"),
    );
    let mut first = start_daemon(&e, &cp, &[]);
    let cuid = hook_uid(&format!("canceled{n}")).await;
    let deadline = Instant::now() + LONG;
    while ipc_of(cuid).is_empty() {
        assert!(Instant::now() < deadline, "the hook made no IPC object");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cp.signal("canceled", "cancel");
    let f = cp.wait_finished("canceled", LONG).await;
    assert_eq!(f["status"], "canceled", "{f:#}");
    let deadline = Instant::now() + LONG;
    while data.join("spool/canceled").exists() {
        assert!(
            Instant::now() < deadline,
            "the delivered task's spool stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task_dirs(&data), Vec::<String>::new());
    assert_eq!(ipc_of(cuid), Vec::<String>::new());

    // kill -9 of the daemon mid-task, then a restart.
    enqueue(
        &cp,
        "killed",
        &format!("ipcmk -M 4096; echo killed-hook; : killed{n}; sleep 3600"),
    );
    let uid = hook_uid(&format!("killed{n}")).await;
    let deadline = Instant::now() + LONG;
    while ipc_of(uid).is_empty() {
        assert!(Instant::now() < deadline, "the hook made no IPC object");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await;
    let left = task_dirs(&data);
    assert!(left.iter().any(|d| d.starts_with("killed.")), "{left:?}");
    let root = data
        .join("tasks")
        .join(left.iter().find(|d| d.starts_with("killed.")).unwrap());
    assert!(root.join("cli.tfrc").exists());
    assert!(
        data.join("tasks/killed/inputs/configuration.tar.gz")
            .exists()
    );
    // Every process of the task's uid goes away by itself (parent-death signal to the helper,
    // which kills the whole tree).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !uid_processes(uid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the killed task's processes survive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = start_daemon(&e, &cp, &[]);
    let f = cp.wait_finished("killed", LONG).await;
    assert_eq!(f["status"], "errored", "{f:#}");
    assert_eq!(task_dirs(&data), Vec::<String>::new());
    assert_eq!(ipc_of(uid), Vec::<String>::new());
    second.kill().await;
}

/// The `detail` of a result's `rlimits` isolation layer.
fn rlimits_detail(result: &Value) -> String {
    result["isolation"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "rlimits")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A memory cgroup of 256 MiB for the agent: v2 where its memory controller is available,
/// else v1's memory hierarchy. Fails (does not skip) when neither is writable.
fn memory_cgroup(name: &str) -> (PathBuf, &'static str) {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let unified = std::fs::read_to_string(v2).unwrap_or_default();
    let (dir, limit, procs) = if unified.split_whitespace().any(|c| c == "memory") {
        (
            Path::new("/sys/fs/cgroup").join(name),
            "memory.max",
            "cgroup.procs",
        )
    } else {
        (
            Path::new("/sys/fs/cgroup/memory").join(name),
            "memory.limit_in_bytes",
            "cgroup.procs",
        )
    };
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create the memory cgroup {}: {e}", dir.display()));
    std::fs::write(dir.join(limit), (256u64 << 20).to_string()).unwrap();
    let swap = if limit == "memory.max" {
        "memory.swap.max"
    } else {
        "memory.memsw.limit_in_bytes"
    };
    let _ = std::fs::write(
        dir.join(swap),
        if limit == "memory.max" {
            "0".to_string()
        } else {
            (256u64 << 20).to_string()
        },
    );
    (dir, procs)
}

#[tokio::test]
async fn a_hook_allocating_1_gib_in_a_256_mib_agent_is_killed_and_the_agent_reports_it() {
    let e = Exec::with(&[("SCALR_AGENT_TASK_UID_RANGE", "21080-21099")]).await;
    let (cg, procs) = memory_cgroup(&format!("scalr-agent-test-{}", std::process::id()));
    let mut task = e.task("hungry");
    task["workspace"]["hooks"] = json!({"pre_init": "echo allocating; head -c 1073741824 /dev/zero | tail >/dev/null && echo survived"});
    let file = e.dir.join("hungry.json");
    std::fs::write(&file, serde_json::to_vec(&task).unwrap()).unwrap();
    let out_dir = e.dir.join("hungry.out");
    // The agent joins the cgroup before it starts (its children follow).
    let script = format!("echo $$ > {}/{procs} && exec \"$0\" \"$@\"", cg.display());
    let output =
        e.h.agent()
            .wrapped("/bin/sh", &["-c", &script])
            .exec(&file, &out_dir)
            .await;
    let log = text(&output.stdout);
    let result: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("result.json")).unwrap_or_default())
            .unwrap_or_else(|_| {
                panic!(
                    "the agent wrote no result (killed?): {log}\n{}",
                    text(&output.stderr)
                )
            });
    let _ = std::fs::remove_dir(&cg);
    // The agent lived: it wrote the result and exited 1 for a failed task.
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert_eq!(result["status"], "failed", "{result:#}");
    let hook = &result["steps"][0];
    assert_eq!(hook["status"], "failed", "{hook:#}");
    // The shell reports its pipeline's last command killed by SIGKILL (the OOM killer).
    assert_eq!(hook["exit_code"], 137, "{hook:#}\n{log}");
    assert!(
        log.contains("allocating") && !log.contains("survived"),
        "{log}"
    );
    // The kernel's first choice: every stage process has oom_score_adj 1000.
    let rlimits = rlimits_detail(&result);
    assert!(rlimits.contains("oom_score_adj=1000"), "{rlimits}");
}

#[tokio::test]
async fn a_task_log_past_its_limit_is_truncated_with_a_line_and_a_result_field() {
    let e = Exec::with(&[("SCALR_AGENT_TASK_UID_RANGE", "21100-21119")]).await;
    let mut task = e.task("loud");
    task["workspace"]["hooks"] =
        json!({"pre_init": "head -c 3145728 /dev/zero | tr '\\0' x; echo; echo after-the-flood"});
    let (out, result, dir) = e
        .run(&task, &[("SCALR_AGENT_TASK_LOG_LIMIT_MB", "1")])
        .await;
    let log = std::fs::read_to_string(dir.join("task.log")).unwrap();
    assert_eq!(result["status"], "succeeded", "{}", text(&out.stderr));
    assert_eq!(result["log_truncated"], true, "{result:#}");
    assert!(
        log.contains("[scalr-agent] log truncated: the task's log reached 1 MiB (SCALR_AGENT_TASK_LOG_LIMIT_MB)"),
        "no truncation line"
    );
    assert!(!log.contains("after-the-flood"));
    // The agent's own closing line still goes out; the file stays near the limit.
    assert!(log.contains("Task loud: succeeded"), "no closing line");
    let size = std::fs::metadata(dir.join("task.log")).unwrap().len();
    assert!(size < (1 << 20) + 4096, "task.log is {size} bytes");
    let (_, small, _) = e.run(&e.task("quiet"), &[]).await;
    assert_eq!(small["log_truncated"], false, "{small:#}");
}

#[tokio::test]
async fn a_task_memory_limit_kills_the_task_in_its_own_cgroup_and_removes_the_cgroup() {
    let e = Exec::with(&[("SCALR_AGENT_TASK_UID_RANGE", "21120-21139")]).await;
    let mut task = e.task("bounded");
    task["workspace"]["hooks"] = json!({"pre_init": "echo allocating; head -c 536870912 /dev/zero | tail >/dev/null && echo survived"});
    let (out, result, _) = e
        .run(&task, &[("SCALR_AGENT_TASK_MEMORY_LIMIT_MB", "128")])
        .await;
    let log = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{log}\n{}", text(&out.stderr));
    assert_eq!(result["status"], "failed", "{result:#}");
    assert_eq!(result["steps"][0]["exit_code"], 137, "{result:#}");
    assert!(
        log.contains("allocating") && !log.contains("survived"),
        "{log}"
    );
    let rlimits = rlimits_detail(&result);
    assert!(rlimits.contains("memory cgroup "), "{rlimits}");
    let (parent, _) = scalr_agent::sandbox::cgroup::own_memory_cgroup().unwrap();
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("scalr-task-bounded."))
        .collect();
    assert!(
        left.is_empty(),
        "task cgroups left in {}: {left:?}",
        parent.display()
    );
}
