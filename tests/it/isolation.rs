//! The sandbox end to end through `exec`, as root (CI runs as root): a stage's credentials and
//! filters, secrets out of reach, tasks apart from each other, Landlock, tree kill on cancel,
//! and the decision on weaker platforms. These fail, not skip, when a layer is missing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::exec::{Exec, assert_first_error, text};
use crate::support::procs::{processes_with, sigterm_exec};

fn status_field<'a>(log: &'a str, name: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} not in:\n{log}"))
}

#[tokio::test]
async fn a_stage_runs_with_its_own_uid_no_capabilities_and_filters() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the isolation tests must run as root"
    );
    let e = Exec::new().await;
    let mut task = e.task("iso-status");
    task["workspace"]["hooks"] = json!({"pre_init": "cat /proc/self/status"});
    let (out, result, _) = e.run(&task, &[]).await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}");
    let uid: Vec<u32> = status_field(&log, "Uid")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        uid.iter()
            .all(|u| (20000..=20999).contains(u) && *u == uid[0]),
        "{uid:?}"
    );
    let gid: Vec<u32> = status_field(&log, "Gid")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(gid.iter().all(|g| *g == gid[0] && *g != 0), "{gid:?}");
    assert_eq!(status_field(&log, "Groups"), "");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&log, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(&log, "NoNewPrivs"), "1");
    assert_eq!(status_field(&log, "Seccomp"), "2");
    assert_eq!(result["isolation"]["verdict"], "isolated", "{result:#}");
    assert_eq!(result["isolation"]["uid"], json!(uid[0]));
    let layers: Vec<(&str, bool)> = result["isolation"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["applied"].as_bool().unwrap()))
        .collect();
    for name in ["uid", "no_new_privs", "landlock", "seccomp"] {
        assert!(
            layers.contains(&(name, true)),
            "{name} not applied: {layers:?}"
        );
    }
}

#[tokio::test]
async fn job_code_cannot_reach_the_agents_secrets() {
    let e = Exec::new().await;
    let token_file = e.h.dir.path().join("data/agent-token");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    std::fs::write(&token_file, "canary-file-token").unwrap();
    let script = format!(
        "helper=$PPID; agent=$(awk '/^PPid:/{{print $2}}' /proc/$helper/status); echo \"agent pid $agent\"; \
         cat /proc/$agent/environ; echo \"environ rc=$?\"; head -c 64 /proc/$agent/mem; echo \"mem rc=$?\"; \
         cat {tf}; echo \"file rc=$?\"; \
         python3 -c 'import ctypes,sys; libc=ctypes.CDLL(None); print(\"ptrace\", libc.ptrace(16, int(sys.argv[1]), 0, 0))' $agent; \
         env",
        tf = token_file.display()
    );
    let mut task = e.task("iso-secrets");
    task["workspace"]["hooks"] = json!({"pre_init": script});
    let canaries = [
        ("SCALR_AGENT_TOKEN", "canary-env-token"),
        ("SCALR_AGENT_CANARY", "canary-env-other"),
    ];
    let (out, _, _) = e.run(&task, &canaries).await;
    let log = text(&out.stdout);
    assert!(log.contains("agent pid "), "{log}");
    for rc in ["environ rc=1", "mem rc=1", "file rc=1", "ptrace -1"] {
        assert!(log.contains(rc), "{rc} missing:\n{log}");
    }
    for canary in ["canary-file-token", "canary-env-token", "canary-env-other"] {
        assert!(!log.contains(canary), "{canary} leaked:\n{log}");
    }
}

