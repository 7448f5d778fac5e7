//! The agent's side of a stage process: the one place that spawns child processes.
//!
//! [`Launcher::spawn`] starts `scalr-agent __stage` (see [`super::helper`]) with an empty
//! environment, hands it the [`HelperSpec`] and waits for its `started` report. The returned
//! [`Stage`] exposes the merged output pipe, sends control signals, and yields the exit status.
//! Dropping a `Stage` that has not finished asks the helper to kill the whole tree.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

use super::helper::{HelperEvent, HelperSpec, SUBCOMMAND};
use super::policy::LayerReport;

/// Pids of the helpers this process started and tokio has not yet waited for: a PID-1 reaper
/// must leave their exit statuses to tokio. A pid is added under the same lock as the spawn
/// (so no helper is ever visible unregistered) and removed once tokio has collected it or the
/// `Stage` is dropped (a stale pid could be reused by an orphan that then never gets reaped).
static HELPERS: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn helpers() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<i32>> {
    HELPERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `pid` is a live stage helper of this process. Blocks while a helper is being
/// spawned.
pub fn is_helper(pid: i32) -> bool {
    helpers().contains(&pid)
}

pub(crate) fn forget_helper(pid: u32) {
    helpers().remove(&(pid as i32));
}

#[cfg(test)]
pub(crate) fn track_helper_for_test(pid: i32) {
    helpers().insert(pid);
}

/// Why a stage could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("starting the stage helper {helper}: {source}")]
    Helper {
        helper: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Stage(String),
    #[error("the stage helper broke its protocol: {0}")]
    Protocol(String),
}

/// How to reach the stage helper: the agent's own executable.
#[derive(Debug, Clone)]
pub struct Launcher {
    helper: PathBuf,
}

/// A control signal for a running stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageSignal {
    /// SIGINT to the stage's process group: Terraform stops cleanly and releases its lock.
    Interrupt,
    /// SIGTERM to the stage's process group.
    Terminate,
    /// SIGKILL to every process of the stage.
    KillTree,
}

/// How a stage ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StageExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Processes still alive after the main one exited, killed by the helper.
    pub leftovers_killed: u32,
}

impl StageExit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A running stage.
#[derive(Debug)]
pub struct Stage {
    child: Child,
    events: Lines<BufReader<ChildStdout>>,
    output: Option<ChildStderr>,
    helper_pid: u32,
    /// The stage's main process.
    pub pid: u32,
    pub layers: Vec<LayerReport>,
    finished: bool,
}

impl Launcher {
    /// The helper is this very executable.
    pub fn current() -> std::io::Result<Launcher> {
        Ok(Launcher {
            helper: std::env::current_exe()?,
        })
    }

    /// An explicit `scalr-agent` executable (tests, where the current executable is a test).
    pub fn new(helper: impl Into<PathBuf>) -> Launcher {
        Launcher {
            helper: helper.into(),
        }
    }

    pub fn helper(&self) -> &Path {
        &self.helper
    }

    /// Starts a stage. Returns once the stage's program has been exec'd (or failed to be).
    #[allow(clippy::disallowed_methods)]
    pub async fn spawn(&self, spec: &HelperSpec) -> Result<Stage, SpawnError> {
        let helper_err = |source| SpawnError::Helper {
            helper: self.helper.clone(),
            source,
        };
        let mut child = {
            let mut registry = helpers();
            let child = tokio::process::Command::new(&self.helper)
                .arg(SUBCOMMAND)
                .env_clear()
                .current_dir("/")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(helper_err)?;
            registry.insert(child.id().unwrap_or(0) as i32);
            child
        };
        let helper_pid = child.id().unwrap_or(0);
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let json = serde_json::to_vec(spec).expect("the spec serializes");
        if let Err(e) = stdin.write_all(&json).await {
            forget_helper(helper_pid);
            return Err(helper_err(e));
        }
        drop(stdin);
        let mut events = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let output = child.stderr.take();
        let first = events.next_line().await.map_err(helper_err);
        let first = match first {
            Ok(f) => f,
            Err(e) => {
                forget_helper(helper_pid);
                return Err(e);
            }
        };
        let started = match first.as_deref().map(serde_json::from_str::<HelperEvent>) {
            Some(Ok(HelperEvent::Started { pid, layers })) => Ok(Stage {
                child,
                events,
                output,
                helper_pid,
                pid,
                layers,
                finished: false,
            }),
            Some(Ok(HelperEvent::SpawnFailed { error })) => {
                let _ = child.wait().await;
                forget_helper(helper_pid);
                Err(SpawnError::Stage(error))
            }
            Some(Ok(other)) => Err(SpawnError::Protocol(format!(
                "unexpected first event {other:?}"
            ))),
            Some(Err(e)) => Err(SpawnError::Protocol(e.to_string())),
            None => match child.wait().await {
                Ok(status) => Err(SpawnError::Protocol(format!(
                    "the helper exited ({status}) without reporting"
                ))),
                Err(e) => Err(helper_err(e)),
            },
        };
        if started.is_err() {
            forget_helper(helper_pid);
        }
        started
    }
}

impl Stage {
    /// The stage's merged stdout and stderr. Read it concurrently with [`Stage::wait`].
    pub fn take_output(&mut self) -> Option<ChildStderr> {
        self.output.take()
    }

    /// Sends a control signal through the helper.
    pub fn signal(&self, signal: StageSignal) {
        let sig = match signal {
            StageSignal::Interrupt => Signal::SIGINT,
            StageSignal::Terminate => Signal::SIGTERM,
            StageSignal::KillTree => Signal::SIGUSR1,
        };
        if !self.finished && self.helper_pid > 0 {
            let _ = kill(Pid::from_raw(self.helper_pid as i32), sig);
        }
    }

    /// Waits for the stage and every process it started to be gone.
    pub async fn wait(&mut self) -> Result<StageExit, SpawnError> {
        let mut exit = None;
        while let Some(line) = self
            .events
            .next_line()
            .await
            .map_err(|e| SpawnError::Protocol(e.to_string()))?
        {
            match serde_json::from_str::<HelperEvent>(&line) {
                Ok(HelperEvent::Exited {
                    code,
                    signal,
                    leftovers_killed,
                }) => {
                    exit = Some(StageExit {
                        code,
                        signal,
                        leftovers_killed,
                    })
                }
                Ok(other) => {
                    return Err(SpawnError::Protocol(format!("unexpected event {other:?}")));
                }
                Err(e) => return Err(SpawnError::Protocol(e.to_string())),
            }
        }
        let status = self.child.wait().await;
        forget_helper(self.helper_pid);
        self.finished = true;
        let status = status.map_err(|e| SpawnError::Protocol(e.to_string()))?;
        exit.ok_or_else(|| {
            SpawnError::Protocol(format!(
                "the helper exited ({status}) without reporting the stage's exit"
            ))
        })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // Abandoned mid-run (the task was dropped): nothing of it may survive. Its exit
        // status is nobody's concern any more: the reaper may collect it. (Once waited for,
        // the pid was forgotten already and may belong to another helper by now.)
        self.signal(StageSignal::KillTree);
        if !self.finished {
            forget_helper(self.helper_pid);
        }
    }
}
