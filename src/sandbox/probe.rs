//! What this platform allows, found by trying: each probe runs in a throwaway forked child that
//! attempts one thing, reports a number through a pipe and exits. From the [`Probes`] come the
//! [`Verdict`] (isolation.md, "Detect, report, decide") and the [`Decision`] for each task.
//!
//! The children only make raw system calls on data prepared before `fork` (no allocation, no
//! locks), so probing is safe from a multi-threaded process, tests included.
//!
//! The probes describe the agent *after* [`harden_agent`]: the children harden themselves
//! first where it matters (`CAP_SYS_PTRACE`), so the answer does not depend on whether the
//! caller already did.
#![allow(
    clippy::disallowed_methods,
    reason = "reads the agent's own /proc entries"
)]

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::error::LayerError;
use super::filter;
use super::filter::TestDeny;
use super::fork::probe_in_child as in_child;
use super::sys::{self, CAP_SYS_PTRACE};

/// How well stages are isolated from the agent and from each other on this platform. Ordered:
/// `Unisolated < Degraded < Isolated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Anything less than `Degraded`: job code may read the agent's token or other tasks.
    Unisolated,
    /// Stages share the agent's uid, but the agent is non-dumpable, and seccomp (ptrace
    /// denied) plus Landlock (agent files hidden) are enforced.
    Degraded,
    /// A dedicated uid per task, a non-dumpable agent, and no `CAP_SYS_PTRACE`.
    Isolated,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Unisolated => "unisolated",
            Verdict::Degraded => "degraded",
            Verdict::Isolated => "isolated",
        })
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub ok: bool,
    /// What was found, or why it failed (with the errno).
    pub detail: String,
}

/// Everything the probes found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probes {
    /// `setgroups` + `setresgid` + `setresuid` to another id (root or `CAP_SETUID`/`SETGID`).
    pub uid_switch: ProbeResult,
    /// Dropping the capability bounding set (`CAP_SETPCAP`).
    pub capability_drop: ProbeResult,
    /// `PR_SET_DUMPABLE 0`.
    pub non_dumpable: ProbeResult,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: ProbeResult,
    /// Landlock (ABI 1 or later).
    pub landlock: ProbeResult,
    pub landlock_abi: Option<u32>,
    /// Installing the stage seccomp filter (after `no_new_privs`) and seeing ptrace denied.
    pub seccomp: ProbeResult,
    /// `unshare(CLONE_NEWUSER)`; informational.
    pub user_namespaces: ProbeResult,
    /// A writable cgroup v2 directory of our own; informational (per-task cgroups).
    pub cgroup_v2: ProbeResult,
    /// `CAP_SYS_PTRACE` is gone after hardening (it would defeat non-dumpable).
    pub no_sys_ptrace: ProbeResult,
    /// The container was started with `CAP_SYS_PTRACE` (dropped by `harden_agent` or not).
    pub sys_ptrace_granted: bool,
    pub agent_uid: u32,
}

static SYS_PTRACE_AT_START: AtomicBool = AtomicBool::new(false);

/// Hardens the agent itself: `PR_SET_DUMPABLE 0` (its `/proc/<pid>/environ` and `mem` are then
/// closed to anything without `CAP_SYS_PTRACE`) and drops `CAP_SYS_PTRACE` from every set it
/// can (the bounding set needs `CAP_SETPCAP`). Call once at start, before any thread exists:
/// capability sets are per thread.
pub fn harden_agent() -> Result<(), LayerError> {
    if sys::capget().is_ok_and(|c| c.holds(CAP_SYS_PTRACE)) {
        SYS_PTRACE_AT_START.store(true, Ordering::Relaxed);
    }
    sys::prctl(libc::PR_SET_DUMPABLE, 0)
        .map_err(|e| LayerError::new("non_dumpable", "PR_SET_DUMPABLE 0", e))?;
    drop_sys_ptrace().map_err(|e| LayerError::new("no_sys_ptrace", "capset", e))
}

