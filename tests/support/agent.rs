//! The one way tests and benchmarks start the real `scalr-agent` binary (`run`, `exec`, or any
//! other command): [`AgentBuilder`] gives it a clean environment (only `PATH` and the variables
//! it is told), the harness's data and cache directories, the fake control plane, a working
//! directory, and an optional wrapper program (`unshare …`); [`Agent`] is the running process,
//! its stdout and stderr captured in files, killed on drop, with bounded waits on its log.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::control_plane::ControlPlane;

/// The agent binary Cargo built for this test or benchmark.
pub const BIN: &str = env!("CARGO_BIN_EXE_scalr-agent");
/// The only variable the agent inherits from outside its configuration.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The bound of every wait on the agent: generous, because the machine may be loaded.
pub const LONG: Duration = Duration::from_secs(120);

/// How to start the agent: build with [`super::harness::Harness::agent`] (or
/// [`AgentBuilder::new`]), adjust, then [`AgentBuilder::run`], [`AgentBuilder::spawn`],
/// [`AgentBuilder::exec`] or [`AgentBuilder::output`].
#[must_use]
#[derive(Clone, Debug)]
pub struct AgentBuilder {
    wrapper: Vec<OsString>,
    vars: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    logs: Option<PathBuf>,
    name: String,
}

impl AgentBuilder {
    /// The agent with only `PATH` and `vars`. A spawned agent's output files go to a
    /// temporary directory of its own unless [`AgentBuilder::logs`] names one.
    pub fn new(vars: &[(String, String)]) -> AgentBuilder {
        let mut b = AgentBuilder {
            wrapper: Vec::new(),
            vars: vec![("PATH".into(), PATH.into())],
            cwd: None,
            logs: None,
            name: "agent".into(),
        };
        for (k, v) in vars {
            b = b.env(k, v);
        }
        b
    }

    /// Keeps a spawned agent's output files in `dir`.
    pub fn logs(mut self, dir: &Path) -> AgentBuilder {
        self.logs = Some(dir.to_path_buf());
        self
    }

    /// Sets `key` (replacing an earlier value).
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> AgentBuilder {
        self.vars.retain(|(k, _)| k != key);
        let value = value.as_ref().to_string_lossy().into_owned();
        self.vars.push((key.into(), value));
        self
    }

    /// Sets each of `vars` (replacing earlier values).
    pub fn envs(self, vars: &[(&str, &str)]) -> AgentBuilder {
        vars.iter().fold(self, |b, (k, v)| b.env(k, v))
    }

    /// Leaves `key` unset.
    pub fn env_remove(mut self, key: &str) -> AgentBuilder {
        self.vars.retain(|(k, _)| k != key);
        self
    }

    /// Registers with `cp` under `name` with the pool's token; `name` also names the output
    /// files.
    pub fn control_plane(self, cp: &ControlPlane, name: &str) -> AgentBuilder {
        self.env("SCALR_URL", cp.url.as_str())
            .env("SCALR_AGENT_TOKEN", "pool-token")
            .env("SCALR_AGENT_NAME", name)
            .name(name)
    }

    /// Names the output files (`<logs>/<name>.stdout`, `.stderr`; `<name>-2.…` for the
    /// second agent of that name).
    pub fn name(mut self, name: &str) -> AgentBuilder {
        self.name = name.into();
        self
    }

    /// A data directory of its own (instead of the harness's), as a second agent needs.
    pub fn data_dir(self, dir: &Path) -> AgentBuilder {
        self.env("SCALR_AGENT_DATA_DIR", dir)
    }

    /// Runs the agent in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> AgentBuilder {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Starts `program args… <agent> <command>` instead of the agent itself (`unshare`,
    /// `setpriv`): the wrapper gets the same clean environment.
    pub fn wrapped(mut self, program: &str, args: &[&str]) -> AgentBuilder {
        self.wrapper = std::iter::once(program)
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        self
    }

