//! The daemon's settings (`scalr-agent run`), owned here and filled in by `config`: the
//! control plane, slots, single mode, the stop sequence, state, health listener and spool
//! bound, plus what the daemon shares with other commands (name, data directory, HTTP client,
//! runtime hints).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::platform::RuntimeHints;
use crate::secret::Secret;

/// Settings of the daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SCALR_URL` and the pool token; `None` when they are not set (`run` then refuses to
    /// start: `config` requires them for `run`).
    pub control_plane: Option<ControlPlane>,
    /// `SCALR_AGENT_NAME`.
    pub name: String,
    /// `SCALR_AGENT_DATA_DIR`: the spool, task inputs and `.agent.state` live there.
    pub data_dir: PathBuf,
    /// The HTTP client's settings (the control plane's requests).
    pub http: crate::http::Settings,
    /// `SCALR_AGENT_KEEP_TASK_DIRS`: keep each task's inputs after it ended.
    pub keep_task_dirs: bool,
    /// Where the agent runs, for the registration's `runtime`.
    pub runtime: RuntimeHints,
    /// `SCALR_AGENT_CONCURRENCY`: task slots.
    pub concurrency: NonZeroU32,
    /// `SCALR_AGENT_SINGLE`: one task, then deregister and exit.
    pub single: bool,
    /// `SCALR_AGENT_SINGLE_WAIT_TIMEOUT`: how long single mode waits for its task.
    pub single_wait: Duration,
    pub on_stop: StopAction,
    pub drain_timeout: Duration,
    pub grace_timeout: Duration,
    /// `SCALR_AGENT_WORKER_REPORT_TIMEOUT`: time kept after the tasks stopped to report them.
    pub report_timeout: Duration,
    pub disconnect_on_stop: bool,
    pub state_persistence: bool,
    /// `SCALR_AGENT_HEALTH_ADDR`: readiness and metrics listener.
    pub health_addr: Option<SocketAddr>,
    pub spool_limit_bytes: u64,
    /// Not a variable: how long step reports still queued when a task ends may take before
    /// they are given up. `None` (always, from the environment) derives it from the report
    /// timeout (`agent::steps`); embedders and tests may set it.
    pub step_flush_limit: Option<Duration>,
}

/// Where the control plane is and how the agent proves it belongs to the pool.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub url: Url,
    pub token: Secret,
}

/// `SCALR_AGENT_WORKER_ON_STOP_ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAction {
    /// Take no new task; let running ones finish until the drain timeout, then grace-shutdown.
    Drain,
    /// SIGTERM the tools now, SIGKILL after the grace timeout.
    GraceShutdown,
    /// SIGKILL the tools now.
    ForceShutdown,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            control_plane: None,
            name: "scalr-agent".into(),
            data_dir: PathBuf::from("/var/lib/scalr-agent"),
            http: crate::http::Settings::default(),
            keep_task_dirs: false,
            runtime: RuntimeHints::default(),
            concurrency: NonZeroU32::MIN,
            single: false,
            single_wait: Duration::from_secs(120),
            on_stop: StopAction::Drain,
            drain_timeout: Duration::from_secs(60),
            grace_timeout: Duration::from_secs(30),
            report_timeout: Duration::from_secs(10),
            disconnect_on_stop: true,
            state_persistence: true,
            health_addr: None,
            spool_limit_bytes: 1024 << 20,
            step_flush_limit: None,
        }
    }
}
