//! Applying a [`Policy`] to the calling process, layer by layer, right before `execve`.
//!
//! [`apply`] runs in the forked child of the single-threaded stage helper (never in the
//! multi-threaded agent: see isolation.md), so it may allocate. It follows isolation.md's order:
//! session, working directory, signals, rlimits (with `oom_score_adj` 1000), capabilities, uid/gid, parent-death signal,
//! `no_new_privs`, descriptors, Landlock, seccomp. A requested layer that fails stops
//! everything with a [`LayerError`] naming the layer and the errno; a layer that is off is
//! reported `applied: false` with the reason from the policy.
//!
//! Descriptors above 2 are marked close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`) rather
//! than closed: the effect at `execve` is the same ("only 0, 1, 2 are inherited"), and the
//! helper's report pipe stays usable until then.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};

pub use super::error::LayerError;
use super::filter;
use super::policy::{LayerReport, Policy};
use super::sys;

/// The Landlock ABI whose rights were reviewed for stages: filesystem rights up to ABI 5
/// (including truncate and device ioctls) and ABI 6's signal and abstract-socket scopes. The
/// network is not restricted. Older kernels get what they support (reported as partial).
pub const LANDLOCK_ABI: ABI = ABI::V6;

/// Applies every layer of `policy` to the calling process, in order, and says what was done.
///
/// Call it in a freshly forked child of a single-threaded process, right before `execve`.
#[expect(
    clippy::too_many_lines,
    reason = "the layers in isolation.md's order, one after another"
)]
pub fn apply(policy: &Policy) -> Result<Vec<LayerReport>, LayerError> {
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    let mut reports = Vec::with_capacity(11);
    let off = |layer: &str, default: &str| {
        LayerReport::skipped(layer, policy.why_disabled(layer).unwrap_or(default))
    };

    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        return Err(LayerError::new("session", "setsid", sys::last_error()));
    }
    reports.push(LayerReport::applied(
        "session",
        "new session and process group",
    ));

    std::env::set_current_dir(&policy.task_dir).map_err(|e| {
        LayerError::new("workdir", format!("chdir {}", policy.task_dir.display()), e)
    })?;
    reports.push(LayerReport::applied(
        "workdir",
        policy.task_dir.display().to_string(),
    ));

    reset_signals()?;
    reports.push(LayerReport::applied(
        "signals",
        "mask empty, every disposition default",
    ));

    reports.push(rlimits(policy)?);

    let caps = if policy.drop_caps {
        let n = sys::drop_bounding_set()
            .map_err(|e| LayerError::new("capabilities", "PR_CAPBSET_DROP", e))?;
        Some(n)
    } else {
        None
    };
    sys::clear_ambient()
        .map_err(|e| LayerError::new("capabilities", "PR_CAP_AMBIENT_CLEAR_ALL", e))?;

    let uid_report = match (policy.uid, policy.gid) {
        (Some(uid), Some(gid)) => {
            sys::switch_ids(uid, gid).map_err(|(call, e)| LayerError::new("uid", call, e))?;
            LayerReport::applied("uid", format!("uid {uid}, gid {gid}, no groups"))
        }
        _ => off(
            "uid",
            "no dedicated uid: the stage runs as the agent's user",
        ),
    };
    // Whatever the uid, the stage starts with no capabilities at all.
    sys::capset(sys::CapSets::default())
        .map_err(|e| LayerError::new("capabilities", "capset", e))?;
    reports.push(match caps {
        Some(n) => LayerReport::applied(
            "capabilities",
            format!("bounding set dropped ({n} capabilities); all other sets cleared"),
        ),
        None => LayerReport::skipped(
            "capabilities",
            format!(
                "bounding set kept ({}); effective, permitted, inheritable and ambient cleared",
                policy
                    .why_disabled("capabilities")
                    .unwrap_or("not requested")
            ),
        ),
    });
    reports.push(uid_report);

    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(|e| LayerError::new("pdeathsig", "PR_SET_PDEATHSIG", e))?;
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(LayerError::new(
            "pdeathsig",
            "the parent exited before the stage started",
            io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    reports.push(LayerReport::applied(
        "pdeathsig",
        "SIGKILL when the helper dies",
    ));

    if policy.no_new_privs {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
            .map_err(|e| LayerError::new("no_new_privs", "PR_SET_NO_NEW_PRIVS", e))?;
        reports.push(LayerReport::applied("no_new_privs", "set"));
    } else {
        reports.push(off("no_new_privs", "not requested"));
    }

    reports.push(close_descriptors()?);

    reports.push(if policy.landlock {
        landlock(policy)?
    } else {
        off("landlock", "not requested")
    });

    reports.push(if policy.seccomp {
        let program = filter::stage_filter().map_err(|e| {
            LayerError::new("seccomp", e.to_string(), io::Error::other("bad filter"))
        })?;
        filter::install(&program, 0).map_err(|errno| {
            LayerError::new(
                "seccomp",
                "seccomp(SECCOMP_SET_MODE_FILTER)",
                io::Error::from_raw_os_error(errno),
            )
        })?;
        LayerReport::applied(
            "seccomp",
            format!(
                "{} system calls and namespace clones denied (EPERM); x32 and clone3 ENOSYS",
                filter::DENIED.len()
            ),
        )
    } else {
        off("seccomp", "not requested")
    });
    Ok(reports)
}

fn reset_signals() -> Result<(), LayerError> {
    // SAFETY: `set` is a valid sigset_t initialised by sigemptyset before use; signal() with
    // SIG_DFL installs no handler. Errors for signals that cannot be changed are ignored.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(LayerError::new("signals", "sigprocmask", sys::last_error()));
        }
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    Ok(())
}