    /// The value this builder gives `key`, if any.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The command, ready to start: `args` after the agent, the clean environment, killed
    /// when dropped (a failing test leaves no agent, and through the parent-death signal no
    /// stage, behind).
    #[allow(
        clippy::disallowed_methods,
        reason = "the tests' one way to start the agent"
    )]
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> tokio::process::Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => tokio::process::Command::new(BIN),
        };
        cmd.args(args)
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts `scalr-agent <args>` in the background, stdout and stderr in files.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(self, args: &[S]) -> Agent {
        let own = self.logs.is_none().then(super::dirs::tempdir);
        let logs = match &own {
            Some(d) => d.path().to_path_buf(),
            None => self.logs.clone().unwrap(),
        };
        // A restarted agent of the same name gets new files: the earlier one's log stays.
        let base = (1..)
            .map(|n| match n {
                1 => self.name.clone(),
                n => format!("{}-{n}", self.name),
            })
            .find(|b| !logs.join(format!("{b}.stderr")).exists())
            .unwrap();
        let stdout = logs.join(format!("{base}.stdout"));
        let stderr = logs.join(format!("{base}.stderr"));
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Agent {
            child,
            stdout,
            stderr,
            _logs: own,
        }
    }

    /// Starts the daemon, `scalr-agent run`.
    pub fn run(self) -> Agent {
        self.spawn(&["run"])
    }

    /// Runs `scalr-agent <args>` to its end; returns its status and output.
    pub async fn output<S: AsRef<std::ffi::OsStr>>(self, args: &[S]) -> Output {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
    }

    /// The blocking form of [`AgentBuilder::output`], for synchronous tests and benchmarks.
    pub fn output_blocking<S: AsRef<std::ffi::OsStr>>(self, args: &[S]) -> Output {
        let mut cmd = self.command(args);
        let std = cmd.as_std_mut();
        std.stdout(Stdio::piped()).stderr(Stdio::piped());
        std.output()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
    }

    /// Runs `scalr-agent <args>` to its end, its output thrown away (what benchmarks time).
    pub fn status_blocking<S: AsRef<std::ffi::OsStr>>(self, args: &[S]) -> ExitStatus {
        let mut cmd = self.command(args);
        let std = cmd.as_std_mut();
        std.stdout(Stdio::null()).stderr(Stdio::null());
        std.status()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
    }

    /// Runs `scalr-agent exec <task> --out <out>` to its end.
    pub async fn exec(self, task: &Path, out: &Path) -> Output {
        let args: [&std::ffi::OsStr; 4] = [
            "exec".as_ref(),
            task.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        self.output(&args).await
    }
}

/// A running agent (or its wrapper), killed when dropped.
pub struct Agent {
    pub child: tokio::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _logs: Option<tempfile::TempDir>,
}

impl Agent {
    /// The process's id (the wrapper's, if wrapped).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the agent runs")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// SIGKILL, then waits for the process.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// What the agent wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What the agent wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits (bounded by [`LONG`]) for the agent to exit.
    pub async fn exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(LONG, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the agent did not exit\n{}", self.stderr()),
        }
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.exit().await
    }

    /// Polls `cond` until it holds; fails after [`LONG`] with the agent's log.
    pub async fn until(&self, what: &str, cond: impl FnMut() -> bool) {
        super::wait::until_with(what, LONG, || self.stderr(), cond).await
    }

    /// Waits until the daemon has registered and takes tasks.
    pub async fn ready(&self) {
        self.until("the agent ready to receive tasks", || {
            self.stderr().contains("ready to receive tasks")
        })
        .await
    }

    /// The health listener's address (`SCALR_AGENT_HEALTH_ADDR`, port 0 allowed), from the
    /// agent's log line that announces it (text or JSON format).
    pub async fn health_addr(&self) -> SocketAddr {
        let mut addr = None;
        self.until("the health listener", || {
            addr = self
                .stderr()
                .lines()
                .filter(|l| l.contains("serving /healthz"))
                .find_map(parse_addr);
            addr.is_some()
        })
        .await;
        addr.unwrap()
    }
}

/// The `addr` field of a log line, in the JSON or the text format.
fn parse_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v["addr"].as_str()?.parse().ok();
    }
    let rest = &line[line.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}