/// Removes `CAP_SYS_PTRACE` from the calling thread's sets (and the bounding set if allowed).
fn drop_sys_ptrace() -> std::io::Result<()> {
    // Without CAP_SETPCAP the bounding set stays; a non-root exec gains nothing from it.
    let _ = sys::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_PTRACE.into());
    // SAFETY: PR_CAP_AMBIENT_LOWER takes integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_LOWER as libc::c_ulong,
            CAP_SYS_PTRACE as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    let mut c = sys::capget()?;
    let bit = !(1u64 << CAP_SYS_PTRACE);
    c.effective &= bit;
    c.permitted &= bit;
    c.inheritable &= bit;
    sys::capset(c)
}

/// Test only (`SCALR_AGENT_SANDBOX_TEST_DENY`): puts the whole agent behind seccomp filters that
/// make Landlock or uid changes fail, so every probe and helper sees a weaker platform. Call at
/// start, before any thread exists.
pub fn emulate_weaker_platform(deny: &[TestDeny]) -> Result<(), LayerError> {
    let err = |what: &str, errno: i32| {
        LayerError::new("test_deny", what, std::io::Error::from_raw_os_error(errno))
    };
    let programs = filter::test_deny_filters(deny)
        .map_err(|e| LayerError::new("test_deny", "compile", std::io::Error::other(e)))?;
    for p in &programs {
        if let Err(e) = filter::install(p, libc::SECCOMP_FILTER_FLAG_TSYNC) {
            if e != libc::EACCES {
                return Err(err("seccomp", e));
            }
            // Not root: a filter needs no_new_privs.
            sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
                .map_err(|e| LayerError::new("test_deny", "PR_SET_NO_NEW_PRIVS", e))?;
            filter::install(p, libc::SECCOMP_FILTER_FLAG_TSYNC).map_err(|e| err("seccomp", e))?;
        }
    }
    Ok(())
}

/// Whether stages can run as dedicated uids: a child tries to switch to another uid/gid (one
/// fork). The first probe of [`probe`], alone for the start-up checks of `exec` and `run`.
pub fn probe_uid_switch() -> ProbeResult {
    let agent_uid = sys::getuid();
    let other_id: u32 = if agent_uid == 65534 { 65533 } else { 65534 };
    match in_child(|| match sys::switch_ids(other_id, other_id) {
        Ok(()) => 0,
        Err((call, e)) => fail_code(step_of(call), e.raw_os_error().unwrap_or(0)),
    }) {
        Ok(0) => ok("can switch to a dedicated uid/gid"),
        Ok(code) => {
            let (step, errno) = decode(code);
            let call = ["setgroups", "setresgid", "setresuid"][step.min(2)];
            not(format!(
                "{call}: {} (needs root or CAP_SETUID/CAP_SETGID)",
                errno_text(errno)
            ))
        }
        Err(e) => not(e.to_string()),
    }
}

