//! Stage processes through the helper: merged output, exit status, environment, tree kill.

use std::time::Duration;

use scalr_agent::sandbox::helper::HelperSpec;
use scalr_agent::sandbox::policy::Policy;
use scalr_agent::sandbox::stage::{Launcher, StageSignal};
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_scalr-agent");

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

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
        {
            found.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

#[tokio::test]
async fn output_is_merged_in_order_and_the_environment_is_exactly_the_spec() {
    let dir = tempfile::tempdir().unwrap();
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
    let dir = tempfile::tempdir().unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("32{}", std::process::id() % 100000);
    // The shell ignores SIGINT and SIGTERM, as a stubborn hook would.
    let script = format!(
        "trap '' INT TERM; setsid sh -c 'sleep {marker}1' & sleep {marker}2 & sleep {marker}3"
    );
    let mut stage = Launcher::new(BIN)
        .spawn(&sh(&script, dir.path()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("true", dir.path());
    spec.program = "/nonexistent/terraform".into();
    let err = Launcher::new(BIN).spawn(&spec).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start /nonexistent/terraform: No such file or directory"),
        "{err}"
    );
}
