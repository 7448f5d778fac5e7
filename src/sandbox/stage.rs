//! The agent's side of a stage process: the one place that spawns child processes.
//!
//! [`Launcher::spawn`] starts `scalr-agent __stage <agent pid>` (see [`super::helper`]) with an
//! empty environment, hands it the [`HelperSpec`] and waits for its `started` report. The
//! returned [`Stage`] exposes the merged output pipe, sends control signals, and yields the exit
//! status. Dropping a `Stage` that has not finished asks the helper to kill the whole tree.
//!
//! Every helper's tokio `Child` lives in a [`Helper`], registered as a live helper (so a PID-1
//! reaper leaves it to tokio) from its spawn until tokio has collected its exit status, on
//! every path: waited for, or dropped and then collected in the background.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

use super::helper::{HelperEvent, HelperSpec, SUBCOMMAND};
use super::policy::LayerReport;

/// Pids of the helpers this process started and tokio has not yet waited for, each with a
/// count (a pid freed by tokio's wait may be reused by a new helper before the old one is
/// forgotten): a PID-1 reaper must leave their exit statuses to tokio. A pid is added under
/// the same lock as the spawn (so no helper is ever visible unregistered) and removed only once
/// tokio has collected it (a stale pid could be reused by an orphan that then never gets
/// reaped; a pid forgotten early could be reaped by the reaper and then waited for by tokio).
static HELPERS: Mutex<BTreeMap<i32, usize>> = Mutex::new(BTreeMap::new());

fn helpers() -> MutexGuard<'static, BTreeMap<i32, usize>> {
    HELPERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `pid` is a live stage helper of this process. Blocks while a helper is being
/// spawned.
pub fn is_helper(pid: i32) -> bool {
    helpers().contains_key(&pid)
}

/// Runs `f` with the registry locked and `is_helper` as its argument: no helper can be spawned
/// or forgotten while `f` runs, so a pid `f` finds unregistered stays a non-helper until `f`
/// returns (the PID-1 reaper checks and waits under it). `f` must not block.
pub fn with_helpers_locked<R>(f: impl FnOnce(&dyn Fn(i32) -> bool) -> R) -> R {
    let registry = helpers();
    f(&|pid| registry.contains_key(&pid))
}

fn track_helper(registry: &mut BTreeMap<i32, usize>, pid: i32) {
    *registry.entry(pid).or_default() += 1;
}

pub(crate) fn forget_helper(pid: u32) {
    let mut registry = helpers();
    if let Some(count) = registry.get_mut(&(pid as i32)) {
        *count -= 1;
        if *count == 0 {
            registry.remove(&(pid as i32));
        }
    }
}

#[cfg(test)]
pub(crate) fn track_helper_for_test(pid: i32) {
    track_helper(&mut helpers(), pid);
}

/// One helper process, registered from its spawn until tokio has collected its exit status.
///
/// Dropping it before [`Helper::wait`] returned sends the helper `SIGUSR1` (kill the whole
/// tree, then exit) and hands the `Child` to a task on the current tokio runtime that waits for
/// it and only then forgets the pid; without a runtime (or if that task is dropped by a
/// shutting-down runtime) a thread polls `try_wait` instead. The pid is never forgotten while
/// the helper's status is still to be collected, and tokio's orphan queue never gets the child.
#[derive(Debug)]
struct Helper {
    /// Taken only by `drop`.
    child: Option<Child>,
    pid: u32,
    /// tokio has waited for it (its pid is forgotten and may be another process's by now).
    collected: bool,
}

impl Helper {
    /// Spawns `cmd` and registers it under the registry's lock.
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place processes start: the stage helper of Launcher::spawn"
    )]
    fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<Helper> {
        let mut registry = helpers();
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        track_helper(&mut registry, pid as i32);
        Ok(Helper {
            child: Some(child),
            pid,
            collected: false,
        })
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("only drop takes the child")
    }

    /// Sends `sig` to the helper, unless it was already collected.
    fn signal(&self, sig: Signal) {
        if !self.collected && self.pid > 0 {
            let _ = kill(Pid::from_raw(self.pid as i32), sig);
        }
    }

    /// Waits for the helper's exit, then forgets its pid. Cancel-safe: if this future is
    /// dropped, dropping the `Helper` collects the child.
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child().wait().await;
        if !self.collected {
            // Collected, or (on an error) not ours to wait for: tokio never waits for it again.
            self.collected = true;
            forget_helper(self.pid);
        }
        status
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.collected {
            return;
        }
        if !matches!(child.try_wait(), Ok(None)) {
            forget_helper(self.pid);
            return;
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGUSR1);
        let late = Abandoned {
            child: Some(child),
            pid: self.pid,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(late.wait()));
        }
        // Otherwise `late` is dropped here and a thread collects the child.
    }
}

