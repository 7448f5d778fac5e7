//! What to apply to one stage process: the [`Policy`] the agent builds from the platform's
//! probes and the configuration, and the [`LayerReport`]s that say what was applied.
//!
//! A policy is plain data (serde) so the agent can hand it to the single-threaded helper that
//! applies it (see `layers`). Layers the platform cannot provide are switched off here, once,
//! with the reason recorded in `disabled`, so that every task's result says why a layer is
//! missing instead of failing in the child.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::probe::Probes;

/// System directories a stage may read and execute: what `sh`, `terraform`, `tofu` and their
/// providers need (libraries, CA certificates, resolver configuration, `/proc/self`). Missing
/// ones are skipped. Nothing under the agent's data, cache (except the binaries) or home.
pub const SYSTEM_READ_EXEC: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/run/systemd/resolve",
];

/// Device files a stage may read and write (`>/dev/null` needs write and truncate).
pub const DEVICES_READ_WRITE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// Everything the helper applies to one stage process before `execve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Dedicated uid; `None` keeps the agent's.
    pub uid: Option<u32>,
    /// Dedicated gid; `None` keeps the agent's.
    pub gid: Option<u32>,
    /// Working directory of the stage; writable.
    pub task_dir: PathBuf,
    /// Read-write under Landlock (the task directory, its HOME and TMPDIR, a few devices).
    pub writable: Vec<PathBuf>,
    /// Read and execute under Landlock (system directories, the binary cache).
    pub read_exec: Vec<PathBuf>,
    pub rlimits: Rlimits,
    /// Drop the capability bounding set (needs `CAP_SETPCAP`) besides the other sets.
    pub drop_caps: bool,
    pub no_new_privs: bool,
    pub landlock: bool,
    pub seccomp: bool,
    /// Why a layer is off, by layer name; reported as the `detail` of its `applied: false`.
    pub disabled: Vec<(String, String)>,
    /// The task's memory cgroup's `cgroup.procs` (`SCALR_AGENT_TASK_MEMORY_LIMIT_MB`), joined
    /// before the uid switch.
    #[serde(default)]
    pub memory_cgroup: Option<PathBuf>,
}

/// Resource limits; soft and hard are set to the same value, clamped to the current hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimits {
    /// Always 0 when applied; kept as a field so the report shows it.
    pub core: u64,
    pub nofile: u64,
    pub fsize: u64,
    /// `None` when the task shares the agent's uid (the count would include the agent).
    pub nproc: Option<u64>,
}

/// What happened to one layer, in order; the helper sends these back to the agent and they go
/// into the task's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub applied: bool,
    pub detail: String,
}

impl LayerReport {
    /// A layer that was applied.
    pub fn applied(name: &str, detail: impl Into<String>) -> LayerReport {
        LayerReport {
            name: name.into(),
            applied: true,
            detail: detail.into(),
        }
    }

    /// A layer that was not requested, with the reason.
    pub fn skipped(name: &str, detail: impl Into<String>) -> LayerReport {
        LayerReport {
            name: name.into(),
            applied: false,
            detail: detail.into(),
        }
    }
}

impl Policy {
    /// Only the process-control layers (session, signals, descriptors, core dumps off): no
    /// uid switch, Landlock or seccomp. For stages the operator chose to run unisolated, and
    /// for tests of the helper's process handling.
    pub fn process_only(task_dir: &Path) -> Policy {
        let off = |layer: &str| (layer.to_string(), "not requested".to_string());
        Policy {
            uid: None,
            gid: None,
            task_dir: task_dir.to_path_buf(),
            writable: Vec::new(),
            read_exec: Vec::new(),
            rlimits: Rlimits {
                core: 0,
                nofile: 8192,
                fsize: u64::MAX,
                nproc: None,
            },
            drop_caps: false,
            no_new_privs: false,
            landlock: false,
            seccomp: false,
            memory_cgroup: None,
            disabled: ["uid", "capabilities", "no_new_privs", "landlock", "seccomp"]
                .map(off)
                .to_vec(),
        }
    }

