//! What a task runner needs (`exec` and the daemon's executor), filled in by `config`: each
//! part is the settings type of the module it configures.

use std::path::PathBuf;

/// Settings of a [`crate::task::runner::Runner`] and the modules it drives.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SCALR_AGENT_DATA_DIR`: task directories and uid leases.
    pub data_dir: PathBuf,
    /// `<SCALR_AGENT_CACHE_DIR>/binaries`: the software cache.
    pub binaries_dir: PathBuf,
    pub http: crate::http::Settings,
    pub software: crate::software::Settings,
    pub providers: crate::providers::Settings,
    pub sandbox: crate::sandbox::Settings,
    pub task: crate::task::Settings,
}