/// Every stage process's `oom_score_adj`: the first the kernel kills when memory runs out.
pub const OOM_SCORE_ADJ: &str = "1000";

fn rlimits(policy: &Policy) -> Result<LayerReport, LayerError> {
    let r = &policy.rlimits;
    let mut wanted = vec![
        ("core", libc::RLIMIT_CORE, 0),
        ("nofile", libc::RLIMIT_NOFILE, r.nofile),
        ("fsize", libc::RLIMIT_FSIZE, r.fsize),
    ];
    if let Some(n) = r.nproc {
        wanted.push(("nproc", libc::RLIMIT_NPROC, n));
    }
    let mut detail = Vec::new();
    for (name, resource, value) in wanted {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `cur` is a valid rlimit to fill in.
        if unsafe { libc::getrlimit(resource, &mut cur) } != 0 {
            return Err(LayerError::new(
                "rlimits",
                format!("getrlimit {name}"),
                sys::last_error(),
            ));
        }
        // Clamped to the current hard limit: raising it needs CAP_SYS_RESOURCE.
        let v = value.min(cur.rlim_max);
        let new = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: `new` is a valid rlimit.
        if unsafe { libc::setrlimit(resource, &new) } != 0 {
            return Err(LayerError::new(
                "rlimits",
                format!("setrlimit {name}={v}"),
                sys::last_error(),
            ));
        }
        detail.push(format!("{name}={v}"));
    }
    if r.nproc.is_none() {
        detail.push("nproc unset (shared uid)".into());
    }
    // Under memory pressure the kernel kills the stage, never the agent. Raising one's own
    // score needs no privilege; it is inherited by everything the stage starts.
    std::fs::write("/proc/self/oom_score_adj", OOM_SCORE_ADJ)
        .map_err(|e| LayerError::new("rlimits", format!("oom_score_adj={OOM_SCORE_ADJ}"), e))?;
    detail.push(format!("oom_score_adj={OOM_SCORE_ADJ}"));
    if let Some(procs) = &policy.memory_cgroup {
        // "0" is the writing process; everything it starts stays in the cgroup.
        std::fs::write(procs, "0")
            .map_err(|e| LayerError::new("rlimits", format!("joining {}", procs.display()), e))?;
        detail.push(format!(
            "memory cgroup {}",
            procs.parent().unwrap_or(procs).display()
        ));
    }
    Ok(LayerReport::applied("rlimits", detail.join(" ")))
}

fn close_descriptors() -> Result<LayerReport, LayerError> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(LayerReport::applied(
            "fds",
            "descriptors above 2 close on exec",
        ));
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| LayerError::new("fds", "read /proc/self/fd", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor that may have closed meanwhile fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(LayerReport::applied(
        "fds",
        "descriptors above 2 close on exec (via /proc/self/fd)",
    ))
}

fn landlock(policy: &Policy) -> Result<LayerReport, LayerError> {
    let fail = |what: &str, e: landlock::RulesetError| {
        LayerError::new("landlock", what, io::Error::other(e.to_string()))
    };
    let existing = |paths: &[PathBuf]| -> Vec<PathBuf> {
        paths.iter().filter(|p| p.exists()).cloned().collect()
    };
    let writable = existing(&policy.writable);
    let read_exec = existing(&policy.read_exec);
    if !writable.iter().any(|p| p == &policy.task_dir) {
        return Err(LayerError::new(
            "landlock",
            format!("task directory {} is missing", policy.task_dir.display()),
            io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
        .and_then(|r| r.create())
        .map_err(|e| fail("create ruleset", e))?
        .no_new_privs(false)
        .add_rules(path_beneath_rules(
            &writable,
            AccessFs::from_all(LANDLOCK_ABI),
        ))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                &read_exec,
                AccessFs::from_read(LANDLOCK_ABI),
            ))
        })
        .map_err(|e| fail("add rules", e))?
        .restrict_self()
        .map_err(|e| fail("landlock_restrict_self", e))?;
    let summary = format!(
        "read-write {}, read-execute {}",
        list(&writable),
        list(&read_exec)
    );
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(LayerReport::applied(
            "landlock",
            format!("fully enforced: {summary}"),
        )),
        RulesetStatus::PartiallyEnforced => Ok(LayerReport::applied(
            "landlock",
            format!("partially enforced (older kernel ABI): {summary}"),
        )),
        RulesetStatus::NotEnforced => Err(LayerError::new(
            "landlock",
            "the kernel did not enforce the ruleset",
            io::Error::from_raw_os_error(libc::ENOSYS),
        )),
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Replaces the process with `argv` (an absolute path first) and exactly `env`; returns only on
/// failure.
pub fn exec(argv: &[String], env: &[(String, String)]) -> io::Error {
    let Some(program) = argv.first() else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    if !Path::new(program).is_absolute() {
        return io::Error::other(format!("{program}: not an absolute path"));
    }
    let to_c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let args: Result<Vec<CString>, io::Error> = argv
        .iter()
        .map(|a| to_c(std::ffi::OsStr::new(a).as_bytes()))
        .collect();
    let vars: Result<Vec<CString>, io::Error> = env
        .iter()
        .map(|(k, v)| to_c(format!("{k}={v}").as_bytes()))
        .collect();
    let (args, vars) = match (args, vars) {
        (Ok(a), Ok(v)) => (a, v),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = vars.iter().map(|v| v.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: both arrays are null-terminated and point into CStrings alive across the call.
    unsafe { libc::execve(argp[0], argp.as_ptr(), envp.as_ptr()) };
    sys::last_error()
}