    /// The policy for one task: every layer the probes found available, the dedicated ids when
    /// given and the platform can switch uid, Landlock write access to `task_dir` (put HOME and
    /// TMPDIR inside it) and read-execute access to the system plus `read_exec_extra` (the
    /// binary cache; later the provider cache).
    pub fn for_task(
        probes: &Probes,
        config: &super::Settings,
        ids: Option<(u32, u32)>,
        task_dir: &Path,
        read_exec_extra: &[PathBuf],
    ) -> Policy {
        let mut disabled = Vec::new();
        let mut off = |layer: &str, why: String| disabled.push((layer.to_string(), why));
        let ids = match ids {
            Some(ids) if probes.uid_switch.ok => Some(ids),
            Some(_) => {
                off(
                    "uid",
                    format!("cannot switch uid: {}", probes.uid_switch.detail),
                );
                None
            }
            None => {
                off("uid", "no dedicated uid was assigned to this task".into());
                None
            }
        };
        if !probes.capability_drop.ok {
            off("capabilities", probes.capability_drop.detail.clone());
        }
        if !probes.no_new_privs.ok {
            off("no_new_privs", probes.no_new_privs.detail.clone());
        }
        if !probes.landlock.ok {
            off("landlock", probes.landlock.detail.clone());
        }
        if !probes.seccomp.ok {
            off("seccomp", probes.seccomp.detail.clone());
        }
        let mut writable = vec![task_dir.to_path_buf()];
        writable.extend(DEVICES_READ_WRITE.iter().map(PathBuf::from));
        let mut read_exec: Vec<PathBuf> = SYSTEM_READ_EXEC.iter().map(PathBuf::from).collect();
        read_exec.extend(read_exec_extra.iter().cloned());
        let limits = config.rlimits;
        Policy {
            uid: ids.map(|(u, _)| u),
            gid: ids.map(|(_, g)| g),
            task_dir: task_dir.to_path_buf(),
            writable,
            read_exec,
            rlimits: Rlimits {
                core: 0,
                nofile: limits.nofile,
                fsize: limits.fsize_bytes,
                nproc: ids.map(|_| limits.nproc),
            },
            drop_caps: probes.capability_drop.ok,
            no_new_privs: probes.no_new_privs.ok,
            landlock: probes.landlock.ok,
            seccomp: probes.seccomp.ok,
            disabled,
            memory_cgroup: None,
        }
    }

    /// Why `layer` is off, if the policy recorded a reason.
    pub fn why_disabled(&self, layer: &str) -> Option<&str> {
        self.disabled
            .iter()
            .find(|(name, _)| name == layer)
            .map(|(_, why)| why.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::probe::ProbeResult;

    fn probes(all: bool) -> Probes {
        let r = |ok| ProbeResult {
            ok,
            detail: if ok {
                "ok".into()
            } else {
                "denied (EPERM)".into()
            },
        };
        Probes {
            uid_switch: r(all),
            capability_drop: r(all),
            non_dumpable: r(true),
            no_new_privs: r(true),
            landlock: r(all),
            landlock_abi: if all { Some(7) } else { None },
            seccomp: r(true),
            user_namespaces: r(false),
            cgroup_v2: r(false),
            no_sys_ptrace: r(true),
            sys_ptrace_granted: false,
            agent_uid: 0,
        }
    }

    fn config() -> crate::sandbox::Settings {
        crate::sandbox::Settings::default()
    }

    #[test]
    fn full_platform_turns_everything_on() {
        let p = Policy::for_task(
            &probes(true),
            &config(),
            Some((20001, 20001)),
            Path::new("/data/tasks/t1"),
            &[PathBuf::from("/cache/binaries")],
        );
        assert_eq!((p.uid, p.gid), (Some(20001), Some(20001)));
        assert!(p.landlock && p.seccomp && p.no_new_privs && p.drop_caps);
        assert!(p.disabled.is_empty(), "{:?}", p.disabled);
        assert_eq!(p.rlimits.core, 0);
        assert_eq!(p.rlimits.nproc, Some(4096));
        assert_eq!(p.writable[0], PathBuf::from("/data/tasks/t1"));
        assert!(p.read_exec.contains(&PathBuf::from("/cache/binaries")));
        assert!(p.read_exec.contains(&PathBuf::from("/usr")));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
    }

    #[test]
    fn weaker_platform_turns_layers_off_with_reasons() {
        let p = Policy::for_task(
            &probes(false),
            &config(),
            Some((20001, 20001)),
            Path::new("/t"),
            &[],
        );
        assert_eq!(p.uid, None);
        assert_eq!(p.rlimits.nproc, None);
        assert!(!p.landlock && !p.drop_caps);
        assert!(p.seccomp && p.no_new_privs);
        assert!(p.why_disabled("uid").unwrap().contains("EPERM"));
        assert!(p.why_disabled("landlock").is_some());
        assert!(p.why_disabled("seccomp").is_none());
    }
}
