//! The connection state file, `$SCALR_AGENT_DATA_DIR/.agent.state`: the agent id of the last
//! registration, so that a restarted agent asks for its own name back instead of colliding
//! with its former self. Not written when `SCALR_AGENT_STATE_PERSISTENCE_ENABLED=false`.
#![allow(
    clippy::disallowed_methods,
    reason = "the agent's own state file in its data directory"
)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub agent_id: String,
    pub name: String,
}

/// The state file's path.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(".agent.state")
}

/// Reads the state; a missing or unreadable file is no state (logged when unreadable).
pub fn load(data_dir: &Path) -> Option<State> {
    let p = path(data_dir);
    let bytes = std::fs::read(&p).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "ignoring an unreadable state file");
            None
        }
    }
}

/// Writes the state (mode 0600, by rename).
pub fn save(data_dir: &Path, state: &State) -> std::io::Result<()> {
    let p = path(data_dir);
    let tmp = p.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(state).expect("serializes"))?;
    f.sync_all()?;
    std::fs::rename(tmp, p)
}

/// Forgets the state (after deregistering).
pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}
