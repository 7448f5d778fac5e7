//! The stage helper: `scalr-agent __stage`, a small single-threaded process per stage.
//!
//! The agent is multi-threaded (tokio), so it must not set up a stage's isolation between fork
//! and exec itself (isolation.md explains the traps). Instead it re-executes its own binary as
//! this helper, with an empty environment, and writes a [`HelperSpec`] as JSON to the helper's
//! stdin. The helper:
//! 1. becomes a child subreaper (orphaned descendants of the stage reparent to it), asks for
//!    `SIGUSR1` if the agent dies, and exits unless its parent is still the agent (whose pid is
//!    its argument);
//! 2. blocks the signals it handles and forks the stage; in the child, [`layers::apply`] sets up
//!    the session, signals and isolation, the stage's stdout goes to the merged output (or a
//!    file), then `execve` with exactly the spec's environment;
//! 3. reports `started` (pid and applied layers) as one JSON line on its stdout;
//! 4. forwards `SIGINT`/`SIGTERM`/`SIGHUP` to the stage's process group, and on `SIGUSR1` kills
//!    the whole tree;
//! 5. when the stage's main process exits, kills every remaining descendant (background jobs,
//!    `setsid` double-forked daemons: all are its descendants as subreaper), reaps them all,
//!    and reports `exited`.
//!
//! The helper's stderr is the stage's merged stdout+stderr (one pipe, so arrival order is kept).
#![allow(
    clippy::disallowed_methods,
    reason = "forks the stage (the helper side of Launcher::spawn); opens /dev/null, /proc, and the stage's stdout file in the child after the task's uid is in force"
)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::layers;
use super::policy::{LayerReport, Policy};

/// The hidden subcommand that runs the helper.
pub const SUBCOMMAND: &str = "__stage";

/// What to run, sent by the agent on the helper's stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment of the stage; nothing else is inherited.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Send the stage's stdout to this file (created 0600) instead of the merged output.
    pub stdout_file: Option<PathBuf>,
    pub policy: Policy,
}

/// What the helper reports on its stdout, one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HelperEvent {
    Started {
        pid: u32,
        layers: Vec<LayerReport>,
    },
    SpawnFailed {
        error: String,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        leftovers_killed: u32,
    },
}

/// Why the helper could not start the stage: reported as `spawn_failed` with this text.
#[derive(Debug, thiserror::Error)]
enum HelperError {
    /// A system call of the helper's own setup (`what`: the call or what it was for).
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("usage: scalr-agent {SUBCOMMAND} <agent pid> (got {arg:?} as the agent pid)")]
    Usage { arg: Option<std::ffi::OsString> },
    #[error(
        "the agent (pid {agent}) is not this helper's parent (pid {parent}): it exited \
         before the stage started; refusing to run the stage"
    )]
    NotParent { agent: Pid, parent: Pid },
    #[error("invalid stage spec: {0}")]
    Spec(serde_json::Error),
    /// The stage's layers failed in the child (`detail`: their error, sent over the report
    /// pipe), or the program could not be executed.
    #[error("cannot start {}: {detail}", program.display())]
    Start { program: PathBuf, detail: String },
}

/// `map_err` for a failed system call of the helper's setup.
fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> HelperError {
    move |source| HelperError::Sys { what, source }
}

/// `map_err` for a failed read or descriptor operation of the helper's setup.
fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> HelperError {
    move |source| HelperError::Io { what, source }
}

/// Entry point of `scalr-agent __stage <agent pid>`. Exits with 70 after a `spawn_failed` report
/// if the stage cannot be started, including when the agent (whose pid it is given) is not its
/// parent any more: a stage nobody would stop is never run. Never returns control to the CLI's
/// normal paths: no configuration, logging or async runtime is started in the helper.
pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            emit(&HelperEvent::SpawnFailed {
                error: e.to_string(),
            });
            ExitCode::from(70)
        }
    }
}

/// The helper's sequence: arm against the agent's death, read the spec, start the stage, then
/// supervise it to its end.
fn run() -> Result<(), HelperError> {
    let handled = arm()?;
    let spec = read_spec()?;
    let (child, layers) = start(&spec)?;
    let pid = Pid::from_raw(child.id() as i32);
    emit(&HelperEvent::Started {
        pid: child.id(),
        layers,
    });
    supervise(&handled, pid)
}

