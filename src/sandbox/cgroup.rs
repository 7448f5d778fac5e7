//! The per-task memory bound (`SCALR_AGENT_TASK_MEMORY_LIMIT_MB`): a child memory cgroup of the
//! agent's own, one per task, that every stage process of the task joins in the helper before
//! `execve` (the helper writes its child's pid into `cgroup.procs`; children follow).
//!
//! cgroup v1 (a `memory` hierarchy): `<hierarchy>/<agent's path>/scalr-task-<name>` with
//! `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` where swap is accounted).
//! cgroup v2: the same child with `memory.max` and `memory.swap.max = 0`; it needs the memory
//! controller delegated to the agent's cgroup (`+memory` in its `cgroup.subtree_control`,
//! which the kernel refuses while the agent's cgroup itself holds processes — run the agent in
//! a leaf it does not share, or leave the setting unset). Creation and removal are blocking.
#![allow(clippy::disallowed_methods, reason = "the agent's own cgroup files")]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A task's memory cgroup; [`TaskCgroup::remove`] deletes it once its processes are gone.
#[derive(Debug)]
pub struct TaskCgroup {
    dir: PathBuf,
}

/// The per-task memory cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
#[error(
    "SCALR_AGENT_TASK_MEMORY_LIMIT_MB: cannot set up a memory cgroup for the task ({what}): {source}"
)]
pub struct CgroupError {
    pub what: String,
    pub source: io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CgroupError {
    let what = what.into();
    move |source| CgroupError { what, source }
}

/// The agent's own memory cgroup directory and whether it is v2.
pub fn own_memory_cgroup() -> Result<(PathBuf, bool), CgroupError> {
    let text = fs::read_to_string("/proc/self/cgroup").map_err(err("reading /proc/self/cgroup"))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            return Ok((dir, false));
        }
    }
    let v2 = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    if v2.split_whitespace().any(|c| c == "memory")
        && let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::"))
    {
        return Ok((
            Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
            true,
        ));
    }
    Err(CgroupError {
        what: "no cgroup memory controller (v1 hierarchy or v2 controller) is available".into(),
        source: io::Error::from(io::ErrorKind::Unsupported),
    })
}

impl TaskCgroup {
    /// Creates `scalr-task-<name>` under the agent's memory cgroup with a `limit` in bytes.
    pub fn create(name: &str, limit: u64) -> Result<TaskCgroup, CgroupError> {
        let (parent, v2) = own_memory_cgroup()?;
        if v2 {
            let control = parent.join("cgroup.subtree_control");
            fs::write(&control, "+memory")
                .map_err(err(format!("enabling memory in {}", control.display())))?;
        }
        let dir = parent.join(format!("scalr-task-{name}"));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("creating {}", dir.display()))(e)),
        }
        let cg = TaskCgroup { dir };
        let limit = limit.to_string();
        let (file, swap, swap_value) = if v2 {
            ("memory.max", "memory.swap.max", "0".to_string())
        } else {
            (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                limit.clone(),
            )
        };
        let path = cg.dir.join(file);
        fs::write(&path, &limit).map_err(err(format!("writing {}", path.display())))?;
        // Swap accounting may be off: then there is no swap file to bound.
        let _ = fs::write(cg.dir.join(swap), swap_value);
        Ok(cg)
    }

    /// The file a stage writes its pid into to join.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Removes the cgroup (its processes are gone); a failure is logged.
    pub fn remove(self) {
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        tracing::warn!(path = %self.dir.display(), "cannot remove the task's memory cgroup");
    }
}