/// Runs every probe (about ten forks; a few milliseconds).
#[expect(
    clippy::too_many_lines,
    reason = "one probe after another, each a few lines in its own child"
)]
pub fn probe() -> Probes {
    let agent_uid = sys::getuid();
    let uid_switch = probe_uid_switch();
    let capability_drop = match in_child(|| match sys::drop_bounding_set() {
        Ok(_) => 0,
        Err(e) => fail_code(0, e.raw_os_error().unwrap_or(0)),
    }) {
        Ok(0) => ok("can drop the capability bounding set"),
        Ok(code) => not(format!(
            "PR_CAPBSET_DROP: {} (no CAP_SETPCAP); harmless under no_new_privs",
            errno_text(decode(code).1)
        )),
        Err(e) => not(e.to_string()),
    };
    let non_dumpable = simple(
        || {
            if sys::prctl(libc::PR_SET_DUMPABLE, 0).is_err() {
                return fail_code(0, sys::errno());
            }
            i64::from(sys::prctl(libc::PR_GET_DUMPABLE, 0).unwrap_or(-1) != 0)
        },
        "PR_SET_DUMPABLE 0 holds",
        "PR_SET_DUMPABLE",
    );
    let no_new_privs = simple(
        || {
            if sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).is_err() {
                return fail_code(0, sys::errno());
            }
            i64::from(sys::prctl(libc::PR_GET_NO_NEW_PRIVS, 0).unwrap_or(0) != 1)
        },
        "PR_SET_NO_NEW_PRIVS holds",
        "PR_SET_NO_NEW_PRIVS",
    );
    let (landlock, landlock_abi) = match in_child(|| match sys::landlock_abi() {
        Ok(v) => i64::from(v),
        Err(e) => fail_code(0, e.raw_os_error().unwrap_or(0)),
    }) {
        Ok(v) if v >= 1 => (ok(format!("Landlock ABI v{v}")), Some(v as u32)),
        Ok(code) => {
            let errno = decode(code).1;
            let why = match errno {
                libc::ENOSYS => "the kernel has no Landlock (before 5.13, or gVisor)",
                libc::EOPNOTSUPP => "Landlock is built in but disabled (kernel `lsm=` list)",
                _ => "unexpected answer",
            };
            (
                not(format!(
                    "landlock_create_ruleset: {}: {why}",
                    errno_text(errno)
                )),
                None,
            )
        }
        Err(e) => (not(e.to_string()), None),
    };
    let seccomp = match filter::stage_filter() {
        Err(e) => not(e.to_string()),
        Ok(program) => match in_child(|| {
            if sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).is_err() {
                return fail_code(0, sys::errno());
            }
            if let Err(e) = filter::install(&program, 0) {
                return fail_code(1, e);
            }
            // SAFETY: PTRACE_PEEKUSER on ourselves only returns an error (ESRCH untraced).
            unsafe {
                libc::syscall(
                    libc::SYS_ptrace,
                    libc::PTRACE_PEEKUSER,
                    libc::getpid(),
                    0,
                    0,
                )
            };
            match sys::errno() {
                libc::EPERM => 0,
                e => fail_code(2, e),
            }
        }) {
            Ok(0) => ok("stage filter installs; ptrace is denied"),
            Ok(code) => {
                let (step, errno) = decode(code);
                let what = [
                    "PR_SET_NO_NEW_PRIVS",
                    "seccomp(SET_MODE_FILTER)",
                    "ptrace not denied",
                ];
                not(format!("{}: {}", what[step.min(2)], errno_text(errno)))
            }
            Err(e) => not(e.to_string()),
        },
    };
    let user_namespaces = simple(
        // SAFETY: unshare in the throwaway child only affects that child.
        || match unsafe { libc::unshare(libc::CLONE_NEWUSER) } {
            0 => 0,
            _ => fail_code(0, sys::errno()),
        },
        "unshare(CLONE_NEWUSER) works (not used by the sandbox)",
        "unshare(CLONE_NEWUSER)",
    );
    let sys_ptrace_granted = SYS_PTRACE_AT_START.load(Ordering::Relaxed)
        || sys::capget().is_ok_and(|c| c.holds(CAP_SYS_PTRACE));
    let no_sys_ptrace = match in_child(|| {
        if drop_sys_ptrace().is_err() {
            return fail_code(0, sys::errno());
        }
        let held = sys::capget().map_or(true, |c| c.holds(CAP_SYS_PTRACE));
        // Root regains its bounding set at every exec; other users gain nothing from it.
        let root_keeps = agent_uid == 0 && sys::in_bounding_set(CAP_SYS_PTRACE);
        i64::from(held || root_keeps)
    }) {
        Ok(0) if sys_ptrace_granted => ok("CAP_SYS_PTRACE was granted and is dropped at start"),
        Ok(0) => ok("no CAP_SYS_PTRACE"),
        Ok(_) => not("CAP_SYS_PTRACE cannot be dropped (root without CAP_SETPCAP)"),
        Err(e) => not(e.to_string()),
    };
    Probes {
        uid_switch,
        capability_drop,
        non_dumpable,
        no_new_privs,
        landlock,
        landlock_abi,
        seccomp,
        user_namespaces,
        cgroup_v2: cgroup_v2(),
        no_sys_ptrace,
        sys_ptrace_granted,
        agent_uid,
    }
}

/// The verdict, exactly as isolation.md defines it.
pub fn verdict(p: &Probes) -> Verdict {
    if p.uid_switch.ok && p.non_dumpable.ok && p.no_sys_ptrace.ok {
        Verdict::Isolated
    } else if p.non_dumpable.ok && p.no_sys_ptrace.ok && p.seccomp.ok && p.landlock.ok {
        Verdict::Degraded
    } else {
        Verdict::Unisolated
    }
}

