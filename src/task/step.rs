//! Running one step (a hook or a tool invocation) through the stage helper: header, merged
//! output into the masked log, timeout and cancellation, and a [`StepRecord`].
//!
//! Three ways to stop a step: a timeout or a graceful cancel sends SIGINT, then SIGKILL of the
//! whole tree after the grace period; the agent's shutdown sends SIGTERM and leaves the SIGKILL
//! to the caller's own deadline; a forced cancel sends SIGKILL to the whole tree at once (and
//! nothing before it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::cancel::Cancel;
use super::env::Env;
use super::log::TaskLog;
use super::result::{StepKind, StepRecord, StepStatus};
use crate::sandbox::helper::HelperSpec;
use crate::sandbox::policy::{LayerReport, Policy};
use crate::sandbox::stage::{Launcher, Stage, StageSignal};

/// What a step needs besides its command.
pub struct StepContext<'a> {
    pub launcher: &'a Launcher,
    pub policy: &'a Policy,
    /// How the step is stopped (see [`Cancel`]); `graceful` waits `grace` before the kill.
    pub cancel: &'a Cancel,
    pub grace: Duration,
}

/// One command to run.
pub struct Command<'a> {
    pub name: &'a str,
    pub header: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub cwd: &'a Path,
    pub env: &'a Env,
    pub timeout: Duration,
    pub stdout_file: Option<PathBuf>,
    pub kind: StepKind,
}

/// Runs a step to completion; never returns early while any of its processes live. Also
/// returns the layers the helper applied.
pub async fn run(
    cx: &StepContext<'_>,
    cmd: Command<'_>,
    log: &mut TaskLog,
) -> (StepRecord, Vec<LayerReport>) {
    let started = Instant::now();
    let shown = log.masker().mask(&display_command(cmd.program, &cmd.args));
    log.line(cmd.header);
    let record = |status, exit_code, signal, leftovers_killed| StepRecord {
        name: cmd.name.to_string(),
        command: shown.clone(),
        status,
        exit_code,
        signal,
        duration_ms: started.elapsed().as_millis() as u64,
        leftovers_killed,
        kind: cmd.kind,
    };
    if cx.cancel.is_cancelled() {
        return (record(StepStatus::Canceled, None, None, 0), Vec::new());
    }
    let spec = HelperSpec {
        program: cmd.program.to_path_buf(),
        args: cmd.args.clone(),
        env: cmd
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: cmd.cwd.to_path_buf(),
        stdout_file: cmd.stdout_file.clone(),
        policy: cx.policy.clone(),
    };
    let mut stage = match cx.launcher.spawn(&spec).await {
        Ok(s) => s,
        Err(e) => {
            log.line(&format!("Error: {e}"));
            return (record(StepStatus::Errored, None, None, 0), Vec::new());
        }
    };
    let layers = stage.layers.clone();
    let ended_by = watch(cx, &cmd, &mut stage, log).await;
    log.end_output();
    match stage.wait().await {
        Ok(exit) => {
            let status = ended_by.unwrap_or(if exit.success() {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            });
            (
                record(status, exit.code, exit.signal, exit.leftovers_killed),
                layers,
            )
        }
        Err(e) => {
            log.line(&format!("Error: {e}"));
            (record(StepStatus::Errored, None, None, 0), layers)
        }
    }
}

/// Copies the step's output into the log until it ends, stopping it on its timeout or on
/// `cx.cancel`; returns why it was stopped, if it was.
async fn watch(
    cx: &StepContext<'_>,
    cmd: &Command<'_>,
    stage: &mut Stage,
    log: &mut TaskLog,
) -> Option<StepStatus> {
    let mut output = stage.take_output().expect("output is taken once");
    let mut buf = vec![0u8; 32 * 1024];
    let deadline = tokio::time::sleep(cmd.timeout);
    tokio::pin!(deadline);
    let mut ended_by: Option<StepStatus> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut killed = false;
    let mut terminated = false;
    let cancel = cx.cancel;
    loop {
        let grace = async {
            match kill_at {
                Some(t) if !killed => tokio::time::sleep_until(t).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            n = output.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => log.output(&buf[..n]),
            },
            () = &mut deadline, if ended_by.is_none() => {
                ended_by = Some(StepStatus::TimedOut);
                log.line(&format!("\n{} timed out after {}; interrupting it", cmd.name, humantime::format_duration(cmd.timeout)));
                stage.signal(StageSignal::Interrupt);
                kill_at = Some(tokio::time::Instant::now() + cx.grace);
            }
            // A forced kill is cancelled before the token that marks its reason: when both
            // are ready, only the kill is sent, whichever branch runs first.
            () = cancel.graceful.cancelled(), if ended_by.is_none() => {
                ended_by = Some(StepStatus::Canceled);
                if !cancel.kill.is_cancelled() {
                    log.line(&format!("\nCancelled: interrupting {}", cmd.name));
                    stage.signal(StageSignal::Interrupt);
                    kill_at = Some(tokio::time::Instant::now() + cx.grace);
                }
            }
            () = cancel.terminate.cancelled(), if !terminated && !killed => {
                ended_by.get_or_insert(StepStatus::Canceled);
                terminated = true;
                if !cancel.kill.is_cancelled() {
                    log.line(&format!("\nThe agent is shutting down: terminating {}", cmd.name));
                    stage.signal(StageSignal::Terminate);
                }
            }
            () = cancel.kill.cancelled(), if !killed => {
                ended_by.get_or_insert(StepStatus::Canceled);
                killed = true;
                log.line(&format!("\nKilling {} and every process it started", cmd.name));
                stage.signal(StageSignal::KillTree);
            }
            () = grace => {
                killed = true;
                log.line(&format!("\n{} did not stop within {}; killing it", cmd.name, humantime::format_duration(cx.grace)));
                stage.signal(StageSignal::KillTree);
            }
        }
    }
    ended_by
}

fn display_command(program: &Path, args: &[String]) -> String {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::iter::once(name)
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}
