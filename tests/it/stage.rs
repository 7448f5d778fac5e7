//! Stage processes through the helper: merged output, exit status, environment, tree kill,
//! a dropped stage's helper collected by tokio alone, the helper's check of its parent.

use std::time::Duration;

use scalr_agent::sandbox::helper::{HelperEvent, HelperSpec, SUBCOMMAND};
use scalr_agent::sandbox::policy::Policy;
use scalr_agent::sandbox::stage::{Launcher, StageSignal, is_helper};
use tokio::io::AsyncReadExt;

use crate::support::agent::{BIN, LONG};
use crate::support::dirs::tempdir;
use crate::support::procs::processes_with;
use crate::support::wait::until;

fn sh(script: &str, dir: &std::path::Path) -> HelperSpec {
    HelperSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("ONLY".into(), "this".into()),
        ],
        cwd: dir.to_path_buf(),
        stdout_file: None,
        policy: Policy::process_only(dir),
    }
}

#[tokio::test]
async fn output_is_merged_in_order_and_the_environment_is_exactly_the_spec() {
    let dir = tempdir();
    let mut stage = Launcher::new(BIN)
        .spawn(&sh(
            "echo one; echo two >&2; echo three; env | sort; exit 3",
            dir.path(),
        ))
        .await
        .unwrap();
    let mut out = stage.take_output().unwrap();
    let mut text = String::new();
    let (read, exit) = tokio::join!(out.read_to_string(&mut text), stage.wait());
    read.unwrap();
    let exit = exit.unwrap();
    assert_eq!(exit.code, Some(3));
    let env: Vec<&str> = text
        .lines()
        .skip(3)
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .collect();
    assert_eq!(
        &text.lines().take(3).collect::<Vec<_>>(),
        &["one", "two", "three"]
    );
    assert_eq!(env, ["ONLY=this", "PATH=/usr/bin:/bin"]);
}

#[tokio::test]
async fn leftover_background_and_setsid_processes_are_killed() {
    let dir = tempdir();
    let marker = format!("31{}", std::process::id() % 100000);
    let script = format!(
        "sleep {marker}1 & setsid sh -c 'sleep {marker}2 & exec sleep {marker}3' & (setsid sleep {marker}4 &) ; sleep 0.3; echo done"
    );
    let mut stage = Launcher::new(BIN)
        .spawn(&sh(&script, dir.path()))
        .await
        .unwrap();
    let exit = stage.wait().await.unwrap();
    assert_eq!(exit.code, Some(0));
    assert!(exit.leftovers_killed >= 4, "{exit:?}");
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
}

#[tokio::test]
async fn interrupt_then_kill_tree_leaves_nothing() {
    let dir = tempdir();
    let marker = format!("32{}", std::process::id() % 100000);
    // The shell ignores SIGINT and SIGTERM, as a stubborn hook would.
    let script = format!(
        "trap '' INT TERM; setsid sh -c 'sleep {marker}1' & sleep {marker}2 & sleep {marker}3"
    );
    let mut stage = Launcher::new(BIN)
        .spawn(&sh(&script, dir.path()))
        .await
        .unwrap();
    // The shell set its traps before it started the sleeps.
    until("the stage's three sleeps", LONG, || {
        let running = processes_with(&marker);
        (1..=3).all(|n| {
            let sleep = format!("sleep {marker}{n}");
            running.iter().any(|(_, cmd)| cmd.starts_with(&sleep))
        })
    })
    .await;
    stage.signal(StageSignal::Interrupt);
    let early = tokio::time::timeout(Duration::from_millis(300), stage.wait()).await;
    assert!(
        early.is_err(),
        "the stage ignored SIGINT and must still be running"
    );
    stage.signal(StageSignal::KillTree);
    let exit = stage.wait().await.unwrap();
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error() {
    let dir = tempdir();
    let mut spec = sh("true", dir.path());
    spec.program = "/nonexistent/terraform".into();
    let err = Launcher::new(BIN).spawn(&spec).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start /nonexistent/terraform: No such file or directory"),
        "{err}"
    );
}

