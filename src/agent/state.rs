//! The connection state file, `$SCALR_AGENT_DATA_DIR/.agent.state`: the agent id and the
//! reclaim secret of the last registration (docs/protocol.md, "Restart and reclaim"), so a
//! restarted agent gets its id and its unfinished tasks back. Not read nor written when
//! `SCALR_AGENT_STATE_PERSISTENCE_ENABLED=false`.
//!
//! The file holds a secret, so it is strict both ways: written owner-only (0600) through a
//! temporary file, fsync and rename (never half-written), and read only when it is a regular
//! file of the agent's own uid with no group or other permission; anything else is refused
//! with an error naming the file, what was found and the fix (the agent stops).
#![allow(
    clippy::disallowed_methods,
    reason = "the agent's own state file in its data directory"
)]

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::control::IdentityStore;
use crate::secret::Secret;

/// Largest state file read (it holds a few short strings).
const MAX_STATE_BYTES: u64 = 64 << 10;

/// What survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct State {
    pub agent_id: String,
    pub name: String,
    /// Minted by a v1.1 server; absent after a v1 server (or an older agent).
    #[serde(default)]
    pub reclaim_secret: Option<Secret>,
}

/// The file as written (the secret leaves its wrapper only here).
#[derive(Serialize)]
struct OnDisk<'a> {
    agent_id: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaim_secret: Option<&'a str>,
}

/// The state file cannot be trusted: the agent does not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing the agent's state file {path}: {found}; expected {expected}. It holds the reclaim secret of the agent's tasks: remove it (the agent then registers as a new agent) or fix it"
)]
pub struct StateError {
    pub path: PathBuf,
    pub found: String,
    pub expected: String,
}

/// The state file's path.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(".agent.state")
}

/// Reads the state: `Ok(None)` when there is none (or it does not parse: logged). Refuses a
/// file that is not a regular file (a link, a directory, a FIFO), is owned by another uid or
/// grants any group or other permission. Blocking.
pub fn load(data_dir: &Path) -> Result<Option<State>, StateError> {
    let p = path(data_dir);
    let refuse = |found: String, expected: &str| StateError {
        path: p.clone(),
        found,
        expected: expected.into(),
    };
    let regular = "a regular file";
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&p);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refuse("a symbolic link".into(), regular));
        }
        Err(e) => return Err(refuse(format!("it cannot be opened ({e})"), regular)),
    };
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("it cannot be examined ({e})"), regular))?;
    if !meta.file_type().is_file() {
        return Err(refuse(kind(meta.file_type()).into(), regular));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(refuse(
            format!("a file owned by uid {}", meta.uid()),
            &format!("a file owned by the agent's uid {uid}"),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(
            format!("mode {mode:04o}, which gives group or other users access"),
            "mode 0600 (owner only)",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("it cannot be read ({e})"), regular))?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "ignoring a state file that does not parse; registering as a new agent");
            Ok(None)
        }
    }
}

/// What a file that is not a regular file is, for the refusal.
fn kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Writes the state: a fresh temporary file (0600, never following a link), fsync, rename
/// over the state file, fsync of the directory. Blocking.
pub fn save(data_dir: &Path, state: &State) -> std::io::Result<()> {
    let p = path(data_dir);
    let tmp = data_dir.join(".agent.state.tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let body = serde_json::to_vec(&OnDisk {
        agent_id: &state.agent_id,
        name: &state.name,
        reclaim_secret: state.reclaim_secret.as_ref().map(Secret::expose),
    })
    .expect("serializes");
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(data_dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Forgets the state (after deregistering).
pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}

/// The state file as the control client's [`IdentityStore`]: saved after every
/// registration, under the agent's configured name.
#[derive(Debug)]
pub struct StateFile {
    pub data_dir: PathBuf,
    pub name: String,
}

impl StateFile {
    pub fn new(data_dir: &Path, name: &str) -> Arc<StateFile> {
        Arc::new(StateFile {
            data_dir: data_dir.to_path_buf(),
            name: name.to_owned(),
        })
    }
}

impl IdentityStore for StateFile {
    fn save(&self, agent_id: &str, reclaim_secret: Option<&Secret>) -> std::io::Result<()> {
        save(
            &self.data_dir,
            &State {
                agent_id: agent_id.to_owned(),
                name: self.name.clone(),
                reclaim_secret: reclaim_secret.cloned(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn state() -> State {
        State {
            agent_id: "agt-1".into(),
            name: "agent-a".into(),
            reclaim_secret: Some(Secret::new("rec-SECRET")),
        }
    }

    #[test]
    fn saved_owner_only_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None, "no file: no state");
        save(dir.path(), &state()).unwrap();
        let meta = std::fs::metadata(path(dir.path())).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert!(!dir.path().join(".agent.state.tmp").exists());
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back, state());
        assert!(!format!("{back:?}").contains("rec-SECRET"));
        // A stale temporary file (a crash mid-write) does not stop the next save.
        std::fs::write(dir.path().join(".agent.state.tmp"), "half").unwrap();
        save(dir.path(), &state()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state()));
        // A v1 state (no secret) still reads.
        std::fs::write(path(dir.path()), r#"{"agent_id":"agt-2","name":"n"}"#).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().reclaim_secret, None);
    }

    #[test]
    fn a_file_others_could_reach_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state()).unwrap();
        let p = path(dir.path());
        for mode in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(
                e.contains("expected mode 0600") && e.contains(".agent.state"),
                "{e}"
            );
            assert!(!e.contains("rec-SECRET"), "{e}");
        }
        std::fs::remove_file(&p).unwrap();
        let target = dir.path().join("elsewhere");
        save(dir.path(), &state()).unwrap();
        std::fs::rename(&p, &target).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("a symbolic link") && e.contains("a regular file"),
            "{e}"
        );
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory; expected a regular file"), "{e}");
        std::fs::remove_dir(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a FIFO; expected a regular file"), "{e}");
    }

    #[test]
    fn a_file_of_another_uid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state()).unwrap();
        let p = path(dir.path());
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root to give the file to another uid (CI runs as root)"
        );
        nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        assert!(e.contains("the agent's uid 0"), "{e}");
    }
}
