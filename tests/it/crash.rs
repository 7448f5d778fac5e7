//! `kill -9` of the real `scalr-agent run` binary mid-task, then a restart on the same data dir:
//! the task is reported errored ("agent restarted"), what was spooled arrives, and nothing of
//! the killed task keeps running.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness::Harness;
use crate::support::control_plane::{ControlPlane, Fault};
use crate::support::releases::{self, Entry, Signing};

const BIN: &str = env!("CARGO_BIN_EXE_scalr-agent");
const LONG: Duration = Duration::from_secs(60);
const TRIVIAL_TOOL: &str = "#!/bin/sh\n[ \"$1\" = show ] && echo '{}'\nexit 0\n";

#[allow(clippy::disallowed_methods)]
fn start(h: &Harness, cp: &ControlPlane, stderr: std::process::Stdio) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(h.vars.iter().cloned())
        .env("SCALR_URL", cp.url.as_str())
        .env("SCALR_AGENT_TOKEN", "pool-token")
        .env("SCALR_AGENT_NAME", "crash-agent")
        .env("SCALR_AGENT_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Pids (other than ours) whose command line contains `marker`.
pub(crate) fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(marker).then_some((pid, cmd))
        })
        .collect()
}

#[tokio::test]
async fn kill_9_mid_task_then_restart_reports_errored_flushes_and_leaves_no_process() {
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
    let cp = ControlPlane::start().await;
    let archive = releases::tar_gz(&[Entry::File("main.tf", b"output \"x\" { value = 1 }\n")]);
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
    let doc = json!({
        "id": "crash-1", "action": "plan",
        "run": {"id": "run-crash", "mode": "apply", "source": "api"},
        "workspace": {"id": "ws", "name": "crash", "iac_platform": "terraform", "iac_version": "1.9.9",
                      "hooks": {"pre_init": hook}},
        "environment": {"id": "env", "name": "test"},
        "control_plane": {"hostname": "scalr.example.test", "run_token": "run-token"},
        "configuration": {"archive": {"url": format!("{}inputs/configuration", cp.url),
                                      "sha256": releases::sha256_hex(&archive)}},
    });
    cp.enqueue_doc("crash-1", doc);
    cp.lock()
        .tasks
        .get_mut("crash-1")
        .unwrap()
        .inputs
        .insert("configuration".into(), archive);

    let mut first = start(&h, &cp, std::process::Stdio::null());
    cp.wait_for("the hook started", LONG, |i| {
        String::from_utf8_lossy(&i.tasks["crash-1"].log).contains("hook-started")
    })
    .await;
    // From now on every log chunk is refused: the next line only reaches the spool.
    cp.fail_next("log", std::iter::repeat_n(Fault::Status(503), 100_000));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        !processes_with(&marker).is_empty(),
        "the hook's sleep is running"
    );
    let log = String::from_utf8_lossy(&cp.task("crash-1").log).into_owned();
    assert!(!log.contains("spooled-line"), "{log}");
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    assert!(cp.task("crash-1").finishes.is_empty());

    // The killed task's processes go away by themselves (parent-death signal to the helper).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the killed task survive: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cp.lock().faults.clear();
    let mut second = start(&h, &cp, std::process::Stdio::piped());
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

    let pid = nix::unistd::Pid::from_raw(second.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(LONG, second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    // The agent's own log: JSON lines; from registration on they name the agent and its pool.
    let mut err = String::new();
    use tokio::io::AsyncReadExt;
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ready = lines
        .iter()
        .position(|l| l["event"] == "ready to receive tasks")
        .unwrap_or_else(|| panic!("{err}"));
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