/// Makes the helper a non-dumpable subreaper that dies with the agent, checks that its parent
/// is still the agent, and blocks the signals it handles; returns them.
fn arm() -> Result<SigSet, HelperError> {
    // The spec holds the stage's secrets: keep this process's memory closed to same-uid peers.
    nix::sys::prctl::set_dumpable(false).map_err(sys("PR_SET_DUMPABLE"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(sys("PR_SET_CHILD_SUBREAPER"))?;
    // The agent passes its own pid: `getppid` at start proves nothing, since if the agent died
    // before then our parent is already a subreaper or init. Once the parent-death signal is
    // armed, a parent that is still the agent means its death will reach us; any other parent
    // means it is gone. The agent may itself be PID 1 (a container's init): compare with its
    // pid, not with 1.
    let agent = agent_pid()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1).map_err(sys("PR_SET_PDEATHSIG"))?;
    let parent = nix::unistd::getppid();
    if parent != agent {
        return Err(HelperError::NotParent { agent, parent });
    }
    let mut handled = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGCHLD,
    ] {
        handled.add(s);
    }
    handled.thread_block().map_err(sys("blocking signals"))?;
    Ok(handled)
}

/// Reads the [`HelperSpec`] from stdin, then points stdin at `/dev/null`.
fn read_spec() -> Result<HelperSpec, HelperError> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(io("reading the stage spec"))?;
    let spec: HelperSpec = serde_json::from_slice(&input).map_err(HelperError::Spec)?;
    let devnull = std::fs::File::open("/dev/null").map_err(io("/dev/null"))?;
    nix::unistd::dup2_stdin(&devnull).map_err(sys("stdin"))?;
    Ok(spec)
}

/// Forks and execs the stage, applying the layers in the child; returns it with the layers'
/// report (sent back over a close-on-exec pipe).
fn start(spec: &HelperSpec) -> Result<(std::process::Child, Vec<LayerReport>), HelperError> {
    // A program written a moment ago (the software cache's install, a task's own file) can still
    // be open for writing in a child that some process forked while it was open: that copy of
    // the descriptor lives until the child execs or exits, and `execve` fails with ETXTBSY
    // meanwhile. The window is short: try again for about a second before giving up.
    let mut busy_retries = 20;
    loop {
        match start_once(spec) {
            Err(Start::Busy(_)) if busy_retries > 0 => {
                busy_retries -= 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(Start::Busy(e) | Start::Failed(e)) => return Err(e),
            Ok(started) => return Ok(started),
        }
    }
}

/// Why one attempt to start the stage failed: its program was busy (ETXTBSY), or anything else.
enum Start {
    Busy(HelperError),
    Failed(HelperError),
}

impl From<HelperError> for Start {
    fn from(e: HelperError) -> Self {
        Start::Failed(e)
    }
}

fn start_once(spec: &HelperSpec) -> Result<(std::process::Child, Vec<LayerReport>), Start> {
    let (report_rd, report_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("report pipe"))?;
    let merged: OwnedFd = std::io::stderr().as_fd_owned().map_err(io("dup stderr"))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(merged))
        .stderr(Stdio::inherit());
    let policy = spec.policy.clone();
    let stdout_file = spec.stdout_file.clone();
    let cwd = spec.cwd.clone();
    let report_fd = report_wr.as_raw_fd();
    // SAFETY: the helper is single-threaded, so the forked child may allocate and take locks;
    // the closure only applies the layers, writes to its own pipe and redirects stdout.
    unsafe {
        cmd.pre_exec(move || {
            let outcome = layers::apply(&policy);
            let report = match &outcome {
                Ok(layers) => serde_json::to_vec(layers).unwrap_or_default(),
                Err(e) => serde_json::to_vec(&e.to_string()).unwrap_or_default(),
            };
            let _ = nix::unistd::write(std::os::fd::BorrowedFd::borrow_raw(report_fd), &report);
            outcome.map_err(|e| std::io::Error::other(e.to_string()))?;
            // The layers start the stage in its task directory; the step wants its own.
            std::env::set_current_dir(&cwd)?;
            if let Some(path) = &stdout_file {
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)?;
                nix::unistd::dup2_stdout(&f)?;
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(cmd);
    drop(report_wr);
    let mut report = Vec::new();
    let _ = std::fs::File::from(report_rd).read_to_end(&mut report);
    match spawned {
        Ok(child) => Ok((child, serde_json::from_slice(&report).unwrap_or_default())),
        Err(e) => {
            let detail = serde_json::from_slice::<String>(&report).unwrap_or_default();
            let error = HelperError::Start {
                program: spec.program.clone(),
                detail: if detail.is_empty() {
                    e.to_string()
                } else {
                    detail
                },
            };
            if e.raw_os_error() == Some(nix::libc::ETXTBSY) {
                Err(Start::Busy(error))
            } else {
                Err(Start::Failed(error))
            }
        }
    }
}

/// Relays signals to the stage until its main process exited, kills and reaps what it left,
/// and reports `exited`.
fn supervise(handled: &SigSet, pid: Pid) -> Result<(), HelperError> {
    let mut status = None;
    // Descendants other than the stage's main process killed on SIGUSR1 (a timeout or cancel
    // past its grace) and after the main process exited.
    let mut leftovers_killed = 0;
    while status.is_none() {
        let sig = handled.wait().map_err(sys("sigwait"))?;
        match sig {
            Signal::SIGCHLD => status = reap(pid),
            Signal::SIGUSR1 => {
                leftovers_killed += kill_tree(pid, &mut status);
                if status.is_none() {
                    status = reap(pid);
                }
            }
            other => {
                let _ = kill(Pid::from_raw(-pid.as_raw()), other);
            }
        }
    }
    leftovers_killed += kill_tree(pid, &mut status);
    let (code, signal) = match status {
        Some(WaitStatus::Exited(_, code)) => (Some(code), None),
        Some(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
        _ => (None, None),
    };
    emit(&HelperEvent::Exited {
        code,
        signal,
        leftovers_killed,
    });
    Ok(())
}

/// The agent's pid, the argument after [`SUBCOMMAND`].
fn agent_pid() -> Result<Pid, HelperError> {
    let arg = std::env::args_os().nth(2);
    arg.as_ref()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .map(Pid::from_raw)
        .ok_or(HelperError::Usage { arg })
}

/// Reaps every exited child; returns the main stage's status once it has exited.
fn reap(main: Pid) -> Option<WaitStatus> {
    let mut main_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return main_status,
            Ok(s) if s.pid() == Some(main) => {
                if matches!(s, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    main_status = Some(s);
                }
            }
            Ok(_) => {}
        }
    }
}

/// Kills every descendant with SIGKILL until none is left, reaping them; returns how many
/// were killed, not counting the stage's main process. Bounded: a fork bomb faster than this loop is stopped by RLIMIT_NPROC.
fn kill_tree(main: Pid, main_status: &mut Option<WaitStatus>) -> u32 {
    let me = std::process::id() as i32;
    let mut killed = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let pids = descendants(me);
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            if kill(Pid::from_raw(*p), Signal::SIGKILL).is_ok() && *p != main.as_raw() {
                killed.insert(*p);
            }
        }
        reap_into(main, main_status);
        std::thread::sleep(Duration::from_millis(2));
    }
    reap_into(main, main_status);
    killed.len() as u32
}