#[tokio::test]
async fn tasks_cannot_read_each_other_and_cannot_write_outside() {
    let e = Exec::new().await;
    let marker = format!("/tmp/landlock-{}", std::process::id());
    let mut first = e.task("iso-a");
    first["workspace"]["hooks"] = json!({"pre_init": format!("echo secret-a > \"$HOME/secret\"; echo outside > {marker}; echo \"outside rc=$?\"; sleep 3")});
    let mut second = e.task("iso-b");
    second["workspace"]["hooks"] = json!({"pre_init": "sleep 1; ls \"$SCALR_AGENT_ENV/../..\"; echo \"list rc=$?\"; for d in \"$SCALR_AGENT_ENV\"/../../iso-a.*; do cat \"$d/home/secret\"; echo \"read rc=$?\"; done"});
    let (a, b) = tokio::join!(e.run(&first, &[]), async {
        // Start the second once the first task's directory exists.
        let tasks = e.h.dir.path().join("data/tasks");
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !std::fs::read_dir(&tasks)
            .map(|d| {
                d.flatten()
                    .any(|x| x.file_name().to_string_lossy().starts_with("iso-a."))
            })
            .unwrap_or(false)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the first task never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        e.run(&second, &[]).await
    });
    let (log_a, log_b) = (text(&a.0.stdout), text(&b.0.stdout));
    assert!(
        log_a.contains("Permission denied")
            && log_a.contains("outside rc=")
            && !log_a.contains("outside rc=0"),
        "{log_a}"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "Landlock let a stage write {marker}"
    );
    assert!(
        log_b.contains("list rc=") && !log_b.contains("list rc=0"),
        "{log_b}"
    );
    assert!(!log_b.contains("secret-a"), "{log_b}");
    assert!(!log_b.contains("read rc=0"), "{log_b}");
}

#[tokio::test]
async fn cancelling_exec_kills_the_whole_tree() {
    let e = Exec::new().await;
    let marker = format!("66{}", std::process::id() % 100000);
    let mut task = e.task("iso-cancel");
    task["workspace"]["hooks"] = json!({
        "pre_init": format!("trap 'echo ignoring' INT TERM; sleep {marker}1 & setsid sh -c 'sleep {marker}2 & sleep {marker}3' & (setsid sleep {marker}4 &); while true; do sleep 1; done"),
    });
    let run = e.run(&task, &[("SCALR_AGENT_CANCEL_GRACE", "500ms")]);
    let canceller = async {
        // Generous: the whole suite shares 2 cores, and the hook starts after `terraform` is
        // installed.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        // Every `sleep` running (the hook shell's own command line names them all too).
        let all_started = || {
            let running = processes_with(&marker);
            (1..=4).all(|n| {
                let sleep = format!("sleep {marker}{n}");
                running.iter().any(|(_, cmd)| cmd.starts_with(&sleep))
            })
        };
        while !all_started() {
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's processes never all started: {:?}",
                processes_with(&marker)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ours: Vec<String> = processes_with(&marker)
            .iter()
            .map(|(pid, _)| pid.to_string())
            .collect();
        sigterm_exec("iso-cancel");
        ours
    };
    let ((out, result, _), ours) = tokio::join!(run, canceller);
    assert_eq!(result["status"], "canceled", "{}", text(&out.stdout));
    assert_eq!(result["steps"][0]["status"], "canceled");
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
    // Not even a zombie is left of them. (Only our own: other tests' processes come and go.)
    assert!(!ours.is_empty());
    let zombies: Vec<&String> = ours
        .iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(zombies.is_empty(), "{zombies:?}");
}

#[tokio::test]
async fn weaker_platforms_warn_or_refuse() {
    let e = Exec::new().await;
    let task = e.task("iso-weak");
    let (out, result, _) = e
        .run(&task, &[("SCALR_AGENT_SANDBOX_TEST_DENY", "setresuid")])
        .await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(
        log.starts_with("WARNING: this task runs with `degraded` isolation"),
        "{log}"
    );
    assert_eq!(result["isolation"]["verdict"], "degraded");
    assert_eq!(result["isolation"]["uid"], Value::Null);

    let mut task = e.task("iso-refused");
    task["workspace"]["hooks"] = json!({"pre_init": "echo should not run"});
    let (out, result, _) = e
        .run(
            &task,
            &[
                ("SCALR_AGENT_SANDBOX_TEST_DENY", "setresuid"),
                ("SCALR_AGENT_MIN_ISOLATION", "isolated"),
            ],
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(result["status"], "errored");
    assert_first_error(&result, "below the required `isolated`");
    assert!(!text(&out.stdout).contains("should not run"));
}