/// A dropped helper still to be collected; forgets its pid once it has been.
struct Abandoned {
    child: Option<Child>,
    pid: u32,
}

impl Abandoned {
    async fn wait(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait().await;
            self.child = None;
            forget_helper(self.pid);
        }
    }
}

impl Drop for Abandoned {
    /// Reached with the child still uncollected only without a runtime, or when the runtime
    /// dropped the task before the helper exited: a thread polls for it instead. If no thread
    /// can be started the pid stays registered (a leak, never a stolen status).
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid;
        let _ = std::thread::Builder::new()
            .name("stage-helper-wait".into())
            .spawn(move || {
                while matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                forget_helper(pid);
            });
    }
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
    events: Lines<BufReader<ChildStdout>>,
    output: Option<ChildStderr>,
    /// The stage's main process.
    pub pid: u32,
    pub layers: Vec<LayerReport>,
    /// Dropping it while the stage runs kills the stage's tree (see [`Helper`]).
    helper: Helper,
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
    pub async fn spawn(&self, spec: &HelperSpec) -> Result<Stage, SpawnError> {
        let helper_err = |source| SpawnError::Helper {
            helper: self.helper.clone(),
            source,
        };
        // The helper checks that the agent is still its parent once its parent-death signal is
        // armed: its own `getppid` is no proof, as the agent may have died before it ran.
        let mut helper = Helper::spawn(
            tokio::process::Command::new(&self.helper)
                .arg(SUBCOMMAND)
                .arg(std::process::id().to_string())
                .env_clear()
                .current_dir("/")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(helper_err)?;
        // On every early return below, dropping `helper` kills it and collects it.
        let child = helper.child();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut events = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let output = child.stderr.take();
        let json = serde_json::to_vec(spec).expect("the spec serializes");
        stdin.write_all(&json).await.map_err(helper_err)?;
        drop(stdin);
        let first = events.next_line().await.map_err(helper_err)?;
        match first.as_deref().map(serde_json::from_str::<HelperEvent>) {
            Some(Ok(HelperEvent::Started { pid, layers })) => Ok(Stage {
                events,
                output,
                pid,
                layers,
                helper,
            }),
            Some(Ok(HelperEvent::SpawnFailed { error })) => {
                let _ = helper.wait().await;
                Err(SpawnError::Stage(error))
            }
            Some(Ok(other)) => Err(SpawnError::Protocol(format!(
                "unexpected first event {other:?}"
            ))),
            Some(Err(e)) => Err(SpawnError::Protocol(e.to_string())),
            None => match helper.wait().await {
                Ok(status) => Err(SpawnError::Protocol(format!(
                    "the helper exited ({status}) without reporting"
                ))),
                Err(e) => Err(helper_err(e)),
            },
        }
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
        self.helper.signal(sig);
    }

    /// The helper's pid (tests watch it being collected).
    pub fn helper_pid(&self) -> u32 {
        self.helper.pid
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
        let status = self
            .helper
            .wait()
            .await
            .map_err(|e| SpawnError::Protocol(e.to_string()))?;
        exit.ok_or_else(|| {
            SpawnError::Protocol(format!(
                "the helper exited ({status}) without reporting the stage's exit"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A pid that no process of a test can have (above the kernel's PID_MAX_LIMIT).
    const PID: i32 = 4_194_304 + 7;

    #[test]
    fn a_reused_pid_stays_registered_until_each_helper_is_forgotten() {
        track_helper_for_test(PID);
        // tokio collected the first helper, and a new one got its pid before it was forgotten.
        track_helper_for_test(PID);
        forget_helper(PID as u32);
        assert!(is_helper(PID));
        assert!(with_helpers_locked(|is_helper| is_helper(PID)));
        forget_helper(PID as u32);
        assert!(!is_helper(PID));
        forget_helper(PID as u32);
        assert!(!is_helper(PID));
    }
}