/// A program still open for writing somewhere (here: by this test; in the agent: a child forked
/// while the software cache wrote it) makes `execve` fail with ETXTBSY. The helper waits for the
/// writer to go rather than failing the stage.
#[tokio::test]
async fn a_program_briefly_open_for_writing_still_starts() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let program = dir.path().join("tool");
    let mut writer = std::fs::File::create(&program).unwrap();
    writer.write_all(b"#!/bin/sh\necho tool-ran\n").unwrap();
    writer.flush().unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = sh("unused", dir.path());
    spec.program = program;
    spec.args = vec![];
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(writer);
    });
    let mut stage = Launcher::new(BIN).spawn(&spec).await.unwrap();
    let mut out = stage.take_output().unwrap();
    let mut text = String::new();
    let (read, exit) = tokio::join!(out.read_to_string(&mut text), stage.wait());
    read.unwrap();
    assert_eq!(exit.unwrap().code, Some(0), "{text}");
    assert_eq!(text.trim(), "tool-ran");
    closer.await.unwrap();
}

/// `(state, parent)` from `/proc/<pid>/stat`, if the process exists.
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

#[tokio::test]
async fn a_dropped_stage_is_killed_and_its_helper_stays_registered_until_tokio_collects_it() {
    let dir = tempdir();
    let marker = format!("33{}", std::process::id() % 100000);
    let script = format!("setsid sleep {marker}1 & sleep {marker}2");
    let stage = Launcher::new(BIN)
        .spawn(&sh(&script, dir.path()))
        .await
        .unwrap();
    let helper = stage.helper_pid();
    let me = std::process::id();
    drop(stage);
    // Nothing has waited for the helper yet (this runtime has not run since the drop): a PID-1
    // reaper must still leave it alone.
    assert!(
        is_helper(helper as i32),
        "forgotten before it was collected"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while is_helper(helper as i32) {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped stage's helper was never collected: {:?}",
            state_and_parent(helper)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Forgotten only once collected: neither running nor a zombie child of ours.
    assert!(
        state_and_parent(helper).is_none_or(|(_, parent)| parent != me),
        "forgotten while still a child: {:?}",
        state_and_parent(helper)
    );
    // The helper killed the whole tree before it exited.
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
}

/// Runs `scalr-agent __stage` directly with `args` and a spec that would create `ran`.
fn run_helper(args: &[String], dir: &std::path::Path) -> (Option<i32>, Vec<HelperEvent>) {
    let spec = dir.join("spec.json");
    std::fs::write(&spec, serde_json::to_vec(&sh("touch ran", dir)).unwrap()).unwrap();
    let out = std::process::Command::new(BIN)
        .arg(SUBCOMMAND)
        .args(args)
        .env_clear()
        .stdin(std::fs::File::open(&spec).unwrap())
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (out.status.code(), events)
}

#[test]
fn the_helper_runs_nothing_unless_the_agent_whose_pid_it_is_given_is_its_parent() {
    let dir = tempdir();
    // The helper's parent is this process, whose own parent stands in for an agent that died
    // before the helper started (the helper was re-parented away from it).
    let not_the_parent = nix::unistd::getppid().as_raw().to_string();
    let (code, events) = run_helper(std::slice::from_ref(&not_the_parent), dir.path());
    assert_eq!(code, Some(70), "{events:?}");
    match events.as_slice() {
        [HelperEvent::SpawnFailed { error }] => assert!(
            error.contains(&format!(
                "the agent (pid {not_the_parent}) is not this helper's parent (pid {}): it \
                 exited before the stage started; refusing to run the stage",
                std::process::id()
            )),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("ran").exists());

    // Without the agent's pid it cannot tell, so it refuses as well.
    let (code, events) = run_helper(&[], dir.path());
    assert_eq!(code, Some(70), "{events:?}");
    match events.as_slice() {
        [HelperEvent::SpawnFailed { error }] => assert!(
            error.contains("usage: scalr-agent __stage <agent pid>"),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("ran").exists());

    // With this process's pid, the stage runs.
    let (code, events) = run_helper(&[std::process::id().to_string()], dir.path());
    assert_eq!(code, Some(0), "{events:?}");
    assert!(
        matches!(
            events.as_slice(),
            [
                HelperEvent::Started { .. },
                HelperEvent::Exited { code: Some(0), .. }
            ]
        ),
        "{events:?}"
    );
    assert!(dir.path().join("ran").exists());
}