/// Reaps every exited child, keeping the main stage's status if it is among them.
fn reap_into(main: Pid, main_status: &mut Option<WaitStatus>) {
    if let Some(s) = reap(main) {
        main_status.get_or_insert(s);
    }
}

/// Live (non-zombie) descendants of `root`. Walks `/proc/<pid>/task/<tid>/children` from
/// `root` down (cheap: only the tree is read); as a subreaper, every orphaned descendant is a
/// child of `root`, so nothing escapes the walk. Falls back to scanning every `/proc/<pid>/stat`
/// on kernels without the `children` files.
pub fn descendants(root: i32) -> Vec<i32> {
    let children = |pid: i32| -> Option<Vec<i32>> {
        let mut out = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let text = std::fs::read_to_string(task.path().join("children")).ok()?;
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
        Some(out)
    };
    if std::path::Path::new(&format!("/proc/{root}/task/{root}/children")).exists() {
        let mut found = Vec::new();
        let mut queue = vec![root];
        while let Some(p) = queue.pop() {
            for c in children(p).unwrap_or_default() {
                if !found.contains(&c) {
                    found.push(c);
                    queue.push(c);
                }
            }
        }
        found.retain(|p| !is_zombie(*p));
        return found;
    }
    descendants_by_scan(root)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

fn descendants_by_scan(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command name, which is in parentheses and may contain spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let mut fields = rest.split(' ');
            let state = fields.next().unwrap_or("");
            let Some(ppid) = fields.next().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            parent_of.push((pid, ppid, state == "Z"));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp, _)| *pp == p)
                .map(|(c, _, _)| *c),
        );
        i += 1;
    }
    found.retain(|p| *p != root && !parent_of.iter().any(|(c, _, z)| c == p && *z));
    found
}

fn emit(event: &HelperEvent) {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}

trait DupOwned {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd>;
}

impl DupOwned for std::io::Stderr {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}
