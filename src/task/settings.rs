//! The task runner's settings, owned here and filled in by `config` (hooks, task directories,
//! cancellation grace, PATH, read paths, the stages' CA bundle, limits, `libnss-wrapper`, the
//! identity variables stages inherit).

use std::path::PathBuf;
use std::time::Duration;

use crate::http::CaBundle;

/// Settings of the task runner.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hooks_dir: Option<PathBuf>,
    pub keep_task_dirs: bool,
    pub cancel_grace: Duration,
    /// The agent's PATH, handed to tasks after their own directories.
    pub system_path: String,
    /// `SCALR_AGENT_TASK_READ_PATHS`: extra paths tasks may read and execute.
    pub read_paths: Vec<PathBuf>,
    /// `SCALR_AGENT_CONTAINER_TASK_CA_CERT`: CA certificates trusted by stages only (added to
    /// the system roots and `SCALR_AGENT_CA_CERT` in the stages' bundle).
    pub task_ca_bundle: Option<CaBundle>,
    /// `SCALR_AGENT_TASK_ARTIFACT_LIMIT_MB`, in bytes: the largest plan file, plan JSON or cost
    /// estimate read back from a task.
    pub artifact_limit_bytes: u64,
    /// `SCALR_AGENT_TASK_LOG_LIMIT_MB`, in bytes: past it a task's output is dropped.
    pub log_limit_bytes: u64,
    /// `SCALR_AGENT_NSS_WRAPPER_LIB`: the `libnss_wrapper.so` giving stages a user entry
    /// (`None`: look in the standard places).
    pub nss_wrapper_lib: Option<PathBuf>,
    /// `SCALR_AGENT_TASK_MEMORY_LIMIT_MB`, in bytes: a memory cgroup per task when set.
    pub task_memory_limit_bytes: Option<u64>,
    /// `SCALR_AGENT_TASK_INHERIT_IDENTITY`, `SCALR_AGENT_TASK_ENV_PASSTHROUGH`: what stages
    /// inherit of the agent's environment (`task::identity`).
    pub identity: super::identity::Settings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hooks_dir: None,
            keep_task_dirs: false,
            cancel_grace: Duration::from_secs(30),
            system_path: super::env::SYSTEM_PATH.to_string(),
            read_paths: Vec::new(),
            task_ca_bundle: None,
            artifact_limit_bytes: 512 << 20,
            log_limit_bytes: 100 << 20,
            nss_wrapper_lib: None,
            task_memory_limit_bytes: None,
            identity: super::identity::Settings::default(),
        }
    }
}