/// What to do with a task on a platform of `verdict` when `min` is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", content = "message", rename_all = "snake_case")]
pub enum Decision {
    /// Fully isolated: run.
    Run,
    /// Allowed but not fully isolated: run, with this warning at the top of the task's log.
    Warn(String),
    /// Below the minimum: refuse the task with this error.
    Refuse(String),
}

/// Applies `SCALR_AGENT_MIN_ISOLATION` to a verdict.
pub fn decide(verdict: Verdict, min: Verdict) -> Decision {
    if verdict < min {
        Decision::Refuse(format!(
            "this agent's platform isolates tasks only to level `{verdict}`, below the required \
             `{min}` (SCALR_AGENT_MIN_ISOLATION); run `scalr-agent doctor` for what to change"
        ))
    } else if verdict < Verdict::Isolated {
        Decision::Warn(format!(
            "WARNING: this task runs with `{verdict}` isolation: job code {}; run \
             `scalr-agent doctor` on the agent for details",
            if verdict == Verdict::Degraded {
                "shares the agent's uid (other tasks' files are hidden only by Landlock)"
            } else {
                "may be able to read the agent's token and other tasks' files"
            }
        ))
    } else {
        Decision::Run
    }
}

fn cgroup_v2() -> ProbeResult {
    if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return not("no cgroup v2 hierarchy at /sys/fs/cgroup");
    }
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        });
    let Some(own) = own else {
        return not("no cgroup v2 entry in /proc/self/cgroup");
    };
    let dir = format!("/sys/fs/cgroup{}", own.trim_end_matches('/'));
    match rustix::fs::access(dir.as_str(), rustix::fs::Access::WRITE_OK) {
        Ok(()) => ok(format!("{dir} is writable (per-task cgroups possible)")),
        Err(e) => not(format!("{dir} is not writable: {e}")),
    }
}

fn simple(f: impl FnOnce() -> i64, yes: &str, call: &str) -> ProbeResult {
    match in_child(f) {
        Ok(0) => ok(yes),
        Ok(code) if code < 0 => not(format!("{call}: {}", errno_text(decode(code).1))),
        Ok(_) => not(format!("{call} did not take effect")),
        Err(e) => not(e.to_string()),
    }
}

fn ok(detail: impl Into<String>) -> ProbeResult {
    ProbeResult {
        ok: true,
        detail: detail.into(),
    }
}

fn not(detail: impl Into<String>) -> ProbeResult {
    ProbeResult {
        ok: false,
        detail: detail.into(),
    }
}

fn step_of(call: &str) -> usize {
    match call {
        "setgroups" => 0,
        "setresgid" => 1,
        _ => 2,
    }
}

/// A failure as a negative number: the step in bits 16 and up, the errno below.
fn fail_code(step: usize, errno: i32) -> i64 {
    -(((step as i64) << 16) | i64::from(errno & 0xffff))
}

fn decode(code: i64) -> (usize, i32) {
    let v = -code;
    ((v >> 16) as usize, (v & 0xffff) as i32)
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        assert_eq!(decode(fail_code(2, libc::EPERM)), (2, libc::EPERM));
        assert!(fail_code(0, libc::ENOSYS) < 0);
    }

    #[test]
    fn decisions_follow_the_minimum() {
        use Verdict::*;
        assert_eq!(decide(Isolated, Degraded), Decision::Run);
        assert!(matches!(decide(Degraded, Degraded), Decision::Warn(m) if m.contains("degraded")));
        assert!(matches!(decide(Unisolated, Unisolated), Decision::Warn(_)));
        assert!(
            matches!(decide(Degraded, Isolated), Decision::Refuse(m) if m.contains("SCALR_AGENT_MIN_ISOLATION"))
        );
        assert!(Unisolated < Degraded && Degraded < Isolated);
    }

    #[test]
    fn in_child_reports_the_childs_number() {
        assert_eq!(in_child(|| 42), Ok(42));
    }
}
